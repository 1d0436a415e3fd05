"""One utterance as a model consumes it, and what turns a batch of them into model inputs.

Data-layer types: the DataModule yields ``Clip`` objects and hands each batch to a
``ClipEncoder``; the model layer provides the encoder (``ambemo.model.inputs.PromptEncoder``),
so the data layer never imports the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass
class Clip:
    """One utterance as the model sees it."""

    id: str
    audio: np.ndarray
    """Mono float32 waveform at the backbone's sample rate."""
    transcript: str | None
    target: torch.Tensor | None
    """Human vote distribution over the classes, shape (C,); None for unlabelled audio (``ambemo predict``)."""
    cot: str | None = None
    """Curated reasoning ending with the answer slot (training target), if any."""
    latent: torch.Tensor | None = None
    """For synthetic data: the distribution the clip was generated from (the oracle)."""


class ClipEncoder(Protocol):
    """Turns clips into a model's batches: what ``EmotionDataModule``'s loaders call."""

    sample_rate: int
    """The audio rate the model expects; the corpus cache resamples to it."""

    def training_batch(self, clips: Sequence[Clip]) -> dict[str, torch.Tensor]:
        """Prompt + teacher-forced target ids and the read-out positions, for training."""
        ...

    def prompt_batch(self, clips: Sequence[Clip]) -> dict[str, torch.Tensor]:
        """Left-padded prompts to generate from, for evaluation."""
        ...
