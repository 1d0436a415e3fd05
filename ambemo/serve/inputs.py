"""A request's audio, checked and decoded, or a ``RequestError`` that says what is wrong with it.

The bytes are first checked for what ``ambemo predict`` would silently accept or report only as a
skip: not audio at all, a WAV whose data stops before its header says, over the server's size or
duration limit, a sample rate or channel count no microphone produces. Then they are decoded by
``Predictor.load_audio`` on a file, exactly as ``ambemo predict FILE`` decodes them (mixed down,
resampled, capped at the model's ``max_seconds``), so the model sees the same samples.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest

from ambemo.data.audio import AudioProblem
from ambemo.inference.predictor import AUDIO_SUFFIXES, AudioInput, Predictor

#: Highest sample rate accepted (studio audio goes to 384 kHz; beyond that a header is wrong).
MAX_RATE = 384_000
#: Most channels accepted (mixed down to mono); more is not a recording of one speaker.
MAX_CHANNELS = 32
#: Fields of a ``multipart/form-data`` ``POST /v1/predict`` (the JSON form's are ``PredictJSON``'s).
FORM_FIELDS = ("audio", "transcript", "reasoning", "id")


class RequestError(Exception):
    """Why a request gets no prediction: its HTTP status, a message for the client, a metrics label."""

    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        """A short label for the rejection metrics (``bad_audio``, ``too_large``, ``queue_full``...)."""
        self.headers = headers


class PredictJSON(BaseModel):
    """``POST /v1/predict`` with ``Content-Type: application/json``."""

    model_config = ConfigDict(extra="forbid")
    audio_base64: str = Field(description="the audio file's bytes (WAV, FLAC, OGG, MP3...), base64-encoded")
    transcript: str | None = Field(None, description="what is said (the model was trained with transcripts)")
    reasoning: bool = Field(True, description="include the generated reasoning text in the record")
    id: str | None = Field(None, description="echoed back as the record's id")


class Timings(BaseModel):
    decode_ms: float = Field(description="checking and decoding the audio")
    queue_ms: float = Field(description="waiting for a batch")
    model_ms: float = Field(description="the batch on the model")
    total_ms: float = Field(description="from receiving the request to answering it")
    batch_size: int = Field(description="clips read by the model together with this one")


class PredictRecord(BaseModel):
    """The record of ``ambemo predict`` plus ``timings``."""

    id: str
    distribution: dict[str, float] = Field(description="p_hat over every class")
    top: str
    entropy: float = Field(description="normalised entropy H(p_hat) / log C in [0, 1]")
    ambiguous: bool | None = Field(description="entropy > the model's threshold; null without a threshold")
    format_ok: bool | None = Field(description="the model wrote a well-formed reasoning (null: direct answers)")
    reasoning: str | None = Field(None, description="the generated reasoning (CoT models, unless reasoning=false)")
    timings: Timings


@dataclass
class Request:
    """A parsed request: its audio bytes and options."""

    data: bytes
    filename: str | None
    transcript: str | None
    reasoning: bool
    id: str | None


def parse_json(body: bytes) -> Request:
    """The JSON form of a request; ``RequestError`` for malformed JSON or base64, or wrong or unknown fields."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as err:
        raise RequestError(
            400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}", "bad_json"
        ) from None
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON: the body is not UTF-8 text", "bad_json") from None
    try:
        fields = PredictJSON.model_validate(payload)
    except ValidationError as err:
        raise RequestError(422, f"invalid request: {describe_errors(err)}", "bad_fields") from None
    try:
        data = base64.b64decode(fields.audio_base64, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f"audio_base64 is not valid base64: {err}", "bad_base64") from None
    return Request(data, None, fields.transcript or None, fields.reasoning, fields.id)


def describe_errors(err: ValidationError) -> str:
    """Pydantic's errors as one line a user can act on."""
    parts = []
    for error in err.errors():
        where = ".".join(str(x) for x in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r} (allowed: {', '.join(PredictJSON.model_fields)})")
        elif error["type"] == "missing":
            parts.append(f"missing field {where!r}")
        elif error["type"] == "model_type":
            parts.append("the body must be a JSON object")
        else:
            parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_flag(name: str, text: str) -> bool:
    """A form field's boolean (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise RequestError(422, f"{name} must be true or false, got {text!r}", "bad_fields")


def check_audio(data: bytes, max_bytes: int, max_seconds: float) -> sf._SoundFileInfo:
    """The header of ``data`` if it is audio within the limits; ``RequestError`` otherwise."""
    if not data:
        raise RequestError(422, "empty audio: the file has 0 bytes", "bad_audio")
    if len(data) > max_bytes:
        raise RequestError(413, f"audio file too large: {len(data)} bytes > {max_bytes} bytes", "too_large")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as err:  # soundfile raises several types for what it cannot open
        text = str(err).split(": ", 1)[-1].strip()
        if "not recognised" in text:
            raise RequestError(415, f"not audio (or an unsupported format): {text}", "not_audio") from None
        raise RequestError(422, f"corrupt audio file: {text}", "bad_audio") from None
    check_wav_complete(data)
    if info.channels > MAX_CHANNELS:
        raise RequestError(422, f"unsupported channel count: {info.channels} (at most {MAX_CHANNELS})", "bad_audio")
    if info.samplerate > MAX_RATE:
        raise RequestError(422, f"unsupported sample rate: {info.samplerate} Hz (at most {MAX_RATE} Hz)", "bad_audio")
    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise RequestError(
            413, f"audio too long: {info.frames / info.samplerate:.1f} s > {max_seconds:g} s", "too_long"
        )
    return info


def check_wav_complete(data: bytes) -> None:
    """A WAV whose RIFF header promises more bytes than arrived was cut off (libsndfile would read the rest as is)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    declared = int.from_bytes(data[4:8], "little") + 8
    # 0 and 0xFFFFFFFF mean "unknown length" (a stream written before its end was known)
    if 8 < declared < 0xFFFFFFFF + 8 and len(data) < declared:
        raise RequestError(
            422, f"truncated WAV file: its header declares {declared} bytes, {len(data)} arrived", "bad_audio"
        )


def decode_audio(predictor: Predictor, request: Request, max_bytes: int, max_seconds: float) -> np.ndarray:
    """The request's audio as the model hears it (mono, the model's rate), or ``RequestError``."""
    check_audio(request.data, max_bytes, max_seconds)
    suffix = Path(request.filename or "").suffix.lower()
    with tempfile.TemporaryDirectory(prefix="ambemo-serve-") as folder:
        path = Path(folder) / f"upload{suffix if suffix in AUDIO_SUFFIXES else ''}"
        path.write_bytes(request.data)
        try:
            return predictor.load_audio(AudioInput(path.name, path=path))
        except AudioProblem as problem:
            raise RequestError(422, str(problem), "bad_audio") from None


def body_limit(max_bytes: int) -> int:
    """Largest request body accepted: the audio limit as base64 (4/3) plus room for the other fields."""
    return max_bytes * 4 // 3 + 64 * 1024


async def read_request(http: HTTPRequest, max_bytes: int) -> Request:
    """A ``POST /v1/predict`` body, multipart (field ``audio``) or JSON (``audio_base64``), parsed."""
    declared = http.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > body_limit(max_bytes):
        raise RequestError(413, f"request too large: {declared} bytes > {body_limit(max_bytes)} bytes", "too_large")
    kind = http.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > body_limit(max_bytes):
                raise RequestError(413, f"request too large: over {body_limit(max_bytes)} bytes", "too_large")
        return parse_json(bytes(body))
    if kind == "multipart/form-data":
        return await parse_form(http)
    raise RequestError(
        415,
        f"unsupported Content-Type {kind or '(none)'!r}: send multipart/form-data with the file in field 'audio', "
        "or application/json with 'audio_base64'",
        "bad_content_type",
    )


async def parse_form(http: HTTPRequest) -> Request:
    """The multipart form of a request; ``RequestError`` for a malformed form, or wrong or unknown fields."""
    try:
        form = await http.form(max_files=1, max_fields=len(FORM_FIELDS))
    except HTTPException as err:  # Starlette's answer to a malformed multipart body
        raise RequestError(400, f"malformed multipart form: {err.detail}", "bad_form") from None
    unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown} (allowed: {', '.join(FORM_FIELDS)})", "bad_fields")
    audio = form.get("audio")
    if audio is None:
        raise RequestError(422, "missing field 'audio': the audio file (e.g. curl -F audio=@clip.wav)", "bad_fields")
    if isinstance(audio, str):
        raise RequestError(422, "field 'audio' must be a file upload, not text (curl -F audio=@clip.wav)", "bad_fields")
    # At most one file (max_files=1) and it is `audio`: the other fields are text.
    texts: dict[str, str | None] = {name: form.get(name) for name in ("transcript", "reasoning", "id")}  # type: ignore[misc]
    return Request(
        data=await audio.read(),
        filename=audio.filename,
        transcript=texts["transcript"] or None,  # an HTML form sends an empty box as ""
        reasoning=True if texts["reasoning"] is None else parse_flag("reasoning", texts["reasoning"]),
        id=texts["id"] or None,
    )
