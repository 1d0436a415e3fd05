"""IEMOCAP reader on a miniature release tree in the official layout and line formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ambemo.cli import main
from ambemo.config import compose
from ambemo.data.corpus import load_corpus
from ambemo.data.iemocap import read_iemocap
from ambemo.data.labels import IEMOCAP_CLASSES
from ambemo.data.skips import CorpusError, SkipReport

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
# Session 1 holds the interesting cases: {dialog: {utterance suffix: (consensus, [C-E judgements])}}
SESSION1 = {
    "Ses01F_impro01": {
        "F000": ("neu", ["Neutral state;", "Neutral state;", "Neutral state;"]),
        "M000": ("fru", ["Frustration; Anger;", "Anger;", "Frustration;"]),
        "F001": ("exc", ["Excited; Happiness;", "Excited;", "Neutral state;"]),
        "M001": ("xxx", ["Frustration;", "Other:Amused; a bit bored;", "Surprise;"]),
    },
    "Ses01F_script01_1": {
        "F000": ("sad", ["Sadness;", "Sadness;", "Neutral state;"]),
        "M000": ("ang", ["Anger;", "Anger; Frustration;", "Anger;"]),
    },
}
PLAIN = [("F000", "ang", ["Anger;", "Anger;", "Neutral state;"]), ("M000", "neu", ["Neutral state;"] * 3)]


def _block(uid: str, start: float, consensus: str, judgements: list[str]) -> str:
    lines = [f"[{start:.4f} - {start + 1.5:.4f}]\t{uid}\t{consensus}\t[2.5000, 3.0000, 3.5000]"]
    evaluators = (2, 3, 4) if len(judgements) == 3 else range(1, len(judgements) + 1)
    lines += [f"C-E{k}:\t{j}\t()" for k, j in zip(evaluators, judgements, strict=True)]
    lines += [
        "C-F1:\tNeutral state;\t(curious)",
        "A-E3:\tval 3; act 2; dom  2;\t()",
        "A-F1:\tval 3; act 2; dom  1;\t()",
    ]
    return "\n".join(lines) + "\n\n"


def _wav(path: Path, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(rate) / rate
    sf.write(path, 0.2 * np.sin(2 * np.pi * 180 * t), rate)


def write_dialog(root: Path, session: int, dialog: str, utts: dict[str, tuple[str, list[str]]]) -> None:
    base = root / f"Session{session}"
    blocks, transcript = [], []
    for i, (suffix, (consensus, judgements)) in enumerate(utts.items()):
        uid = f"{dialog}_{suffix}"
        blocks.append(_block(uid, 6.29 + 3 * i, consensus, judgements))
        transcript.append(f"{uid} [{6.29 + 3 * i:08.4f}-{7.79 + 3 * i:08.4f}]: Words of {uid}.")
        _wav(base / "sentences" / "wav" / dialog / f"{uid}.wav")
    transcript.append(f"{dialog}_MXX0 [099.0000-100.0000]: [LAUGHTER]")  # not an utterance
    evaluation = base / "dialog" / "EmoEvaluation"
    (evaluation / "Categorical").mkdir(parents=True, exist_ok=True)
    (evaluation / "Categorical" / f"{dialog}_e2_cat.txt").write_text(f"{dialog}_F000 :Neutral state; ()\n")
    (evaluation / f"{dialog}.txt").write_text(HEADER + "".join(blocks))
    (base / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
    (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript) + "\n")


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """IEMOCAP_full_release in miniature: 5 sessions, 2-3 dialogs each, 16 kHz wavs."""
    return build_release(tmp_path / "IEMOCAP_full_release")


def build_release(root: Path) -> Path:
    """Write the miniature release under ``root`` (also used by the experiment tests)."""
    for dialog, utts in SESSION1.items():
        write_dialog(root, 1, dialog, utts)
    for n in range(1, 6):
        for dialog in (f"Ses0{n}F_impro03", f"Ses0{n}M_impro04"):
            write_dialog(root, n, dialog, {s: (c, j) for s, c, j in PLAIN})
    (root / "Session1" / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07junk")
    return root


def _by_id(rows: list) -> dict:
    return {r.id: r for r in rows}


def test_votes_transcripts_and_counts(release: Path) -> None:
    report = SkipReport()
    rows = _by_id(read_iemocap(release, IEMOCAP_CLASSES, report=report))  # anger, happiness, sadness, neutral
    assert rows["Ses01F_impro01_F000"].distribution == (0, 0, 0, 1)
    assert rows["Ses01F_impro01_M000"].distribution == (1, 0, 0, 0)  # frustration votes dropped
    assert rows["Ses01F_impro01_F001"].distribution == (0, 0.75, 0, 0.25)  # excited merged, one vote per category
    assert rows["Ses01F_script01_1_F000"].distribution == pytest.approx((0, 0, 2 / 3, 1 / 3))
    assert "Ses01F_impro01_M001" not in rows  # frustration / other / surprise only
    assert len(rows) == 5 + 5 * 2 * 2
    first = rows["Ses01F_impro01_F000"]
    assert first.transcript == "Words of Ses01F_impro01_F000."
    assert first.audio == release / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert first.speaker == "Ses01F" and rows["Ses01F_impro01_M000"].speaker == "Ses01M"
    assert report.by_reason() == {"policy: no vote in the class set": 1}
    assert report.skips[0].where.endswith("Ses01F_impro01.txt line 27")  # the 4th block
    assert report.counts == {"out-of-set votes dropped: frustration": 3}


def test_multi_label_split_and_drop_utterance(release: Path) -> None:
    rows = _by_id(read_iemocap(release, IEMOCAP_CLASSES, multi_label="split"))
    assert rows["Ses01F_impro01_F001"].distribution == pytest.approx((0, 2 / 3, 0, 1 / 3))
    report = SkipReport()
    rows = _by_id(read_iemocap(release, IEMOCAP_CLASSES, out_of_set="drop_utterance", report=report))
    assert "Ses01F_impro01_M000" not in rows and "Ses01F_script01_1_M000" not in rows
    assert report.by_reason() == {"policy: out-of-set votes (drop_utterance)": 3}


def test_consensus_filter_and_excited_class(release: Path) -> None:
    report = SkipReport()
    rows = _by_id(read_iemocap(release, IEMOCAP_CLASSES, consensus_in_classes=True, report=report))
    assert "Ses01F_impro01_M000" not in rows and "Ses01F_impro01_M001" not in rows  # fru, xxx
    assert report.by_reason() == {"policy: consensus label not in the class set": 2}
    five = _by_id(read_iemocap(release, [*IEMOCAP_CLASSES, "excited"]))
    assert five["Ses01F_impro01_F001"].distribution == (0, 0.25, 0, 0.25, 0.5)
    with pytest.raises(CorpusError, match=r"no category for class\(es\) \['contempt'\]"):
        read_iemocap(release, ["anger", "contempt"])


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_leave_one_session_out(release: Path, fold: int) -> None:
    rows = read_iemocap(release, IEMOCAP_CLASSES, fold=fold, val_fraction=0.2, seed=3)
    session = f"Ses0{fold}"
    assert {r.id for r in rows if r.split == "test"} == {r.id for r in rows if r.id.startswith(session)}
    dialogs = {s: {r.id.rsplit("_", 1)[0] for r in rows if r.split == s} for s in ("train", "val")}
    assert dialogs["val"] and not dialogs["val"] & dialogs["train"]
    assert not any(d.startswith(session) for d in dialogs["val"] | dialogs["train"])
    again = read_iemocap(release, IEMOCAP_CLASSES, fold=fold, val_fraction=0.2, seed=3)
    assert [r.split for r in again] == [r.split for r in rows]


def _corrupt(release: Path, dialog: str, old: str, new: str) -> Path:
    path = release / f"Session1/dialog/EmoEvaluation/{dialog}.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ("Sadness;", "Sadnes;", 4, "unknown category"),
        ("[6.2900 - 7.7900]\tSes01F_script01_1_F000", "[6.29 7.79] Ses01F_script01_1_F000", 3, "cannot parse line"),
        ("\tsad\t", "\tjoy\t", 3, "unknown consensus label"),
        (
            "C-E2:\tSadness;\t()\nC-E3:\tSadness;\t()\nC-E4:\tNeutral state;\t()\n",
            "",
            3,
            "no evaluator votes",
        ),
    ],
)
def test_bad_label_lines(release: Path, old: str, new: str, line: int, reason: str) -> None:
    path = _corrupt(release, "Ses01F_script01_1", old, new)
    with pytest.raises(CorpusError, match=reason) as err:
        read_iemocap(release, IEMOCAP_CLASSES)
    assert f"{path} line {line}" in str(err.value) and "data.on_bad_labels=skip" in str(err.value)
    report = SkipReport(on_bad_labels="skip")
    rows = read_iemocap(release, IEMOCAP_CLASSES, report=report)
    assert len(rows) == 24 and [s.reason for s in report.skips if s.kind == "labels"] == [reason]


def test_duplicate_utterance_and_layout_errors(release: Path, tmp_path: Path) -> None:
    write_dialog(release, 2, "Ses02F_impro09", {"F000": ("neu", ["Neutral state;"])})
    dup = release / "Session2/dialog/EmoEvaluation/Ses02F_impro09.txt"
    dup.write_text(dup.read_text().replace("Ses02F_impro09_F000", "Ses02F_impro03_F000"))
    with pytest.raises(CorpusError, match=r"duplicate id .*'Ses02F_impro03_F000' appears twice"):
        read_iemocap(release, IEMOCAP_CLASSES)
    with pytest.raises(CorpusError, match=r"no Session1\.\.Session5 folders; set data\.root"):
        read_iemocap(tmp_path / "elsewhere", IEMOCAP_CLASSES)
    for n in (3, 4):
        (release / f"Session{n}").rename(tmp_path / f"moved{n}")
    with pytest.raises(CorpusError, match=r"data\.fold=3 tests on Session3, which is not there"):
        read_iemocap(release, IEMOCAP_CLASSES, fold=3)


def test_corpus_with_audio_problems(release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = release / "Session1/sentences/wav/Ses01F_impro01"
    (wav / "Ses01F_impro01_F000.wav").unlink()
    (wav / "Ses01F_impro01_F001.wav").write_bytes(b"not a wav")
    overrides = ["data=iemocap", f"data.root={release}", f"data.cache_dir={release.parent / 'cache'}"]
    with pytest.raises(CorpusError) as err:
        load_corpus(compose("sft", overrides).data)
    msg = str(err.value)
    assert "2 bad audio input(s) (data.on_bad_audio=error)" in msg
    assert "Ses01F_impro01_F000.wav (" in msg and "Ses01F_impro01.txt line 3): missing audio file" in msg
    assert "Ses01F_impro01_F001.wav" in msg and "unreadable or corrupt audio" in msg

    corpus = load_corpus(compose("sft", [*overrides, "data.on_bad_audio=skip"]).data)
    # consensus_in_classes (conf/data/iemocap.yaml) also excludes the fru and xxx utterances
    assert len(corpus.rows) == 26 - 2 - 2
    assert corpus.report.by_reason() == {
        "policy: consensus label not in the class set": 2,
        "audio: missing audio file": 1,
        "audio: unreadable or corrupt audio": 1,
    }
    assert all(corpus.split(s) for s in ("train", "val", "test"))

    out = release.parent / "summary.json"
    args = ["data", "summary", *overrides, "data.on_bad_audio=skip", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "missing audio file" in printed and "2 policy exclusions not listed" in printed
    summary = json.loads(out.read_text())
    assert summary["classes"] == list(IEMOCAP_CLASSES)
    assert summary["splits"]["test"]["utterances"] == 6  # Session 1: 10 less 2 bad files, fru and xxx
    assert summary["splits"]["all"]["duration_seconds"]["mean"] == 1.0
    assert len(summary["report"]["skips"]) == 4
