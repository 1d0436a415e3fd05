"""The LightningDataModule: audio clips with human vote distributions and curated reasoning.

``prepare_data`` makes sure the corpus exists (the built-in one is generated on first use, on
one process only); ``setup`` reads the manifest; the loaders turn clips into model inputs with
the strategy's ``PromptEncoder`` (teacher-forced targets for training, left-padded prompts for
evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from ambemo.data.manifest import Utterance, read_manifest
from ambemo.model.inputs import Clip, PromptEncoder


def load_audio(path: Path, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Mono float32 waveform, truncated to ``max_seconds``.

    The built-in corpus is written at the model's rate; other rates are an error here (issue 3's
    readers resample with torchaudio before the data reaches this point).
    """
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for unreadable files
        raise ValueError(f"{path}: cannot read audio ({err})") from None
    if rate != sample_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    return audio.mean(axis=1)[: int(max_seconds * sample_rate)]


class ClipDataset(Dataset):
    """Utterances of one split, read lazily from disk."""

    def __init__(self, rows: list[Utterance], sample_rate: int, max_seconds: float) -> None:
        self.rows = rows
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Clip:
        row = self.rows[index]
        return Clip(
            id=row.id,
            audio=load_audio(row.audio, self.sample_rate, self.max_seconds),
            transcript=row.transcript,
            target=torch.tensor(row.distribution, dtype=torch.float32),
            cot=row.cot,
            latent=torch.tensor(row.latent, dtype=torch.float32) if row.latent is not None else None,
        )


class EmotionDataModule(L.LightningDataModule):
    """Serves train/val/test clips of one corpus to a strategy."""

    def __init__(self, data_cfg: DictConfig, encoder: PromptEncoder, seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.encoder = encoder
        self.seed = seed
        self.splits: dict[str, list[Utterance]] = {}

    @property
    def manifest_path(self) -> Path:
        return Path(self.cfg.root) / "manifest.jsonl"

    def prepare_data(self) -> None:
        if self.cfg.name == "synthetic":
            from ambemo.data.synthetic import generate_corpus

            generate_corpus(
                self.cfg.root,
                seed=self.cfg.seed,
                n_train=self.cfg.n_train,
                n_val=self.cfg.n_val,
                n_test=self.cfg.n_test,
                max_seconds=self.cfg.max_seconds,
            )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        rows = read_manifest(self.manifest_path, self.cfg.classes)
        for split in ("train", "val", "test"):
            chosen = [r for r in rows if r.split == split]
            limit = self.cfg.limit_train if split == "train" else self.cfg.limit_eval
            self.splits[split] = chosen[:limit] if limit else chosen

    def prior(self) -> torch.Tensor:
        """Mean human distribution of the training split: the global-prior reference predictor."""
        self.setup()
        return torch.tensor([r.distribution for r in self.splits["train"]], dtype=torch.float64).mean(0)

    def _loader(self, split: str, batch_size: int, collate: Callable, shuffle: bool) -> DataLoader:
        if not self.splits.get(split):
            raise ValueError(f"{self.manifest_path}: the {split} split is empty")
        dataset = ClipDataset(self.splits[split], self.encoder.sample_rate, self.cfg.max_seconds)
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
