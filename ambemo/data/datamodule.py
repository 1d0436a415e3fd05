"""The LightningDataModule: audio clips with human vote distributions and curated reasoning.

``prepare_data`` makes sure the corpus is ready on one process per node: the built-in corpus is
generated on first use, and every corpus's audio is decoded, checked and resampled once into its
cache (``ambemo.data.cache``). ``setup`` reads the labels, opens the cache and prints what was
skipped; the loaders turn clips into model inputs with the strategy's ``PromptEncoder``
(teacher-forced targets for training, left-padded prompts for evaluation). Audio reaches a
training step only from the cache, already validated, so a bad file never breaks a step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

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
        dataset = ClipDataset(self.splits[split], self.corpus.audio)  # type: ignore[union-attr]
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
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
