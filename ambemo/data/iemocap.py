"""IEMOCAP from the official release folder: one vote distribution per utterance from its evaluators.

Layout read (``data.root`` = ``IEMOCAP_full_release``, the release as distributed by its authors)::

    SessionN/dialog/EmoEvaluation/<dialog>.txt       labels (sub-folders are not read)
    SessionN/dialog/transcriptions/<dialog>.txt      transcripts
    SessionN/sentences/wav/<dialog>/<utterance>.wav  audio

Votes: every ``C-E<k>:`` line (an external evaluator's categorical judgement; the paper's "3
annotators") votes for the categories it lists. The actors' self-evaluations (``C-F``/``C-M``)
and dimensional ratings (``A-``) are not votes. A judgement listing k categories gives each one
vote (``data.multi_label_votes=each``, the default) or 1/k (``split``: every evaluator weighs the
same). Category names map to classes as: Neutral state -> neutral, Anger -> anger, Happiness ->
happiness, Excited -> happiness (or ``excited`` if that is one of ``data.classes``), Sadness ->
sadness, Frustration/Fear/Surprise/Disgust/Other -> their lower-case names (the free text after
``Other:`` is not a vote). An unknown category name is a bad label line (``data.on_bad_labels``).

Votes for categories outside ``data.classes`` (``data.out_of_set_votes``): ``renormalise`` drops
them and normalises the rest (an utterance left with none is skipped, counted), or
``drop_utterance`` skips any utterance that has one. ``data.consensus_in_classes=true`` keeps
only utterances whose consensus label is in the class set (with the 4 classes: the usual
5,531-utterance set). Dropped votes and skipped utterances are counted by category.

Folds (``data.fold`` = k in 1..5, leave-one-session-out): test = Session k; val = a seeded
``data.val_fraction`` of the dialogs of the other four sessions (dialog-disjoint from train, so
validation never hears a conversation it trained on, while train keeps ~90 % of four sessions);
train = the rest.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ambemo.data.manifest import OUT_OF_SET, Utterance, restrict_votes
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.splits import assign_splits

SESSIONS = 5
#: Evaluator category (lower-cased) -> class name; ``excited`` becomes ``happiness`` unless it is a class itself.
CATEGORIES = {
    "neutral state": "neutral",
    "anger": "anger",
    "happiness": "happiness",
    "excited": "excited",
    "sadness": "sadness",
    "frustration": "frustration",
    "fear": "fear",
    "surprise": "surprise",
    "disgust": "disgust",
    "other": "other",
}
#: Consensus codes of the block headers; ``xxx`` = the evaluators did not agree.
CONSENSUS = {
    "neu": "neutral",
    "ang": "anger",
    "hap": "happiness",
    "exc": "excited",
    "sad": "sadness",
    "fru": "frustration",
    "fea": "fear",
    "sur": "surprise",
    "dis": "disgust",
    "oth": "other",
    "xxx": None,
}
MULTI_LABEL = ("each", "split")

_NUM = r"\d+(?:\.\d+)?"
_HEADER = re.compile(rf"^\[\s*({_NUM})\s*-\s*({_NUM})\s*\]\s+(\S+)\s+(\S+)\s+\[[^\]]*\]\s*$")
_JUDGEMENT = re.compile(r"^C-(E|F|M)\d+:\s*([^()]*?)\s*(\(.*\))?\s*$")
_TRANSCRIPT = re.compile(r"^(\S+)\s*\[[^\]]*\]:\s?(.*)$")


@dataclass
class _Block:
    uid: str
    consensus: str
    where: str
    judgements: list[list[str]] = field(default_factory=list)
    """Class names listed by each external evaluator (before merging excited)."""
    bad: bool = False


def _read_text(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise CorpusError(f"{path}: cannot read: {err}") from None


def parse_evaluation(path: Path, report: SkipReport) -> list[_Block]:
    """The utterance blocks of one ``EmoEvaluation/<dialog>.txt``; bad lines go to ``report``.

    A block with a bad line is marked ``bad`` (its utterance is then skipped); judgements after
    an unreadable header belong to no utterance and are ignored with it.
    """
    blocks: list[_Block] = []
    current: _Block | None = None
    in_blocks = False  # a header (readable or not) was seen
    for number, raw in enumerate(_read_text(path), start=1):
        line = raw.strip()
        where = f"{path} line {number}"
        if not line or line.startswith("%") or line.startswith("A-"):
            continue
        header = _HEADER.match(line)
        in_blocks = in_blocks or line.startswith("[")
        if header:
            current = _Block(uid=header.group(3), consensus=header.group(4), where=where)
            blocks.append(current)
            continue
        judgement = _JUDGEMENT.match(line)
        if not judgement:
            report.skip("labels", where, "cannot parse line", repr(raw[:80]))
            if line.startswith("["):  # an utterance header: what follows belongs to no utterance
                current = None
            elif current is not None:
                current.bad = True
            continue
        if current is None:
            if not in_blocks:
                report.skip("labels", where, "judgement before any utterance header", repr(raw[:80]))
            continue
        if judgement.group(1) != "E":
            continue  # the actors' self-evaluation is not an evaluator vote
        names: list[str] = []
        for item in judgement.group(2).split(";"):
            category = item.split(":", 1)[0].strip().lower()  # "Other:Amused" -> "other"
            if not category or (category not in CATEGORIES and "other" in names):
                continue  # free text after "Other:" may itself contain ";"
            if category not in CATEGORIES:
                known = ", ".join(sorted(CATEGORIES))
                report.skip("labels", where, "unknown category", f"{item.strip()!r}; known: {known}")
                current.bad = True
                continue
            names.append(CATEGORIES[category])
        current.judgements.append(names)
    return blocks


def parse_transcriptions(path: Path) -> dict[str, str]:
    """``{utterance id: text}`` of one ``transcriptions/<dialog>.txt`` (other lines are not utterances)."""
    found = {}
    for raw in _read_text(path):
        match = _TRANSCRIPT.match(raw.strip())
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _votes(block: _Block, multi_label: str, merge_excited: bool) -> Counter[str]:
    votes: Counter[str] = Counter()
    for names in block.judgements:
        for name in names:
            name = "happiness" if merge_excited and name == "excited" else name
            votes[name] += 1.0 if multi_label == "each" else 1.0 / len(names)
    return votes


def _speaker(uid: str) -> str:
    """``Ses01F_impro01_M003`` -> ``Ses01M``: the session and the gender of who speaks."""
    return uid[:5] + uid.rsplit("_", 1)[-1][:1]


def _sessions(root: Path, fold: int) -> dict[int, Path]:
    sessions = {n: root / f"Session{n}" for n in range(1, SESSIONS + 1) if (root / f"Session{n}").is_dir()}
    if not sessions:
        raise CorpusError(f"{root}: no Session1..Session5 folders; set data.root to the IEMOCAP_full_release folder")
    if fold not in sessions:
        raise CorpusError(f"{root}: data.fold={fold} tests on Session{fold}, which is not there")
    return sessions


def read_iemocap(
    root: str | Path,
    classes: Sequence[str],
    fold: int = 1,
    out_of_set: str = "renormalise",
    multi_label: str = "each",
    consensus_in_classes: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    report: SkipReport | None = None,
) -> list[Utterance]:
    """Every usable utterance of the release under ``root``, split for leave-one-session-out fold ``fold``."""
    root = Path(root).absolute()
    report = report if report is not None else SkipReport()
    if out_of_set not in OUT_OF_SET or multi_label not in MULTI_LABEL:
        raise ValueError(f"out_of_set must be in {OUT_OF_SET} and multi_label in {MULTI_LABEL}")
    known = set(CATEGORIES.values())
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise CorpusError(f"IEMOCAP has no category for class(es) {unknown}; its classes are {sorted(known)}")
    merge_excited = "excited" not in classes
    rows: list[Utterance] = []
    seen: set[str] = set()
    for number, session in _sessions(root, fold).items():
        evaluations = sorted((session / "dialog" / "EmoEvaluation").glob("*.txt"))
        if not evaluations:
            raise CorpusError(f"{session}/dialog/EmoEvaluation: no evaluation files")
        for path in evaluations:
            if path.name.startswith("."):  # e.g. macOS "._" metadata files in copied releases
                continue
            dialog = path.stem
            transcript_file = session / "dialog" / "transcriptions" / f"{dialog}.txt"
            transcripts = parse_transcriptions(transcript_file) if transcript_file.is_file() else {}
            for block in parse_evaluation(path, report):
                if block.uid in seen:
                    report.skip("labels", block.where, "duplicate id", f"{block.uid!r} appears twice")
                    continue
                seen.add(block.uid)
                distribution = _distribution(
                    block, classes, out_of_set, multi_label, merge_excited, consensus_in_classes, report
                )
                if distribution is None:
                    continue
                text = transcripts.get(block.uid)
                if text is None:
                    report.count("no transcript")
                rows.append(
                    Utterance(
                        id=block.uid,
                        audio=session / "sentences" / "wav" / dialog / f"{block.uid}.wav",
                        transcript=text or None,
                        distribution=distribution,
                        split="test" if number == fold else f"dialog:{dialog}",
                        speaker=_speaker(block.uid),
                        source=block.where,
                    )
                )
    report.enforce("labels")
    return _split_dialogs(rows, val_fraction, seed)


def _distribution(
    block: _Block,
    classes: Sequence[str],
    out_of_set: str,
    multi_label: str,
    merge_excited: bool,
    consensus_in_classes: bool,
    report: SkipReport,
) -> tuple[float, ...] | None:
    """The block's distribution over ``classes``, or None after recording why it has none."""
    if block.bad:
        return None  # its bad line is already reported
    if block.consensus not in CONSENSUS:
        report.skip("labels", block.where, "unknown consensus label", repr(block.consensus))
        return None
    if consensus_in_classes:
        consensus = CONSENSUS[block.consensus]
        consensus = "happiness" if merge_excited and consensus == "excited" else consensus
        if consensus not in classes:
            report.skip("policy", block.where, "consensus label not in the class set", block.consensus)
            return None
    votes = _votes(block, multi_label, merge_excited)
    if not votes:
        report.skip("labels", block.where, "no evaluator votes", f"{block.uid} has no C-E judgement")
        return None
    return restrict_votes(votes, classes, out_of_set, block.where, report)


def _split_dialogs(rows: list[Utterance], val_fraction: float, seed: int) -> list[Utterance]:
    """Training-session rows (marked ``dialog:<name>``) become val or train by seeded dialog."""
    open_rows = [i for i, r in enumerate(rows) if r.split.startswith("dialog:")]
    splits = assign_splits([rows[i].split for i in open_rows], val_fraction, 0.0, seed)
    for i, split in zip(open_rows, splits, strict=True):
        rows[i] = replace(rows[i], split=split)
    return rows
