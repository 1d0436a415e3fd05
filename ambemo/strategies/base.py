"""What every strategy shares: the backbone, evaluation (reason, then read out), metrics, optimizer.

A strategy subclasses ``EmotionModule`` and writes ``training_step``; validation and test are
the same for all of them: generate the reasoning from the prompt, read p_hat at the answer
slot, and score it against the human distribution.

Assumptions:
- Batches come from ``EmotionDataModule`` with this module's ``encoder``.
- Checkpoints hold only trainable weights (the LoRA adapters, or all weights when fully
  fine-tuning): the frozen base is re-loaded from ``model.path``, never duplicated on disk.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from omegaconf import DictConfig

from ambemo.metrics.metrics import DistributionMetrics
from ambemo.model.backbone import Backbone
from ambemo.model.inputs import PromptEncoder
from ambemo.model.readout import Reading, read_distribution


def warmup_cosine(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup_ratio`` of the steps, then cosine to ``min_ratio``."""
    warmup = max(1, round(warmup_ratio * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EmotionModule(L.LightningModule):
    """Base LightningModule: a backbone plus shared evaluation and optimisation."""

    def __init__(self, cfg: DictConfig, backbone: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.model = backbone.model
        self.classes = list(cfg.data.classes)
        self.use_cot = bool(cfg.strategy.use_cot)
        self.encoder = PromptEncoder(backbone, self.classes, self.use_cot, cache=bool(cfg.data.cache_encoded))
        self.val_metrics = DistributionMetrics(len(self.classes))
        self.test_metrics = DistributionMetrics(len(self.classes))
        self.test_rows: list[dict] = []
        # Checkpoints carry only trainable weights; the frozen rest comes from the base model.
        self.strict_loading = False

    # ---- evaluation -------------------------------------------------------------------------

    def read(self, batch: dict) -> Reading:
        return read_distribution(self.backbone, batch, self.use_cot, self.cfg.strategy.max_new_tokens)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        reading = self.read(batch)
        self.val_metrics.update(reading.distribution, batch["target"], reading.format_ok)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        reading = self.read(batch)
        self.test_metrics.update(reading.distribution, batch["target"], reading.format_ok)
        for i, uid in enumerate(batch["ids"]):
            row = {
                "id": uid,
                "distribution": dict(zip(self.classes, reading.distribution[i].tolist(), strict=True)),
                "target": dict(zip(self.classes, batch["target"][i].tolist(), strict=True)),
            }
            if reading.reasoning is not None:
                row["reasoning"] = reading.reasoning[i]
                row["format_ok"] = bool(reading.format_ok[i])  # type: ignore[index]
            self.test_rows.append(row)

    def on_test_epoch_start(self) -> None:
        self.test_rows = []

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metrics("test", self.test_metrics)
        if self.trainer.world_size > 1:
            # Every rank scored its shard; rank 0 writes predictions.jsonl, so collect them all.
            # A distributed sampler pads with repeated clips: keep each id once.
            shards: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shards, self.test_rows)
            unique = {row["id"]: row for shard in shards for row in shard}
            self.test_rows = list(unique.values())

    def _log_metrics(self, split: str, metrics: DistributionMetrics) -> dict[str, float]:
        values = metrics.compute()
        metrics.reset()
        self.log_dict({f"{split}/{k}": float(v) for k, v in values.items()}, sync_dist=False)
        return values

    # ---- optimisation -----------------------------------------------------------------------

    def configure_optimizers(self) -> dict:
        s = self.cfg.strategy
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, s.warmup_ratio, s.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"model.{name}" for name, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
