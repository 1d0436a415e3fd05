"""A plugin from outside the package: a toy strategy and a toy corpus (tests/test_extension.py).

It registers through the public mechanism only: ``AMBEMO_PLUGINS=toy_ambemo_plugin`` imports this
module, and ``AMBEMO_CONFIG_PATH`` points at this folder, which holds the building blocks
(``conf/strategy/toy_sft.yaml``, ``conf/data/toy_subset.yaml``) and ``experiments/toy_sft.yaml``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig

from ambemo.data.corpus import CorpusReader
from ambemo.data.manifest import Utterance, read_manifest
from ambemo.data.skips import SkipReport
from ambemo.registry import CORPORA, STRATEGIES
from ambemo.strategies.sft import SFTModule

#: Prefix of the toy corpus's utterance ids, so predictions show which corpus they came from.
TOY_PREFIX = "toy-"


@STRATEGIES.register("toy_sft")
class ToySFTModule(SFTModule):
    """SFT with its loss halved, logged as ``train/toy_loss``."""

    steps_taken: ClassVar[int] = 0
    """Training steps run by any instance: tells a test this class did the training."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = 0.5 * super().training_step(batch, batch_idx)
        self.log("train/toy_loss", loss, batch_size=batch["target"].shape[0])
        ToySFTModule.steps_taken += 1
        return loss


def read_toy_subset(source: Path, cfg: DictConfig, report: SkipReport) -> list[Utterance]:
    """Every other utterance of a built-in corpus's manifest (every line has its split), renamed
    ``toy-<id>``. The reader names no settings class: ``cfg`` has the settings every corpus has."""
    rows = read_manifest(source, list(cfg.classes), report, cfg.seed)
    return [replace(row, id=TOY_PREFIX + row.id) for row in rows[::2]]


CORPORA.register("toy_subset")(CorpusReader(read_toy_subset, source=lambda cfg: Path(cfg.root) / "manifest.jsonl"))
