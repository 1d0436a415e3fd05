"""The HTTP service: ``POST /v1/predict`` through a dynamic batcher, health, readiness, metrics, the demo page.

Every prediction goes through the loaded ``Predictor``'s own steps, as ``ambemo predict`` runs
them: ``load_audio`` on the uploaded file, then ``predict_clips`` on a batch of clips. So a record
equals ``ambemo predict``'s for the same clip (up to float rounding when it shares a padded
batch with others, as in ``ambemo predict --batch-size``), plus ``timings``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from ambemo.inference.predictor import Predictor
from ambemo.model.inputs import Clip
from ambemo.serve.batcher import Batcher, Closed, QueueFull
from ambemo.serve.inputs import (
    PredictJSON,
    PredictRecord,
    RequestError,
    decode_audio,
    read_request,
)

log = logging.getLogger("ambemo.serve")

#: Environment variable holding the API key (``ambemo serve`` reads it).
API_KEY_ENV = "AMBEMO_API_KEY"


@dataclass
class ServeSettings:
    """How ``ambemo serve`` batches, bounds and guards requests (its command-line options)."""

    max_batch_size: int = 16
    """Most clips the model reads at once."""
    max_wait_ms: float = 10.0
    """How long a batch waits for more requests after its first."""
    max_queue: int = 64
    """Requests waiting for a batch beyond which new ones get 503."""
    timeout_s: float = 60.0
    """A request not answered within this gets 504 (and is not run if its batch has not started)."""
    max_upload_mb: float = 20.0
    max_audio_seconds: float = 60.0
    """Longer audio gets 413 (audio under it but over the model's ``max_seconds`` is cut, as by ``ambemo predict``)."""
    api_key: str | None = None
    """Required as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` on ``/v1/*`` when set."""
    warmup: bool = True

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class Metrics:
    """The Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ambemo_requests", "Prediction requests answered, by HTTP status", ["status"], registry=r
        )
        self.latency = Histogram(
            "ambemo_request_seconds",
            "Time to answer a successful prediction request",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=r,
        )
        self.batch_size = Histogram(
            "ambemo_batch_size", "Clips per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.batch_seconds = Histogram(
            "ambemo_batch_seconds",
            "Time the model takes for one batch",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30),
            registry=r,
        )
        self.queue_depth = Gauge("ambemo_queue_depth", "Requests waiting for a batch", registry=r)
        self.in_progress = Gauge(
            "ambemo_requests_in_progress", "Prediction requests received and not yet answered", registry=r
        )
        self.rejections = Counter("ambemo_rejections", "Requests refused, by reason", ["reason"], registry=r)


def page_html() -> str:
    """The demo page (self-contained: inline script and SVG, nothing fetched from elsewhere)."""
    return (files("ambemo.serve") / "demo.html").read_text(encoding="utf-8")


def warmup_clip(sample_rate: int) -> Clip:
    """One second of a quiet tone with noise, read before serving: the first request pays no one-time costs."""
    t = np.arange(sample_rate, dtype=np.float32) / sample_rate
    noise = np.random.default_rng(0).standard_normal(sample_rate).astype(np.float32)
    return Clip("warmup", 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * noise, "hello", target=None)


class Service:
    """A loaded model behind the batcher; what the routes call."""

    def __init__(self, predictor: Predictor, settings: ServeSettings) -> None:
        self.predictor = predictor
        self.settings = settings
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.ready = False
        self.not_ready_reason = "the model is warming up"
        self._keys = (f"request-{n}" for n in itertools.count(1))

    def run_batch(self, clips: list[Clip]) -> list[dict]:
        """The model thread's work: ``ambemo predict``'s read-out of one batch (reasoning kept; dropped per request)."""
        return self.predictor.predict_clips(clips, reasoning=True)

    def on_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)

    async def start(self) -> None:
        s = self.settings
        self.batcher = Batcher(self.run_batch, s.max_batch_size, s.max_wait_ms / 1000, s.max_queue, self.on_batch)
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth if self.batcher else 0)
        self.batcher.start()
        if not s.warmup:
            self.ready = True
            return
        try:
            started = time.perf_counter()
            await self.batcher.run_now([warmup_clip(self.predictor.backbone.sample_rate)])
            log.info("warmed up in %.1f s", time.perf_counter() - started)
            self.ready = True
        except Exception as err:  # the process stays up and says why it is not ready
            log.exception("warm-up failed")
            self.not_ready_reason = f"warm-up failed: {err}"

    async def stop(self) -> None:
        self.ready = False
        self.not_ready_reason = "the server is shutting down"
        if self.batcher is not None:
            await self.batcher.close()

    def check_key(self, http: Request) -> None:
        """``RequestError`` 401 unless the request carries the API key (when one is set)."""
        key = self.settings.api_key
        if not key:
            return
        given = http.headers.get("x-api-key") or ""
        scheme, _, token = http.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = token.strip()
        # compare_digest: the time taken does not reveal how much of the key was right
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise RequestError(
                401,
                "missing or wrong API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                "unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )

    async def predict(self, http: Request) -> dict[str, Any]:
        """The record for one request, or ``RequestError``."""
        started = time.perf_counter()
        self.check_key(http)
        if not self.ready or self.batcher is None:
            raise RequestError(503, f"not ready: {self.not_ready_reason}", "not_ready", {"Retry-After": "5"})
        s = self.settings
        request = await read_request(http, s.max_bytes)
        samples = await run_in_threadpool(decode_audio, self.predictor, request, s.max_bytes, s.max_audio_seconds)
        decoded = time.perf_counter()
        # In a batch, clips are keyed by a unique server-side id: clients' ids may repeat.
        key = next(self._keys)
        try:
            job = self.batcher.submit(Clip(key, samples, request.transcript, target=None))
        except QueueFull as full:
            retry = str(self.batcher.retry_after())
            raise RequestError(
                503, f"server busy: {full}; retry after {retry} s", "queue_full", {"Retry-After": retry}
            ) from None
        except Closed as closed:
            raise RequestError(
                503, f"not accepting requests: {closed}", "shutting_down", {"Retry-After": "5"}
            ) from None
        left = s.timeout_s - (time.perf_counter() - started)
        try:
            record = await asyncio.wait_for(asyncio.shield(job.future), max(left, 0.001))
        except TimeoutError:
            job.future.cancel()  # not run if its batch has not started
            raise RequestError(504, f"no answer within the request timeout of {s.timeout_s:g} s", "timeout") from None
        except Exception as err:
            raise RequestError(500, f"the model failed on this request's batch: {err}", "model_error") from None
        done = time.perf_counter()
        record = {**record, "id": request.id or request.filename or key}
        if not request.reasoning:
            record.pop("reasoning", None)
        batch_start = job.started or done
        record["timings"] = {
            "decode_ms": round((decoded - started) * 1000, 2),
            "queue_ms": round((batch_start - job.enqueued) * 1000, 2),
            "model_ms": round(job.batch_seconds * 1000, 2),
            "total_ms": round((done - started) * 1000, 2),
            "batch_size": job.batch_size,
        }
        return record

    def info(self) -> dict[str, Any]:
        p = self.predictor
        return {
            "model": p.source,
            "classes": p.classes,
            "threshold": p.threshold,
            "ambiguity": p.ambiguity,
            "reasoning_model": p.use_cot,
            "max_new_tokens": p.max_new_tokens,
            "model_max_seconds": p.max_seconds,
            "device": str(p.device),
            "settings": {k: v for k, v in asdict(self.settings).items() if k != "api_key"},
            "api_key_required": bool(self.settings.api_key),
        }


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "additionalProperties": False,
                    "properties": {
                        "audio": {"type": "string", "format": "binary", "description": "the audio file"},
                        "transcript": {"type": "string", "description": "what is said (optional)"},
                        "reasoning": {"type": "boolean", "default": True, "description": "include the reasoning text"},
                        "id": {"type": "string", "description": "echoed back (default: the file name)"},
                    },
                }
            },
            "application/json": {"schema": PredictJSON.model_json_schema()},
        },
    }
}

ERRORS = {
    400: {"description": "malformed JSON, base64 or multipart body"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "audio over the size or duration limit"},
    415: {"description": "not audio, or an unsupported Content-Type"},
    422: {"description": "corrupt, truncated, empty or silent audio; unknown or invalid fields"},
    503: {"description": "queue full, warming up or shutting down (see Retry-After)"},
    504: {"description": "not answered within the request timeout"},
}


def error_response(err: RequestError) -> JSONResponse:
    return JSONResponse({"detail": err.message}, status_code=err.status, headers=err.headers)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app serving ``predictor`` (run it with uvicorn; ``ambemo serve`` does)."""
    service = Service(predictor, settings or ServeSettings())
    metrics = service.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm up in the background: /healthz answers meanwhile, /readyz says when it is done.
        warming = asyncio.create_task(service.start())
        yield
        await warming
        await service.stop()

    app = FastAPI(
        title="ambemo",
        summary="The listeners' emotion distribution of a speech clip, an ambiguity flag and the model's reasoning.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.post(
        "/v1/predict",
        response_model=PredictRecord,
        response_model_exclude_none=True,
        openapi_extra=PREDICT_BODY,
        responses=ERRORS,  # type: ignore[arg-type]
        summary="Predict one clip: distribution, top class, entropy, ambiguity flag, reasoning, timings",
    )
    async def predict(http: Request) -> Response:
        started = time.perf_counter()
        metrics.in_progress.inc()
        try:
            record = await service.predict(http)
        except RequestError as err:
            metrics.rejections.labels(err.reason).inc()
            metrics.requests.labels(str(err.status)).inc()
            return error_response(err)
        finally:
            metrics.in_progress.dec()
        metrics.requests.labels("200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(record)

    @app.get("/v1/info", summary="The model's classes, ambiguity threshold and the server's limits")
    async def info(http: Request) -> Response:
        try:
            service.check_key(http)
        except RequestError as err:
            return error_response(err)
        return JSONResponse(service.info())

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": service.not_ready_reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, summary="The demo page")
    async def demo() -> HTMLResponse:
        return HTMLResponse(page_html())

    return app
