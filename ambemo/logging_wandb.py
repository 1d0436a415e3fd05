"""What a run sends to W&B besides Lightning's metrics: the config without secrets, and at the end
of training the test predictions table and plots (also written to ``<run>/plots/``).

Metric names (stable; sweeps and reports key on them): ``train/<name>`` per step (``train/loss``
and each strategy's terms), ``val/<metric>`` per validation, ``test/<metric>`` once, with the
metric names of ``ambemo score`` (``js``, ``bc``, ``r2``, ``brier``, ``accuracy`` ...). The end of
training adds ``test/predictions`` (table), ``test/ambiguity_buckets`` (table) and
``test/plots/{samples,reliability,ambiguity_buckets}`` (images), and sets the run summary's
``val/js`` to the lowest validation JS (the checkpoint the test split is scored with), which is
what a sweep on ``val/js`` then optimises; ``val/js_last`` keeps the last value.

Rank zero only: ``train()`` calls ``log_test_results`` on global rank 0, which is the only rank
with a W&B run under DDP (Lightning's WandbLogger is rank-zero only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ambemo.compat import logged_values
from ambemo.plots import ambiguity_buckets, read_predictions, utterance_rows, write_plots
from ambemo.runs import read_predictions as run_predictions

#: Config keys whose values are never sent anywhere: a key whose last ``_``-separated word names a
#: credential (``api_key``, ``hf_token``, ``client_secret``, ``password`` ...). Whole words only, so
#: ``max_new_tokens`` or ``cot_token_dropout`` stay visible.
SECRET_KEY = re.compile(
    r"(^|_)(api_?key|key|token|secret|password|passwd|credentials?|auth|authorization)$", re.IGNORECASE
)
REDACTED = "<redacted>"
TABLE_COLUMNS = ("id", "human", "predicted", "js", "vote_entropy", "reasoning", "format_ok")


def redact(value: Any) -> Any:
    """A copy of a nested dict/list with the value of every secret-looking key replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def public_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict, secrets redacted: what the W&B run's config gets."""
    return redact(OmegaConf.to_container(cfg, resolve=True))


@rank_zero_only
def log_test_results(cfg: DictConfig, run_dir: Path, rows: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Write ``<run_dir>/plots/`` from the test predictions (``rows``, else ``predictions.jsonl``) and,
    when the run logs to W&B, log the same table and images to the active W&B run."""
    predictions = read_predictions(rows or run_predictions(run_dir), str(run_dir))
    paths = write_plots(run_dir, predictions)
    if cfg.logger.name != "wandb":
        return paths
    import wandb

    if wandb.run is None:
        print("[ambemo] no active W&B run: plots only written to", run_dir / "plots")
        return paths
    table = wandb.Table(columns=list(TABLE_COLUMNS))
    for row in utterance_rows(predictions):
        table.add_data(*(row[c] for c in TABLE_COLUMNS))
    buckets = ambiguity_buckets(predictions)
    images = {f"test/plots/{name}": wandb.Image(str(paths[f"{name}.png"])) for name in ("samples", "reliability")}
    images["test/plots/ambiguity_buckets"] = wandb.Image(str(paths["ambiguity_buckets.png"]))
    wandb.run.log(
        {
            "test/predictions": table,
            "test/ambiguity_buckets": wandb.Table(columns=list(buckets[0]), data=[list(b.values()) for b in buckets]),
            **images,
        }
    )
    validation = logged_values(run_dir / "metrics.csv", "val/js")
    if validation:
        wandb.run.summary["val/js"], wandb.run.summary["val/js_last"] = min(validation), validation[-1]
    return paths
