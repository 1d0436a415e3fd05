"""CREMA-D from a user's copy: audio-only crowd votes over six classes, actor-disjoint splits.

Layout read (``data.root``; the upstream repository's own layout)::

    processedResults/tabulatedVotes.csv   vote counts per clip and modality (unchanged upstream file)
    AudioWAV/<clip>.wav                   audio, e.g. AudioWAV/1001_DFA_ANG_XX.wav

Votes: only voice-only rows. The table's first column is ``100000 * modality + clip number``
with modality 1 = voice only (2 = face only, 3 = audio-visual; those rows are counted, not
read). Columns ``A D F H N S`` are the votes for anger, disgust, fear, happiness, neutral and
sadness. ``data.classes`` may be a subset of the six; votes for the others follow
``data.out_of_set_votes`` as for IEMOCAP.

Transcripts come from the clip's sentence code (``1001_DFA_ANG_XX`` -> DFA -> "Don't forget a
jacket"); the speaker is the actor (the first field). Splits are actor-disjoint and seeded
(``data.seed``): ``data.val_fraction`` and ``data.test_fraction`` of the 91 actors (9 and 9 at
the default 0.1) go to val and test, the rest to train.

Upstream lists four clips whose audio is defective (1076_MTI_NEU_XX, 1076_MTI_SAD_XX,
1064_TIE_SAD_XX, 1064_IEO_DIS_MD); the first three fail the audio checks (``data.on_bad_audio``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.manifest import OUT_OF_SET, Utterance, checked_distribution, restrict_votes
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.splits import assign_splits
from ambemo.data.synthetic_clips import SENTENCES

VOTES_FILE = Path("processedResults") / "tabulatedVotes.csv"
AUDIO_DIR = "AudioWAV"
#: Vote-table column of each class, in CREMA_D_CLASSES order.
VOTE_COLUMNS = dict(zip(CREMA_D_CLASSES, ("A", "D", "F", "H", "N", "S"), strict=True))
VOICE_ONLY = 1
_CLIP = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def _number(text: str) -> float | str:
    """A vote cell as a number, or the raw text (which the vote check then names)."""
    try:
        return float(text)
    except ValueError:
        return text


def read_crema_d(
    root: str | Path,
    classes: Sequence[str] = CREMA_D_CLASSES,
    out_of_set: str = "renormalise",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    report: SkipReport | None = None,
) -> list[Utterance]:
    """Every usable voice-only clip of the copy under ``root``, with actor-disjoint splits."""
    root = Path(root).absolute()
    report = report if report is not None else SkipReport()
    if out_of_set not in OUT_OF_SET:
        raise ValueError(f"out_of_set must be one of {OUT_OF_SET}, got {out_of_set!r}")
    unknown = [c for c in classes if c not in CREMA_D_CLASSES]
    if unknown:
        raise CorpusError(f"CREMA-D has no votes for class(es) {unknown}; its classes are {list(CREMA_D_CLASSES)}")
    table = root / VOTES_FILE
    if not table.is_file():
        raise CorpusError(f"{table} not found; set data.root to a CREMA-D copy with {VOTES_FILE} and {AUDIO_DIR}/")
    if not (root / AUDIO_DIR).is_dir():
        raise CorpusError(f"{root / AUDIO_DIR} not found: the audio of a CREMA-D copy lives there")
    rows: list[Utterance] = []
    seen: set[str] = set()
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        needed = ["", "fileName", *VOTE_COLUMNS.values()]
        missing = [c or '""' for c in needed if c not in header]
        if missing:
            raise CorpusError(f"{table}: not a CREMA-D tabulatedVotes.csv (no column(s) {', '.join(missing)})")
        column = {name: header.index(name) for name in needed}
        for cells in reader:
            where = f"{table} line {reader.line_num}"
            row = _row(cells, column, classes, out_of_set, root, where, seen, report)
            if row is not None:
                rows.append(row)
    report.enforce("labels")
    if not rows:
        raise CorpusError(f"{table}: no voice-only rows")
    splits = assign_splits([r.speaker or "" for r in rows], val_fraction, test_fraction, seed)
    return [replace(r, split=s) for r, s in zip(rows, splits, strict=True)]


def _row(
    cells: list[str],
    column: dict[str, int],
    classes: Sequence[str],
    out_of_set: str,
    root: Path,
    where: str,
    seen: set[str],
    report: SkipReport,
) -> Utterance | None:
    """One table row as an utterance; None for other modalities and (after reporting) bad rows."""
    if not any(c.strip() for c in cells):
        return None
    if len(cells) <= max(column.values()):
        report.skip("labels", where, "short row", f"{len(cells)} cells")
        return None
    try:
        row_id = int(cells[column[""]])
    except ValueError:
        report.skip("labels", where, "bad row id", repr(cells[column[""]]))
        return None
    if row_id // 100000 != VOICE_ONLY:
        report.count("vote rows of other modalities (not read)")
        return None
    name = cells[column["fileName"]]
    match = _CLIP.match(name)
    if not match:
        report.skip("labels", where, "bad clip name", f"{name!r}; expected e.g. 1001_DFA_ANG_XX")
        return None
    actor, sentence = match.group(1), match.group(2)
    if sentence not in SENTENCES:
        report.skip("labels", where, "unknown sentence", f"{sentence!r} in {name}; known: {', '.join(SENTENCES)}")
        return None
    if name in seen:
        report.skip("labels", where, "duplicate id", f"{name!r} has two voice-only rows")
        return None
    seen.add(name)
    votes = {cls: _number(cells[column[col]]) for cls, col in VOTE_COLUMNS.items()}
    if checked_distribution(votes, CREMA_D_CLASSES, where, report) is None:
        return None
    distribution = restrict_votes(votes, classes, out_of_set, where, report)  # type: ignore[arg-type]
    if distribution is None:
        return None
    return Utterance(
        id=name,
        audio=root / AUDIO_DIR / f"{name}.wav",
        transcript=SENTENCES[sentence].transcript,
        distribution=distribution,
        split="",
        speaker=actor,
        source=where,
    )
