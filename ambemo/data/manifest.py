"""The utterance record every reader produces, and the generic JSONL manifest reader.

Manifest line format (the built-in corpus writes it; ``data=manifest data.path=FILE.jsonl`` reads
any corpus written this way)::

    {"id": str, "audio": path (relative to the manifest, or absolute),
     "votes": {class: count} | "distribution": {class: prob},
     "transcript": str, "split": "train"|"val"|"test", "speaker": str,
     "cot": str (curated reasoning), "latent": {class: prob}}       <- all optional

- Classes: ``data.classes``; a vote for any other class is a bad line (a typo must not widen the
  class set). ``data.classes=[]`` asks for the union of the manifest's vote keys instead, sorted
  alphabetically (``manifest_classes``; for CREMA-D's six names that is its usual order).
- Lines without ``split`` are assigned one with ``data.seed``: ``data.val_fraction`` and
  ``data.test_fraction`` (default 0.1 each) of their speakers go to val and test, the rest to
  train; lines without ``speaker`` count as a speaker of their own (see ``ambemo.data.splits``).
- Audio may have any sample rate and channel count: the cache resamples and mixes down.

A bad line (not JSON, no id, duplicate id, unknown class, negative/NaN/zero votes...) is named by
file and line; ``data.on_bad_labels`` decides whether it stops the run or is a counted skip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ambemo.data.jsonl import json_lines
from ambemo.data.jsonl import where as line_where
from ambemo.data.labels import votes_to_distribution
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.splits import assign_splits

SPLITS = ("train", "val", "test")
#: ``data.out_of_set_votes``: what happens to votes for categories outside ``data.classes``.
OUT_OF_SET = ("renormalise", "drop_utterance")


class ManifestError(CorpusError):
    """A manifest line cannot be used."""


@dataclass(frozen=True)
class Utterance:
    """One labelled utterance, from any reader."""

    id: str
    audio: Path
    transcript: str | None
    distribution: tuple[float, ...]
    split: str
    cot: str | None = None
    latent: tuple[float, ...] | None = None
    speaker: str | None = None
    """Speaker (CREMA-D actor, IEMOCAP speaker, manifest ``speaker``), when known."""
    source: str = ""
    """Where the label came from (``file line N``), so audio problems can name it too."""


def checked_distribution(
    labels: object, classes: Sequence[str], where: str, report: SkipReport
) -> tuple[float, ...] | None:
    """``labels`` ({class: count or prob}) as a distribution in ``classes`` order, or None after
    recording why it cannot be one (unknown class, zero votes, negative/NaN/non-numeric count)."""
    if not isinstance(labels, Mapping):
        report.skip("labels", where, "bad votes", "votes/distribution must be an object {class: value}")
        return None
    try:
        return tuple(votes_to_distribution(labels, classes))
    except ValueError as err:
        problem = _vote_problem(labels, classes)
        hint = "; list every class in data.classes, or data.classes=[] to take the manifest's"
        report.skip("labels", where, problem, str(err) + (hint if problem == "unknown class" else ""))
        return None


def restrict_votes(
    votes: Mapping[str, float], classes: Sequence[str], policy: str, where: str, report: SkipReport
) -> tuple[float, ...] | None:
    """Votes (already validated) as a distribution over ``classes``, applying ``data.out_of_set_votes``.

    ``renormalise`` drops votes for other categories and normalises the rest (the dropped votes of
    kept utterances are counted per category); ``drop_utterance`` skips an utterance with any such
    vote. Both skip (as ``policy``, counted) an utterance left without a vote in the class set.
    """
    outside = {name: n for name, n in votes.items() if name not in classes and n > 0}
    if outside and policy == "drop_utterance":
        report.skip("policy", where, "out-of-set votes (drop_utterance)", ", ".join(sorted(outside)))
        return None
    total = sum(votes.get(c, 0) for c in classes)
    if total <= 0:
        report.skip("policy", where, "no vote in the class set", ", ".join(sorted(outside)))
        return None
    for name, n in outside.items():
        report.count(f"out-of-set votes dropped: {name}", n)
    return tuple(votes.get(c, 0) / total for c in classes)


def _vote_problem(labels: Mapping, classes: Sequence[str]) -> str:
    if set(labels) - set(classes):
        return "unknown class"
    values = list(labels.values())
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric and all(0 <= v < float("inf") for v in values) and sum(values) == 0:
        return "zero votes"
    return "bad vote count"


def _lines(path: Path) -> list[str]:
    try:
        return json_lines(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read the manifest: {err}") from None


def _object(raw: str, where: str, report: SkipReport) -> dict | None:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as err:
        report.skip("labels", where, "invalid JSON", f"{err.msg} at column {err.colno}")
        return None
    if not isinstance(item, dict):
        report.skip("labels", where, "not a JSON object", f"got {type(item).__name__}")
        return None
    return item


def manifest_classes(path: str | Path) -> list[str]:
    """The class names a manifest's ``votes``/``distribution`` use, sorted (for ``data.classes=[]``)."""
    path = Path(path)
    names: set[str] = set()
    for raw in _lines(path):
        try:
            item = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            continue  # the reader reports it, with its line
        labels = item.get("votes", item.get("distribution")) if isinstance(item, dict) else None
        if isinstance(labels, dict):
            names |= set(labels)
    if len(names) < 2:
        raise ManifestError(f"{path}: found class names {sorted(names)} in its votes; a corpus needs at least two")
    return sorted(names)


def read_manifest(
    path: str | Path,
    classes: Sequence[str],
    report: SkipReport | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> list[Utterance]:
    """All usable utterances of a manifest, with distributions in ``classes`` order.

    Bad lines go to ``report`` (a fresh one, which raises on the first kind of problem, if not
    given); lines without ``split`` get a seeded speaker-disjoint one.
    """
    path = Path(path)
    report = report if report is not None else SkipReport()
    rows: list[Utterance] = []
    seen: set[str] = set()
    for number, raw in enumerate(_lines(path), start=1):
        where = line_where(path, number)
        item = _object(raw, where, report) if raw.strip() else None
        if item is None:
            continue
        uid = item.get("id")
        if not isinstance(uid, str) or not uid:
            report.skip("labels", where, "bad id", "each line needs a non-empty string 'id'")
            continue
        if uid in seen:
            report.skip("labels", where, "duplicate id", f"duplicate id {uid!r}")
            continue
        seen.add(uid)
        if not isinstance(item.get("audio"), str):
            report.skip("labels", where, "no audio path", "'audio' (a path relative to the manifest) is missing")
            continue
        split = item.get("split")
        if split is not None and split not in SPLITS:
            report.skip("labels", where, "bad split", f"'split' is {split!r}; expected one of {', '.join(SPLITS)}")
            continue
        texts = {key: item.get(key) for key in ("transcript", "cot")}
        wrong = [key for key, value in texts.items() if value is not None and not isinstance(value, str)]
        if wrong:
            report.skip("labels", where, "bad text field", f"{', '.join(wrong)} must be a string")
            continue
        if "votes" not in item and "distribution" not in item:
            report.skip("labels", where, "no votes", "needs 'votes' or 'distribution'")
            continue
        distribution = checked_distribution(item.get("votes", item.get("distribution")), classes, where, report)
        latent = item.get("latent")
        latent_dist = checked_distribution(latent, classes, where, report) if latent is not None else None
        if distribution is None or (latent is not None and latent_dist is None):
            continue
        speaker = item.get("speaker")
        rows.append(
            Utterance(
                id=uid,
                audio=(path.parent / item["audio"]).resolve(),
                transcript=texts["transcript"] or None,
                distribution=distribution,
                split=split or "",
                cot=texts["cot"] or None,
                latent=latent_dist,
                speaker=None if speaker is None else str(speaker),
                source=where,
            )
        )
    report.enforce("labels", ManifestError)
    if not rows:
        raise ManifestError(f"{path}: no usable utterances")
    return _fill_splits(rows, seed, val_fraction, test_fraction)


def _fill_splits(rows: list[Utterance], seed: int, val_fraction: float, test_fraction: float) -> list[Utterance]:
    """Give lines without a ``split`` a seeded speaker-disjoint one."""
    open_rows = [i for i, r in enumerate(rows) if not r.split]
    if not open_rows:
        return rows
    groups = [rows[i].speaker or f"id:{rows[i].id}" for i in open_rows]
    for i, split in zip(open_rows, assign_splits(groups, val_fraction, test_fraction, seed), strict=True):
        rows[i] = replace(rows[i], split=split)
    return rows
