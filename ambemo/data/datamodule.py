"""The LightningDataModule: audio clips with human vote distributions and curated reasoning.

``prepare_data`` makes sure the corpus is ready on one process per node: the built-in corpus is
generated on first use, and every corpus's audio is decoded, checked and resampled once into its
cache (``ambemo.data.cache``). ``setup`` reads the labels, opens the cache and prints what was
skipped; the loaders turn clips into model inputs with the strategy's encoder (a ``ClipEncoder``)
(teacher-forced targets for training, left-padded prompts for evaluation). Audio reaches a
training step only from the cache, already validated, so a bad file never breaks a step.

Each process reads its own share of a split (``ShardSampler``: no Lightning DistributedSampler,
whose padding would score some evaluation clips twice), and the training loader remembers how
far into the epoch it is (``ResumableLoader``), so a resumed run continues with the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from ambemo.data.cache import AudioCache
from ambemo.data.clip import Clip, ClipEncoder
from ambemo.data.corpus import Corpus, load_corpus
from ambemo.data.manifest import SPLITS, Utterance
from ambemo.data.skips import CorpusError


def with_curated_cot(rows: list[Utterance], store: str | Path) -> list[Utterance]:
    """Training rows take their reasoning from a curated store (``ambemo curate``); others keep theirs.

    Only training clips: curated reasoning is made for training splits alone (it sees the target).
    """
    from ambemo.cot.store import load_accepted

    curated = load_accepted(store)
    return [replace(r, cot=curated[r.id]) if r.split == "train" and r.id in curated else r for r in rows]


AUDIO_TOKENS_PER_SECOND = 25  # Qwen2-Audio: 750 audio tokens per 30 s window
CHARS_PER_TOKEN = 4


def length_grouped_order(
    lengths: Sequence[float], batch_size: int, rng: np.random.Generator, group_batches: int = 50
) -> list[int]:
    """A random order in which each run of ``batch_size`` indices has similar lengths.

    Shuffle, cut into groups of ``group_batches`` batches, sort each group by length (longest
    first), cut it into batches, shuffle the batches: as HF's LengthGroupedSampler, but drawn
    from ``rng`` so that ``ShardSampler`` can make it a function of (seed, epoch).
    """
    order = rng.permutation(len(lengths)).tolist()
    group = batch_size * group_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        ranked = sorted(order[start : start + group], key=lambda i: -lengths[i])
        batches.extend(ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size))
    return [i for b in rng.permutation(len(batches)).tolist() for i in batches[b]]


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


class ShardSampler(Sampler[int]):
    """This process's share of a split, in a fixed order per epoch, startable mid-epoch.

    Training (``shuffle``): a permutation seeded by ``(seed, epoch)``, dealt round-robin to the
    ``world`` processes and padded by wrapping around so that every process takes the same number
    of steps (DDP's gradient all-reduce needs that). Evaluation: the split in order, dealt
    round-robin and never padded, so every clip is scored exactly once; ranks may then hold
    different counts (each needs at least one clip). The order depends on the epoch only, never
    on a running random state, which is what makes the data position resumable.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        lengths: Sequence[float] | None = None,
        batch_size: int = 1,
    ) -> None:
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        # lengths: the training order is grouped into batches of similar length (data.bucket_by_length);
        # each process's batches stay homogeneous because a sorted run spans all `world` batches of a step
        self.lengths, self.batch_size = lengths, batch_size
        self.epoch = 0
        self.start = 0
        """Indices of this epoch's share to skip (set by ``ResumableLoader`` on resume)."""

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """This process's indices for the current epoch."""
        if not self.shuffle:
            return list(range(self.rank, self.size, self.world))
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.lengths is not None:
            order = length_grouped_order(self.lengths, self.batch_size * self.world, rng)
        else:
            order = rng.permutation(self.size).tolist()
        total = math.ceil(self.size / self.world) * self.world
        order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank :: self.world]

    def __len__(self) -> int:
        return math.ceil(self.size / self.world) if self.shuffle else len(range(self.rank, self.size, self.world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])


class ResumableLoader(DataLoader):
    """A DataLoader over a ``ShardSampler`` that saves its position: ``{"epoch", "batches"}`` served.

    Lightning stores ``state_dict()`` of a training loader that has one in every checkpoint and
    calls ``load_state_dict`` on resume (``ambemo.resume.ExactResume`` makes sure it is); the
    next iteration, if it is over the saved epoch, then starts after the batches already trained
    on. The position is applied when the first batch is drawn, not when ``iter()`` is called,
    so a state loaded after the iterator was made still counts. (Lightning does not prefetch
    from loaders with a length: "served" is exactly "trained on" when a step checkpoint is taken.)
    """

    sampler: ShardSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0
        self.resume_at: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skip = 0
        if self.resume_at is not None and self.resume_at["epoch"] == self.sampler.epoch:
            skip = self.resume_at["batches"]
        self.resume_at = None
        self.sampler.start = skip * self.batch_size  # type: ignore[operator]
        self.served = skip  # counts on from the resume point: a second preemption saves the true position
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = dict(state)


@rank_zero_only
def _announce(corpus: Corpus, splits: dict[str, list[Utterance]]) -> None:
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    print(f"[ambemo] data: {corpus.name} from {corpus.source}: {sizes}; {corpus.report.headline()}")
    if corpus.report.skips:
        print(f"[ambemo] data: `ambemo data summary data={corpus.name} ...` lists every skip")


class EmotionDataModule(L.LightningDataModule):
    """Serves train/val/test clips of one corpus to a strategy."""

    def __init__(self, data_cfg: DictConfig, encoder: ClipEncoder, seed: int = 0) -> None:
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
        empty = [split for split in SPLITS if not self.splits[split]]
        if empty:
            sizes = ", ".join(f"{name} {len(rows)}" for name, rows in self.splits.items())
            raise CorpusError(
                f"{self.corpus.source}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
                f'empty ({sizes}). Every run trains, validates and tests: give lines "split": '
                f'"{empty[0]}" (or leave splits out and set data.val_fraction / data.test_fraction)'
            )

    def prior(self) -> torch.Tensor:
        """Mean human distribution of the training split: the global-prior reference predictor."""
        self.setup()
        return torch.tensor([r.distribution for r in self.splits["train"]], dtype=torch.float64).mean(0)

    def _loader(self, split: str, batch_size: int, collate: Callable, shuffle: bool) -> DataLoader:
        self.setup()
        rows = self.splits[split]
        dataset = ClipDataset(rows, self.corpus.audio)  # type: ignore[union-attr]
        trainer = self.trainer  # None outside a Trainer (e.g. a notebook iterating a loader)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if len(dataset) < world:
            raise CorpusError(
                f"{self.corpus.source}: the {split} split has {len(dataset)} clips, fewer than the {world} "  # type: ignore[union-attr]
                "processes: every process needs at least one (raise data.limit_eval/limit_train or use fewer devices)"
            )
        lengths = None
        if shuffle and self.cfg.bucket_by_length:
            seconds = self.corpus.audio.seconds([r.id for r in rows])  # type: ignore[union-attr]
            lengths = estimated_tokens(rows, seconds.tolist(), self.cfg.max_seconds)
        return ResumableLoader(
            dataset,
            batch_size=batch_size,
            sampler=ShardSampler(len(dataset), shuffle, self.seed, rank, world, lengths, batch_size),
            collate_fn=collate,
            num_workers=self.cfg.num_workers,
            # Creating an iterator draws the workers' base seed from this generator; without one it
            # would come from the global RNG, and a resumed run (one extra iterator) would diverge.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, self.encoder.training_batch, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.cfg.eval_batch_size, self.encoder.prompt_batch, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, self.encoder.prompt_batch, shuffle=False)
