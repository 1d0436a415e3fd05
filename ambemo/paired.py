"""Seeds and paired comparisons of run folders: the statistics behind ``ambemo report --seeds``.

- ``runs_by_seed``: every experiment's newest finished run per training seed;
- ``seed_mean_sd``: an experiment's test metrics as mean +- sd over its seeds;
- ``paired_differences`` + ``paired_bootstrap``: method minus baseline, per test utterance
  (matched by utterance id) and seed (seed s with seed s), with a bootstrap interval that resamples
  utterances jointly across seeds (one resample of utterance ids is applied to every seed, so the
  interval reflects which utterances were drawn, and the seeds' runs stay paired).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ambemo.errors import RunFolderError
from ambemo.metrics.functional import bhattacharyya_coefficient, brier_score, js_divergence, pearson_r2
from ambemo.runs import PREDICTIONS, read_predictions, run_seed

METRICS = ("js", "bc", "r2", "brier")
#: Which way is better, for the marks in tables: JS and Brier are lower-better.
LOWER_IS_BETTER = {"js": True, "bc": False, "r2": False, "brier": True}


class PairingError(ValueError):
    """Two sets of runs cannot be paired (no common seed, different test utterances...)."""


def utterance_metrics(run_dir: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Utterance ids and per-utterance JS, BC, R2 and Brier of a run's ``predictions.jsonl``, in
    file order. R2 (squared Pearson over the classes) is NaN where the target is constant."""
    rows = read_predictions(run_dir)
    try:
        classes = list(rows[0]["target"])
        pred = torch.tensor([[r["distribution"][c] for c in classes] for r in rows], dtype=torch.float64)
        target = torch.tensor([[r["target"][c] for c in classes] for r in rows], dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise RunFolderError(
            f"{run_dir / PREDICTIONS}: a record lacks {err} or is malformed. Rerun the experiment"
        ) from None
    r2, valid = pearson_r2(pred, target)
    values = {
        "js": js_divergence(pred, target),
        "bc": bhattacharyya_coefficient(pred, target),
        "r2": torch.where(valid, r2, torch.full_like(r2, float("nan"))),
        "brier": brier_score(pred, target),
    }
    return [str(r["id"]) for r in rows], values


def runs_by_seed(runs: Path) -> dict[str, dict[int, Path]]:
    """experiment -> seed -> its newest finished run, for every run folder under ``runs`` (any depth:
    ``runs/headroom/dpo_cot/<timestamp>`` is experiment ``headroom/dpo_cot``). The experiment and
    seed are the run's own (``summary.json``, else ``config.yaml``; seed 0 where neither has one)."""
    found: dict[str, dict[int, Path]] = {}
    for summary_file in sorted(runs.glob("**/summary.json")):  # timestamps sort oldest first
        run_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        seed = summary.get("seed", run_seed(run_dir))
        found.setdefault(summary["experiment"], {})[0 if seed is None else int(seed)] = run_dir
    return dict(sorted(found.items()))


def seed_mean_sd(run_dirs: list[Path]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, sd) over runs (one value per run: its mean over test utterances; sd with
    n - 1, NaN for a single run)."""
    per_run = [utterance_metrics(run)[1] for run in run_dirs]
    out = {}
    for metric in METRICS:
        values = torch.tensor([float(v[metric].nanmean()) for v in per_run], dtype=torch.float64)
        sd = float(values.std(unbiased=True)) if len(values) > 1 else float("nan")
        out[metric] = (float(values.mean()), sd)
    return out


def paired_differences(
    method: dict[int, Path], baseline: dict[int, Path]
) -> tuple[list[int], list[str], dict[str, torch.Tensor]]:
    """Method minus baseline per seed and test utterance: (seeds, utterance ids, metric -> (S, U)).

    Seed s of the method is paired with seed s of the baseline; seeds only one side has are left
    out (none in common: ``PairingError``). Utterances are matched by id and must be the same set
    in every run. R2 keeps only utterances whose target varies (NaN columns dropped).
    """
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise PairingError(
            f"no seed in common: the method has seeds {sorted(method)}, the baseline {sorted(baseline)}; "
            "pairs are seed s with seed s (train the missing ones with seed=S or --seeds N)"
        )
    reference_ids: list[str] | None = None
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in METRICS}
    for seed in seeds:
        base_ids, base_values = utterance_metrics(baseline[seed])
        ids, values = utterance_metrics(method[seed])
        if reference_ids is None:
            reference_ids = base_ids
        for name, run_ids, run in (("baseline", base_ids, baseline[seed]), ("method", ids, method[seed])):
            if len(set(run_ids)) != len(run_ids) or set(run_ids) != set(reference_ids):
                raise PairingError(
                    f"{run}: the {name}'s test utterances differ from {baseline[seeds[0]]}'s "
                    f"({len(set(run_ids))} vs {len(reference_ids)} ids, {len(set(run_ids) ^ set(reference_ids))} "
                    "not in both): paired differences need the same test split"
                )
        order = {uid: i for i, uid in enumerate(ids)}
        base_order = {uid: i for i, uid in enumerate(base_ids)}
        take = torch.tensor([order[uid] for uid in reference_ids])
        base_take = torch.tensor([base_order[uid] for uid in reference_ids])
        for metric in METRICS:
            rows[metric].append(values[metric][take] - base_values[metric][base_take])
    assert reference_ids is not None
    diffs = {}
    for metric in METRICS:
        table = torch.stack(rows[metric])
        diffs[metric] = table[:, ~table.isnan().any(dim=0)]
    return seeds, reference_ids, diffs


def paired_bootstrap(
    diffs: torch.Tensor,
    resamples: int = 1000,
    generator: torch.Generator | None = None,
    index: torch.Tensor | None = None,
) -> tuple[float, float, float]:
    """Mean of ``diffs`` (S seeds x U utterances) and its 95 % percentile-bootstrap interval.

    Each resample draws U utterances with replacement and takes the same ones in every seed
    (``index``, (R, U), may be given instead of drawing: for tests and reproductions).
    """
    if diffs.ndim == 1:
        diffs = diffs[None]
    count = diffs.shape[1]
    if count == 0:
        raise PairingError("no utterances to compare")
    if index is None:
        index = torch.randint(count, (resamples, count), generator=generator)
    means = diffs[:, index].mean(dim=(0, 2))  # (S, R, U) -> R
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype)).tolist()
    return float(diffs.mean()), low, high


def excludes_zero(low: float, high: float) -> bool:
    """Whether a 95 % interval lies entirely on one side of 0."""
    return low > 0 or high < 0
