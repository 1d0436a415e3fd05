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

Several seeds: ``--seeds`` takes every seed's newest run of every experiment (run folders anywhere
under RUN_DIRs or ``--runs``) and adds each experiment's mean +- sd over its seeds beside the
per-run table; ``--baseline EXP`` adds, for every other experiment, the paired per-utterance
difference to EXP in JS, BC, R2 and Brier (utterances matched by id, seed s with seed s), with a
paired bootstrap 95 % interval and ``*`` where it excludes 0 (``ambemo.paired``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ambemo.errors import AmbemoError
from ambemo.paired import (
    PairingError,
    excludes_zero,
    paired_bootstrap,
    paired_differences,
    runs_by_seed,
    seed_mean_sd,
    utterance_metrics,
)
from ambemo.runs import (
    is_run_folder,
    latest_run,
    latest_runs,
    read_summary,
    unusable_reason,
)

METRICS = ("js", "bc", "r2", "brier")


def per_utterance(run_dir: Path) -> dict[str, torch.Tensor]:
    """Per-utterance metric values of a run's predictions (R2 only where the target varies)."""
    _, values = utterance_metrics(run_dir)
    return values | {"r2": values["r2"][~values["r2"].isnan()]}


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


# ---- several seeds per experiment; paired differences against a baseline ----------------------


def seed_table(groups: dict[str, dict[int, Path]]) -> str:
    """One row per experiment: its seeds and each metric's mean +- sd over them."""
    lines = [
        "| method | seeds | " + " | ".join(f"{HEADERS[m]} mean ± sd" for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for experiment, by_seed in groups.items():
        stats = seed_mean_sd([by_seed[s] for s in sorted(by_seed)])
        cells = [f"{mean:.3f} ± {sd:.3f}" if sd == sd else f"{mean:.3f}" for mean, sd in stats.values()]
        lines.append(f"| {experiment} | {','.join(map(str, sorted(by_seed)))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_rows(groups: dict[str, dict[int, Path]], baseline: str, resamples: int, seed: int) -> list[dict]:
    """Per experiment other than ``baseline``: seeds paired, utterances, and per metric the mean
    paired difference (method - baseline) with its bootstrap interval. Experiments that cannot be
    paired (another test split, no common seed) get a ``reason`` instead."""
    if baseline not in groups:
        raise ValueError(f"--baseline {baseline}: no finished run of it (experiments found: {', '.join(groups)})")
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for experiment, by_seed in groups.items():
        if experiment == baseline:
            continue
        try:
            seeds, ids, diffs = paired_differences(by_seed, groups[baseline])
        except PairingError as err:
            rows.append({"method": experiment, "reason": str(err)})
            continue
        cells = {m: paired_bootstrap(diffs[m], resamples, generator) for m in METRICS}
        per_seed = diffs["js"].mean(dim=1).tolist()  # the interval above treats seeds as fixed: show them
        rows.append({"method": experiment, "seeds": seeds, "n": len(ids), **cells, "js_per_seed": per_seed})
    return rows


def paired_table(rows: list[dict], baseline: str) -> str:
    """Markdown: difference to ``baseline`` per method, ``*`` where the interval excludes 0."""
    lines = [
        "| method | paired seeds | n | " + " | ".join(f"Δ{HEADERS[m]}" for m in METRICS) + " | ΔJS per seed |",
        "|---|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    notes = []
    for r in rows:
        if "reason" in r:
            notes.append(f"- {r['method']}: not paired: {r['reason']}")
            continue
        cells = []
        for m in METRICS:
            v, lo, hi = r[m]
            mark = " *" if excludes_zero(lo, hi) else ""
            cells.append(f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}")
        per_seed = r["js_per_seed"]
        split = min(per_seed) < 0 < max(per_seed)
        cells.append(", ".join(f"{d:+.3f}" for d in per_seed) + (" (seeds disagree)" if split else ""))
        lines.append(f"| {r['method']} | {','.join(map(str, r['seeds']))} | {r['n']} | " + " | ".join(cells) + " |")
    legend = (
        f"Method minus {baseline}, per test utterance and seed (seed s paired with seed s), averaged; 95 % "
        "paired bootstrap intervals (utterances resampled jointly across seeds). * = the interval excludes 0. "
        "Lower is better for JS and Brier, higher for BC and R2. The interval holds the seeds fixed: it "
        "says how sure the average over *these* seeds is, not that another seed would agree; the last "
        "column gives ΔJS seed by seed, marked where their signs differ."
    )
    return "\n".join([*lines, *(["", *notes] if notes else []), "", legend])


#: What each strategy optimises, as logged in metrics.csv: it should rise (reward, margin,
#: accuracy) or fall (KL); val/js is the validation JS. GRPO's reward spread (within a group, among
#: the sampled members) and format reward say whether its groups give the policy anything to prefer.
TRAINING_SIGNALS = (
    "train/reward",
    "train/reward_spread",
    "train/format_reward",
    "train/reward_margin",
    "train/reward_accuracy",
    "train/kl",
    "val/js",
)


def training_signal(run_dir: Path) -> dict[str, tuple[float, float]]:
    """signal -> (mean over the first third of its logged values, mean over the last third), from
    the run's ``metrics.csv`` in step order; a value logged once gives (it, it)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r.get("step") or 0))
    out = {}
    for key in TRAINING_SIGNALS:
        values = [float(r[key]) for r in rows if r.get(key)]
        if values:
            third = max(1, len(values) // 3)
            out[key] = (sum(values[:third]) / third, sum(values[-third:]) / third)
    return out


def signal_table(groups: dict[str, dict[int, Path]]) -> str:
    """Per experiment and logged training signal: first-third and last-third means, averaged over seeds."""
    lines = ["| method | signal | seeds | first third | last third | change |", "|---|---|---|---|---|---|"]
    for experiment, by_seed in groups.items():
        signals = [training_signal(by_seed[s]) for s in sorted(by_seed)]
        for key in TRAINING_SIGNALS:
            pairs = [sig[key] for sig in signals if key in sig]
            if not pairs:
                continue
            first = sum(p[0] for p in pairs) / len(pairs)
            last = sum(p[1] for p in pairs) / len(pairs)
            lines.append(f"| {experiment} | {key} | {len(pairs)} | {first:.4f} | {last:.4f} | {last - first:+.4f} |")
    return "\n".join(lines)


def seeds_report(
    roots: list[Path], baseline: str | None, resamples: int = 1000, seed: int = 0
) -> tuple[str, list[dict]]:
    """The multi-seed report of every experiment under ``roots``: per-run table (each run's
    bootstrap interval), mean +- sd over seeds, and with ``baseline`` the paired differences.
    Returns the Markdown and the per-run rows (for the CSV)."""
    groups: dict[str, dict[int, Path]] = {}
    for root in roots:
        for experiment, by_seed in runs_by_seed(root).items():
            groups.setdefault(experiment, {}).update(by_seed)
    if not groups:
        raise ValueError(f"no finished runs under {', '.join(map(str, roots))}")
    labels = {str(run): f"{exp} (seed {s})" for exp, by_seed in groups.items() for s, run in by_seed.items()}
    rows = build_rows([Path(run) for run in labels], resamples, seed)
    for row in rows:
        row["method"] = labels.get(row.get("run_dir", ""), row["method"])
    parts = ["Per run:", "", paper_table(rows), "", "Over seeds:", "", seed_table(groups)]
    parts += ["", "Training signals (metrics.csv; means over seeds):", "", signal_table(groups)]
    if baseline:
        parts += [
            "",
            f"Paired against {baseline}:",
            "",
            paired_table(paired_rows(groups, baseline, resamples, seed), baseline),
        ]
    return "\n".join(parts), rows


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
    parser.add_argument(
        "--seeds",
        action="store_true",
        help="every seed's newest run of every experiment under RUN_DIRs (default --runs), any depth; "
        "adds mean ± sd over seeds",
    )
    parser.add_argument(
        "--baseline",
        metavar="EXP",
        help="with --seeds: paired per-utterance differences of every experiment against EXP (e.g. sft_cot)",
    )
    args = parser.parse_args(argv)
    if args.seeds or args.baseline:
        try:
            table, rows = seeds_report(args.run_dirs or [args.runs], args.baseline, args.bootstrap, args.seed)
        except (OSError, ValueError, KeyError) as err:
            print(f"ambemo report: {err}", file=sys.stderr)
            return 2
        return write_outputs(args, table, rows)
    try:
        if args.run_dirs:  # only what was named: never a table of other runs in place of unreadable ones
            run_dirs, looked = expand_run_dirs(args.run_dirs), ", ".join(str(p) for p in args.run_dirs)
        else:
            run_dirs, looked = (newest_runs(args.runs) if args.runs.is_dir() else []), str(args.runs)
        if not run_dirs:
            print(f"ambemo report: no finished runs (looked in {looked})", file=sys.stderr)
            return 2
        rows = build_rows(run_dirs, args.bootstrap, args.seed)
    except (OSError, ValueError, KeyError, AmbemoError) as err:
        print(f"ambemo report: {err}", file=sys.stderr)
        return 2
    table = paper_table(rows) if args.layout == "paper" else markdown(rows)
    return write_outputs(args, table, rows)


def write_outputs(args: argparse.Namespace, table: str, rows: list[dict]) -> int:
    """Print the table; write it (``--out``) and the per-run rows (``--csv``) where asked."""
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
