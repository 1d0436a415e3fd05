"""The run folder: its layout, its status, and the lookups every tool makes in it.

Every training run writes ``<out_dir>/<experiment>/<timestamp>/`` (``ambemo.train``)::

    config.yaml         the resolved config
    checkpoints/        last.ckpt (and best-*.ckpt by val JS): trainable weights + resume state
    metrics.csv         per-step and per-validation metrics
    predictions.jsonl   test split: {"id", "distribution", "target"[, "reasoning", "format_ok"]}
    ambiguity.json      the ambiguity threshold (``ambemo.inference.ambiguity``)
    summary.json        {"status", "test": {...}, "reference": {...}, "test_weights", ...}
    plots/, wandb/

``summary.json``'s ``status`` says what the folder is good for:

- ``finished``: trained and tested; ``test_weights`` names the checkpoint that scored the test
  split (``final weights``: an evaluation-only run, nothing trained). The only status that
  ``latest:<experiment>``, ``ambemo report``, ``ambemo predict``/``export`` and sweeps use.
- ``fast_dev_run``: a smoke test (one batch per split); its scores are not results.
- ``failed`` / ``interrupted``: training stopped (an error; Ctrl-C or SIGTERM); ``error`` says
  why. ``trainer.resume`` continues such a run from its ``last.ckpt``.

A folder without ``summary.json`` is a run in progress or one killed without a word. Runs
written before ``status`` existed count as ``finished`` unless their config says
``fast_dev_run``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ambemo.data.jsonl import iter_json_objects
from ambemo.errors import CheckpointError, RunFolderError

CONFIG = "config.yaml"
SUMMARY = "summary.json"
PREDICTIONS = "predictions.jsonl"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
#: ``summary.json``'s ``test_weights`` when no checkpoint scored the test split (nothing was trained).
FINAL_WEIGHTS = "final weights"

FINISHED, FAST_DEV_RUN, FAILED, INTERRUPTED = "finished", "fast_dev_run", "failed", "interrupted"
STATUSES = (FINISHED, FAST_DEV_RUN, FAILED, INTERRUPTED)

Note = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[ambemo] {message}")


# ---- layout ---------------------------------------------------------------------------------


def experiment_folder(out_dir: str | Path, experiment: str) -> Path:
    """``<out_dir>/<experiment>``: where the runs of one experiment go."""
    return Path(out_dir) / experiment


def run_folders(out_dir: str | Path, experiment: str) -> list[Path]:
    """Every run folder of ``experiment`` under ``out_dir``, oldest first (timestamp names)."""
    folder = experiment_folder(out_dir, experiment)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and ((p / CONFIG).is_file() or (p / SUMMARY).is_file()))


def is_run_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / SUMMARY).is_file()


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint was written into (``<run>/checkpoints/x.ckpt``), if it is one."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == CHECKPOINTS and (folder.parent / CONFIG).exists() else None


# ---- summary and status ---------------------------------------------------------------------


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of a run; ``RunFolderError`` naming the file if it is missing or malformed."""
    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{run_dir}: no {SUMMARY}: the run has not finished (still running, or killed)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"{path}: cannot read it ({err}). Rerun the experiment, or move this run folder away"
        ) from None
    if not isinstance(summary, dict):
        raise RunFolderError(f"{path}: expected a JSON object. Rerun the experiment, or move this run folder away")
    return summary


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write ``summary.json`` whole or not at all (a reader never meets half a file)."""
    path = run_dir / SUMMARY
    partial = run_dir / f".{SUMMARY}.partial-{os.getpid()}"
    partial.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_config(run_dir: Path) -> DictConfig:
    """A run's ``config.yaml`` on the typed schema (so settings added since have their defaults;
    renamed keys are read under their new names, and configs saved before the per-strategy
    settings are read as ``ambemo.config.saved_run_config`` says)."""
    from ambemo.config import renamed_keys, saved_run_config

    path = run_dir / CONFIG
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: not a run folder (no {CONFIG}). Pass runs/<experiment>/<timestamp>")
    try:
        saved = renamed_keys(OmegaConf.load(path), str(path), warn=False)  # saved before a key was renamed
        return saved_run_config(saved, str(path))
    except Exception as err:  # omegaconf and yaml errors: all mean the file does not fit the schema
        raise RunFolderError(f"{path}: cannot read it as a run config: {err}") from None


def status(run_dir: Path) -> str | None:
    """The run's status (see the module doc), or None without ``summary.json``."""
    if not (run_dir / SUMMARY).is_file():
        return None
    summary = read_summary(run_dir)
    if summary.get("status") in STATUSES:
        return summary["status"]
    # written before summaries had a status
    config = run_dir / CONFIG
    fast = config.is_file() and OmegaConf.select(OmegaConf.load(config), "trainer.fast_dev_run", default=False)
    return FAST_DEV_RUN if fast else FINISHED


def unusable_reason(run_dir: Path, weights: bool = True) -> str | None:
    """Why a run cannot stand for its experiment's result (None: it can). ``weights``: it must also
    still have the weights that scored its test split (what ``latest:``, predict and export load;
    a results table needs only the predictions)."""
    try:
        state = status(run_dir)
    except RunFolderError as err:  # a malformed summary.json: the message names it
        return str(err)
    if state is None:
        return f"no {SUMMARY} (still running, or killed)"
    if state == FAST_DEV_RUN:
        return "a fast_dev_run (one batch per split; its scores are not results)"
    if state in (FAILED, INTERRUPTED):
        error = read_summary(run_dir).get("error")
        return state + (f": {error}" if error else "")
    if not weights:
        return None if (run_dir / PREDICTIONS).is_file() else f"no {PREDICTIONS}"
    try:
        scoring_checkpoint(run_dir)
    except (RunFolderError, CheckpointError) as err:
        return str(err).removeprefix(f"{run_dir}: ")
    return None


def run_seed(run_dir: Path) -> int | None:
    """The ``seed`` a run folder was trained with (from its ``config.yaml``; None if it has none)."""
    config = run_dir / CONFIG
    seed = OmegaConf.select(OmegaConf.load(config), "seed") if config.is_file() else None
    return None if seed is None else int(seed)


def latest_run(
    out_dir: str | Path,
    experiment: str,
    note: Note | None = _say,
    weights: bool = True,
    seed: int | None = None,
) -> Path | None:
    """The newest usable (``finished``, with its test weights) run of ``experiment`` under ``out_dir``;
    with ``seed``, the newest usable one trained with that seed.

    Newer runs passed over are reported through ``note`` (one line each), so a user sees why a
    fast-dev or failed run was not taken. ``weights=False``: the test weights need not be there
    (a results table reads only the predictions).
    """
    for run_dir in reversed(run_folders(out_dir, experiment)):
        if seed is not None and run_seed(run_dir) != seed:
            continue
        reason = unusable_reason(run_dir, weights)
        if reason is None:
            return run_dir
        if note is not None:
            note(f"latest:{experiment}: skipped {run_dir}: {reason}")
    return None


def latest_runs(runs_root: str | Path, note: Note | None = _say, weights: bool = True) -> list[Path]:
    """The newest usable run of every experiment folder under ``runs_root``."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    found = (latest_run(root, p.name, note, weights) for p in sorted(root.iterdir()) if p.is_dir())
    return [run for run in found if run is not None]


def mark_stopped(run_dir: Path, state: str, error: str, **fields: Any) -> None:
    """Record that a run did not finish (``failed`` or ``interrupted``) and why."""
    write_summary(run_dir, {"status": state, "error": error, "run_dir": str(run_dir), **fields})


# ---- checkpoints ----------------------------------------------------------------------------


def checkpoint_files(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINTS
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / LAST


def scoring_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint whose weights scored a finished run's test split; None when nothing was
    trained (an evaluation-only run of the base model). ``RunFolderError`` when the run is not
    finished or its weights are gone: loading anything else would not be the model its scores
    describe."""
    summary = read_summary(run_dir)
    state = summary.get("status", FINISHED)
    if state != FINISHED:
        raise RunFolderError(f"{run_dir}: the run is {state}, not finished: it has no tested weights")
    weights = summary.get("test_weights") or FINAL_WEIGHTS
    cfg = read_config(run_dir)
    if weights != FINAL_WEIGHTS:
        checkpoint = run_dir / CHECKPOINTS / weights
        if not checkpoint.is_file():
            raise RunFolderError(
                f"{run_dir}: its test split was scored with {CHECKPOINTS}/{weights}, which is missing. "
                "Restore that file, or retrain the experiment"
            )
        return checkpoint
    if cfg.trainer.max_epochs != 0:
        raise RunFolderError(
            f"{run_dir}: its test split was scored with its final weights, which no checkpoint holds "
            f"(last.ckpt may be older). Retrain the experiment to get a run whose tested weights are saved"
        )
    if cfg.model.init_from:
        raise RunFolderError(
            f"{run_dir}: an evaluation-only run of the weights from model.init_from={cfg.model.init_from}. "
            "Use that run instead"
        )
    return None


def find_checkpoint(path: str | Path, what: str = "model.init_from") -> Path:
    """A checkpoint file as given, or a run folder's tested weights (``scoring_checkpoint``)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and is_run_folder(path):
        checkpoint = scoring_checkpoint(path)
        if checkpoint is None:
            raise RunFolderError(f"{what}={path}: an evaluation-only run trained nothing; give a trained run")
        return checkpoint
    if path.is_dir():
        raise RunFolderError(
            f"{what}={path}: a folder, but not a run folder (no {CONFIG}). "
            "Give a checkpoint file, a run folder or latest:<experiment>"
        )
    raise RunFolderError(
        f"{what}={path}: no such file or folder. Give a checkpoint file, a run folder or latest:<experiment>"
    )


def load_checkpoint(path: Path, **kwargs: Any) -> dict[str, Any]:
    """``torch.load`` of a checkpoint file; ``CheckpointError`` naming it if it is not a complete one."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as err:  # truncated zip, pickle garbage, not a torch file: all mean "unreadable"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "It may be truncated or another kind of file: pass another checkpoint or run folder"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict). Pass a checkpoint of an ambemo run")
    return checkpoint


# ---- predictions ----------------------------------------------------------------------------


def read_predictions(run_dir: Path) -> list[dict[str, Any]]:
    """The test split's records of ``predictions.jsonl`` (an error naming the file if there are none)."""
    path = run_dir / PREDICTIONS
    rows = [record for _, record in iter_json_objects(path, RunFolderError)]
    if not rows:
        raise RunFolderError(f"{path}: no predictions. Rerun the experiment")
    return rows
