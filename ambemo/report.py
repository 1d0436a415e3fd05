"""``ambemo report``: a paper-style results table from run folders, with bootstrap confidence intervals.

    ambemo report [RUN_DIR ...] [--runs runs] [--out table.md] [--csv table.csv] [--bootstrap 1000]

Without RUN_DIRs, the newest finished run of every experiment under ``--runs`` is used; RUN_DIRs
may also be experiment folders (``runs/sft_cot``: its newest finished run) or a whole runs folder
(the newest finished run of each experiment in it). Fast-dev, failed and interrupted runs are
skipped, each named on stderr with the reason (``ambemo.runs``). Each cell is one run's JS
(bits), BC, R2 (per-utterance squared Pearson over utterances with a non-constant target) or
Brier, computed from its ``predictions.jsonl``, with a 95 % percentile-bootstrap interval over
utterances. The reference predictors of each dataset (prior, oracle) are listed from the runs'
``summary.json`` as point values.

The Markdown table is laid out like the paper's Table 2: one row per method, one column group
per dataset (``--layout long`` gives one row per run and dataset instead). The CSV is long:
``method,dataset,n,metric,value,low,high``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ambemo.errors import AmbemoError, RunFolderError
from ambemo.metrics.functional import bhattacharyya_coefficient, brier_score, js_divergence, pearson_r2
from ambemo.runs import (
    PREDICTIONS,
    is_run_folder,
    latest_run,
    latest_runs,
    read_predictions,
    read_summary,
    unusable_reason,
)

METRICS = ("js", "bc", "r2", "brier")


def per_utterance(run_dir: Path) -> dict[str, torch.Tensor]:
    """Per-utterance metric values of a run's predictions (R2 only where the target varies)."""
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


def _skipped(line: str) -> None:
    print(f"ambemo report: {line}", file=sys.stderr)


def newest_runs(runs: Path) -> list[Path]:
    """The newest finished run folder of every experiment under ``runs``."""
    return latest_runs(runs, note=_skipped, weights=False)


def run_dataset(run_dir: Path) -> str:
    """The corpus a run was tested on, from its ``config.yaml`` (runs older than ``summary.json``'s
    ``dataset`` field), else ``unknown``."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return "unknown"
    return str(OmegaConf.select(OmegaConf.load(config), "data.name", default="unknown"))


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run folders from RUN_DIR arguments: a run folder (has ``summary.json``) as is, an experiment
    folder as its newest finished run, a runs folder as the newest run of each experiment."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ValueError(f"{path}: not a folder")
        if is_run_folder(path):
            reason = unusable_reason(path, weights=False)
            if reason is None:
                found.append(path)
            else:
                _skipped(f"skipped {path}: {reason}")
        elif any(is_run_folder(p) for p in path.iterdir() if p.is_dir()):
            if (latest := latest_run(path.parent, path.name, note=_skipped, weights=False)) is not None:
                found.append(latest)
        elif newest := newest_runs(path):
            found.extend(newest)
        else:
            raise ValueError(f"{path}: no finished run (none in it, its subfolders or theirs)")
    return found


def build_rows(run_dirs: list[Path], resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One row per run (metric -> (value, low, high)) and one per dataset's reference predictor."""
    generator = torch.Generator().manual_seed(seed)
    rows, references = [], {}
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        dataset = summary.get("dataset") or run_dataset(run_dir)
        values = per_utterance(run_dir)
        cells = {m: bootstrap(values[m], resamples, generator) for m in METRICS}
        method = summary.get("experiment") or run_dir.parent.name
        if any(r["method"] == method and r["dataset"] == dataset for r in rows):
            method = f"{method} ({run_dir.name})"  # two runs of one experiment: tell them apart
        rows.append({"method": method, "dataset": dataset, "n": len(values["js"]), "run_dir": str(run_dir), **cells})
        for name, ref in summary.get("reference", {}).items():
            references.setdefault((name, dataset), ref)
    for (name, dataset), ref in references.items():
        point = {m: (float(ref[m]), float("nan"), float("nan")) for m in METRICS}
        rows.append({"method": f"({name})", "dataset": dataset, "n": int(ref.get("n", 0)), **point})
    return rows


def _cell(value: tuple[float, float, float]) -> str:
    v, lo, hi = value
    return f"{v:.3f}" if lo != lo else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


HEADERS = {"js": "JS (bits)", "bc": "BC", "r2": "R2", "brier": "Brier"}


def paper_table(rows: list[dict]) -> str:
    """Rows = methods (first-seen order, references last), column groups = datasets."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("(")))
    methods += list(dict.fromkeys(r["method"] for r in rows if r["method"].startswith("(")))
    by_key = {(r["method"], r["dataset"]): r for r in rows}
    header = ["method"] + [f"{d}: {HEADERS[m]}" for d in datasets for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method in methods:
        cells = [method]
        for dataset in datasets:
            row = by_key.get((method, dataset))
            cells += [_cell(row[m]) if row else "-" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = ", ".join(
        f"{d}: n = {'/'.join(str(n) for n in dict.fromkeys(r['n'] for r in rows if r['dataset'] == d))}"
        for d in datasets
    )
    return "\n".join([*lines, "", f"Test utterances per dataset ({sizes}); 95 % bootstrap intervals in brackets."])


def markdown(rows: list[dict]) -> str:
    """One row per run and dataset (``--layout long``)."""
    cell = _cell
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
    parser.add_argument(
        "--layout", choices=["paper", "long"], default="paper", help="paper: method x dataset (default); long"
    )
    args = parser.parse_args(argv)
    try:
        run_dirs = expand_run_dirs(args.run_dirs) if args.run_dirs else []
        run_dirs = run_dirs or (newest_runs(args.runs) if args.runs.is_dir() else [])
        if not run_dirs:
            print(f"ambemo report: no finished runs (looked in {args.runs})", file=sys.stderr)
            return 2
        rows = build_rows(run_dirs, args.bootstrap, args.seed)
    except (OSError, ValueError, KeyError, AmbemoError) as err:
        print(f"ambemo report: {err}", file=sys.stderr)
        return 2
    table = paper_table(rows) if args.layout == "paper" else markdown(rows)
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
