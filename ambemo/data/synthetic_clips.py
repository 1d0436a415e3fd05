"""The synthetic corpus's clips: labels from the real CREMA-D votes, a voice per clip, and its CoT text.

What ``ambemo.data.synthetic.generate_corpus`` writes, clip by clip:

* Labels: clips are sampled from the real CREMA-D audio-only vote table (shipped in
  ``assets/``, ODbL). A clip's latent distribution is its normalised real votes; the corpus's
  votes are redrawn as Multinomial(n_votes, latent), so predicting the latent leaves the same
  kind of annotation noise as real data.
* Audio: eSpeak NG speaks the clip's CREMA-D sentence (real words) with the voice of a
  synthetic speaker per CREMA-D actor. Prosody (pitch level and range, rate, loudness,
  spectral tilt, breathiness, tremor) is the latent-weighted mixture of per-emotion
  prototypes, plus per-clip jitter and per-speaker offsets, so the distribution is
  recoverable from the voice but not trivially (rendering: ``ambemo.data.synth_voice``).
* Reasoning: each clip gets a short structured CoT written from its known cues: the corpus's
  stand-in for curated CoT. Its synthesis states the *cue reading* (``cue_reading``: the
  mixture of prototypes that best explains the cues), i.e. what an expert could hear, not the
  hidden latent distribution. A reasoning that quotes the latent teaches the read-out to trust
  text the model cannot reproduce from audio (``cot_reading="latent"`` builds that variant).
"""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.synth_voice import VoiceSpec, render_chunk
from ambemo.model.prompts import CoT, format_cot

#: Bumped whenever the generator's output changes, so that stale corpora are rebuilt.
FORMAT_VERSION = 1
ASSETS = Path(__file__).with_name("assets")
VOTES_FILE = ASSETS / "crema_d_audio_only_votes.csv"
ACTORS_FILE = ASSETS / "crema_d_actors.csv"
#: Vote-table column for each class, in CREMA_D_CLASSES order.
VOTE_COLUMNS = ("A", "D", "F", "H", "N", "S")

#: Prosodic cues, in the column order of PROTOTYPES.
CUES = ("f0_st", "range_st", "tremor_st", "rate", "loud_db", "tilt", "noise")
#: Per-emotion prototypes (rows in CREMA_D_CLASSES order) from the feasibility probe, where a
#: tiny audio-LM beat the train-mean prior by about 35 % JS. eSpeak's voice made the cues easier
#: to read than the probe's, so the per-clip jitter is 1.3x the probe's: a small MLP on log-mel
#: statistics then reaches 0.61-0.71 of the prior's test JS (seeds 0 and 1; probe: 0.70).
#: f0 and range in semitones, tremor in semitones, rate in syllables/s, loudness in dB,
#: spectral tilt in dB/octave, breath noise as a fraction of the speech level.
PROTOTYPES = np.array(
    [
        [4.0, 5.0, 0.15, 5.6, 8.0, -6.0, 0.05],  # anger
        [-1.5, 2.5, 0.30, 3.2, 0.0, -11.0, 0.25],  # disgust
        [6.0, 2.0, 1.00, 5.8, -3.0, -10.0, 0.35],  # fear
        [5.0, 6.5, 0.25, 4.8, 4.0, -8.0, 0.08],  # happiness
        [0.0, 2.0, 0.08, 4.2, 0.0, -12.0, 0.10],  # neutral
        [-2.5, 1.0, 0.40, 2.8, -7.0, -15.0, 0.30],  # sadness
    ]
)
CLIP_JITTER_SD = np.array([1.3, 1.0, 0.1, 0.4, 2.0, 1.6, 0.05])
#: Physical floors after jitter: no negative range, tremor or breath noise; no rate under 1.5 syl/s.
CUE_FLOOR = np.array([-np.inf, 0.0, 0.0, 1.5, -np.inf, -np.inf, 0.0])
#: Per-speaker offsets: f0 (st), log rate factor, loudness (dB), tilt (dB/oct); SDs.
SPEAKER_SD = {"f0_st": 1.5, "log_rate": 0.08, "loud_db": 2.0, "tilt": 1.5}
#: eSpeak voice variants per actor sex; breathy or echoing variants are left out, because
#: breathiness is an emotion cue here.
VARIANTS = {"Male": ("m1", "m3", "m4", "m6"), "Female": ("f1", "f2", "f4")}


@dataclass(frozen=True)
class Sentence:
    """A CREMA-D sentence and the fixed wording the CoT uses for its literal content."""

    transcript: str
    content: str  # "The speaker {content}: ..."
    readings: tuple[str, str]  # emotions the words alone could carry besides neutral
    keyword: str  # the lexical keyword


SENTENCES: dict[str, Sentence] = {
    "IEO": Sentence("It's eleven o'clock", "states the time", ("anger", "fear"), "eleven o'clock"),
    "TIE": Sentence("That is exactly what happened", "confirms what happened", ("anger", "happiness"), "exactly"),
    "IOM": Sentence(
        "I'm on my way to the meeting", "says they are going to a meeting", ("happiness", "fear"), "meeting"
    ),
    "IWW": Sentence("I wonder what this is about", "wonders what something is about", ("fear", "disgust"), "wonder"),
    "TAI": Sentence(
        "The airplane is almost full", "notes that the airplane is almost full", ("fear", "happiness"), "airplane"
    ),
    "MTI": Sentence(
        "Maybe tomorrow it will be cold", "guesses it may be cold tomorrow", ("sadness", "disgust"), "cold"
    ),
    "IWL": Sentence(
        "I would like a new alarm clock", "asks for a new alarm clock", ("happiness", "disgust"), "alarm clock"
    ),
    "ITH": Sentence(
        "I think I have a doctor's appointment", "mentions a doctor's appointment", ("fear", "sadness"), "doctor"
    ),
    "DFA": Sentence("Don't forget a jacket", "reminds someone to take a jacket", ("anger", "fear"), "jacket"),
    "ITS": Sentence("I think I've seen this before", "says this seems familiar", ("disgust", "happiness"), "seen this"),
    "TSI": Sentence("The surface is slick", "warns that the surface is slick", ("fear", "anger"), "slick"),
    "WSI": Sentence("We'll stop in a couple of minutes", "says they will stop soon", ("anger", "sadness"), "stop"),
}


@dataclass(frozen=True)
class CueWords:
    """How the CoT words one cue: level names between thresholds, and the noun it qualifies."""

    noun: str
    thresholds: tuple[float, ...]
    levels: tuple[str, ...]

    def level(self, value: float) -> str:
        """The level word for ``value``."""
        return self.levels[int(np.searchsorted(self.thresholds, value, side="right"))]


#: Levels are relative to a neutral voice: the neutral prototype's value falls in the middle
#: level (the lowest for the one-sided breathiness and tremor), and thresholds are roughly
#: one clip-jitter SD apart, so a word change is a change a listener could hear.
CUE_WORDS = {
    "loud_db": CueWords("volume", (-4.0, -1.5, 1.5, 4.0), ("very soft", "soft", "normal", "loud", "very loud")),
    "rate": CueWords("speed", (3.4, 3.9, 4.5, 5.0), ("very slow", "slow", "normal", "fast", "very fast")),
    "f0_st": CueWords("pitch", (-2.0, -0.8, 1.0, 3.0), ("very low", "low", "normal", "high", "very high")),
    "range_st": CueWords("range", (1.0, 1.5, 2.8, 4.2), ("flat", "narrow", "normal", "wide", "very wide")),
    "tilt": CueWords("tone", (-15.0, -13.2, -10.8, -8.8), ("very dark", "dark", "balanced", "bright", "very bright")),
    "noise": CueWords("breathiness", (0.15, 0.23), ("little", "some", "strong")),
    "tremor_st": CueWords("tremor", (0.2, 0.4), ("no", "slight", "strong")),
}
_NEUTRAL = CREMA_D_CLASSES.index("neutral")
#: How far each emotion's prototype sits from neutral on each cue, in jitter SDs: which cues
#: are characteristic of an emotion.
_DISTINCTIVENESS = np.abs(PROTOTYPES - PROTOTYPES[_NEUTRAL]) / CLIP_JITTER_SD
#: Words for a reading's share of listeners: (lower bound, first reading's words, later readings' word).
_SHARES = (
    (0.6, "most listeners", "most"),
    (0.4, "about half of listeners", "about half"),
    (0.25, "many listeners", "many"),
    (0.12, "some listeners", "some"),
    (0.05, "a few listeners", "a few"),
)


def cue_phrase(cue: str, value: float) -> str:
    """E.g. "loud volume", "no tremor"."""
    words = CUE_WORDS[cue]
    return f"{words.level(value)} {words.noun}"


def supported_emotions(cue: str, value: float) -> list[int]:
    """Emotions that this cue's level points to.

    Neutral when the level is the one a neutral voice has; otherwise the emotions whose
    prototype departs from neutral (by at least one jitter SD) in the same direction.
    """
    words, column = CUE_WORDS[cue], CUES.index(cue)
    neutral = PROTOTYPES[_NEUTRAL, column]
    if words.level(value) == words.level(neutral):
        return [_NEUTRAL]
    direction = np.sign(value - neutral)
    departs = np.sign(PROTOTYPES[:, column] - neutral) == direction
    return [int(e) for e in np.flatnonzero(departs & (_DISTINCTIVENESS[:, column] >= 1.0))]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _evidence(
    emotion: int, cues: np.ndarray, verbs: tuple[str, str], cited: Sequence[int] = ()
) -> tuple[str, list[int]]:
    """A clause naming up to two cues that support ``emotion``, and the cues it names.

    Neutral cites its most typical cues, other emotions their strongest departures from
    neutral; cues in ``cited`` (already named for another emotion) come last. ``verbs`` is the
    (plural, singular) verb, e.g. ("suggest", "suggests").
    """
    name = CREMA_D_CLASSES[emotion]
    supporting = [c for c, cue in enumerate(CUES) if emotion in supported_emotions(cue, cues[c])]
    deviation = np.abs(cues - PROTOTYPES[_NEUTRAL]) / CLIP_JITTER_SD
    supporting.sort(key=lambda c: (c in cited, deviation[c] if emotion == _NEUTRAL else -deviation[c]))
    if not supporting:
        return f"nothing clearly marks {name}", []
    named = supporting[:2]
    verb = verbs[0] if len(named) > 1 else verbs[1]
    return f"{_join([cue_phrase(CUES[c], cues[c]) for c in named])} {verb} {name}", named


#: What the CoT's synthesis states, by ``cot_reading`` (worded for the dataset card).
COT_READINGS = {
    "cues": "cue reading (the prototype mixture that best explains the cues, i.e. what is audible)",
    "latent": "latent distribution itself (as a teacher that sees the target would write)",
}


@functools.cache
def _support_solvers() -> tuple[np.ndarray, np.ndarray]:
    """``(M, c)`` of shape (63, 6, 7) and (63, 6): for support S (one row per non-empty subset of
    the prototypes), ``M[S] @ target + c[S]`` solves the sum-to-one least squares restricted to
    S (its KKT system, inverted once), with zeros outside S."""
    design = PROTOTYPES / CLIP_JITTER_SD
    k = len(design)
    matrices, offsets = np.zeros((2**k - 1, k, design.shape[1])), np.zeros((2**k - 1, k))
    for row, mask in enumerate(range(1, 2**k)):
        support = [j for j in range(k) if mask >> j & 1]
        n = len(support)
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = 2 * design[support] @ design[support].T
        kkt[:n, n] = kkt[n, :n] = 1.0
        inverse = np.linalg.pinv(kkt)
        matrices[row, support] = inverse[:n, :n] @ (2 * design[support])
        offsets[row, support] = inverse[:n, n]
    return matrices, offsets


def cue_reading(cues: np.ndarray) -> np.ndarray:
    """The distribution the cues themselves imply: argmin_w ||(w @ PROTOTYPES - cues) / SD||^2 on the simplex.

    Cues are generated as latent @ PROTOTYPES + jitter, so this is the best an expert listener
    could recover from the voice alone. Solved exactly: the minimiser of this convex problem
    solves the sum-to-one least squares on its own support, so solve it on every support and
    keep the best non-negative solution. (Gradient methods crawl here: the prototypes are
    nearly collinear, condition number ~2e4.) On the default corpus the reading scores test JS
    0.219 bits vs the prior's 0.333.
    """
    design = PROTOTYPES / CLIP_JITTER_SD
    target = cues / CLIP_JITTER_SD
    matrices, offsets = _support_solvers()
    candidates = matrices @ target + offsets
    feasible = candidates.min(axis=1) >= -1e-9
    losses = np.where(feasible, ((candidates @ design - target) ** 2).sum(axis=1), np.inf)
    best = np.clip(candidates[int(np.argmin(losses))], 0.0, None)
    return best / best.sum()


def curated_cot(sentence: Sentence, cues: np.ndarray, latent: np.ndarray) -> str:
    """The clip's structured reasoning, from its jittered cues (relative to the speaker's neutral
    voice) and a reading of them: ``latent`` is the distribution the synthesis states (the cue
    reading by default, see ``cue_reading``).

    Templated with a small vocabulary on purpose: a tiny tokenizer is trained on these texts,
    and a tiny model must be able to learn to write them.
    """
    salience = np.abs(cues - PROTOTYPES[_NEUTRAL]) / CLIP_JITTER_SD
    top = [CUES[c] for c in np.argsort(-salience, kind="stable")[:2]]
    keywords = ", ".join([cue_phrase(cue, cues[CUES.index(cue)]) for cue in top] + [f'"{sentence.keyword}"'])
    text = f"The speaker {sentence.content}: neutral words, open to {sentence.readings[0]} or {sentence.readings[1]}."
    described = ("loud_db", "rate", "f0_st", "range_st", "tilt", "noise", "tremor_st")
    description = _join([cue_phrase(cue, cues[CUES.index(cue)]) for cue in described]) + "."
    order = np.argsort(-latent, kind="stable")
    majority, minority = int(order[0]), int(order[1])
    support, cited = _evidence(majority, cues, ("suggest", "suggests"))
    if latent[minority] >= 0.1:
        support += "; " + _evidence(minority, cues, ("hint at", "hints at"), cited)[0]
    audio = f"{description[0].upper()}{description[1:]} {support[0].upper()}{support[1:]}."
    readings = []
    for e in order[:4]:
        share = next((words for bound, *words in _SHARES if latent[e] >= bound), None)
        if share is not None:
            readings.append(
                f"{share[0]} would hear {CREMA_D_CLASSES[e]}" if not readings else f"{share[1]} {CREMA_D_CLASSES[e]}"
            )
    clarity = "Clear" if latent[majority] >= 0.7 else "Fairly clear" if latent[majority] >= 0.45 else "Ambiguous"
    synthesis = f"{clarity} reading: {_join(readings)}."
    return format_cot(CoT(keywords=keywords, text_analysis=text, audio_analysis=audio, synthesis=synthesis))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _speaker_offsets(seed: int, actor: int, sex: str) -> tuple[str, np.ndarray]:
    """An actor's synthetic voice: eSpeak variant and offsets added to its clips' cues (CUES order)."""
    rng = np.random.default_rng([seed, 1, actor])
    pool = VARIANTS[sex]
    variant = f"en-us+{pool[int(rng.integers(len(pool)))]}"
    offsets = np.zeros(len(CUES))
    offsets[CUES.index("f0_st")] = rng.normal(0.0, SPEAKER_SD["f0_st"])
    offsets[CUES.index("rate")] = rng.normal(0.0, SPEAKER_SD["log_rate"])  # applied as a factor
    offsets[CUES.index("loud_db")] = rng.normal(0.0, SPEAKER_SD["loud_db"])
    offsets[CUES.index("tilt")] = rng.normal(0.0, SPEAKER_SD["tilt"])
    return variant, offsets


@dataclass(frozen=True)
class SyntheticClip:
    """One planned clip: its source row, latent distribution, redrawn votes, cues and voice."""

    uid: str
    split: str
    row: dict[str, str]
    latent: np.ndarray
    votes: np.ndarray
    cues: np.ndarray
    spec: VoiceSpec


def plan_clips(seed: int, sizes: dict[str, int]) -> list[SyntheticClip]:
    """Sample the clips and draw everything random about them (before any audio is made).

    Each clip's draws come from a generator keyed by (seed, source row), so a clip does not
    change when the split sizes do, and rendering order cannot matter.
    """
    table = _read_csv(VOTES_FILE)
    sexes = {int(row["actor"]): row["sex"] for row in _read_csv(ACTORS_FILE)}
    total = sum(sizes.values())
    if total > len(table):
        raise ValueError(f"asked for {total} clips; the CREMA-D vote table has {len(table)}")
    order = np.random.default_rng([seed, 0]).permutation(len(table))[:total]
    splits = [name for name, size in sizes.items() for _ in range(size)]
    speakers: dict[int, tuple[str, np.ndarray]] = {}
    clips = []
    for index, (row_index, split) in enumerate(zip(order, splits, strict=True)):
        row = table[int(row_index)]
        counts = np.array([int(row[c]) for c in VOTE_COLUMNS])
        latent = counts / counts.sum()
        rng = np.random.default_rng([seed, 2, int(row_index)])
        cues = np.maximum(latent @ PROTOTYPES + rng.normal(size=len(CUES)) * CLIP_JITTER_SD, CUE_FLOOR)
        votes = rng.multinomial(int(row["n_votes"]), latent)
        actor = int(row["actor"])
        if actor not in speakers:
            speakers[actor] = _speaker_offsets(seed, actor, sexes[actor])
        variant, offsets = speakers[actor]
        realised = dict(zip(CUES, cues + offsets, strict=True))
        realised["rate"] = cues[CUES.index("rate")] * float(np.exp(offsets[CUES.index("rate")]))
        spec = VoiceSpec(
            text=SENTENCES[row["sentence"]].transcript + ".",
            variant=variant,
            tremor_hz=float(rng.uniform(5.0, 7.0)),
            lead_s=float(rng.uniform(0.05, 0.25)),
            seed=int(rng.integers(2**31 - 1)),
            **{cue: float(realised[cue]) for cue in CUES},
        )
        clips.append(SyntheticClip(f"syn{index:05d}", split, row, latent, votes, cues, spec))
    return clips


def render_clips(clips: list[SyntheticClip], wav_dir: Path, sample_rate: int, max_seconds: float, workers: int) -> dict:
    """Render every clip, in parallel when ``workers > 1``; returns {id: (samples, truncated)}."""
    with tempfile.TemporaryDirectory(prefix="ambemo-espeak-") as lib_dir:
        items = [(clip.uid, clip.spec) for clip in clips]
        chunk = 16
        jobs = [
            (lib_dir, str(wav_dir), sample_rate, max_seconds, items[i : i + chunk]) for i in range(0, len(items), chunk)
        ]
        if workers == 1:
            results = [render_chunk(job) for job in jobs]
        else:
            # fork on Linux: a spawned worker re-imports the caller's main module (often torch and
            # Lightning: seconds per worker). Forking is safe here because workers only run numpy
            # FFTs, eSpeak (a private copy, loaded per clip) and soundfile: no threads or locks from
            # the parent are used. Elsewhere fork is unavailable or unsafe, so spawn.
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            with multiprocessing.get_context(method).Pool(workers) as pool:
                results = list(pool.imap(render_chunk, jobs))
    return {uid: (samples, truncated) for result in results for uid, samples, truncated in result}


def distributions(clips: list[SyntheticClip], attribute: str) -> np.ndarray:
    values = np.array([getattr(clip, attribute) for clip in clips], dtype=np.float64)
    return values / values.sum(axis=1, keepdims=True)


def manifest_line(clip: SyntheticClip, cot_reading: str) -> str:
    reading = cue_reading(clip.cues) if cot_reading == "cues" else clip.latent
    return json.dumps(
        {
            "id": clip.uid,
            "audio": f"wav/{clip.uid}.wav",
            "transcript": SENTENCES[clip.row["sentence"]].transcript,
            "votes": {name: int(v) for name, v in zip(CREMA_D_CLASSES, clip.votes, strict=True)},
            "latent": {name: float(v) for name, v in zip(CREMA_D_CLASSES, clip.latent, strict=True)},
            "split": clip.split,
            "cot": curated_cot(SENTENCES[clip.row["sentence"]], clip.cues, reading),
            "speaker": clip.row["actor"],
            "acted": CREMA_D_CLASSES[VOTE_COLUMNS.index(clip.row["acted_emotion"])],
            "source_clip": clip.row["fileName"],
        }
    )


def cues_line(clip: SyntheticClip) -> str:
    """The clip's cues (relative to its speaker's neutral voice) and its realised voice, for analysis."""
    return json.dumps(
        {
            "id": clip.uid,
            "cues": {cue: round(float(v), 4) for cue, v in zip(CUES, clip.cues, strict=True)},
            "voice": {
                key: value if isinstance(value, str) else round(value, 4) for key, value in vars(clip.spec).items()
            },
        }
    )
