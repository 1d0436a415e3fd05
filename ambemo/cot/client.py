"""The two API calls of a curation attempt, through the official ``openai`` client.

``CurationClient.rationale`` asks for the structured CoT (audio as an ``input_audio`` part, or
measured descriptors in text-only mode); ``CurationClient.verify`` asks a reader for the
distribution implied by a rationale alone. Retries with exponential backoff on 408/409/429/5xx,
timeouts and connection errors are the client's own (``max_retries``, ``timeout``); what still
fails raises ``ApiFailure`` with a reason fit for the store. Answers that arrive but cannot be
used come back as ``Answer.invalid`` (they cost tokens, so their usage is kept).

The key is read from ``OPENAI_API_KEY`` and the endpoint from ``OPENAI_BASE_URL`` by the client;
every reason leaving this module passes ``redact`` so a server that echoes headers cannot leak
the key into the store or the logs.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import soundfile as sf

from ambemo.cot import protocol
from ambemo.cot.budget import Usage
from ambemo.cot.config import CurateConfig, CurateConfigError
from ambemo.model.prompts import CoT

#: HTTP statuses after which no other clip can succeed either (wrong key, no access, unknown model).
FATAL_STATUSES = (401, 403, 404)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;}]+", re.IGNORECASE)
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the given secrets, bearer tokens and ``sk-...`` keys replaced by ``[REDACTED]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    return _KEYLIKE.sub("[REDACTED]", _BEARER.sub(r"\1[REDACTED]", text))


def public_endpoint(url: str) -> str:
    """An endpoint URL without user info, query or fragment (safe to print)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class ApiFailure(Exception):
    """A request failed after the client's retries. ``fatal``: no other clip can succeed either."""

    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


@dataclass
class Answer:
    """One answered request: the parsed value, or why it is unusable; and what it cost."""

    value: Any
    invalid: str | None
    usage: Usage


def audio_part(path: str | Path, data: bytes) -> dict:
    """An ``input_audio`` content part: WAV and MP3 files as they are, anything else re-encoded to WAV."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp3":
        payload, fmt = data, "mp3"
    elif suffix == ".wav" and data[:4] == b"RIFF":
        payload, fmt = data, "wav"
    else:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        buffer = io.BytesIO()
        sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
        payload, fmt = buffer.getvalue(), "wav"
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(payload).decode("ascii"), "format": fmt}}


class CurationClient:
    """Rationale and verification requests for one configuration, safe to share between threads."""

    def __init__(self, cfg: CurateConfig, client: openai.OpenAI | None = None) -> None:
        key = os.environ.get("OPENAI_API_KEY", "")
        if client is None and not key:
            raise CurateConfigError(
                "OPENAI_API_KEY is not set: export it (any value for a local server without auth); "
                "OPENAI_BASE_URL selects an OpenAI-compatible endpoint"
            )
        self.cfg = cfg
        self._secrets = [key] if key else []
        self.client = client or openai.OpenAI(api_key=key, max_retries=cfg.max_retries, timeout=cfg.timeout)

    @property
    def endpoint(self) -> str:
        return public_endpoint(str(self.client.base_url))

    def describe_endpoint(self) -> str:
        """Where requests go, said before any is sent (the public API when OPENAI_BASE_URL is unset)."""
        if os.environ.get("OPENAI_BASE_URL"):
            return f"{self.endpoint} (OPENAI_BASE_URL)"
        return f"{self.endpoint} (OPENAI_BASE_URL is not set: the public OpenAI API, billed to OPENAI_API_KEY)"

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def rationale(
        self,
        audio: dict | None,
        descriptors: str | None,
        transcript: str | None,
        target: Sequence[float],
        previous: tuple[str, Sequence[float]] | None = None,
    ) -> Answer:
        """Ask for a rationale; ``Answer.value`` is a validated ``CoT``."""
        cfg = self.cfg
        text = protocol.generation_text(cfg.classes, target, transcript, descriptors, previous)
        content: list[dict] = [{"type": "text", "text": text}]
        if audio is not None:
            content.insert(0, audio)
        messages = [{"role": "system", "content": protocol.GENERATE_SYSTEM}, {"role": "user", "content": content}]
        raw, invalid, usage = self._call(messages, protocol.cot_schema(), cfg.temperature, cfg.max_output_tokens)
        if invalid is not None:
            return Answer(None, invalid, usage)
        try:
            cot: CoT = protocol.parse_rationale(raw, cfg.allow_numbers_in_synthesis, cfg.max_cot_chars)
        except protocol.InvalidAnswer as err:
            return Answer(None, self.redact(str(err)), usage)
        return Answer(cot, None, usage)

    def verify(self, cot_text: str) -> Answer:
        """Ask a reader for the distribution a rationale implies; ``Answer.value`` is a ``ReaderAnswer``."""
        cfg = self.cfg
        messages = [
            {"role": "system", "content": protocol.VERIFY_SYSTEM},
            {"role": "user", "content": protocol.verification_text(cfg.classes, cot_text)},
        ]
        schema = protocol.distribution_schema(cfg.classes)
        raw, invalid, usage = self._call(messages, schema, cfg.verify_temperature, cfg.verify_max_output_tokens)
        if invalid is not None:
            return Answer(None, invalid, usage)
        try:
            return Answer(protocol.parse_distribution(raw, cfg.classes), None, usage)
        except protocol.InvalidAnswer as err:
            return Answer(None, self.redact(str(err)), usage)

    def _call(
        self, messages: list[dict], schema: dict, temperature: float, max_tokens: int
    ) -> tuple[str | None, str | None, Usage]:
        """One chat completion: (content, why it is unusable or None, usage). Raises ``ApiFailure``."""
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": messages,
            "temperature": temperature,
            "max_completion_tokens": max_tokens,
        }
        if self.cfg.response_format == "json_schema":
            kwargs["response_format"] = schema
        elif self.cfg.response_format == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.APITimeoutError:
            raise ApiFailure(
                f"request timed out (timeout {self.cfg.timeout:g} s, {self.cfg.max_retries} retries)"
            ) from None
        except openai.APIStatusError as err:
            reason = self.redact(f"HTTP {err.status_code}: {err.message}")[:500]
            raise ApiFailure(reason, fatal=err.status_code in FATAL_STATUSES) from None
        except openai.APIConnectionError as err:
            # after the client's retries: the endpoint is down or wrong, for every other clip too
            reason = (
                f"cannot reach the endpoint {self.endpoint} ({err}). Check OPENAI_BASE_URL and that the server is up"
            )
            raise ApiFailure(self.redact(reason)[:500], fatal=True) from None
        except openai.OpenAIError as err:
            raise ApiFailure(self.redact(f"{type(err).__name__}: {err}")[:500]) from None
        try:
            usage = Usage.from_api(response.usage)
            choice = response.choices[0]
            message = choice.message
            refusal = getattr(message, "refusal", None)
            content = message.content
            finish = choice.finish_reason
        except (AttributeError, IndexError, TypeError, ValueError):
            return None, "malformed response (no choices/message)", Usage(requests=1)
        if refusal:
            return None, self.redact(f"refused: {refusal}")[:500], usage
        if finish == "length":
            return None, f"answer cut off at max_completion_tokens={max_tokens}", usage
        if finish == "content_filter":
            return None, "answer withheld by the content filter", usage
        return content, None, usage
