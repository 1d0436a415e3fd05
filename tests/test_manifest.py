"""The corpus manifest reader: good lines become utterances, bad lines are errors naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambemo.data.manifest import ManifestError, read_manifest

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
