"""Training strategies: one LightningModule each over the shared backbone (``base.EmotionModule``)."""

from __future__ import annotations

from omegaconf import DictConfig

from ambemo.model.backbone import Backbone
from ambemo.strategies.base import EmotionModule
from ambemo.strategies.dpo import DPOModule
from ambemo.strategies.grpo import GRPOModule
from ambemo.strategies.sft import SFTModule

__all__ = ["STRATEGIES", "EmotionModule", "build_strategy"]

STRATEGIES: dict[str, type[EmotionModule]] = {"sft": SFTModule, "dpo": DPOModule, "grpo": GRPOModule}


def build_strategy(cfg: DictConfig, backbone: Backbone) -> EmotionModule:
    """The LightningModule named by ``cfg.strategy.name``."""
    return STRATEGIES[cfg.strategy.name](cfg, backbone)
