"""The audio cache: built once, keyed by the audio files and settings, never re-reading audio on a second run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import DictConfig

from ambemo.config import compose
from ambemo.data.corpus import load_corpus
from ambemo.data.skips import CorpusError


def write_manifest(root: Path, n: int = 6, rate: int = 22050, seconds: float = 1.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        t = np.arange(int(seconds * rate)) / rate
        sf.write(root / f"c{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 10 * i) * t), rate)
        votes = {"anger": i % 3, "neutral": 2, "sadness": 1}
        lines.append(json.dumps({"id": f"c{i}", "audio": f"c{i}.wav", "votes": votes, "speaker": f"s{i % 3}"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


def data_cfg(manifest: Path, *overrides: str) -> DictConfig:
    return compose("sft", ["data=manifest", f"data.path={manifest}", *overrides]).data


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts soundfile calls (``info`` and ``read``): the only way audio is read."""
    calls: Counter = Counter()
    for name in ("info", "read"):
        original = getattr(sf, name)

        def counted(*args: object, _original=original, _name=name, **kwargs: object) -> object:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(sf, name, counted)
    return calls


def test_second_run_reads_no_audio(tmp_path: Path, reads: Counter) -> None:
    manifest = write_manifest(tmp_path / "corpus")
    first = load_corpus(data_cfg(manifest))
    assert reads["read"] == 6
    assert first.audio.folder.parent == tmp_path / "corpus" / ".ambemo-cache"
    assert first.report.counts == {"resampled from 22050 Hz": 6}
    reads.clear()
    second = load_corpus(data_cfg(manifest))
    assert reads == Counter() and second.audio.folder == first.audio.folder
    assert np.array_equal(second.audio.samples("c3"), first.audio.samples("c3"))
    assert second.report.counts == first.report.counts  # counted events survive in the cache
    # Labels, splits, seeds and switches are applied after the cache: changing them reads no audio.
    load_corpus(data_cfg(manifest, "data.seed=5", "data.val_fraction=0.3", "data.classes=[anger,neutral,sadness]"))
    assert reads == Counter()


@pytest.mark.parametrize("change", ["max_seconds", "file", "new_file"])
def test_what_invalidates(tmp_path: Path, reads: Counter, change: str) -> None:
    manifest = write_manifest(tmp_path / "corpus")
    before = load_corpus(data_cfg(manifest)).audio.folder
    reads.clear()
    overrides = []
    if change == "max_seconds":
        overrides = ["data.max_seconds=0.5"]
    elif change == "file":
        sf.write(tmp_path / "corpus" / "c0.wav", 0.1 * np.ones(8000), 16000)
    else:
        extra = {"id": "c9", "audio": "c0.wav", "votes": {"anger": 1, "neutral": 1}}
        manifest.write_text(manifest.read_text() + json.dumps(extra) + "\n")
    after = load_corpus(data_cfg(manifest, *overrides))
    assert after.audio.folder != before and reads["read"] == (7 if change == "new_file" else 6)
    if change == "max_seconds":
        assert after.report.counts["truncated to max_seconds"] == 6 and len(after.audio.samples("c1")) == 8000


def test_incomplete_cache_is_rebuilt(tmp_path: Path, reads: Counter) -> None:
    manifest = write_manifest(tmp_path / "corpus", n=3)
    folder = load_corpus(data_cfg(manifest)).audio.folder
    (folder / "cache.json").unlink()  # as a killed build would leave it
    reads.clear()
    assert load_corpus(data_cfg(manifest)).audio.folder == folder and reads["read"] == 3


def test_switches_apply_to_a_cached_build(tmp_path: Path, reads: Counter) -> None:
    manifest = write_manifest(tmp_path / "corpus")
    (tmp_path / "corpus" / "c2.wav").unlink()
    sf.write(tmp_path / "corpus" / "c4.wav", np.zeros(16000), 16000)
    skipped = load_corpus(data_cfg(manifest, "data.on_bad_audio=skip"))
    assert sorted(r.id for r in skipped.rows) == ["c0", "c1", "c3", "c5"]
    assert skipped.report.by_reason() == {"audio: missing audio file": 1, "audio: silent audio": 1}
    reads.clear()
    with pytest.raises(CorpusError) as err:
        load_corpus(data_cfg(manifest))
    assert reads == Counter()  # the cached build remembers its bad files
    assert f"{tmp_path}/corpus/c2.wav ({manifest} line 3): missing audio file" in str(err.value)
    assert "c4.wav" in str(err.value) and "silent audio (all zeros)" in str(err.value)


def test_max_duration_policy(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "corpus", n=3, rate=16000, seconds=4.0)
    truncated = load_corpus(data_cfg(manifest, "data.max_seconds=3"))
    assert truncated.report.counts == {"truncated to max_seconds": 3}
    assert len(truncated.audio.samples("c0")) == 48000 and truncated.audio.seconds(["c0"])[0] == 4.0
    with pytest.raises(CorpusError, match=r"no utterance is left .*3 policy: longer than max_seconds"):
        load_corpus(data_cfg(manifest, "data.max_seconds=3", "data.max_duration_policy=skip"))


def test_unwritable_cache_dir_is_named(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "corpus", n=3)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CorpusError, match=r"cannot create the audio cache .* set data\.cache_dir"):
        load_corpus(data_cfg(manifest, f"data.cache_dir={blocker / 'cache'}"))
