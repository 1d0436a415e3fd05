"""The training recipe: compose the config, train, test, write the run folder. Reads top to bottom.

Every run writes ``<out_dir>/<experiment>/<timestamp>/`` (layout and status: ``ambemo.runs``):

- ``config.yaml``       the resolved config (no secrets: keys come from the environment only);
- ``checkpoints/``      ``last.ckpt`` (and ``best-*.ckpt`` by val JS), trainable weights only;
                        ``last.ckpt`` also holds what an exact resume needs (``ambemo.resume``);
- ``metrics.csv``       per-step and per-validation metrics (Lightning's CSVLogger);
- ``wandb/``            the W&B run (offline unless WANDB_API_KEY is set), when logger=wandb;
- ``predictions.jsonl`` test split: ``{"id", "distribution", "target"[, "reasoning", "format_ok"]}``,
  which ``ambemo score predictions.jsonl`` re-scores;
- ``ambiguity.json``    the normalised-entropy threshold of ``ambiguous`` (``ambemo predict``), chosen on
  the validation split with the test weights (``ambemo.inference.ambiguity``);
- ``summary.json``      ``{"status", "test": {...}, "reference": {"prior": {...}, "oracle": {...}}, ...}``
  with the same metric keys as ``ambemo score``; ``status`` is ``finished``, ``fast_dev_run``,
  ``failed`` or ``interrupted`` (``ambemo.runs``).
- ``plots/``            test-split figures and tables (``ambemo.plots``), also logged to W&B.

Only global rank 0 writes files (config, results, the checkpoint, the W&B run). ``trainer.resume``
continues a run in its own folder (see ``ambemo.resume``).

The test split is scored with the weights of the lowest validation JS (``trainer.test_weights=best``,
early stopping on the validation split) or the final ones (``last``, saved as ``last.ckpt`` before
testing); ``summary.json`` names the checkpoint, so ``ambemo predict`` and ``export`` load exactly
the weights that were scored.

A run that fails before writing a checkpoint leaves no folder behind; one that fails or is
interrupted later is marked ``failed`` / ``interrupted`` and can be resumed (``trainer.resume``).
A ``trainer.fast_dev_run`` is marked ``fast_dev_run``: ``latest:`` and the tools skip it. Under
``fast_dev_run`` a ``model.init_from=latest:<experiment>`` with no finished run starts from the
base model (a smoke test checks that the pipeline runs, not what it learns) instead of training
the dependency first.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from ambemo.compat import prepend_logged_rows
from ambemo.config import compose, to_yaml
from ambemo.data.datamodule import EmotionDataModule
from ambemo.errors import RunFolderError, TrainingError
from ambemo.logging_wandb import log_test_results, public_config
from ambemo.metrics.metrics import score_distributions
from ambemo.model.backbone import count_parameters, load_backbone
from ambemo.resume import (
    AtomicCheckpointIO,
    ExactResume,
    PreemptionCheckpoint,
    check_resume_config,
    check_trainable_keys,
    find_resume_checkpoint,
)
from ambemo.runs import (
    CHECKPOINTS,
    CONFIG,
    FAILED,
    FAST_DEV_RUN,
    FINAL_WEIGHTS,
    FINISHED,
    INTERRUPTED,
    LAST,
    checkpoint_files,
    experiment_folder,
    find_checkpoint,
    latest_run,
    load_checkpoint,
    mark_stopped,
    run_dir_of,
    write_summary,
)
from ambemo.strategies import EmotionModule, build_strategy
from ambemo.throughput import ThroughputLog

RUN_DIR_ENV = "AMBEMO_RUN_DIR"  # shared by DDP ranks: Lightning re-launches them with our environment
TABLE_KEYS = ("js", "bc", "r2", "brier", "accuracy", "macro_f1", "format_ok_rate")


def make_run_dir(cfg: DictConfig, resume: Path | None = None) -> Path:
    """``<out_dir>/<experiment>/<timestamp>``, created once and shared with DDP ranks via the environment.

    A resumed run continues in its checkpoint's folder. Processes started by an external launcher
    (torchrun, srun) each get here on their own, so their folder is named after the job instead.
    """
    if os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
    elif resume is not None and (previous := run_dir_of(resume)) is not None:
        run_dir = previous
    else:
        name = launcher_job_name() or datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = experiment_folder(cfg.out_dir, cfg.experiment) / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(
            f"out_dir={cfg.out_dir}: cannot create the run folder {run_dir} ({err.strerror or err}). "
            "Choose a writable out_dir"
        ) from None
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def launcher_job_name() -> str | None:
    """``job-<id>`` when torchrun or srun started several processes of this run, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return None
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        value = os.environ.get(var, "none")
        if value != "none":
            return f"job-{value}"
    raise RuntimeError(
        f"several processes were launched without a job id to name their shared run folder: "
        f"give torchrun --rdzv-id=<unique id>, or export {RUN_DIR_ENV}=<folder> to every process"
    )


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
                config=public_config(cfg),
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


def resolve_init(cfg: DictConfig) -> Path | None:
    """The checkpoint ``model.init_from`` names, training a ``latest:<experiment>`` dependency if needed."""
    spec = cfg.model.init_from
    if not spec:
        return None
    if not spec.startswith("latest:"):
        checkpoint = find_checkpoint(spec)
        load_checkpoint(checkpoint, mmap=True)  # a truncated or foreign file fails before the run folder exists
        return checkpoint
    name = spec.partition(":")[2]
    # Seed for seed: seed s starts from the start's seed-s run, so runs over several seeds are
    # independent chains, and a paired comparison against the start compares like with like.
    finished = latest_run(cfg.out_dir, name, seed=cfg.seed)
    if finished:
        print(f"[ambemo] model.init_from={spec}: {finished}")
        return find_checkpoint(finished)
    if cfg.trainer.fast_dev_run:
        print(
            f"[ambemo] {cfg.experiment} starts from {name}, which has no finished run in {cfg.out_dir}: "
            "trainer.fast_dev_run starts from the base model instead of training it first"
        )
        return None
    print(
        f"[ambemo] {cfg.experiment} starts from {name}, which has no finished run with seed {cfg.seed} in "
        f"{cfg.out_dir}: training it first"
    )
    dependency = compose(name, [])
    # the same corpus settings (e.g. a test's small corpus) when it trains on the same corpus;
    # a cross-corpus evaluation's dependency keeps its own training corpus
    shared = ("data", "out_dir", "seed", "logger") if dependency.data.name == cfg.data.name else ("out_dir", "seed")
    for key in shared:
        dependency[key] = cfg[key]
    for key in ("accelerator", "devices", "num_nodes", "distributed", "precision", "torch_threads"):
        dependency.trainer[key] = cfg.trainer[key]
    outer = os.environ.pop(RUN_DIR_ENV, None)
    try:
        return find_checkpoint(train(dependency))
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
        if outer:
            os.environ[RUN_DIR_ENV] = outer


def load_weights(module: EmotionModule, checkpoint: Path) -> None:
    """Load a checkpoint's weights into the module; every trainable tensor must be covered."""
    state = load_checkpoint(checkpoint)["state_dict"]
    check_trainable_keys(module, state, checkpoint)
    module.load_state_dict(state, strict=False)


def keep_earlier_metrics(trainer: L.Trainer, run_dir: Path, resume: Path) -> None:
    """Carry the rows of ``metrics.csv`` logged before the resume point into the resumed run's.

    Lightning's CSV logger starts a fresh file where one exists. Rows that the interrupted run
    logged after its checkpoint are dropped: the resumed run logs those steps again.
    """
    previous = run_dir / "metrics.csv"
    if not previous.exists():
        return
    # mmap: only the step is needed, not the weights read into memory
    step = load_checkpoint(resume, mmap=True)["global_step"]
    with open(previous, newline="") as f:
        rows = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f) if int(r["step"]) < step]
    logger = next(x for x in trainer.loggers if isinstance(x, CSVLogger))
    prepend_logged_rows(logger, rows)  # creating the writer removes the old file; these rows go first


def make_callbacks(cfg: DictConfig, run_dir: Path, resume: Path | None) -> list[Callback]:
    """Checkpointing (best by val JS, last every epoch / N steps / on preemption), exact resume, progress."""
    folder = run_dir / CHECKPOINTS
    every = cfg.trainer.checkpoint_every_n_steps
    return [
        FiniteLoss(),
        ExactResume(cfg.seed, resume),
        # best-*.ckpt by val JS, and last.ckpt every epoch. (One callback with save_last=True
        # would only refresh last.ckpt when the best improves.)
        ModelCheckpoint(dirpath=folder, filename="best-{epoch}", monitor="val/js", mode="min"),
        ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False),
        # Lightning takes either epoch or step triggers per callback: the mid-epoch one is separate.
        *(
            [ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False, every_n_train_steps=every)]
            if every
            else []
        ),
        PreemptionCheckpoint(folder / LAST),
        LearningRateMonitor(logging_interval="step"),
        ThroughputLog(),  # train/step_seconds, train/tokens_per_s, train/mfu
        TQDMProgressBar(refresh_rate=10),
    ]


class FiniteLoss(Callback):
    """Stop training at the first non-finite loss, before its backward pass touches the weights.

    A NaN loss would otherwise train on to NaN weights and write NaN scores as if they were results.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss.detach()).all():
            raise TrainingError(
                f"training: the loss is {float(loss.detach().float().sum())} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}). Lower strategy.lr, check the loss weights "
                "(strategy.*_weight, strategy.beta) and the data"
            )


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table: one line per predictor, the headline metrics as columns."""
    keys = [k for k in TABLE_KEYS if any(k in r for r in rows.values())]
    lines = [f"{'':<10}" + "".join(f"{k:>16}" for k in keys)]
    for name, values in rows.items():
        cells = "".join(f"{values[k]:>16.4f}" if k in values else f"{'-':>16}" for k in keys)
        lines.append(f"{name:<10}{cells}")
    return "\n".join(lines)


def train(cfg: DictConfig) -> Path:
    """Train and test one configured run; returns its run folder.

    Everything that can be checked without training (the resume checkpoint, the starting weights)
    is checked before the run folder is made; a run that fails later is cleaned up or marked
    (``conclude_stopped``).
    """
    started = time.time()
    resume = find_resume_checkpoint(cfg)
    if resume is not None:
        check_resume_config(cfg, resume)
    init = resolve_init(cfg)
    given = bool(os.environ.get(RUN_DIR_ENV))  # a folder made by someone else (a sweep) is theirs
    run_dir = make_run_dir(cfg, resume)
    try:
        run(cfg, run_dir, resume, init, started)
    except BaseException as err:
        if rank_zero_only.rank == 0:
            conclude_stopped(cfg, run_dir, err, keep=given or resume is not None)
        if isinstance(err, SystemExit) and not isinstance(err, SIGTERMException):
            raise KeyboardInterrupt from err  # Lightning's exit after Ctrl-C: an interruption to callers
        raise
    finally:
        if not given:  # the next run in this process (a notebook, a test) gets a folder of its own
            os.environ.pop(RUN_DIR_ENV, None)
    return run_dir


def conclude_stopped(cfg: DictConfig, run_dir: Path, err: BaseException, keep: bool) -> None:
    """After a failure or an interruption: remove a run folder this run made that holds no checkpoint
    (nothing to resume or inspect but the error, which is printed), else mark it ``failed`` /
    ``interrupted``."""
    interrupted = isinstance(err, KeyboardInterrupt | SystemExit | SIGTERMException)
    state = INTERRUPTED if interrupted else FAILED
    reason = "interrupted (Ctrl-C or a signal)" if interrupted else f"{type(err).__name__}: {err}".splitlines()[0]
    if not keep and not checkpoint_files(run_dir) and run_dir.is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run_dir.parent.rmdir()  # the experiment's folder too, if this was its only run
        print(f"[ambemo] the run {state} before its first checkpoint: removed its folder {run_dir}")
        return
    mark_stopped(run_dir, state, reason, experiment=cfg.experiment)
    print(f"[ambemo] the run {state}: marked in {run_dir}/summary.json; continue it with trainer.resume={run_dir}")


def run(cfg: DictConfig, run_dir: Path, resume: Path | None, init: Path | None, started: float) -> None:
    """Train, test and write the results into ``run_dir``."""
    if cfg.trainer.torch_threads:
        torch.set_num_threads(cfg.trainer.torch_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone = load_backbone(cfg.model, cfg.data.classes)
    module = build_strategy(cfg, backbone)
    if init is not None:
        load_weights(module, init)
        print(f"[ambemo] starting from {init}")
    datamodule = EmotionDataModule(cfg.data, module.encoder, seed=cfg.seed)
    trainable, total = count_parameters(backbone.model)

    t = cfg.trainer
    trainer = L.Trainer(
        default_root_dir=run_dir,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.distributed,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        # a module that steps its own optimizer (GRPO) clips its gradients itself
        gradient_clip_val=(t.gradient_clip_val or None) if module.automatic_optimization else None,
        accumulate_grad_batches=t.accumulate_grad_batches if module.automatic_optimization else 1,
        fast_dev_run=t.fast_dev_run,
        limit_val_batches=t.limit_val_batches,
        logger=make_loggers(cfg, run_dir),
        callbacks=make_callbacks(cfg, run_dir, resume),
        plugins=[AtomicCheckpointIO()],
        # each process's share comes from EmotionDataModule (no padded duplicates in evaluation)
        use_distributed_sampler=False,
        enable_model_summary=False,
        deterministic=False,
    )
    if trainer.is_global_zero:
        if resume is None:  # a resumed run keeps its config.yaml until the continuation has finished
            (run_dir / CONFIG).write_text(to_yaml(cfg))
        print(f"[ambemo] run folder: {run_dir}")
        print(f"[ambemo] trainable parameters: {trainable:,} of {total:,}")
        if resume is not None:
            print(f"[ambemo] resuming from {resume}")
            keep_earlier_metrics(trainer, run_dir, resume)
    if resume is not None:
        module.before_resume()
    try:
        if t.max_epochs != 0:  # max_epochs=0: evaluation only (zero-shot, cross-corpus)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        test_ckpt = tested_checkpoint(trainer, cfg, run_dir)
        trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False, weights_only=True)

        if trainer.is_global_zero:
            # The test weights are loaded now: choose the ambiguity threshold on the validation split.
            from ambemo.inference.ambiguity import calibrate

            device = trainer.strategy.root_device  # Lightning moved the module back to the CPU after testing
            module.to(device).eval()
            calibrate(module.read, datamodule.val_dataloader(), device, t.precision, run_dir)
            weights = Path(test_ckpt).name if test_ckpt else FINAL_WEIGHTS
            if resume is not None:
                (run_dir / CONFIG).write_text(to_yaml(cfg))
            write_results(cfg, run_dir, module, datamodule, weights, trainable, total, time.time() - started, init)
            log_test_results(cfg, run_dir, module.test_rows)  # plots/ and the W&B table and images
    finally:
        if cfg.logger.name == "wandb" and trainer.is_global_zero:
            # Close this run's W&B run, also when training failed: a later run in the same process
            # (a dependency trained first, a notebook, a sweep) would otherwise log into it.
            import wandb

            wandb.finish()


def tested_checkpoint(trainer: L.Trainer, cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint that scores the test split: the best by val JS (``test_weights=best``, when
    validation ran), else the final weights, saved now as ``last.ckpt`` so that the file holds
    exactly what was tested (the epoch-end ``last.ckpt`` may be older when validation, which
    triggers it, did not run in the last epoch). None: nothing was trained (or a fast-dev run)."""
    t = cfg.trainer
    if t.max_epochs == 0 or t.fast_dev_run:
        return None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""  # type: ignore[union-attr]
    if t.test_weights == "best" and best:
        return best
    final = run_dir / CHECKPOINTS / LAST
    trainer.save_checkpoint(final)
    return str(final)


def write_results(
    cfg: DictConfig,
    run_dir: Path,
    module: EmotionModule,
    datamodule: EmotionDataModule,
    test_weights: str,
    trainable: int,
    total: int,
    seconds: float,
    init: Path | None = None,
) -> None:
    """predictions.jsonl, summary.json and the printed table (rank 0 only)."""
    test = {k: float(v) for k, v in module.test_results.items()}
    bad = [k for k in ("js", "bc", "brier") if not math.isfinite(test[k])]  # (R2 is NaN on constant targets)
    if bad:
        raise TrainingError(
            f"{cfg.experiment}: the test scores {', '.join(bad)} are not finite: the model's outputs are. "
            "Check the settings (strategy.lr, the loss weights) and retrain"
        )
    with open(run_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in module.test_rows:
            f.write(json.dumps(row) + "\n")
    reference = reference_scores(datamodule)
    summary = {
        "status": FAST_DEV_RUN if cfg.trainer.fast_dev_run else FINISHED,
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "run_dir": str(run_dir),
        "test": test,
        "reference": reference,
        "js_variant": "Jensen-Shannon divergence, log base 2 (bits)",
        "test_weights": test_weights,
        "init_from": str(init) if init is not None else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "wall_seconds": round(seconds, 1),
    }
    write_summary(run_dir, summary)
    print(f"\n[ambemo] {cfg.experiment}: test split ({int(test['n'])} clips, {test_weights}), {seconds:.0f} s")
    print(format_table({"model": test, **reference}))
    if "prior" in reference:
        ratio = test["js"] / reference["prior"]["js"]
        print(f"[ambemo] model JS / prior JS = {ratio:.3f}")
    print(f"[ambemo] wrote {run_dir}/summary.json and predictions.jsonl")
    if cfg.trainer.fast_dev_run:
        print("[ambemo] a fast_dev_run (one batch per split): marked as such; latest: and the tools skip it")
