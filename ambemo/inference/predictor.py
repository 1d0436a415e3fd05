"""Applying a trained model to new audio: ``ambemo.load(path).predict(...)`` and ``ambemo predict``.

``load`` takes an exported model folder (``ambemo export``; no training config needed), a run
folder (``runs/<experiment>/<timestamp>``, with the weights that scored its test split), or
``latest:<experiment>`` (the newest finished run of that experiment under ``runs/``).

Prediction is evaluation's code path: clips are encoded by the run's ``PromptEncoder``
(``prompt_batch``) and read by ``read_distribution`` with the run's ``max_new_tokens``, greedy, as
``EmotionModule.read`` does for the validation and test splits; so a run's ``predictions.jsonl``
and ``predict`` on the same clips (same transcripts, same batches) agree. Each record holds:

- ``id``: the manifest's id, else the audio path as given (``array-<i>`` for in-memory audio);
- ``distribution``: p_hat over every class; ``top``: its most probable class;
- ``entropy``: normalised entropy H(p_hat) / log C in [0, 1];
- ``ambiguous``: ``entropy > threshold`` (``ambemo.inference.ambiguity``), null without a threshold;
- ``format_ok``: did the model itself write a well-formed reasoning (null for direct-answer models);
- ``reasoning``: the generated reasoning (CoT models, unless ``reasoning=False`` / ``--no-reasoning``:
  the distribution is still read after it, only the text is left out).

Audio of any sample rate and channel count is mixed down and resampled (``ambemo.data.audio``);
a missing, unreadable, corrupt, truncated, empty, too short or silent file, and a manifest line
that cannot be read, is skipped with its reason and counted (``Predictions.skipped``), never fatal
to the others. Clips are matched to their records by position, so inputs may share an id.
``ambemo predict --out FILE`` writes each record as soon as it is made: an interruption keeps
every record written so far.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ambemo.data.audio import AudioProblem, check_length, decode, to_model_rate
from ambemo.data.jsonl import read_json_lines
from ambemo.data.jsonl import where as line_where
from ambemo.errors import AmbemoError, OutputPathError
from ambemo.inference.ambiguity import normalised_entropy
from ambemo.inference.device import autocast, to_device
from ambemo.model.backbone import Backbone
from ambemo.model.generation import Reading, read_distribution
from ambemo.model.inputs import Clip, PromptEncoder

#: Files a folder argument contributes (what soundfile decodes).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
#: An exported model folder is recognised by this file (written by ``ambemo export``).
EXPORT_META = "ambemo.json"


class PredictInputError(AmbemoError, ValueError):
    """The inputs cannot be read at all (an unreadable manifest, an empty folder, a bad array)."""


@dataclass
class AudioInput:
    """One clip to predict: a file, or samples in memory (frames, or frames x channels)."""

    id: str
    path: Path | None = None
    samples: np.ndarray | None = None
    sample_rate: int | None = None
    transcript: str | None = None
    problem: str | None = None
    """Why this input cannot be predicted (a bad manifest line): it is skipped with this reason."""


class Predictions(list):
    """The records, in input order, plus ``skipped``: ``{"id", "reason"}`` per input left out."""

    skipped: list[dict[str, str]]

    def __init__(self, records: Sequence[dict] = (), skipped: Sequence[dict[str, str]] = ()) -> None:
        super().__init__(records)
        self.skipped = list(skipped)


class Predictor:
    """A trained model ready for new audio. Make one with ``ambemo.load(path)``."""

    def __init__(
        self,
        backbone: Backbone,
        classes: Sequence[str],
        use_cot: bool,
        max_new_tokens: int,
        max_seconds: float,
        ambiguity: dict | None,
        precision: str,
        device: torch.device,
        source: str,
        batch_size: int = 8,
    ) -> None:
        self.backbone = backbone
        self.classes = list(classes)
        self.use_cot = use_cot
        self.max_new_tokens = max_new_tokens
        self.max_seconds = max_seconds
        self.ambiguity = ambiguity
        """The run's ``ambiguity.json`` (threshold, criterion, validation precision/recall), or None."""
        self.precision = precision
        self.device = device
        self.source = source
        """What was loaded (the export or run folder)."""
        self.batch_size = batch_size
        # No per-id cache: ids of new audio need not be unique across calls.
        self.encoder = PromptEncoder(backbone, backbone.prompt_classes, use_cot, cache=False)
        backbone.model.to(device).eval()

    @property
    def threshold(self) -> float | None:
        """Normalised-entropy threshold above which a clip is flagged ``ambiguous`` (None: not set)."""
        return None if self.ambiguity is None else float(self.ambiguity["threshold"])

    def read(self, batch: dict) -> Reading:
        """Evaluation's read-out (``EmotionModule.read``): greedy reasoning, then p_hat at the answer slot."""
        return read_distribution(self.backbone, batch, self.use_cot, self.max_new_tokens)

    @torch.no_grad()
    def predict(
        self,
        audio: Any,
        *,
        sample_rate: int | None = None,
        transcript: str | Sequence[str | None] | None = None,
        batch_size: int | None = None,
        reasoning: bool = True,
        progress: bool = False,
    ) -> Predictions:
        """Predict the listeners' emotion distribution of each clip.

        ``audio``: a file path, a folder (its audio files, recursively, sorted), a ``.jsonl``
        manifest (lines ``{"audio": path relative to the manifest, "id"?, "transcript"?}``), a
        waveform (numpy/torch, shape (frames,) or (frames, channels), with ``sample_rate``), or a
        list of any of these. ``transcript``: what is said, for one clip (a string) or per clip (a
        list); the model was trained with transcripts in its prompt where its corpus had them.
        Returns ``Predictions``: one record per usable clip (see the module doc), and
        ``.skipped`` for the others.
        """
        skipped: list[dict[str, str]] = []
        records = self.stream(audio, sample_rate, transcript, batch_size, reasoning, progress, skipped.append)
        return Predictions(list(records), skipped)

    def stream(
        self,
        audio: Any,
        sample_rate: int | None = None,
        transcript: str | Sequence[str | None] | None = None,
        batch_size: int | None = None,
        reasoning: bool = True,
        progress: bool = False,
        on_skip: Callable[[dict[str, str]], None] | None = None,
    ) -> Iterator[dict]:
        """``predict``, one record at a time as each batch is done (``on_skip`` gets each skip)."""
        items = expand_inputs(audio, sample_rate, transcript)
        size = batch_size or self.batch_size
        bar = _progress(len(items), progress)
        try:
            for start in range(0, len(items), size):
                clips = []
                for item in items[start : start + size]:
                    try:
                        if item.problem is not None:
                            raise AudioProblem(item.problem)
                        clips.append(Clip(item.id, self.load_audio(item), item.transcript, target=None))
                    except AudioProblem as problem:
                        if on_skip is not None:
                            on_skip({"id": item.id, "reason": str(problem)})
                if clips:
                    with torch.no_grad():
                        yield from self.predict_clips(clips, reasoning)
                bar.update(len(items[start : start + size]))
        finally:
            bar.close()

    def load_audio(self, item: AudioInput) -> np.ndarray:
        """Mono float32 samples at the model's rate, capped at the run's ``data.max_seconds``."""
        rate = self.backbone.sample_rate
        if item.path is not None:
            return decode(item.path, rate, self.max_seconds).samples
        samples = np.asarray(item.samples, dtype=np.float32)
        frames = samples if samples.ndim == 2 else samples[:, None]
        check_length(frames.shape[0], int(item.sample_rate))  # type: ignore[arg-type]
        return to_model_rate(frames, int(item.sample_rate), rate, self.max_seconds)  # type: ignore[arg-type]

    def predict_clips(self, clips: Sequence[Clip], reasoning: bool = True) -> list[dict]:
        """Records for one batch of decoded clips (matched by position: their ids need not be unique)."""
        # The encoder keys a batch's encoded audio by clip id: give it ids that are unique here.
        keyed = [replace(clip, id=str(position)) for position, clip in enumerate(clips)]
        batch = to_device(self.encoder.prompt_batch(keyed), self.device)
        with autocast(self.precision, self.device):
            reading = self.read(batch)
        dist = reading.distribution.float().cpu()
        spread = normalised_entropy(dist)
        threshold = self.threshold
        records = []
        for i, clip in enumerate(clips):
            record: dict[str, Any] = {
                "id": clip.id,
                "distribution": dict(zip(self.classes, dist[i].tolist(), strict=True)),
                "top": self.classes[int(dist[i].argmax())],
                "entropy": float(spread[i]),
                "ambiguous": None if threshold is None else bool(spread[i] > threshold),
                "format_ok": None if reading.format_ok is None else bool(reading.format_ok[i]),
            }
            if reasoning and reading.reasoning is not None:
                record["reasoning"] = reading.reasoning[i]
            records.append(record)
        return records


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="clip", disable=not enabled, file=sys.stderr, desc="[ambemo] predict")


def expand_inputs(
    audio: Any, sample_rate: int | None = None, transcript: str | Sequence[str | None] | None = None
) -> list[AudioInput]:
    """Every clip named by ``audio`` (see ``Predictor.predict``), with transcripts attached."""
    many = isinstance(audio, list | tuple)
    entries = list(audio) if many else [audio]
    items: list[AudioInput] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, str | Path):
            items.extend(_from_path(Path(entry)))
        elif isinstance(entry, np.ndarray | torch.Tensor):
            items.append(_from_array(entry, sample_rate, f"array-{index}"))
        else:
            raise PredictInputError(f"input {index}: expected a path or a waveform array, got {type(entry).__name__}")
    if transcript is None:
        return items
    texts = [transcript] if isinstance(transcript, str) else list(transcript)
    if len(texts) != len(items):
        raise PredictInputError(f"{len(texts)} transcript(s) for {len(items)} clip(s): give one per clip")
    for item, text in zip(items, texts, strict=True):
        item.transcript = text
    return items


def _from_array(samples: np.ndarray | torch.Tensor, sample_rate: int | None, uid: str) -> AudioInput:
    array = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else samples
    if sample_rate is None:
        raise PredictInputError(f"{uid}: a waveform needs its sample_rate")
    if array.ndim not in (1, 2):
        raise PredictInputError(f"{uid}: expected shape (frames,) or (frames, channels), got {array.shape}")
    return AudioInput(uid, samples=array, sample_rate=int(sample_rate))


def _from_path(path: Path) -> list[AudioInput]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise PredictInputError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder")
        return [AudioInput(str(p), path=p) for p in files]
    if path.suffix == ".jsonl":
        return list(_from_manifest(path))
    return [AudioInput(str(path), path=path)]  # a missing or bad file is a reported skip


def _from_manifest(path: Path) -> Iterator[AudioInput]:
    """One input per non-blank line; a line that cannot be read becomes a skip naming it."""
    for number, line, problem in read_json_lines(path, PredictInputError):
        where = line_where(path, number)
        if line is None:
            yield AudioInput(where, problem=problem)
            continue
        audio, transcript = line.get("audio"), line.get("transcript")
        if not isinstance(audio, str) or not audio:
            yield AudioInput(str(line.get("id", where)), problem=f'{where}: no "audio" path')
        elif transcript is not None and not isinstance(transcript, str):
            yield AudioInput(str(line.get("id", audio)), problem=f'{where}: "transcript" must be a string')
        else:
            file = Path(audio) if Path(audio).is_absolute() else path.parent / audio
            yield AudioInput(str(line.get("id", audio)), path=file, transcript=transcript)


# ---- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ambemo predict",
        description="Predict the listeners' emotion distribution of audio clips with a trained model.",
    )
    parser.add_argument("model", help="exported model folder, run folder, or latest:<experiment>")
    parser.add_argument("audio", nargs="+", help="audio files, folders (recursive), or .jsonl manifests")
    parser.add_argument("--out", type=Path, help="write JSONL here (default: print to stdout)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: the run's)")
    parser.add_argument("--no-reasoning", action="store_true", help="leave the reasoning text out of the records")
    parser.add_argument("--transcript", help="what is said (only with a single audio file)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--threshold", type=threshold_arg, help="override the stored ambiguity threshold (0..1)")
    parser.add_argument("--base-model", help="LoRA exports: the base model's folder (default: the one recorded)")
    parser.add_argument("--runs", default="runs", help="where latest:<experiment> looks (default: runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def open_output(path: Path) -> Any:
    """``--out``, opened before any work: a path that cannot be written fails now, not after the compute."""
    if path.is_dir():
        raise OutputPathError(f"--out {path}: a folder. Give a file path, e.g. {path / 'predictions.jsonl'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        raise OutputPathError(f"--out {path}: cannot write it ({err.strerror or err}). Give a writable path") from None


def threshold_arg(value: str) -> float:
    """``--threshold``: a normalised entropy, so a finite number in [0, 1]."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value}: must be a normalised entropy in [0, 1]")
    return number


def main(argv: list[str] | None = None) -> int:
    from ambemo.inference.loading import load

    args = build_parser().parse_args(argv)
    started = time.time()
    if args.transcript is not None and (len(args.audio) != 1 or Path(args.audio[0]).is_dir()):
        raise PredictInputError("--transcript goes with exactly one audio file; use a manifest for several")
    out = open_output(args.out) if args.out else sys.stdout
    written, skipped = 0, []

    def report_skip(skip: dict[str, str]) -> None:
        skipped.append(skip)
        print(f"[ambemo] skipped {skip['id']}: {skip['reason']}", file=sys.stderr)

    try:
        predictor = load(args.model, device=args.device, base_model=args.base_model, runs_dir=args.runs)
        if args.threshold is not None:
            predictor.ambiguity = {**(predictor.ambiguity or {}), "threshold": args.threshold}
        if predictor.threshold is None:
            print(f"[ambemo] {predictor.source} has no ambiguity threshold: `ambiguous` is null", file=sys.stderr)
        records = predictor.stream(
            args.audio,
            transcript=args.transcript,
            batch_size=args.batch_size,
            reasoning=not args.no_reasoning,
            progress=not args.no_progress,
            on_skip=report_skip,
        )
        for record in records:
            out.write(json.dumps(record) + "\n")
            out.flush()
            written += 1
    except KeyboardInterrupt:
        where = f" to {args.out}" if args.out else ""
        print(f"ambemo predict: interrupted after {written} record(s), all written{where}", file=sys.stderr)
        return 130
    finally:
        if args.out:
            out.close()
    total = written + len(skipped)
    where = f" -> {args.out}" if args.out else ""
    print(
        f"[ambemo] predicted {written} of {total} clips ({len(skipped)} skipped) "
        f"in {time.time() - started:.1f} s{where}",
        file=sys.stderr,
    )
    return 0 if written else 1
