"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for the curation tests.

The tests talk to it with the real ``openai`` client (``OPENAI_BASE_URL``), so retries,
timeouts, headers and response parsing are the client's own. Every request is recorded as a
``Call`` with its kind (``rationale`` or ``verify``, from the JSON schema name or the text) and
the clip it is about: the first 12 hex digits of the sha256 of the attached audio (the store's
``audio_sha256``), or of the text-only request's clip description. A verification request is
tied to its clip by the tag the server's own rationale carries (``clip <tag>`` in the keywords).

Default behaviour: a valid rationale, and a verification that returns the clip's target (read
from the rationale request), so everything is accepted. A test's ``script(call)`` returns a
``Reply`` to do something else, or None for the default.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RATIONALE_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "prompt_tokens_details": {"audio_tokens": 400},
}
VERIFY_USAGE = {"prompt_tokens": 300, "completion_tokens": 50, "total_tokens": 350}
_TARGET = re.compile(r"as a distribution: (\{[^{}]*\})")
_TAG = re.compile(r"clip ([0-9a-f]{12})")


@dataclass
class Call:
    """One request the server received."""

    kind: str
    clip: str | None
    n: int
    """1-based count of requests of this kind for this clip so far (this one included)."""
    body: dict
    headers: dict[str, str]
    text: str
    """All text parts of the last user message."""

    @property
    def audio_parts(self) -> list[dict]:
        content = self.body["messages"][-1]["content"]
        return (
            [p for p in content if isinstance(p, dict) and p.get("type") == "input_audio"]
            if isinstance(content, list)
            else []
        )


@dataclass
class Reply:
    """What to answer: a message ``content`` (status 200) or an error status, after ``delay`` seconds."""

    status: int = 200
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    error: str = "scripted error"
    usage: dict | None = None
    finish_reason: str = "stop"


def rationale_json(tag: str, synthesis: str = "The voice outweighs the neutral words; the majority is clear.") -> str:
    """A valid rationale whose keywords carry the clip's tag (so its verification can be matched)."""
    return json.dumps(
        {
            "keywords": f"clip {tag}, steady pitch, moderate volume",
            "text_analysis": "The words are everyday and could be read several ways.",
            "audio_analysis": "Moderate volume, even speed, mid pitch with a narrow range; a slightly tense tone.",
            "synthesis": synthesis,
        }
    )


class FakeOpenAI:
    """The server. Use as a context manager; ``base_url`` goes into ``OPENAI_BASE_URL``."""

    def __init__(self, script: Callable[[Call], Reply | None] | None = None) -> None:
        self.script = script
        self.calls: list[Call] = []
        self.targets: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def count(self, kind: str | None = None, clip: str | None = None) -> int:
        with self._lock:
            return sum((kind is None or c.kind == kind) and (clip is None or c.clip == clip) for c in self.calls)

    def of(self, kind: str, clip: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.kind == kind and c.clip == clip]

    # -- request handling ------------------------------------------------------------------

    def _classify(self, body: dict) -> tuple[str, str | None, str]:
        content = body["messages"][-1]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = "\n".join(p.get("text", "") for p in parts if p.get("type") == "text")
        schema_name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if schema_name == "structured_cot" or "as a distribution:" in text:
            audio = [p for p in parts if p.get("type") == "input_audio"]
            if audio:
                tag = hashlib.sha256(base64.b64decode(audio[0]["input_audio"]["data"])).hexdigest()[:12]
            else:  # text-only: the clip description before the instructions identifies the clip
                tag = hashlib.sha256(text.split("Write an analysis")[0].encode()).hexdigest()[:12]
            target = _TARGET.search(text)
            if target:
                self.targets[tag] = json.loads(target.group(1))
            return "rationale", tag, text
        match = _TAG.search(text)
        return "verify", match.group(1) if match else None, text

    def default_reply(self, call: Call) -> Reply:
        if call.kind == "rationale":
            return Reply(content=rationale_json(call.clip or "000000000000"))
        target = self.targets.get(call.clip or "")
        if target is None:
            return Reply(status=400, error="verification for an unknown clip")
        return Reply(content=json.dumps({"distribution": target}))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw)
                kind, clip, text = server._classify(body)
                with server._lock:
                    n = 1 + sum(c.kind == kind and c.clip == clip for c in server.calls)
                    call = Call(kind, clip, n, body, {k.lower(): v for k, v in self.headers.items()}, text)
                    server.calls.append(call)
                reply = (server.script(call) if server.script else None) or server.default_reply(call)
                if reply.delay and server._closing.wait(reply.delay):
                    return
                if reply.status != 200:
                    self._send(reply.status, {"error": {"message": reply.error, "type": "server_error"}}, reply.headers)
                    return
                usage = reply.usage or (RATIONALE_USAGE if kind == "rationale" else VERIFY_USAGE)
                message = {"role": "assistant", "content": reply.content, "refusal": None}
                choice = {"index": 0, "finish_reason": reply.finish_reason, "message": message}
                out = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"]}
                self._send(200, {**out, "choices": [choice], "usage": usage}, reply.headers)

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        return Handler
