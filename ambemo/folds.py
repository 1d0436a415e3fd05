"""IEMOCAP's leave-one-session-out cross-validation as one command: train and test every fold,
then report the fold-averaged row (the paper's protocol, §4).

    ambemo folds experiment=paper/grpoz_cot_iemocap [key=value ...] [--folds 1,2,3,4,5]

Each fold is an ordinary run (``data.fold=k``, its own run folder); ``folds-<timestamp>.json``
under ``<out_dir>/<experiment>/`` holds every fold's test metrics, their mean over the folds (the
reported row: each fold weighs the same, as a cross-validation average does) and their standard
deviation.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

from ambemo.config import ConfigError, compose, parse_overrides

FOLDS = (1, 2, 3, 4, 5)
HEADLINE = ("js", "bc", "r2", "brier")


def run_folds(experiment: str | None, overrides: list[str], folds: tuple[int, ...] = FOLDS) -> Path:
    """Train and test ``experiment`` on each IEMOCAP fold; returns the written ``folds-*.json``."""
    from ambemo.train import RUN_DIR_ENV, train

    first = compose(experiment, overrides)  # without a fold: only IEMOCAP's settings have one
    if first.data.name != "iemocap":
        raise ConfigError(
            f"ambemo folds runs IEMOCAP's sessions as folds; {first.experiment} uses data={first.data.name}"
        )
    results = []
    for fold in folds:
        cfg = compose(first.experiment, [*overrides, f"data.fold={fold}"])
        os.environ.pop(RUN_DIR_ENV, None)  # each fold is its own run folder
        print(f"[ambemo] {cfg.experiment}: fold {fold} of {len(folds)} (test = Session{fold})")
        run_dir = train(cfg)
        summary = json.loads((run_dir / "summary.json").read_text())
        results.append({"fold": fold, "run_dir": str(run_dir), "test": summary["test"]})
    os.environ.pop(RUN_DIR_ENV, None)

    keys = [k for k in results[0]["test"] if all(k in r["test"] for r in results) and k != "n"]
    values = {k: [float(r["test"][k]) for r in results] for k in keys}
    report = {
        "experiment": first.experiment,
        "folds": results,
        "mean": {k: statistics.fmean(v) for k, v in values.items()},
        "std": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in values.items()},
        "n": sum(int(r["test"]["n"]) for r in results),
    }
    out = Path(first.out_dir) / first.experiment / f"folds-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    row = "  ".join(f"{k} {report['mean'][k]:.4f} +- {report['std'][k]:.4f}" for k in HEADLINE if k in report["mean"])
    print(f"\n[ambemo] {first.experiment}, mean over folds {', '.join(map(str, folds))} ({report['n']} test clips):")
    print(f"[ambemo] {row}")
    print(f"[ambemo] wrote {out}")
    return out


def main(argv: list[str]) -> int:
    folds = FOLDS
    if "--folds" in argv:
        at = argv.index("--folds")
        if at + 1 >= len(argv):
            raise ConfigError("--folds needs a value, e.g. --folds 1,2,3,4,5")
        try:
            folds = tuple(int(f) for f in argv[at + 1].split(","))
        except ValueError:
            raise ConfigError(f"--folds {argv[at + 1]!r}: write session numbers, e.g. --folds 1,2,3,4,5") from None
        argv = argv[:at] + argv[at + 2 :]
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    run_folds(None, parse_overrides(argv), folds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
