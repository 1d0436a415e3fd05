"""Audio for the model: every kind of bad file is named with a reason; odd rates, channels and lengths are handled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ambemo.data.audio import AudioProblem, decode, resample


def tone(path: Path, seconds: float = 1.0, rate: int = 16000, channels: int = 1, hz: float = 220.0) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * hz * t)
    sf.write(path, np.stack([wave] * channels, axis=1), rate)
    return path


def _problem(path: Path, **kwargs: object) -> AudioProblem:
    with pytest.raises(AudioProblem) as err:
        decode(path, 16000, 3.0, **kwargs)  # type: ignore[arg-type]
    return err.value


def test_plain_clip(tmp_path: Path) -> None:
    clip = decode(tone(tmp_path / "a.wav", 1.0), 16000, 3.0)
    assert clip.samples.dtype == np.float32 and clip.samples.shape == (16000,)
    assert (clip.seconds, clip.source_rate, clip.channels, clip.truncated) == (1.0, 16000, 1, False)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 44101])
def test_other_rates_are_resampled_and_keep_pitch(tmp_path: Path, rate: int) -> None:
    clip = decode(tone(tmp_path / "a.wav", 1.0, rate=rate, hz=440.0), 16000, 3.0)
    assert clip.source_rate == rate
    assert abs(len(clip.samples) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.samples) - 440.0) < 2.0


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    left = 0.4 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000)
    clip = decode(path, 16000, 3.0)
    assert clip.channels == 2 and clip.samples.ndim == 1
    assert np.allclose(clip.samples, left / 2, atol=1e-4)


def test_long_clip_truncated_or_skipped(tmp_path: Path) -> None:
    path = tone(tmp_path / "long.wav", 10.0)
    clip = decode(path, 16000, 3.0)
    assert clip.truncated and clip.seconds == 10.0 and len(clip.samples) == 48000
    problem = _problem(path, skip_long=True)
    assert problem.kind == "policy" and problem.reason == "longer than max_seconds"


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    (tmp_path / "zero.wav").write_bytes(b"")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "short.wav", np.full(160, 0.5), 16000)
    tone(tmp_path / "low.wav", 1.0, rate=1000, hz=100.0)
    expected = {
        "nothing.wav": "missing audio file",
        "garbage.wav": "unreadable or corrupt audio",
        "zero.wav": "unreadable or corrupt audio",
        "empty.wav": "empty audio",
        "silent.wav": "silent audio",
        "nan.wav": "corrupt audio",
        "short.wav": "too short",
        "low.wav": "unusual sample rate",
    }
    for name, reason in expected.items():
        problem = _problem(tmp_path / name)
        assert (problem.kind, problem.reason) == ("audio", reason), name


def test_resample_identity() -> None:
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert resample(x, 16000, 16000) is x
