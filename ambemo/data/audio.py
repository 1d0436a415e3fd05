"""Reading one clip for the model: decode, validate, mix down, resample, cap the length.

Every corpus reaches the model through ``decode`` while its audio cache is built, so a bad file
is found and named before training starts, never inside a training step. soundfile (bundled
libsndfile) decodes WAV/FLAC/OGG/MP3 with nothing else installed, and torchaudio's resampler
needs no FFmpeg (HF ``datasets``' own audio decoding would need torchcodec + FFmpeg).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

#: The rate Qwen2-Audio's feature extractor expects (``ambemo.model.backbone.SAMPLE_RATE``).
TARGET_RATE = 16_000
#: Below this a file cannot carry intelligible speech (telephone speech is 8 kHz): a bad file.
MIN_RATE = 4_000
#: Shorter clips hold no speech, and yield too few audio frames for the encoder.
MIN_SECONDS = 0.1
#: A clip whose peak amplitude (of what the model would hear) is below this (-80 dBFS) is silent.
SILENCE_PEAK = 1e-4
#: Largest denominator of the resampling ratio (see ``resample``).
MAX_RATIO_DENOMINATOR = 1000


class AudioProblem(Exception):
    """Why a clip cannot be used. ``kind`` is ``audio`` (a bad file) or ``policy`` (too long, with skip)."""

    def __init__(self, reason: str, detail: str = "", kind: str = "audio") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.kind = kind


@dataclass(frozen=True)
class DecodedAudio:
    """A clip ready for the feature extractor, and what was done to get it there."""

    samples: np.ndarray
    """Mono float32 at the target rate, at most ``max_seconds`` long."""
    seconds: float
    """Duration of the file itself (before any truncation)."""
    source_rate: int
    channels: int
    truncated: bool


@functools.lru_cache(maxsize=16)
def _resampler(down: int, up: int) -> torch.nn.Module:
    import torchaudio.transforms as T

    return T.Resample(orig_freq=down, new_freq=up)  # the windowed-sinc kernel, computed once per ratio


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited (windowed-sinc, torchaudio) resampling of a mono float32 signal.

    The kernel depends only on the ratio target/rate in lowest terms; an odd rate (44101 Hz) would
    make that a kernel of gigabytes, so the ratio is approximated with a denominator of at most
    ``MAX_RATIO_DENOMINATOR``: exact for every common rate (8, 11.025, 22.05, 44.1, 48, 96 kHz...),
    and otherwise off by under 0.06 % in rate (a pitch change far below hearing).
    """
    if rate == target:
        return samples
    ratio = Fraction(target, rate).limit_denominator(MAX_RATIO_DENOMINATOR)
    with torch.no_grad():
        return _resampler(ratio.denominator, ratio.numerator)(torch.from_numpy(samples)).numpy()


def check_length(frames: int, rate: int) -> float:
    """The duration in seconds of ``frames`` samples at ``rate``; ``AudioProblem`` if the clip is
    empty, too short or below ``MIN_RATE``."""
    if frames <= 0:
        raise AudioProblem("empty audio", "0 samples")
    if rate < MIN_RATE:
        raise AudioProblem("unusual sample rate", f"{rate} Hz is below {MIN_RATE} Hz")
    seconds = frames / rate
    if seconds < MIN_SECONDS:
        raise AudioProblem("too short", f"{seconds:.3f} s; at least {MIN_SECONDS} s expected")
    return seconds


def decode(path: Path, sample_rate: int, max_seconds: float, skip_long: bool = False) -> DecodedAudio:
    """Decode ``path`` to mono float32 at ``sample_rate``, truncated to ``max_seconds``.

    Raises ``AudioProblem`` for a missing, unreadable, corrupt (non-finite samples), truncated
    (fewer samples than its header declares), empty, too short or silent file, a sample rate
    below ``MIN_RATE``, or (``skip_long``) a file longer than ``max_seconds``. Long files are only
    read up to ``max_seconds``.
    """
    if path.is_dir():
        raise AudioProblem("a folder, not an audio file")
    if not path.is_file():
        raise AudioProblem("missing audio file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for unreadable files
        raise AudioProblem("unreadable or corrupt audio", str(err).strip()) from None
    rate, channels = int(info.samplerate), int(info.channels)
    missing = missing_wav_bytes(path)
    if missing:
        raise AudioProblem("truncated audio", f"its header declares {missing} bytes of samples more than it holds")
    seconds = check_length(info.frames, rate)
    truncated = seconds > max_seconds
    if truncated and skip_long:
        raise AudioProblem(
            "longer than max_seconds", f"{seconds:.1f} s > {max_seconds} s (max_duration_policy=skip)", kind="policy"
        )
    frames = math.ceil(max_seconds * rate) if truncated else -1
    try:
        audio, _ = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioProblem("unreadable or corrupt audio", str(err).strip()) from None
    if audio.shape[0] == 0:
        raise AudioProblem("empty audio", "no samples could be decoded")
    return DecodedAudio(
        samples=to_model_rate(audio, rate, sample_rate, max_seconds),
        seconds=seconds,
        source_rate=rate,
        channels=channels,
        truncated=truncated,
    )


def missing_wav_bytes(path: Path) -> int:
    """How many bytes of a WAV file's declared sample data are absent (0: complete, or not a WAV).

    libsndfile reads a cut-off WAV as a shorter clip without a word (it sizes the data by the
    file); its RIFF header still declares the full length. Writers that stream (size 0 or
    0xFFFFFFFF, RF64) declare nothing to check against.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return 0
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length in (0, 0xFFFFFFFF):
                    return 0
                return max(0, f.tell() + length - size)
            f.seek(length + (length & 1), 1)  # chunks are padded to an even length


def to_model_rate(audio: np.ndarray, rate: int, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Samples shaped (frames, channels) at ``rate`` -> checked mono float32 at ``sample_rate``, capped.

    The part of ``decode`` after reading, shared with callers that hold samples in memory
    (``ambemo.load(...).predict(array, sample_rate=...)``). Raises ``AudioProblem`` for
    non-finite or silent audio.
    """
    if not np.isfinite(audio).all():
        raise AudioProblem("corrupt audio", "NaN or infinite samples")
    mono = np.ascontiguousarray(audio.mean(axis=1), dtype=np.float32)
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise AudioProblem("silent audio", f"peak {20 * math.log10(peak):.0f} dBFS" if peak > 0 else "all zeros")
    return resample(mono, rate, sample_rate)[: int(max_seconds * sample_rate)]
