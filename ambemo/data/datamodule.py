"""The LightningDataModule: audio clips with human vote distributions and curated reasoning.

``prepare_data`` makes sure the corpus is ready on one process per node: the built-in corpus is
generated on first use, and every corpus's audio is decoded, checked and resampled once into its
cache (``ambemo.data.cache``). ``setup`` reads the labels, opens the cache and prints what was
skipped; the loaders turn clips into model inputs with the strategy's ``PromptEncoder``
(teacher-forced targets for training, left-padded prompts for evaluation). Audio reaches a
training step only from the cache, already validated, so a bad file never breaks a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from ambemo.data.cache import AudioCache
from ambemo.data.corpus import Corpus, load_corpus
from ambemo.data.manifest import SPLITS, Utterance
from ambemo.model.inputs import Clip, PromptEncoder


def with_curated_cot(rows: list[Utterance], store: str | Path) -> list[Utterance]:
    """Training rows take their reasoning from a curated store (``ambemo curate``); others keep theirs.

    Only training clips: curated reasoning is made for training splits alone (it sees the target).
    """
    from ambemo.cot.store import load_accepted

    curated = load_accepted(store)
    return [replace(r, cot=curated[r.id]) if r.split == "train" and r.id in curated else r for r in rows]


AUDIO_TOKENS_PER_SECOND = 25  # Qwen2-Audio: 750 audio tokens per 30 s window
CHARS_PER_TOKEN = 4


class LengthGroupedSampler(Sampler[int]):
    """A random order in which each run of ``batch_size`` indices has similar lengths.

    Each pass: shuffle, cut into groups of ``group_batches`` batches, sort each group by length
    (longest first), cut it into batches, shuffle the batches. As in HF's LengthGroupedSampler.
    The generator persists, so every epoch draws a new order; every DDP rank draws the same one
    (Lightning then gives each rank its share).
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int, group_batches: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.group = batch_size * group_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.group):
            group = sorted(order[start : start + self.group], key=lambda i: -self.lengths[i])
            batches.extend(group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size))
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield from batches[b]


def estimated_tokens(rows: Sequence[Utterance], seconds: Sequence[float], max_seconds: float | None) -> list[float]:
    """A row's length in model tokens, roughly: its audio tokens plus its transcript and reasoning."""
    cap = max_seconds or float("inf")
    return [
        min(s, cap) * AUDIO_TOKENS_PER_SECOND + (len(r.transcript or "") + len(r.cot or "")) / CHARS_PER_TOKEN
        for r, s in zip(rows, seconds, strict=True)
    ]


class ClipDataset(Dataset):
    """Utterances of one split, their audio served from the (memory-mapped) cache."""

    def __init__(self, rows: list[Utterance], audio: AudioCache) -> None:
        self.rows = rows
        self.audio = audio

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Clip:
        row = self.rows[index]
        return Clip(
            id=row.id,
            audio=self.audio.samples(row.id),
            transcript=row.transcript,
            target=torch.tensor(row.distribution, dtype=torch.float32),
            cot=row.cot,
            latent=torch.tensor(row.latent, dtype=torch.float32) if row.latent is not None else None,
        )


@rank_zero_only
def _announce(corpus: Corpus, splits: dict[str, list[Utterance]]) -> None:
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    print(f"[ambemo] data: {corpus.name} from {corpus.source}: {sizes}; {corpus.report.headline()}")
    if corpus.report.skips:
        print(f"[ambemo] data: `ambemo data summary data={corpus.name} ...` lists every skip")


class EmotionDataModule(L.LightningDataModule):
    """Serves train/val/test clips of one corpus to a strategy."""

    def __init__(self, data_cfg: DictConfig, encoder: PromptEncoder, seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.encoder = encoder
        self.seed = seed
        self.splits: dict[str, list[Utterance]] = {}
        self.corpus: Corpus | None = None

    def prepare_data(self) -> None:
        load_corpus(self.cfg, self.encoder.sample_rate)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.corpus = load_corpus(self.cfg, self.encoder.sample_rate)
        rows = self.corpus.rows
        if self.cfg.cot_store:
            rows = with_curated_cot(rows, self.cfg.cot_store)
        for split in SPLITS:
            chosen = [r for r in rows if r.split == split]
            limit = self.cfg.limit_train if split == "train" else self.cfg.limit_eval
            self.splits[split] = chosen[:limit] if limit else chosen
        _announce(self.corpus, self.splits)

    def prior(self) -> torch.Tensor:
        """Mean human distribution of the training split: the global-prior reference predictor."""
        self.setup()
        return torch.tensor([r.distribution for r in self.splits["train"]], dtype=torch.float64).mean(0)

    def _loader(self, split: str, batch_size: int, collate: Callable, shuffle: bool) -> DataLoader:
        self.setup()
        if not self.splits.get(split):
            raise ValueError(f"{self.corpus.source}: the {split} split is empty")  # type: ignore[union-attr]
        rows = self.splits[split]
        dataset = ClipDataset(rows, self.corpus.audio)  # type: ignore[union-attr]
        generator = torch.Generator().manual_seed(self.seed)
        sampler = None
        if shuffle and self.cfg.bucket_by_length:
            seconds = self.corpus.audio.seconds([r.id for r in rows])  # type: ignore[union-attr]
            lengths = estimated_tokens(rows, seconds.tolist(), self.cfg.max_seconds)
            sampler, shuffle = LengthGroupedSampler(lengths, batch_size, self.seed), False
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.cfg.num_workers,
            generator=generator if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, self.encoder.training_batch, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.cfg.eval_batch_size, self.encoder.prompt_batch, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, self.encoder.prompt_batch, shuffle=False)
