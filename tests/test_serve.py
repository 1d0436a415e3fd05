"""``ambemo serve`` end to end on the tiny model, over loopback: records equal ``ambemo predict``'s,
every kind of bad input gets a 4xx that says what is wrong, 503 when the queue is full, timeouts,
graceful shutdown, the API key, a bounded load test, and the demo page in a headless browser.

A LoRA run trained for one optimizer step is exported once for the module: what is under test is
that serving reproduces ``ambemo predict``, not what the model learned. Servers bind 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

import ambemo
from ambemo.cli import main
from ambemo.config import compose
from ambemo.data.audio import resample
from ambemo.inference.export import export
from ambemo.inference.predictor import Predictor
from ambemo.serve.app import ServeSettings, create_app
from ambemo.serve.cli import is_loopback
from ambemo.serve.loadtest import agrees, run_load
from ambemo.train import train

ROOT = Path(__file__).resolve().parent.parent
#: The module's server: small limits so that over-limit inputs are cheap to make.
SETTINGS = ServeSettings(max_batch_size=16, max_wait_ms=20, max_queue=64, max_upload_mb=1, max_audio_seconds=10)


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of a LoRA run trained for one optimizer step (as in test_predict)."""
    out = tmp_path_factory.mktemp("serve")
    overrides = [
        f"data.root={small_corpus}",
        *("data.n_train=48", "data.n_val=8", "data.n_test=8", "data.limit_train=8", "data.limit_eval=2"),
        *("data.batch_size=8", "data.eval_batch_size=2", "strategy.max_new_tokens=8"),
        *("strategy.own_readout_weight=0", "trainer.accelerator=cpu", "trainer.max_epochs=1", "logger=csv"),
        f"out_dir={out / 'runs'}",
    ]
    return export(train(compose("sft_cot", overrides)), out / "export")


@pytest.fixture(scope="module")
def predictor(exported: Path) -> Predictor:
    return ambemo.load(exported, device="cpu")


@pytest.fixture(scope="module")
def clips(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good clips: 16 kHz mono WAV, 22.05 kHz stereo FLAC, and another utterance at 8 kHz."""
    folder = tmp_path_factory.mktemp("clips")
    speech, rate = sf.read(small_corpus / "wav" / "syn00000.wav", dtype="float32")
    other = resample(speech, rate, 22_050)
    sf.write(folder / "a16k.wav", speech, rate, subtype="PCM_16")
    sf.write(folder / "b22k_stereo.flac", np.stack([other, 0.5 * other], axis=1), 22_050, subtype="PCM_16")
    second, _ = sf.read(small_corpus / "wav" / "syn00001.wav", dtype="float32")
    sf.write(folder / "c8k.wav", resample(second, rate, 8_000), 8_000, subtype="PCM_16")
    return {p.name: p for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def predicted(exported: Path, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """``ambemo predict``'s records for the clips, by file name."""
    out = tmp_path_factory.mktemp("predicted") / "p.jsonl"
    assert main(["predict", str(exported), *map(str, clips.values()), "--out", str(out), "--no-progress"]) == 0
    return {Path(r["id"]).name: r for r in map(json.loads, out.read_text().splitlines())}


@contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its URL; shut it down gracefully."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=60))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.05)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=90)
        sock.close()


def wait_until(condition: Callable[[], bool], seconds: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[str]:
    with serving(create_app(predictor, SETTINGS)) as url:
        wait_until(lambda: is_ready(url), what="readiness")
        yield url


def post_file(url: str, path: Path, **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"audio": (path.name, path.read_bytes())}, data=fields, timeout=120)


def wav_bytes(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def without(record: dict, *keys: str) -> dict:
    return {k: v for k, v in record.items() if k not in keys}


def assert_same_prediction(record: dict, reference: dict) -> None:
    """Equal, up to the float rounding of being padded in a different batch."""
    assert without(record, "id", "timings", "distribution", "entropy") == without(
        reference, "id", "distribution", "entropy"
    )
    assert record["distribution"] == pytest.approx(reference["distribution"], abs=1e-6)
    assert record["entropy"] == pytest.approx(reference["entropy"], abs=1e-6)


class Gate:
    """Wraps the service's batch function: holds each batch until released, so tests control timing."""

    def __init__(self, run: Callable[[list], list]) -> None:
        self.run = run
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def __call__(self, clips: list) -> list:
        self.batches.append(len(clips))
        self.entered.set()
        assert self.release.wait(120), "the test never released the gate"
        return self.run(clips)


def gated_app(predictor: Predictor, **settings) -> tuple:
    app = create_app(predictor, ServeSettings(**{"warmup": False, **settings}))
    gate = Gate(app.state.service.run_batch)
    app.state.service.run_batch = gate  # before the server starts: the batcher takes it then
    return app, gate, app.state.service


# ---- the API ---------------------------------------------------------------------------------------


def test_records_equal_ambemo_predict(server: str, clips: dict[str, Path], predicted: dict[str, dict], exported: Path):
    for name, path in clips.items():
        answer = post_file(server, path)
        assert answer.status_code == 200, answer.text
        record = answer.json()
        assert record["id"] == name and set(record) == {*predicted[name], "timings"}
        assert_same_prediction(record, predicted[name])
        timings = record["timings"]
        assert timings["batch_size"] == 1 and 0 < timings["model_ms"] <= timings["total_ms"]
    # base64 in JSON, with an id and without the reasoning text: the same prediction
    path = clips["b22k_stereo.flac"]
    body = {"audio_base64": base64.b64encode(path.read_bytes()).decode(), "id": "call-7", "reasoning": False}
    record = httpx.post(f"{server}/v1/predict", json=body, timeout=120).json()
    assert record["id"] == "call-7" and "reasoning" not in record
    assert_same_prediction(record, without(predicted[path.name], "reasoning"))
    # a transcript reaches the prompt as in `ambemo predict --transcript`
    out = exported.parent / "with_transcript.jsonl"
    path = clips["a16k.wav"]
    assert main(["predict", str(exported), str(path), "--transcript", "I am fine", "--out", str(out)]) == 0
    record = post_file(server, path, transcript="I am fine", id="x").json()
    assert_same_prediction(record, json.loads(out.read_text()))


def bad_inputs(clips: dict[str, Path]) -> list[tuple[str, dict, int, str]]:
    """(case, httpx.post keyword arguments, expected status, expected words in the message)."""
    good = clips["a16k.wav"].read_bytes()
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000).astype(np.float32)

    def upload(data: bytes, name: str = "clip.wav", **fields: str) -> dict:
        return {"files": {"audio": (name, data)}, "data": fields}

    flac = wav_bytes(noise, 16_000, "FLAC")
    return [
        ("not audio", upload(b"hello, this is a text file\n" * 20, "notes.txt"), 415, "not audio"),
        ("corrupt header", upload(b"RIFF\x10\x00\x00\x00WAVEfmt this is not audio" + bytes(64)), 422, "corrupt"),
        ("truncated WAV", upload(good[: len(good) // 2]), 422, "truncated WAV file"),
        ("truncated FLAC", upload(flac[: len(flac) // 2], "clip.flac"), 422, "corrupt audio"),
        ("empty file", upload(b""), 422, "empty audio"),
        ("no samples", upload(wav_bytes(np.zeros(0, np.float32), 16_000)), 422, "empty audio"),
        ("silent", upload(wav_bytes(np.zeros(16_000, np.float32), 16_000)), 422, "silent audio"),
        ("too short", upload(wav_bytes(noise[:800], 16_000)), 422, "too short"),
        ("over the size limit", upload(wav_bytes(np.tile(noise, 40), 16_000)), 413, "too large"),
        (
            "over the duration limit",
            upload(wav_bytes(np.tile(noise[:8000], 24), 8_000)),
            413,
            "too long: 24.0 s > 10 s",
        ),
        ("sample rate too low", upload(wav_bytes(noise[:4000], 2_000)), 422, "2000 Hz is below"),
        ("too many channels", upload(wav_bytes(np.tile(noise[:1600, None], 40), 16_000)), 422, "channel count: 40"),
        ("malformed JSON", {"content": b'{"audio_base64": "abc"', "headers": JSON}, 400, "malformed JSON"),
        ("not UTF-8", {"content": b"\xff\xfe{}", "headers": JSON}, 400, "malformed JSON"),
        ("malformed base64", {"json": {"audio_base64": "not base64!"}}, 400, "not valid base64"),
        ("unknown JSON field", {"json": {"audio_base64": "", "speaker": "x"}}, 422, "unknown field 'speaker'"),
        ("missing JSON field", {"json": {"transcript": "hi"}}, 422, "missing field 'audio_base64'"),
        ("JSON field of the wrong type", {"json": {"audio_base64": "", "reasoning": "maybe"}}, 422, "reasoning"),
        ("JSON not an object", {"json": [1, 2]}, 422, "must be a JSON object"),
        ("unknown form field", upload(good, speaker="x"), 422, "unknown field(s) ['speaker']"),
        ("no audio field", {"files": {"transcript": (None, "hi")}}, 422, "missing field 'audio'"),
        ("audio as text", {"files": {"audio": (None, "clip.wav")}}, 422, "must be a file upload"),
        ("two files", {"files": {"audio": ("a.wav", good), "id": ("i", b"1")}}, 400, "Too many files"),
        ("bad reasoning flag", upload(good, reasoning="maybe"), 422, "reasoning must be true or false"),
        ("wrong content type", {"content": good, "headers": {"Content-Type": "audio/wav"}}, 415, "Content-Type"),
    ]


JSON = {"Content-Type": "application/json"}


def test_bad_input_gets_4xx_saying_what_is_wrong(server: str, clips: dict[str, Path]):
    for case, request, status, words in bad_inputs(clips):
        answer = httpx.post(f"{server}/v1/predict", timeout=60, **request)
        assert answer.status_code == status, f"{case}: {answer.status_code} {answer.text}"
        assert words in answer.json()["detail"], f"{case}: {answer.json()['detail']}"
    # a body announced as over the limit is refused before it is read
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        raw.sendall(b"Content-Length: 9999999\r\nConnection: close\r\n\r\n{}")
        reply = b"".join(iter(lambda: raw.recv(4096), b"")).decode()
    assert reply.startswith("HTTP/1.1 413") and "request too large" in reply, reply
    metrics = httpx.get(f"{server}/metrics").text
    assert 'ambemo_rejections_total{reason="bad_audio"}' in metrics
    assert 'ambemo_requests_total{status="415"}' in metrics
    # and the server keeps serving
    assert post_file(server, clips["c8k.wav"]).status_code == 200


def test_full_queue_answers_503_and_requests_arriving_together_share_a_batch(
    predictor: Predictor, clips: dict[str, Path], predicted: dict[str, dict]
):
    app, gate, service = gated_app(predictor, max_batch_size=3, max_queue=3, max_wait_ms=50)
    path = clips["a16k.wav"]
    with serving(app) as url, ThreadPoolExecutor(4) as pool:
        try:
            first = pool.submit(post_file, url, path)
            assert gate.entered.wait(60)  # the first request's batch is on the model (and held there)
            queued = [pool.submit(post_file, url, path) for _ in range(3)]
            wait_until(lambda: service.batcher.depth == 3, what="3 queued requests")
            refused = post_file(url, path)
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
            assert "server busy" in refused.json()["detail"]
            assert "ambemo_queue_depth 3.0" in httpx.get(f"{url}/metrics").text
        finally:
            gate.release.set()
        answers = [first.result(timeout=120), *(f.result(timeout=120) for f in queued)]
    assert [a.status_code for a in answers] == [200] * 4
    assert gate.batches == [1, 3]  # the three that waited together ran as one batch
    assert [a.json()["timings"]["batch_size"] for a in answers] == [1, 3, 3, 3]
    for answer in answers:
        assert_same_prediction(answer.json(), predicted[path.name])


def test_request_timeout_and_the_server_keeps_serving(predictor: Predictor, clips: dict[str, Path]):
    app, gate, _ = gated_app(predictor, max_batch_size=1, timeout_s=1.5)
    path = clips["a16k.wav"]
    with serving(app) as url, ThreadPoolExecutor(2) as pool:
        try:
            held = pool.submit(post_file, url, path)
            assert gate.entered.wait(60)
            waiting = post_file(url, path)  # queued behind the held batch until it times out
            assert waiting.status_code == 504 and "request timeout of 1.5 s" in waiting.json()["detail"]
            assert held.result(timeout=60).status_code == 504
        finally:
            gate.release.set()
        app.state.service.settings.timeout_s = 120
        assert post_file(url, path).status_code == 200
    assert gate.batches == [1, 1]  # the request that timed out in the queue was never run


def test_ready_only_once_warmed_up(predictor: Predictor, clips: dict[str, Path]):
    app, gate, _ = gated_app(predictor, warmup=True)
    with serving(app) as url:
        try:
            assert gate.entered.wait(60)  # the warm-up batch, held
            assert httpx.get(f"{url}/healthz").status_code == 200
            answer = httpx.get(f"{url}/readyz")
            assert answer.status_code == 503 and answer.json()["reason"] == "the model is warming up"
            early = post_file(url, clips["a16k.wav"])
            assert early.status_code == 503 and early.headers["Retry-After"] == "5"
        finally:
            gate.release.set()
        wait_until(lambda: is_ready(url), what="readiness after the warm-up")
    assert gate.batches == [1]  # the early request was refused, not queued


def test_api_key(
    predictor: Predictor, exported: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    app = create_app(predictor, ServeSettings(warmup=False, api_key="s3cret-key"))
    empty = {"files": {"audio": ("x.wav", b"")}}
    with serving(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
        for headers in ({}, {"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret-key2"}):
            answer = httpx.post(f"{url}/v1/predict", headers=headers, **empty)
            assert answer.status_code == 401 and "API key" in answer.json()["detail"]
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(f"{url}/v1/info").status_code == 401
        assert httpx.get(f"{url}/v1/info", headers={"X-API-Key": "s3cret-key"}).json()["api_key_required"]
        # the right key gets past the check (to the input check: an empty file)
        answer = httpx.post(f"{url}/v1/predict", headers={"Authorization": "Bearer s3cret-key"}, **empty)
        assert answer.status_code == 422
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    monkeypatch.delenv("AMBEMO_API_KEY", raising=False)
    assert main(["serve", str(exported), "--host", "0.0.0.0"]) == 2
    assert "set AMBEMO_API_KEY" in capsys.readouterr().err


def test_openapi_health_metrics_and_page(server: str):
    schema = httpx.get(f"{server}/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert body["application/json"]["schema"]["additionalProperties"] is False
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready"}
    metrics = httpx.get(f"{server}/metrics").text
    for name in ("requests_total", "request_seconds_bucket", "batch_size_bucket", "queue_depth", "rejections_total"):
        assert f"ambemo_{name}" in metrics
    page = httpx.get(f"{server}/").text
    assert "<svg" in page and "getUserMedia" in page
    # nothing is fetched from elsewhere (the machine may be offline): the only URL is the SVG namespace's name
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_finishes_accepted_requests(exported: Path, clips: dict[str, Path], predicted: dict[str, dict]):
    """``ambemo serve`` itself, in this process's main thread (where uvicorn handles signals); clients and
    the SIGTERM come from another thread."""
    url = f"http://127.0.0.1:{free_port()}"
    path = clips["b22k_stereo.flac"]
    answers: list[httpx.Response] = []
    failures: list[BaseException] = []

    def client_side() -> None:
        try:
            wait_until(lambda: is_ready(url), 120, "the server to be ready")
            with ThreadPoolExecutor(6) as pool:
                sent = [pool.submit(post_file, url, path) for _ in range(6)]

                def accepted() -> bool:
                    text = httpx.get(f"{url}/metrics").text
                    return "ambemo_requests_in_progress 6.0" in text and "ambemo_queue_depth 6.0" in text

                wait_until(accepted, 3, "6 requests accepted and waiting for their batch")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)
                try:
                    httpx.get(f"{url}/healthz")
                    failures.append(AssertionError("a new connection was accepted after SIGTERM"))
                except httpx.ConnectError:
                    pass
                answers.extend(future.result(timeout=120) for future in sent)
        except BaseException as err:
            failures.append(err)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the server stops whatever happened (a second one is ignored)

    # uvicorn re-raises the signal after its graceful shutdown: into this no-op instead of ending pytest.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    thread = threading.Thread(target=client_side, daemon=True)
    thread.start()
    try:
        # A batch waits up to 4 s to fill up to 8 clips: the 6 requests are all accepted and waiting when SIGTERM comes.
        command = ["serve", str(exported), "--port", url.rsplit(":", 1)[1], "--device", "cpu", "--max-batch-size", "8"]
        assert main([*command, "--max-wait-ms", "4000", "--log-level", "warning"]) == 0
    finally:
        thread.join(timeout=180)
        signal.signal(signal.SIGTERM, previous)
    if failures:
        raise failures[0]
    assert [a.status_code for a in answers] == [200] * 6  # none lost
    for answer in answers:
        assert_same_prediction(answer.json(), predicted[path.name])
        assert answer.json()["timings"]["batch_size"] == 6


def test_load_32_clients(server: str, clips: dict[str, Path], predicted: dict[str, dict]):
    def correct(name: str, record: dict) -> bool:
        return agrees(record, predicted[name])

    files = [(name, path.read_bytes()) for name, path in clips.items()]
    report = asyncio.run(run_load(server, files, clients=32, seconds=5, check=correct))
    print("\n[load test] " + report.summary())
    assert report.ok >= 32 and report.wrong == 0 and report.lost == 0 and not report.refused
    assert max(report.batch_sizes) > 1  # concurrent requests were batched
    assert report.wall_seconds < 60


# ---- the demo page in a real browser -------------------------------------------------------------


def chrome(tmp_path: Path):
    """A headless Chromium through selenium (``make browser`` installs it); a fake microphone that beeps."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        message = "chromium and chromedriver are not installed (`make browser`, as root, installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--use-fake-ui-for-media-stream")
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument(f"--user-data-dir={tmp_path / 'chrome'}")
    return webdriver.Chrome(options=options, service=Service(driver))


def test_demo_page_in_headless_browser(
    server: str, clips: dict[str, Path], predicted: dict[str, dict], predictor: Predictor, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chrome(tmp_path)
    try:
        browser.get(f"{server}/")
        WebDriverWait(browser, 30).until(lambda b: "classes:" in b.find_element(By.ID, "model-info").text)
        path = clips["a16k.wav"]
        browser.find_element(By.ID, "file").send_keys(str(path))
        browser.find_element(By.ID, "predict").click()
        result = browser.find_element(By.ID, "result")
        WebDriverWait(browser, 120).until(lambda b: result.get_attribute("data-state") in ("done", "error"))
        assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "error").text
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")
        shown = {bar.get_attribute("data-class"): float(bar.get_attribute("data-p")) for bar in bars}
        reference = predicted[path.name]
        assert shown == pytest.approx(reference["distribution"], abs=1e-6)
        labels = [bar.find_element(By.CSS_SELECTOR, "text.value").text for bar in bars]
        assert labels == [f"{100 * p:.1f} %" for p in reference["distribution"].values()]
        assert browser.find_element(By.ID, "top").text == reference["top"]
        flag = browser.find_element(By.ID, "flag")
        assert flag.get_attribute("data-ambiguous") == str(reference["ambiguous"]).lower()
        assert flag.text == ("ambiguous" if reference["ambiguous"] else "clear")
        assert browser.find_element(By.ID, "threshold").text == f"{predictor.threshold:.3f}"
        assert browser.find_element(By.ID, "reasoning-text").text == reference["reasoning"]

        # record from the (fake, beeping) microphone: encoded as WAV in the page and predicted
        browser.find_element(By.ID, "record").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "rec-status").text == "recording…")
        time.sleep(1.5)
        browser.find_element(By.ID, "stop").click()
        assert browser.find_element(By.ID, "rec-status").text.startswith("recorded ")
        browser.execute_script("document.getElementById('result').dataset.state = 'idle'")
        browser.find_element(By.ID, "predict").click()
        WebDriverWait(browser, 120).until(lambda b: result.get_attribute("data-state") in ("done", "error"))
        assert result.get_attribute("data-state") == "done", browser.find_element(By.ID, "error").text
        recorded = {
            b.get_attribute("data-class"): float(b.get_attribute("data-p"))
            for b in browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")
        }
        assert list(recorded) == predictor.classes and sum(recorded.values()) == pytest.approx(1, abs=1e-5)
    finally:
        browser.quit()
