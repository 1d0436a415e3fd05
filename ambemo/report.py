"""``ambemo report``: a paper-style results table from run folders, with bootstrap confidence intervals.

    ambemo report [RUN_DIR ...] [--runs runs] [--out table.md] [--csv table.csv] [--bootstrap 1000]

Without RUN_DIRs, the newest finished run (one with ``summary.json``) of every experiment under
``--runs`` is used. Each row is one run: JS (bits), BC, R2 (per-utterance squared Pearson over
utterances with a non-constant target) and Brier, computed from its ``predictions.jsonl``, with
95 % percentile-bootstrap intervals over utterances. The reference predictors of each dataset
(prior, oracle) are listed from the runs' ``summary.json`` as point values.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from ambemo.data.jsonl import iter_json_objects
from ambemo.metrics.functional import bhattacharyya_coefficient, brier_score, js_divergence, pearson_r2

METRICS = ("js", "bc", "r2", "brier")


def per_utterance(run_dir: Path) -> dict[str, torch.Tensor]:
    """Per-utterance metric values of a run's predictions (R2 only where the target varies)."""
    rows = [record for _, record in iter_json_objects(run_dir / "predictions.jsonl")]
    if not rows:
        raise ValueError(f"{run_dir}/predictions.jsonl: no predictions")
    classes = list(rows[0]["target"])
    pred = torch.tensor([[r["distribution"][c] for c in classes] for r in rows], dtype=torch.float64)
    target = torch.tensor([[r["target"][c] for c in classes] for r in rows], dtype=torch.float64)
    r2, valid = pearson_r2(pred, target)
    return {
        "js": js_divergence(pred, target),
        "bc": bhattacharyya_coefficient(pred, target),
        "r2": r2[valid],
        "brier": brier_score(pred, target),
    }


def bootstrap(values: torch.Tensor, resamples: int, generator: torch.Generator) -> tuple[float, float, float]:
    """Mean and 95 % percentile-bootstrap interval of the mean."""
    index = torch.randint(len(values), (resamples, len(values)), generator=generator)
    means = values[index].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype)).tolist()
    return float(values.mean()), low, high


def newest_runs(runs: Path) -> list[Path]:
    """The newest finished run folder of every experiment under ``runs``."""
    found = []
    for experiment in sorted(p for p in runs.iterdir() if p.is_dir()):
        finished = sorted(s.parent for s in experiment.glob("*/summary.json"))
        if finished:
            found.append(finished[-1])
    return found


def build_rows(run_dirs: list[Path], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One row per run (metric -> (value, low, high)) and one per dataset's reference predictor."""
    generator = torch.Generator().manual_seed(seed)
    rows, references = [], {}
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        dataset = summary.get("dataset", "built-in")
        values = per_utterance(run_dir)
        cells = {m: bootstrap(values[m], resamples, generator) for m in METRICS}
        rows.append({"method": summary["experiment"], "dataset": dataset, "n": len(values["js"]), **cells})
        for name, ref in summary.get("reference", {}).items():
            references.setdefault((name, dataset), ref)
    for (name, dataset), ref in references.items():
        point = {m: (float(ref[m]), float("nan"), float("nan")) for m in METRICS}
        rows.append({"method": f"({name})", "dataset": dataset, "n": int(ref.get("n", 0)), **point})
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(value: tuple[float, float, float]) -> str:
        v, lo, hi = value
        return f"{v:.3f}" if lo != lo else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = ["| method | dataset | n | JS (bits) | BC | R2 | Brier |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['dataset']} | {r['n']} | " + " | ".join(cell(r[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ambemo report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run folders (default: newest run per experiment)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where to look without RUN_DIRs")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--csv", type=Path, help="also write method,dataset,metric,value,low,high rows here")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_dirs = args.run_dirs or (newest_runs(args.runs) if args.runs.is_dir() else [])
    if not run_dirs:
        print(f"ambemo report: no finished runs (looked in {args.runs})", file=sys.stderr)
        return 2
    try:
        rows = build_rows(run_dirs, args.bootstrap, args.seed)
    except (OSError, ValueError, KeyError) as err:
        print(f"ambemo report: {err}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "dataset", "n", "metric", "value", "low", "high"])
            for r in rows:
                for m in METRICS:
                    writer.writerow([r["method"], r["dataset"], r["n"], m, *r[m]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
