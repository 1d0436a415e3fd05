"""Exact, preemption-safe resume: what a checkpoint needs beyond Lightning's defaults.

Lightning saves and restores the weights, the optimizer, the LR scheduler and the loop
counters. For a resumed run to reproduce the losses of an uninterrupted one *exactly*, more
must come back, and a checkpoint must never be half-written:

- the data position: ``EmotionDataModule``'s training loader records (epoch, batches served),
  which Lightning stores with the fit loop; ``ExactResume`` hands it back (``ambemo.data.datamodule``);
- the random state of every process (torch CPU and CUDA, numpy, Python): dropout, reasoning
  dropout and rollout sampling draw from it (``ExactResume``, one entry per rank);
- on-policy strategies' reference policy: the weights training *started* from, not the
  checkpoint's (``ambemo.train`` snapshots it before the restore);
- a stop on SIGTERM / SIGUSR1 at the next step boundary with a checkpoint taken exactly there
  (``PreemptionCheckpoint``), written atomically (``AtomicCheckpointIO``).

``trainer.resume=<checkpoint | run folder | auto>`` picks the checkpoint (``find_resume_checkpoint``);
the run continues in the checkpoint's run folder, with that run's own config: ``ambemo train
trainer.resume=RUN`` alone starts from RUN's ``config.yaml`` (``compose_resumed``), and a config
that differs from it in what is trained (another experiment, objective, data or model) is refused
(``check_resume_config``), since it would continue a different training in that run's folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ambemo.compat import collect_rng_states, set_rng_states
from ambemo.config import GROUPS, ConfigError, apply_group, apply_overrides
from ambemo.errors import CheckpointError, RunFolderError
from ambemo.runs import (
    CONFIG,
    FAILED,
    INTERRUPTED,
    is_run_folder,
    last_checkpoint,
    load_checkpoint,
    read_config,
    run_dir_of,
    run_folders,
    status,
)

#: What a resumed run may set differently from its run's ``config.yaml``: where and on what it runs,
#: and how it logs; not what it trains. (``model.init_from``: the checkpoint's weights replace
#: the starting ones anyway.)
MAY_DIFFER_ON_RESUME = (
    "trainer.resume",
    "out_dir",
    "logger",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.distributed",
    "trainer.accelerator",
    "trainer.torch_threads",
    "data.num_workers",
    "model.init_from",
)


def resumed_run_folder(spec: str | None) -> Path | None:
    """The run folder ``trainer.resume=spec`` names (a run folder, or a checkpoint inside one);
    None for ``auto``, nothing, or a checkpoint outside any run folder."""
    if not spec or spec in ("auto", "null", "None"):
        return None
    path = Path(spec)
    return run_dir_of(last_checkpoint(path) if path.is_dir() else path)  # as find_resume_checkpoint reads it


def compose_resumed(overrides: list[str]) -> DictConfig | None:
    """The config of ``ambemo train trainer.resume=RUN [key=value ...]`` when it names no experiment
    or building block: RUN's saved ``config.yaml`` with the overrides applied (None otherwise, and
    the command composes as usual)."""
    pairs = [item.partition("=")[::2] for item in overrides]
    specs = [value for key, value in pairs if key == "trainer.resume"]
    if not specs or any(key == "experiment" for key, _ in pairs):
        return None
    run_dir = resumed_run_folder(specs[-1])
    if run_dir is None:
        return None
    cfg = read_config(run_dir)
    for group, option in ((k, v) for k, v in pairs if k in GROUPS):  # e.g. logger=csv
        cfg = apply_group(cfg, group, option)
    cfg = apply_overrides(cfg, [f"{k}={v}" for k, v in pairs if k not in GROUPS])
    print(f"[ambemo] resuming {cfg.experiment} with the run's own config ({run_dir / CONFIG})")
    return cfg


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_differences(cfg: DictConfig, saved: DictConfig) -> list[str]:
    """Keys (``a.b``) whose values differ between two run configs, less ``MAY_DIFFER_ON_RESUME``."""
    ours = _leaves(OmegaConf.to_container(cfg, resolve=True))
    theirs = _leaves(OmegaConf.to_container(saved, resolve=True))
    may_differ = [(a, a + ".") for a in MAY_DIFFER_ON_RESUME]
    return sorted(
        key
        for key in set(ours) | set(theirs)
        if ours.get(key) != theirs.get(key) and not any(key == a or key.startswith(dot) for a, dot in may_differ)
    )


def check_resume_config(cfg: DictConfig, checkpoint: Path) -> None:
    """Refuse to resume a run with a config that trains something else than the run did.

    Without this, ``ambemo train trainer.resume=RUN`` composed the default experiment and went on
    training *it* from the run's checkpoint, in the run's folder, over the run's metrics."""
    run_dir = run_dir_of(checkpoint)
    if run_dir is None:
        return  # a checkpoint outside a run folder: nothing to compare with
    try:
        saved = read_config(run_dir)
    except RunFolderError as err:
        raise ConfigError(f"trainer.resume={cfg.trainer.resume}: {err}") from None
    differences = config_differences(cfg, saved)
    if not differences:
        return
    shown = ", ".join(
        f"{k} ({OmegaConf.select(cfg, k)!r} here, {OmegaConf.select(saved, k)!r} in the run)" for k in differences[:6]
    )
    more = f" and {len(differences) - 6} more" if len(differences) > 6 else ""
    raise ConfigError(
        f"trainer.resume={cfg.trainer.resume}: this config differs from the run's ({run_dir / CONFIG}) in "
        f"{shown}{more}. Resuming would continue another training in that run's folder. Give "
        f"trainer.resume={run_dir} without an experiment to resume with the run's own config, or drop the "
        "differing overrides"
    )


def trainable_keys(module: torch.nn.Module) -> set[str]:
    """State-dict keys of the trainable weights (what a trimmed checkpoint must contain)."""
    return {f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad}  # type: ignore[union-attr]


def check_trainable_keys(module: torch.nn.Module, state: dict, source: Path | str) -> None:
    """Raise if ``state`` misses a trainable tensor of ``module`` or holds a key it does not have.

    Checkpoints carry only the trainable weights (``EmotionModule.on_save_checkpoint``), so they
    are loaded non-strictly; this is the check that non-strict loading would otherwise skip.
    """
    missing = sorted(trainable_keys(module) - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this model: {len(missing)} trainable tensors missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Was it trained with "
            "the same model.* settings (size, finetune, LoRA rank)?"
        )


def find_resume_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint ``trainer.resume`` names: a file, a run folder's ``checkpoints/last.ckpt``, or
    ``auto``: the newest unfinished (no summary, ``failed`` or ``interrupted``) run of this experiment
    under ``out_dir`` that has one (None if none). The checkpoint is read once here, so a truncated
    or foreign file stops the run before anything of the run folder is touched."""
    spec = cfg.trainer.resume
    if not spec:
        return None
    if spec == "auto":
        candidates = [
            last_checkpoint(run)
            for run in run_folders(cfg.out_dir, cfg.experiment)
            if last_checkpoint(run).is_file() and _resumable(run)
        ]
        if not candidates:
            print(f"[ambemo] trainer.resume=auto: no unfinished {cfg.experiment} run in {cfg.out_dir}: starting fresh")
            return None
        checkpoint = max(candidates, key=lambda c: c.stat().st_mtime)
        print(f"[ambemo] trainer.resume=auto: {checkpoint}")
    else:
        path = Path(spec)
        checkpoint = last_checkpoint(path) if path.is_dir() else path
        if not checkpoint.is_file():
            hint = "" if not path.is_dir() or is_run_folder(path) else " (and it is not a run folder)"
            raise CheckpointError(
                f"trainer.resume={spec}: no checkpoint at {checkpoint}{hint}. "
                "Give a .ckpt file, a run folder with checkpoints/last.ckpt, or auto"
            )
    try:
        load_checkpoint(checkpoint, mmap=True)
    except CheckpointError as err:
        raise CheckpointError(f"trainer.resume={spec}: {err}") from None
    return checkpoint


def _resumable(run_dir: Path) -> bool:
    try:
        return status(run_dir) in (None, FAILED, INTERRUPTED)
    except RunFolderError:
        return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its target, flushes it to disk, then renames it into place.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp folder; when that is another filesystem (a node's local /tmp, runs on shared
    storage) the final move is a copy, and a job killed during it leaves a truncated
    ``last.ckpt``. A rename within one folder is atomic: the old checkpoint stays readable until
    the new one is complete.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.partial-{os.getpid()}"
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


class ExactResume(Callback):
    """What a resumed run needs beyond Lightning's restore: random states, data position, weight check.

    - Rank r trains with seed ``seed + r`` (rollouts on different ranks must not draw the same
      samples); the model itself is initialised before, from ``seed`` alone, so ranks start equal.
    - A checkpoint holds the RNG states of all ranks (gathered at save time: every rank saves, as
      Lightning's ModelCheckpoint and ``PreemptionCheckpoint`` do); on resume each rank takes its
      own, applied when training starts so that nothing in the restore sequence consumes them.
    - The training loader's position is handed back to it when training starts: Lightning skips
      that when ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (ours does
      for the LR schedule), Lightning issue #20550. Loading it twice is harmless.
    - Checkpoints carry only the trainable weights and load non-strictly: a checkpoint missing
      one is refused here rather than silently training from the base value.
    """

    def __init__(self, seed: int, checkpoint: Path | None = None) -> None:
        self.seed = seed
        self.checkpoint = checkpoint
        self.trainer: L.Trainer | None = None
        self.random_states: dict[str, Any] | None = None
        self.loader_states: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer
        if stage == "fit":
            L.seed_everything(self.seed + trainer.global_rank, workers=True, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        # numpy's key array as a tensor: the checkpoint then loads with torch.load(weights_only=True)
        name, keys, *rest = states["numpy"]
        states["numpy"] = (name, torch.from_numpy(keys.astype("int64")), *rest)
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
            return {"ranks": gathered}
        return {"ranks": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict["ranks"]
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if len(ranks) != world:
            rank_zero_warn(
                f"the checkpoint holds random states of {len(ranks)} processes, this run has {world}: "
                "the data position and weights resume exactly, random draws (dropout, rollouts) do not"
            )
            return
        self.random_states = ranks[rank]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        check_trainable_keys(pl_module, checkpoint["state_dict"], self.checkpoint or "the checkpoint")
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})  # absent from weights-only checkpoints
        self.loader_states = fit_loop.get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.loader_states:
            loaders = trainer.train_dataloader
            stateful = [
                x for x in (loaders if isinstance(loaders, list) else [loaders]) if hasattr(x, "load_state_dict")
            ]
            for loader, state in zip(stateful, self.loader_states, strict=True):
                loader.load_state_dict(state)
            self.loader_states = []
        if self.random_states is not None:
            name, keys, *rest = self.random_states["numpy"]
            self.random_states["numpy"] = (name, keys.numpy().astype("uint32"), *rest)
            set_rng_states(self.random_states)
            self.random_states = None


class PreemptionCheckpoint(Callback):
    """On SIGTERM or SIGUSR1: finish the current step, save ``last.ckpt`` there, and stop.

    The signal only sets a flag (a handler may run in the middle of an optimizer step); at the
    next ``on_train_batch_end`` all ranks agree on it (one all-reduce of a flag per step) and save
    together, at exactly the point a step checkpoint is taken, so the resumed run continues bit
    for bit. The process then exits through Lightning's ``SIGTERMException``. A signal during
    validation is acted on at the next training step, or when training ends.

    The handlers replace Lightning's for the duration of training (Lightning's SIGTERM handler
    broadcasts from inside the handler, which could interleave with the all-reduce here); its
    teardown restores the handlers that were there before. Under SLURM, SIGUSR1 (``#SBATCH
    --signal=USR1@120``, sent to every task) also requeues the job (``scontrol requeue``), which then resumes with
    ``trainer.resume=auto``.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its handlers, so that its teardown removes these again
        self.received = None
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._stop_if_signalled(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        trainer.save_checkpoint(self.path)
        for logger in trainer.loggers:
            logger.save()  # the CSV logger buffers rows; the resumed run appends after them
        rank_zero_info(f"[ambemo] stopping on signal at step {trainer.global_step}: saved {self.path}")
        job = os.environ.get("SLURM_JOB_ID")
        if self.received == signal.SIGUSR1 and job and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", job], check=False)
        raise SIGTERMException()
