"""``ambemo data summary``: what a configured corpus holds, before any training.

    ambemo data summary data=iemocap data.root=/data/IEMOCAP_full_release [key=value ...] [--out FILE.json] [--all]

Prints utterances (and speakers) per split, class priors, the mean normalised vote entropy
H(p)/ln C, audio duration statistics (of the files, before truncation), counted events (resampled,
mixed down, truncated, out-of-set votes dropped) and every skip with its reason: bad labels and
bad audio one per line; policy exclusions (e.g. IEMOCAP utterances outside the class set) by
count unless ``--all``. ``--out`` writes all of it, every skip included, as JSON. It builds the
audio cache if needed, so a later training run starts at once.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ambemo.data.corpus import Corpus, load_corpus
from ambemo.data.manifest import SPLITS, Utterance


def _split_stats(corpus: Corpus, rows: list[Utterance]) -> dict:
    if not rows:
        return {"utterances": 0}
    dist = np.array([r.distribution for r in rows], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(dist > 0, dist * np.log(dist), 0.0).sum(axis=1) / math.log(dist.shape[1])
    seconds = corpus.audio.seconds([r.id for r in rows])
    speakers = {r.speaker for r in rows if r.speaker is not None}
    return {
        "utterances": len(rows),
        "speakers": len(speakers) if speakers else None,
        "class_prior": {c: round(float(p), 4) for c, p in zip(corpus.classes, dist.mean(0), strict=True)},
        "mean_normalised_entropy": round(float(entropy.mean()), 4),
        "duration_seconds": {
            "min": round(float(seconds.min()), 3),
            "mean": round(float(seconds.mean()), 3),
            "median": round(float(np.median(seconds)), 3),
            "max": round(float(seconds.max()), 3),
            "total_hours": round(float(seconds.sum()) / 3600, 3),
        },
    }


def summarize(corpus: Corpus) -> dict:
    """The summary as a JSON-ready dict (see the module docstring)."""
    splits = {name: _split_stats(corpus, corpus.split(name)) for name in SPLITS}
    splits["all"] = _split_stats(corpus, corpus.rows)
    return {
        "corpus": corpus.name,
        "source": str(corpus.source),
        "audio_cache": str(corpus.audio.folder),
        "classes": corpus.classes,
        "splits": splits,
        "report": corpus.report.to_dict(),
    }


def format_summary(summary: dict, list_policy: bool = False) -> str:
    """The printed form: one table row per split, then events and skips."""
    classes = summary["classes"]
    head = f"{'split':<6}{'utts':>7}{'spkrs':>7}{'entropy':>9}{'min s':>7}{'mean s':>8}{'max s':>7}{'hours':>8}"
    lines = [
        f"corpus {summary['corpus']}: {summary['source']}",
        f"audio cache: {summary['audio_cache']}",
        "",
        head + "  " + " ".join(f"{c[:9]:>9}" for c in classes),
    ]
    for name, s in summary["splits"].items():
        if not s["utterances"]:
            lines.append(f"{name:<6}{0:>7}")
            continue
        d = s["duration_seconds"]
        spk = "-" if s["speakers"] is None else s["speakers"]
        prior = " ".join(f"{s['class_prior'][c]:>9.3f}" for c in classes)
        lines.append(
            f"{name:<6}{s['utterances']:>7}{spk:>7}{s['mean_normalised_entropy']:>9.3f}"
            f"{d['min']:>7.2f}{d['mean']:>8.2f}{d['max']:>7.2f}{d['total_hours']:>8.2f}  {prior}"
        )
    lines.append("(entropy: mean H(p)/ln C; durations of the files, before truncation; columns after hours: prior)")
    report = summary["report"]
    if report["counts"]:
        lines += ["", "events:"] + [f"  {k}: {v:g}" for k, v in report["counts"].items()]
    lines += ["", f"skipped: {report['skipped']}"] + [f"  {k}: {n}" for k, n in report["by_reason"].items()]
    listed = [s for s in report["skips"] if list_policy or s["kind"] != "policy"]
    for s in listed:
        detail = f" ({s['detail']})" if s["detail"] else ""
        lines.append(f"  [{s['kind']}] {s['where']}: {s['reason']}{detail}")
    if len(listed) < len(report["skips"]):
        hidden = len(report["skips"]) - len(listed)
        lines.append(f"  ({hidden} policy exclusions not listed one by one: --all or --out lists them)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``ambemo data summary``: compose the config from the overrides, load the corpus, print (and write)."""
    from ambemo.config import compose, parse_overrides

    parser = argparse.ArgumentParser(
        prog="ambemo data summary", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--out", type=Path, help="also write the summary (every skip included) as JSON here")
    parser.add_argument("--all", action="store_true", help="list policy exclusions one by one too")
    args, overrides = parser.parse_known_args(argv)
    cfg = compose(None, parse_overrides(overrides))
    summary = summarize(load_corpus(cfg.data))
    print(format_summary(summary, list_policy=args.all))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 0
