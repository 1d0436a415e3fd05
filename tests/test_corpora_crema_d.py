"""CREMA-D reader on the real vote table (ambemo/data/assets), with audio the tests generate."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ambemo.config import compose
from ambemo.data.corpus import load_corpus
from ambemo.data.crema_d import read_crema_d
from ambemo.data.skips import CorpusError, SkipReport
from ambemo.data.synthetic_clips import SENTENCES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "crema-d"
TABLE = SHARED / "processedResults" / "tabulatedVotes.csv"
pytestmark = pytest.mark.skipif(
    not TABLE.is_file(), reason=f"the real CREMA-D vote table is not at {TABLE} (CI has ../shared beside the repo)"
)
CLIPS = [
    "1001_DFA_ANG_XX",
    "1002_IEO_HAP_HI",
    "1003_TIE_SAD_XX",
    "1004_MTI_NEU_XX",
    "1005_WSI_FEA_XX",
    "1006_ITS_DIS_XX",
]


def _table_lines() -> tuple[str, list[str]]:
    header, *rows = TABLE.read_text(encoding="utf-8").splitlines()
    return header, rows


def _copy(tmp_path: Path, rows: list[str] | None = None) -> Path:
    """A CREMA-D copy: the real table (or some of its rows) and an empty AudioWAV/."""
    root = tmp_path / "CREMA-D"
    (root / "processedResults").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    header, real = _table_lines()
    (root / "processedResults" / "tabulatedVotes.csv").write_text("\n".join([header, *(rows or real)]) + "\n")
    return root


def _audio(root: Path, names: list[str]) -> None:
    t = np.arange(24000) / 16000
    for i, name in enumerate(names):
        sf.write(root / "AudioWAV" / f"{name}.wav", 0.2 * np.sin(2 * np.pi * (150 + 20 * i) * t), 16000)


def _entropy(rows: list) -> float:
    p = np.array([r.distribution for r in rows])
    return float((-np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(1) / np.log(6)).mean())


def test_real_table(tmp_path: Path) -> None:
    report = SkipReport()
    rows = read_crema_d(_copy(tmp_path), report=report)
    assert len(rows) == 7442 and len({r.speaker for r in rows}) == 91
    assert report.counts == {"vote rows of other modalities (not read)": 2 * 7442} and not report.skips
    # Known statistics of the audio-only votes: mean distribution and mean normalised entropy
    mean = np.array([r.distribution for r in rows]).mean(0)
    assert mean == pytest.approx([0.1429, 0.1294, 0.1207, 0.0679, 0.4387, 0.1004], abs=1e-4)
    assert _entropy(rows) == pytest.approx(0.4627, abs=1e-4)
    first = next(r for r in rows if r.id == "1001_IEO_NEU_XX")
    assert first.distribution == pytest.approx((0, 0, 0, 1 / 11, 10 / 11, 0))
    assert first.transcript == SENTENCES["IEO"].transcript and first.audio.name == "1001_IEO_NEU_XX.wav"
    # Actor-disjoint, seeded splits: 9 + 9 of the 91 actors
    actors = {s: {r.speaker for r in rows if r.split == s} for s in ("train", "val", "test")}
    assert [len(actors[s]) for s in ("train", "val", "test")] == [73, 9, 9]
    assert not (actors["train"] & actors["val"] or actors["train"] & actors["test"] or actors["val"] & actors["test"])
    again = read_crema_d(_copy(tmp_path / "again"))
    assert [r.split for r in again] == [r.split for r in rows]
    other = read_crema_d(_copy(tmp_path / "other"), seed=1)
    assert [r.split for r in other] != [r.split for r in rows]


def test_class_subset(tmp_path: Path) -> None:
    report = SkipReport()
    rows = read_crema_d(_copy(tmp_path), ["anger", "neutral"], report=report)
    assert all(sum(r.distribution) == pytest.approx(1) for r in rows)
    assert report.by_reason() == {"policy: no vote in the class set": 7442 - len(rows)}
    assert report.counts["out-of-set votes dropped: fear"] > 0
    strict = SkipReport()
    kept = read_crema_d(_copy(tmp_path / "b"), ["anger", "neutral"], out_of_set="drop_utterance", report=strict)
    assert len(kept) < len(rows) and strict.by_reason()["policy: out-of-set votes (drop_utterance)"] > 0
    with pytest.raises(CorpusError, match=r"no votes for class\(es\) \['frustration'\]"):
        read_crema_d(_copy(tmp_path / "c"), ["anger", "frustration"])


def test_few_clips_with_audio_end_to_end(tmp_path: Path) -> None:
    _, real = _table_lines()
    chosen = [line for line in real if any(f'"{name}"' in line for name in CLIPS)]
    assert len(chosen) == 3 * len(CLIPS)  # each clip's voice, face and audio-visual rows
    root = _copy(tmp_path, chosen)
    _audio(root, CLIPS)
    corpus = load_corpus(compose("sft", ["data=crema_d", f"data.root={root}"]).data)
    assert sorted(r.id for r in corpus.rows) == sorted(CLIPS)
    assert [len(corpus.split(s)) for s in ("train", "val", "test")] == [4, 1, 1]
    assert corpus.audio.samples("1001_DFA_ANG_XX").shape == (24000,)
    assert corpus.report.skips == []


def test_full_table_with_few_audio_files(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _audio(root, CLIPS[:3])
    overrides = ["data=crema_d", f"data.root={root}"]
    corpus = load_corpus(compose("sft", overrides).data)  # conf/data/crema_d.yaml skips bad audio
    assert sorted(r.id for r in corpus.rows) == sorted(CLIPS[:3])
    assert corpus.report.by_reason() == {"audio: missing audio file": 7442 - 3}
    with pytest.raises(CorpusError) as err:
        load_corpus(compose("sft", [*overrides, "data.on_bad_audio=error"]).data)
    assert "7439 bad audio input(s)" in str(err.value) and "... and 7419 more" in str(err.value)
    assert f"{root}/AudioWAV/1001_IEO_NEU_XX.wav ({root}/processedResults/tabulatedVotes.csv line 2)" in str(err.value)


def _edit(row: str, **cells: str) -> str:
    """A real table row with some cells replaced (by column name)."""
    header = next(csv.reader([_table_lines()[0]]))
    values = next(csv.reader([row]))
    for name, value in cells.items():
        values[header.index(name)] = value
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().strip()


def test_bad_rows_name_their_line(tmp_path: Path) -> None:
    _, real = _table_lines()
    good = real[0]  # 100001, 1001_IEO_NEU_XX
    bad = {
        "negative": _edit(real[1], A="-1"),
        "nan": _edit(real[2], D="NA"),
        "zero": _edit(real[3], **dict.fromkeys("ADFHNS", "0")),
        "duplicate": good,
        "sentence": _edit(real[4], fileName="1001_XYZ_HAP_HI"),
        "name": _edit(real[5], fileName="not-a-clip"),
        "id": _edit(real[6], **{"": "abc"}),
    }
    reasons = {
        "negative": "bad vote count",
        "nan": "bad vote count",
        "zero": "zero votes",
        "duplicate": "duplicate id",
        "sentence": "unknown sentence",
        "name": "bad clip name",
        "id": "bad row id",
    }
    root = _copy(tmp_path, [good, *bad.values()])
    table = root / "processedResults" / "tabulatedVotes.csv"
    with pytest.raises(CorpusError) as err:
        read_crema_d(root)
    msg = str(err.value)
    for line, key in enumerate(bad, start=3):
        assert f"{table} line {line}: {reasons[key]}" in msg, key
    assert "count for 'anger' is -1.0" in msg and "count for 'disgust' is 'NA'" in msg
    report = SkipReport(on_bad_labels="skip")
    assert [r.id for r in read_crema_d(root, report=report)] == ["1001_IEO_NEU_XX"]
    assert sorted(s.reason for s in report.skips) == sorted(reasons.values())


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"tabulatedVotes\.csv not found; set data\.root"):
        read_crema_d(tmp_path)
    root = _copy(tmp_path)
    (root / "AudioWAV").rmdir()
    with pytest.raises(CorpusError, match="AudioWAV not found"):
        read_crema_d(root)
