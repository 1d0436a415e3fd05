"""The corpus manifest reader: good lines become utterances, bad lines are errors naming the line."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from ambemo.data.manifest import ManifestError, read_manifest
from ambemo.data.skips import SkipReport

CLASSES = ["anger", "neutral", "sadness"]
GOOD = {"id": "a", "audio": "wav/a.wav", "votes": {"anger": 1, "neutral": 3}, "split": "train"}


def _write(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_votes_and_distribution_lines(tmp_path: Path) -> None:
    other = {"id": "b", "audio": "b.wav", "distribution": {"sadness": 1.0}, "split": "test", "cot": "x"}
    rows = read_manifest(_write(tmp_path, GOOD, "", other), CLASSES)
    assert rows[0].distribution == (0.25, 0.75, 0.0)
    assert rows[0].audio == (tmp_path / "wav" / "a.wav").resolve()  # relative to the manifest
    assert rows[1].distribution == (0.0, 0.0, 1.0) and rows[1].cot == "x" and rows[1].transcript is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ({**GOOD, "id": ""}, "non-empty string 'id'"),
        ({**GOOD, "split": "dev"}, "'split' is 'dev'"),
        ({k: v for k, v in GOOD.items() if k != "votes"}, "needs 'votes' or 'distribution'"),
        ({**GOOD, "votes": {"joy": 2}}, "unknown class"),
        ({**GOOD, "votes": {"anger": 0}}, "all counts are zero"),
        ({**GOOD, "votes": {"anger": -1, "neutral": 2}}, "must be finite and >= 0"),
        ({**GOOD, "votes": {"anger": "3"}}, "expected a number"),
        ({k: v for k, v in GOOD.items() if k != "audio"}, "'audio'"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, line: object, message: str) -> None:
    path = _write(tmp_path, {**GOOD, "id": "first"}, line)
    with pytest.raises(ManifestError, match=message) as err:
        read_manifest(path, CLASSES)
    assert f"{path} line 2" in str(err.value)


def test_duplicate_ids(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="duplicate id 'a'"):
        read_manifest(_write(tmp_path, GOOD, GOOD), CLASSES)


def test_lines_without_split_get_a_seeded_speaker_disjoint_split(tmp_path: Path) -> None:
    lines = [{"id": f"u{i}", "audio": f"{i}.wav", "votes": {"anger": 1}, "speaker": f"spk{i % 10}"} for i in range(60)]
    lines[0]["split"] = "test"  # an explicit split is kept
    path = _write(tmp_path, *lines)
    rows = read_manifest(path, CLASSES, seed=1, val_fraction=0.2, test_fraction=0.1)
    assert rows[0].split == "test"
    speakers = {s: {r.speaker for r in rows[1:] if r.split == s} for s in ("train", "val", "test")}
    assert [len(speakers[s]) for s in ("train", "val", "test")] == [7, 2, 1]  # fractions of the 10 speakers
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"])
    assert [r.split for r in read_manifest(path, CLASSES, seed=1, val_fraction=0.2, test_fraction=0.1)] == [
        r.split for r in rows
    ]
    no_speaker = read_manifest(
        _write(tmp_path, *({k: v for k, v in x.items() if k != "speaker"} for x in lines)), CLASSES
    )
    assert {r.split for r in no_speaker} == {"train", "val", "test"}  # each line its own group


def test_classes_from_the_manifest(tmp_path: Path) -> None:
    from ambemo.config import ConfigError, compose
    from ambemo.data.manifest import manifest_classes

    other = {"id": "b", "audio": "b.wav", "distribution": {"sadness": 0.5, "fear": 0.5}}
    path = _write(tmp_path, GOOD, other, "{broken")
    assert manifest_classes(path) == ["anger", "fear", "neutral", "sadness"]  # sorted
    cfg = compose("sft", ["data=manifest", f"data.path={path}", "data.classes=[]"])
    assert list(cfg.data.classes) == ["anger", "fear", "neutral", "sadness"]
    chosen = compose("sft", ["data=manifest", f"data.path={path}", "data.classes=[neutral,anger,fear,sadness]"])
    assert list(chosen.data.classes) == ["neutral", "anger", "fear", "sadness"]  # an explicit list wins
    with pytest.raises(ConfigError, match="needs at least two"):
        compose(
            "sft", ["data=manifest", f"data.path={_write(tmp_path, GOOD | {'votes': {'anger': 1}})}", "data.classes=[]"]
        )


def test_skip_switch_counts_every_bad_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        GOOD,
        "{not json",
        "[1, 2]",
        GOOD,
        {**GOOD, "id": "c", "votes": {"joy": 1}},
        {**GOOD, "id": "d", "votes": {"anger": 0}},
        '{"id": "e", "audio": "e.wav", "votes": {"anger": NaN}}',
        {**GOOD, "id": "f", "votes": {"anger": -2}},
        {**GOOD, "id": "h", "cot": {"not": "text"}},
        {**GOOD, "id": "g"},
    )
    report = SkipReport(on_bad_labels="skip")
    assert [r.id for r in read_manifest(path, CLASSES, report)] == ["a", "g"]
    assert [(s.where, s.reason) for s in report.skips] == [
        (f"{path} line 2", "invalid JSON"),
        (f"{path} line 3", "not a JSON object"),
        (f"{path} line 4", "duplicate id"),
        (f"{path} line 5", "unknown class"),
        (f"{path} line 6", "zero votes"),
        (f"{path} line 7", "bad vote count"),
        (f"{path} line 8", "bad vote count"),
        (f"{path} line 9", "bad text field"),
    ]
    with pytest.raises(ManifestError, match=r"8 bad labels input\(s\)"):
        read_manifest(path, CLASSES)


def test_the_former_skip_report_module_still_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    # ambemo.data.report (DataReport) is kept for one release: corpus plugins import it
    monkeypatch.delitem(sys.modules, "ambemo.data.report", raising=False)
    with pytest.warns(FutureWarning, match=r"renamed ambemo\.data\.skips"):
        old = importlib.import_module("ambemo.data.report")
    assert old.DataReport is SkipReport
