"""Acoustic descriptors measured locally, for endpoints that cannot take audio (``--text-only``).

A text-only model cannot hear the clip, so it gets what a phonetician would read off it:
pitch level, range, variability and contour (``torchaudio.functional.detect_pitch_frequency``
over speech frames), loudness and its range, a speaking-rate estimate (energy peaks, i.e.
syllable nuclei, per second of speech), pauses, and spectral brightness. The numbers are crude
on purpose (no speaker normalisation, uncalibrated level) and are described as measurements,
so the model can weigh them; they are deterministic, which keeps a store's prompts reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

HOP_S = 0.01
#: Frames quieter than the loudest by more than this (dB) are not speech.
SPEECH_RANGE_DB = 35.0
#: Absolute floor (dBFS) below which nothing is speech.
SILENCE_DBFS = -60.0
MIN_PAUSE_S = 0.15
MIN_SYLLABLE_GAP_S = 0.12
PITCH_LOW_HZ, PITCH_HIGH_HZ = 60.0, 500.0
WORK_RATE = 16000


@dataclass(frozen=True)
class Descriptors:
    """Measured cues of one clip (NaN where a cue could not be measured, e.g. no voiced frames)."""

    duration_s: float
    speech_s: float
    pitch_median_hz: float
    pitch_p10_hz: float
    pitch_p90_hz: float
    pitch_range_st: float
    pitch_sd_st: float
    """Robust SD of pitch around the median, in semitones (interquartile range / 1.349)."""
    pitch_slope_st_per_s: float
    loudness_dbfs: float
    loudness_range_db: float
    rate_syll_per_s: float
    pauses: int
    pause_total_s: float
    pause_longest_s: float
    centroid_hz: float

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def load_mono(source: str | Path | BinaryIO) -> tuple[torch.Tensor, int]:
    """Mono float waveform at ``WORK_RATE`` (resampled if needed), from a path or an open binary file."""
    audio, rate = sf.read(str(source) if isinstance(source, str | Path) else source, dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if rate != WORK_RATE:
        wave = AF.resample(wave, rate, WORK_RATE)
    return wave, WORK_RATE


def _frames_db(wave: torch.Tensor, rate: int) -> torch.Tensor:
    hop = int(HOP_S * rate)
    win = 2 * hop
    padded = torch.nn.functional.pad(wave, (hop // 2, win))
    frames = padded.unfold(0, win, hop)[: max(1, math.ceil(wave.numel() / hop))]
    rms = frames.pow(2).mean(-1).clamp_min(1e-12).sqrt()
    return 20 * torch.log10(rms)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) index pairs of the True runs of a 1-D bool mask."""
    runs, start = [], None
    for i, on in enumerate(mask.tolist()):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, mask.numel()))
    return runs


def _syllable_peaks(level_db: torch.Tensor, speech: torch.Tensor) -> int:
    """Count energy peaks (syllable nuclei): local maxima of the smoothed level, 3 dB above its
    neighbourhood's minimum, at least ``MIN_SYLLABLE_GAP_S`` apart."""
    smooth = torch.nn.functional.avg_pool1d(level_db[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
    gap = round(MIN_SYLLABLE_GAP_S / HOP_S)
    peaks: list[int] = []
    for i in range(1, smooth.numel() - 1):
        if not speech[i] or smooth[i] < smooth[i - 1] or smooth[i] < smooth[i + 1]:
            continue
        lo, hi = max(0, i - gap), min(smooth.numel(), i + gap + 1)
        if smooth[i] - min(smooth[lo:i].min(), smooth[i + 1 : hi].min()) < 3.0:
            continue
        if peaks and i - peaks[-1] < gap:
            if smooth[i] > smooth[peaks[-1]]:
                peaks[-1] = i
            continue
        peaks.append(i)
    return len(peaks)


def measure(wave: torch.Tensor, rate: int) -> Descriptors:
    """Measure a mono waveform (see the module docstring for what and why).

    The tensors are small: callers running many clips should use one torch thread
    (``torch.set_num_threads(1)``); on a busy machine intra-op threads make this 100x slower.
    """
    wave = wave.float().flatten()
    duration = wave.numel() / rate
    level = _frames_db(wave, rate)
    threshold = max(float(level.max()) - SPEECH_RANGE_DB, SILENCE_DBFS)
    speech = level > threshold
    speech_frames = torch.nonzero(speech).flatten()
    nan = float("nan")
    if speech_frames.numel() == 0:
        unmeasured = dict.fromkeys(f.name for f in fields(Descriptors) if f.name.startswith(("pitch", "loud", "cent")))
        return Descriptors(
            duration_s=duration,
            speech_s=0.0,
            rate_syll_per_s=0.0,
            pauses=0,
            pause_total_s=0.0,
            pause_longest_s=0.0,
            **{name: nan for name in unmeasured},
        )
    first, last = int(speech_frames[0]), int(speech_frames[-1]) + 1
    speech_s = float(speech.sum()) * HOP_S

    pauses = [(b - a) * HOP_S for a, b in _runs(~speech[first:last]) if (b - a) * HOP_S >= MIN_PAUSE_S]

    pitch = AF.detect_pitch_frequency(wave, rate, frame_time=HOP_S, freq_low=int(PITCH_LOW_HZ), freq_high=500)
    n = min(pitch.numel(), level.numel())
    voiced = speech[:n] & (pitch[:n] >= PITCH_LOW_HZ) & (pitch[:n] <= PITCH_HIGH_HZ)
    f0 = pitch[:n][voiced]
    if f0.numel() >= 3:
        semis = 12 * torch.log2(f0 / f0.median())
        p10, p50, p90 = (float(torch.quantile(f0, q)) for q in (0.1, 0.5, 0.9))
        times = torch.nonzero(voiced).flatten().float() * HOP_S
        slope = float(torch.linalg.lstsq(torch.stack([times, torch.ones_like(times)], 1), semis[:, None]).solution[0])
        q25, q75 = (float(torch.quantile(semis, q)) for q in (0.25, 0.75))
        robust_sd = (q75 - q25) / 1.349  # octave errors of the tracker must not inflate the spread
        pitch_stats = (p50, p10, p90, 12 * math.log2(p90 / p10), robust_sd, slope)
    else:
        pitch_stats = (nan,) * 6

    speech_level = level[speech]
    loud = float(10 * torch.log10(torch.pow(10, speech_level / 10).mean()))
    loud_range = float(torch.quantile(speech_level, 0.95) - torch.quantile(speech_level, 0.10))
    rate_est = _syllable_peaks(level, speech) / max(speech_s, HOP_S)

    hop = int(HOP_S * rate)
    centroid = AF.spectral_centroid(
        wave, rate, pad=0, window=torch.hann_window(2 * hop), n_fft=512, hop_length=hop, win_length=2 * hop
    )
    m = min(centroid.numel(), speech.numel())
    centroid_hz = float(centroid[:m][speech[:m]].nanmean()) if bool(speech[:m].any()) else nan

    return Descriptors(
        duration_s=duration,
        speech_s=speech_s,
        pitch_median_hz=pitch_stats[0],
        pitch_p10_hz=pitch_stats[1],
        pitch_p90_hz=pitch_stats[2],
        pitch_range_st=pitch_stats[3],
        pitch_sd_st=pitch_stats[4],
        pitch_slope_st_per_s=pitch_stats[5],
        loudness_dbfs=loud,
        loudness_range_db=loud_range,
        rate_syll_per_s=rate_est,
        pauses=len(pauses),
        pause_total_s=sum(pauses),
        pause_longest_s=max(pauses, default=0.0),
        centroid_hz=centroid_hz,
    )


def _contour(slope: float) -> str:
    if math.isnan(slope):
        return "unknown"
    if abs(slope) < 1.0:
        return "fairly flat overall"
    return f"{'rising' if slope > 0 else 'falling'} overall ({slope:+.1f} semitones/s)"


def describe(d: Descriptors) -> str:
    """The descriptors as the lines the text-only request carries."""
    if math.isnan(d.pitch_median_hz):
        pitch = "- pitch: no voiced frames found"
    else:
        pitch = (
            f"- pitch: median {d.pitch_median_hz:.0f} Hz; range {d.pitch_range_st:.1f} semitones "
            f"(10th-90th percentile {d.pitch_p10_hz:.0f}-{d.pitch_p90_hz:.0f} Hz); variability "
            f"{d.pitch_sd_st:.1f} semitones (SD); contour {_contour(d.pitch_slope_st_per_s)}"
        )
    return "\n".join(
        [
            f"- duration: {d.duration_s:.2f} s, of which speech {d.speech_s:.2f} s",
            pitch,
            f"- loudness: {d.loudness_dbfs:.1f} dBFS over speech (uncalibrated recording level), "
            f"dynamic range {d.loudness_range_db:.1f} dB",
            f"- speaking rate: about {d.rate_syll_per_s:.1f} syllables/s of speech (energy-peak estimate)",
            f"- pauses (>= {MIN_PAUSE_S:.2f} s): {d.pauses}, {d.pause_total_s:.2f} s in total, "
            f"longest {d.pause_longest_s:.2f} s",
            f"- spectral centroid (brightness): {d.centroid_hz:.0f} Hz over speech",
        ]
    )


def describe_file(source: str | Path | BinaryIO) -> str:
    """Measure and describe an audio file (a path or an open binary file)."""
    wave, rate = load_mono(source)
    return describe(measure(wave, rate))
