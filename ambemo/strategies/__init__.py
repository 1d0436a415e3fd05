"""Training strategies: one LightningModule each over the shared backbone (``base.EmotionModule``).

Importing this package registers the built-in strategies in ``ambemo.registry.STRATEGIES`` (each
module registers its class under its ``strategy.name``); README "Adding a strategy" shows one
added from outside the package.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ambemo.model.backbone import Backbone
from ambemo.registry import STRATEGIES
from ambemo.strategies import dpo, grpo, sft  # noqa: F401  (registers the built-in strategies)
from ambemo.strategies.base import EmotionModule

__all__ = ["STRATEGIES", "EmotionModule", "build_strategy"]


def build_strategy(cfg: DictConfig, backbone: Backbone) -> EmotionModule:
    """The LightningModule registered under ``cfg.strategy.name``."""
    module: EmotionModule = STRATEGIES[cfg.strategy.name](cfg, backbone)
    return module
