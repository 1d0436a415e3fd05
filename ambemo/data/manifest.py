"""Reading a corpus manifest: JSONL, one utterance per line, validated line by line.

Line format (the built-in corpus writes it; issue 3's generic manifest uses the same fields)::

    {"id": str, "audio": path relative to the manifest, "transcript": str (optional),
     "votes": {class: count} | "distribution": {class: prob}, "split": "train"|"val"|"test",
     "cot": str (optional curated reasoning), "latent": {class: prob} (optional)}

A bad line raises ``ManifestError`` naming the file, the line and what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ambemo.data.jsonl import iter_json_objects
from ambemo.data.jsonl import where as line_where
from ambemo.data.labels import votes_to_distribution

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest line cannot be used."""


@dataclass(frozen=True)
class Utterance:
    """One manifest line, validated."""

    id: str
    audio: Path
    transcript: str | None
    distribution: tuple[float, ...]
    split: str
    cot: str | None = None
    latent: tuple[float, ...] | None = None


def read_manifest(path: str | Path, classes: Sequence[str]) -> list[Utterance]:
    """All utterances of a manifest, with distributions in ``classes`` order."""
    path = Path(path)
    rows: list[Utterance] = []
    seen: set[str] = set()
    for number, item in iter_json_objects(path, ManifestError):
        where = line_where(path, number)
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise ManifestError(f"{where}: each line needs a non-empty string 'id'")
        uid = item["id"]
        if uid in seen:
            raise ManifestError(f"{where}: duplicate id {uid!r}")
        seen.add(uid)
        if not isinstance(item.get("audio"), str):
            raise ManifestError(f"{where}: 'audio' (a path relative to the manifest) is missing")
        split = item.get("split")
        if split not in SPLITS:
            raise ManifestError(f"{where}: 'split' is {split!r}; expected one of {', '.join(SPLITS)}")
        if "votes" in item:
            labels = item["votes"]
        elif "distribution" in item:
            labels = item["distribution"]
        else:
            raise ManifestError(f"{where}: needs 'votes' or 'distribution'")
        if not isinstance(labels, dict):
            raise ManifestError(f"{where}: votes/distribution must be an object {{class: value}}")
        try:
            distribution = tuple(votes_to_distribution(labels, classes, where))
            latent = item.get("latent")
            latent_dist = tuple(votes_to_distribution(latent, classes, where)) if latent else None
        except ValueError as err:
            raise ManifestError(str(err)) from None
        rows.append(
            Utterance(
                id=uid,
                audio=(path.parent / item["audio"]).resolve(),
                transcript=item.get("transcript") or None,
                distribution=distribution,
                split=split,
                cot=item.get("cot") or None,
                latent=latent_dist,
            )
        )
    if not rows:
        raise ManifestError(f"{path}: no utterances")
    return rows
