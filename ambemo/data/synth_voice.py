"""Spoken words with controllable prosody: eSpeak NG for the words, numpy DSP for the rest.

The built-in corpus must speak real sentences, install from pip alone (no root, no apt) and be
byte-reproducible from a seed. eSpeak NG, as bundled by the PyPI package ``espeakng-loader``
(library and voice data in one wheel), meets the first two; this module drives it through
``ctypes`` and handles the third:

* eSpeak keeps synthesis state in C statics that neither ``espeak_Terminate`` nor a new
  ``espeak_Initialize`` resets (e.g. the pitch "flutter" index), so the same call gives
  slightly different audio depending on what the process spoke before. Every clip therefore
  loads a *private copy* of the library afresh and unloads it afterwards (under 1 ms), and
  seeds eSpeak's random generator. The private copy guarantees that no other user of
  libespeak-ng in the process keeps it mapped, which would silently defeat the reload.
* eSpeak realises speaking rate, pitch level, pitch range and the voice (male/female
  variants). Loudness, spectral tilt, breath noise and tremor are applied after synthesis.
"""

from __future__ import annotations

import _ctypes
import ctypes
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

#: eSpeak's speaking rate at its normal 175 words per minute, taken as 4.2 syllables per second:
#: the neutral prototype's rate, so that a neutral clip is spoken at eSpeak's natural tempo.
NEUTRAL_RATE = 4.2
ESPEAK_NORMAL_WPM = 175
ESPEAK_MIN_WPM, ESPEAK_MAX_WPM = 80, 450
#: Median-f0 shift in semitones (averaged over 7 voice variants and 4 sentences, range 25)
#: measured for eSpeak pitch settings 10..100; eSpeak's scale is not linear in semitones.
PITCH_CALIBRATION = (
    (10, -5.8),
    (20, -4.8),
    (30, -3.3),
    (40, -1.7),
    (50, 0.0),
    (60, 1.8),
    (70, 3.7),
    (80, 5.6),
    (90, 7.6),
    (100, 9.4),
)
#: eSpeak range setting per semitone of "pitch range": its 10th-90th percentile f0 spread is
#: about 0.125 st per unit, so ``range_st`` is roughly half that spread.
RANGE_UNITS_PER_ST = 12.5
#: Spectral tilt is applied relative to this (the neutral prototype's tilt), pivoting at 1 kHz.
NEUTRAL_TILT_DB_OCT = -12.0
#: Active-speech RMS level of a clip whose loudness offset is 0 dB; leaves headroom for +15 dB.
BASE_LEVEL_DBFS = -30.0
#: Constant background floor, so that no frame is digital silence (log-mel stays finite).
FLOOR_DBFS = -80.0
TRAIL_SECONDS = 0.1

# espeak_AUDIO_OUTPUT, espeak_PARAMETER and flag values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _PITCH, _RANGE = 1, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class VoiceSpec:
    """Everything needed to render one clip; all values are the realised ones (cues + speaker)."""

    text: str
    variant: str  # eSpeak voice, e.g. "en-us+m3"
    f0_st: float  # pitch level, semitones relative to the variant's default
    range_st: float  # pitch range (see RANGE_UNITS_PER_ST)
    rate: float  # syllables per second; NEUTRAL_RATE is eSpeak's normal rate
    loud_db: float  # loudness offset from BASE_LEVEL_DBFS
    tilt: float  # spectral tilt in dB/octave (NEUTRAL_TILT_DB_OCT leaves the voice unchanged)
    noise: float  # breath-noise level relative to the local speech level
    tremor_st: float  # vibrato depth, semitones
    tremor_hz: float  # vibrato rate
    lead_s: float  # silence before the speech
    seed: int  # eSpeak's random generator and the breath noise


def espeak_paths() -> tuple[Path, Path]:
    """The library and voice data bundled by ``espeakng-loader``, with a clear error if it is missing."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise ImportError(
            "the built-in synthetic corpus speaks with eSpeak NG from the 'espeakng-loader' package; "
            "install it with: pip install espeakng-loader"
        ) from err
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


def private_library(folder: str | Path) -> Path:
    """Copy libespeak-ng into ``folder`` (once per process) so that this process alone maps it."""
    library, _ = espeak_paths()
    target = Path(folder) / f"libespeak-ng-{os.getpid()}{library.suffix}"
    if not target.exists():
        shutil.copyfile(library, target)
    return target


def espeak_version(library: str | Path) -> str:
    """The eSpeak NG version string of ``library`` (for the corpus's provenance)."""
    lib = ctypes.CDLL(str(library))
    try:
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        return lib.espeak_Info(None).decode()
    finally:
        _ctypes.dlclose(lib._handle)


def espeak_pitch(f0_st: float) -> int:
    """eSpeak pitch setting (10..100) for a pitch-level shift in semitones."""
    settings, semitones = zip(*PITCH_CALIBRATION, strict=True)
    return round(float(np.interp(f0_st, semitones, settings)))


def espeak_range(range_st: float) -> int:
    """eSpeak range setting (0..99) for a pitch range in semitones."""
    return round(min(max(range_st * RANGE_UNITS_PER_ST, 0.0), 99.0))


def espeak_wpm(rate: float) -> int:
    """eSpeak words per minute for a rate in syllables per second."""
    return round(min(max(ESPEAK_NORMAL_WPM * rate / NEUTRAL_RATE, ESPEAK_MIN_WPM), ESPEAK_MAX_WPM))


def speak(
    library: Path, text: str, variant: str, wpm: int, pitch: int, pitch_range: int, seed: int
) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` with a freshly loaded eSpeak; returns (float waveform in [-1, 1], sample rate)."""
    _, data = espeak_paths()
    chunks: list[np.ndarray] = []

    def collect(wav, count, _events):
        if wav and count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = _CALLBACK(collect)
    lib = ctypes.CDLL(str(library))
    try:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(), 0)
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {data}")
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(variant.encode()) != 0:
            raise RuntimeError(f"eSpeak has no voice {variant!r}")
        lib.espeak_ng_SetRandSeed(seed)
        for parameter, value in ((_RATE, wpm), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(parameter, value, 0)
        encoded = text.encode()
        if lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
            raise RuntimeError(f"espeak_Synth failed for {text!r}")
        lib.espeak_Synchronize()
        lib.espeak_Terminate()
    finally:
        _ctypes.dlclose(lib._handle)
    if not chunks:
        raise RuntimeError(f"eSpeak produced no audio for {text!r}")
    return np.concatenate(chunks).astype(np.float64) / 32768.0, sample_rate


def _trim(x: np.ndarray, threshold: float = 0.006) -> np.ndarray:
    """Drop eSpeak's leading and trailing near-silence."""
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0] : loud[-1] + 1] if loud.size else x


def _tremor(x: np.ndarray, sample_rate: int, depth_st: float, rate_hz: float, phase: float) -> np.ndarray:
    """Vibrato of ``depth_st`` semitones by a small sinusoidal time-warp (changes f0, keeps duration)."""
    if depth_st <= 0:
        return x
    # A delay d(t) = A cos(2 pi f t) scales the instantaneous pitch by 1 + 2 pi f A sin(...);
    # choose A so that this peak ratio is 2 ** (depth / 12).
    amplitude = (2.0 ** (depth_st / 12.0) - 1.0) / (2.0 * math.pi * rate_hz)
    t = np.arange(x.size) / sample_rate
    source = (t + amplitude * np.cos(2.0 * math.pi * rate_hz * t + phase)) * sample_rate
    return np.interp(source, np.arange(x.size), x, left=0.0, right=0.0)


def _resample_with_tilt(x: np.ndarray, rate_in: int, rate_out: int, tilt_db_oct: float) -> np.ndarray:
    """FFT resampling to ``rate_out`` combined with a spectral tilt change (one FFT pair).

    The input is zero-padded to a length whose resampled length is an exact integer, so the
    rate ratio is exact. The tilt gain is (f / 1 kHz) ** (tilt / 6.02), held flat below 200 Hz.
    """
    step = rate_in // math.gcd(rate_in, rate_out)
    n_in = -(-x.size // step) * step
    n_out = n_in * rate_out // rate_in
    spectrum = np.fft.rfft(x, n_in)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(out.size, spectrum.size)
    freqs = np.arange(keep) * rate_in / n_in
    gain = (np.maximum(freqs, 200.0) / 1000.0) ** (tilt_db_oct / (20.0 * math.log10(2.0)))
    out[:keep] = spectrum[:keep] * gain
    y = np.fft.irfft(out, n_out) * (n_out / n_in)
    return y[: round(x.size * rate_out / rate_in)]


def _moving_rms(x: np.ndarray, width: int) -> np.ndarray:
    """Local RMS over ``width`` samples (centred), by a running sum."""
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    half = width // 2
    upper = np.minimum(np.arange(x.size) + width - half, x.size)
    lower = np.maximum(np.arange(x.size) - half, 0)
    return np.sqrt(np.maximum(energy[upper] - energy[lower], 0.0) / width)


def _active_rms(x: np.ndarray, frame: int) -> float:
    """RMS over the frames within 35 dB of the loudest one: the level of the speech, not the pauses."""
    frames = x[: x.size // frame * frame].reshape(-1, frame)
    energy = (frames * frames).mean(axis=1)
    active = energy[energy >= energy.max() * 10 ** (-35 / 10)]
    return float(np.sqrt(active.mean()))


def render(spec: VoiceSpec, library: Path, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, bool]:
    """One clip as float32 audio at ``sample_rate``, at most ``max_seconds`` long; also whether it was cut."""
    rng = np.random.default_rng(spec.seed)
    speech, espeak_rate = speak(
        library,
        spec.text,
        spec.variant,
        espeak_wpm(spec.rate),
        espeak_pitch(spec.f0_st),
        espeak_range(spec.range_st),
        spec.seed,
    )
    speech = _trim(speech)
    speech = _tremor(speech, espeak_rate, spec.tremor_st, spec.tremor_hz, rng.uniform(0.0, 2.0 * math.pi))
    speech = _resample_with_tilt(speech, espeak_rate, sample_rate, spec.tilt - NEUTRAL_TILT_DB_OCT)
    # Breath: pre-emphasised white noise that follows the speech envelope (aspiration rides on voicing).
    breath = np.diff(rng.standard_normal(speech.size + 1))
    breath /= breath.std()
    speech = speech + spec.noise * _moving_rms(speech, int(0.02 * sample_rate)) * breath
    gain = 10 ** ((BASE_LEVEL_DBFS + spec.loud_db) / 20) / _active_rms(speech, int(0.02 * sample_rate))
    speech = np.tanh(speech * gain)  # soft limiter: only the loudest peaks are compressed
    lead = np.zeros(round(spec.lead_s * sample_rate))
    audio = np.concatenate([lead, speech, np.zeros(int(TRAIL_SECONDS * sample_rate))])
    audio += 10 ** (FLOOR_DBFS / 20) * rng.standard_normal(audio.size)
    limit = int(max_seconds * sample_rate)
    truncated = audio.size > limit
    if truncated:
        audio = audio[:limit]
        fade = min(limit, int(0.01 * sample_rate))
        audio[limit - fade :] *= np.linspace(1.0, 0.0, fade)
    return audio.astype(np.float32), truncated


def render_chunk(job: tuple[str, str, int, float, list[tuple[str, VoiceSpec]]]) -> list[tuple[str, int, bool]]:
    """Render clips and write them as 16-bit WAVs named ``<id>.wav``; returns (id, samples, truncated) each.

    ``job`` is (folder for the private library copy, WAV folder, sample rate, max seconds,
    [(id, spec), ...]). It lives here, away from torch, so that spawned workers import little.
    """
    lib_dir, wav_dir, sample_rate, max_seconds, items = job
    library = private_library(lib_dir)
    done = []
    for uid, spec in items:
        audio, truncated = render(spec, library, sample_rate, max_seconds)
        sf.write(Path(wav_dir) / f"{uid}.wav", audio, sample_rate, subtype="PCM_16")
        done.append((uid, audio.size, truncated))
    return done
