"""The training recipe: compose the config, train, test, write the run folder. Reads top to bottom.

Every run writes ``<out_dir>/<experiment>/<timestamp>/``:

- ``config.yaml``       the resolved config (no secrets: keys come from the environment only);
- ``checkpoints/``      ``last.ckpt`` (and ``best-*.ckpt`` by val JS), trainable weights only;
- ``metrics.csv``       per-step and per-validation metrics (Lightning's CSVLogger);
- ``wandb/``            the W&B run (offline unless WANDB_API_KEY is set), when logger=wandb;
- ``predictions.jsonl`` test split: ``{"id", "distribution", "target"[, "reasoning", "format_ok"]}``,
  which ``ambemo score predictions.jsonl`` re-scores;
- ``summary.json``      ``{"test": {...}, "reference": {"prior": {...}, "oracle": {...}}, ...}`` with
  the same metric keys as ``ambemo score``.

The test split is scored with the final weights (no selection on validation), as in the paper.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

from ambemo.config import to_yaml
from ambemo.data.datamodule import EmotionDataModule
from ambemo.metrics.metrics import score_distributions
from ambemo.model.backbone import count_parameters, load_backbone
from ambemo.strategies import EmotionModule, build_strategy

RUN_DIR_ENV = "AMBEMO_RUN_DIR"  # shared by DDP ranks: Lightning re-launches them with our environment
TABLE_KEYS = ("js", "bc", "r2", "brier", "accuracy", "macro_f1", "format_ok_rate")


def make_run_dir(cfg: DictConfig) -> Path:
    """``<out_dir>/<experiment>/<timestamp>``, created once and shared with DDP ranks via the environment."""
    if os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(cfg.out_dir) / cfg.experiment / stamp
        os.environ[RUN_DIR_ENV] = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def make_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
    if cfg.logger.name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        mode = cfg.logger.mode
        offline = mode == "offline" or (mode == "auto" and not os.environ.get("WANDB_API_KEY"))
        loggers.append(
            WandbLogger(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                name=f"{cfg.experiment}-{run_dir.name}",
                save_dir=str(run_dir),
                offline=offline,
                tags=list(cfg.logger.tags),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def reference_scores(datamodule: EmotionDataModule) -> dict[str, dict[str, float]]:
    """Test-split scores of the global prior (train mean) and, where known, the latent oracle."""
    rows = datamodule.splits["test"]
    target = torch.tensor([r.distribution for r in rows], dtype=torch.float64)
    scores = {"prior": score_distributions(datamodule.prior().expand_as(target), target)}
    if all(r.latent is not None for r in rows):
        scores["oracle"] = score_distributions(torch.tensor([r.latent for r in rows], dtype=torch.float64), target)
    return scores


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table: one line per predictor, the headline metrics as columns."""
    keys = [k for k in TABLE_KEYS if any(k in r for r in rows.values())]
    lines = [f"{'':<10}" + "".join(f"{k:>16}" for k in keys)]
    for name, values in rows.items():
        cells = "".join(f"{values[k]:>16.4f}" if k in values else f"{'-':>16}" for k in keys)
        lines.append(f"{name:<10}{cells}")
    return "\n".join(lines)


def train(cfg: DictConfig) -> Path:
    """Train and test one configured run; returns its run folder."""
    started = time.time()
    if cfg.trainer.torch_threads:
        torch.set_num_threads(cfg.trainer.torch_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = make_run_dir(cfg)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))

    backbone = load_backbone(cfg.model, cfg.data.classes)
    module = build_strategy(cfg, backbone)
    datamodule = EmotionDataModule(cfg.data, module.encoder, seed=cfg.seed)
    trainable, total = count_parameters(backbone.model)

    t = cfg.trainer
    trainer = L.Trainer(
        default_root_dir=run_dir,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val or None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        fast_dev_run=t.fast_dev_run,
        limit_val_batches=t.limit_val_batches,
        logger=make_loggers(cfg, run_dir),
        callbacks=[
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best-{epoch}",
                monitor="val/js",
                mode="min",
                save_last=True,
            ),
            LearningRateMonitor(logging_interval="step"),
            TQDMProgressBar(refresh_rate=10),
        ],
        enable_model_summary=False,
        deterministic=False,
    )
    if trainer.is_global_zero:
        print(f"[ambemo] run folder: {run_dir}")
        print(f"[ambemo] trainable parameters: {trainable:,} of {total:,}")
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)

    if trainer.is_global_zero:
        write_results(cfg, run_dir, module, datamodule, trainable, total, time.time() - started)
    return run_dir


def write_results(
    cfg: DictConfig,
    run_dir: Path,
    module: EmotionModule,
    datamodule: EmotionDataModule,
    trainable: int,
    total: int,
    seconds: float,
) -> None:
    """predictions.jsonl, summary.json and the printed table (rank 0 only)."""
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in module.test_rows:
            f.write(json.dumps(row) + "\n")
    test = {k: float(v) for k, v in module.test_results.items()}
    reference = reference_scores(datamodule)
    summary = {
        "experiment": cfg.experiment,
        "run_dir": str(run_dir),
        "test": test,
        "reference": reference,
        "js_variant": "Jensen-Shannon divergence, log base 2 (bits)",
        "trainable_parameters": trainable,
        "total_parameters": total,
        "wall_seconds": round(seconds, 1),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n[ambemo] {cfg.experiment}: test split ({int(test['n'])} clips), {seconds:.0f} s")
    print(format_table({"model": test, **reference}))
    if "prior" in reference:
        ratio = test["js"] / reference["prior"]["js"]
        print(f"[ambemo] model JS / prior JS = {ratio:.3f}")
    print(f"[ambemo] wrote {run_dir}/summary.json and predictions.jsonl")
