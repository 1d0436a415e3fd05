"""``ambemo curate`` end to end: the real ``openai`` client against a scripted local server.

The server (``tests/cot_server.py``) runs on 127.0.0.1 in a thread; each test scripts what it
answers per clip and counts every request, so "no clip was sent twice" and "no request after
the ceiling" are checked on the wire. Every test also checks that the API key appears in no
file it wrote and in nothing it printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import soundfile as sf
from cot_server import Call, FakeOpenAI, Reply

from ambemo.config import DataConfig
from ambemo.cot.curate import main
from ambemo.cot.store import load_accepted
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.data.manifest import read_manifest

REPO = Path(__file__).resolve().parent.parent
KEY = f"sk-test-{uuid.uuid4().hex}"
#: Short client timeout and fast retries keep every test to seconds.
FAST = ["timeout=5", "max_retries=2", "concurrency=2", "--no-progress"]
#: USD per 1M tokens: a rationale (1000 in, 100 out) costs 0.002, a verification (300, 50) 0.0008.
PRICES = [
    "prices.gpt-4o-audio-preview.input=1.0",
    "prices.gpt-4o-audio-preview.output=10.0",
    "prices.gpt-4o-audio-preview.audio_input=null",
]
RATIONALE_COST, VERIFY_COST = 0.002, 0.0008
Script = Callable[[Call], Reply | None]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny built-in corpus: 6 training clips, 1 validation, 1 test."""
    from ambemo.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("cot-corpus")
    generate_corpus(root, seed=0, n_train=6, n_val=1, n_test=1, workers=1)
    return root


@pytest.fixture(autouse=True)
def _api_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@contextlib.contextmanager
def serve(
    monkeypatch: pytest.MonkeyPatch, script: Callable[[Call], Reply | None] | None = None
) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def clips(corpus: Path, split: str = "train") -> list[tuple[str, str]]:
    """(id, server tag = first 12 hex digits of the audio's sha256) per clip of a split, in manifest order."""
    rows = read_manifest(corpus / "manifest.jsonl", CREMA_D_CLASSES)
    return [(r.id, hashlib.sha256(r.audio.read_bytes()).hexdigest()[:12]) for r in rows if r.split == split]


def run(corpus: Path, store: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    """``ambemo curate`` in-process: (exit status, the --report JSON, everything printed)."""
    report = store.with_name(store.stem + ".report.json")
    code = main([str(corpus), "--store", str(store), "--report", str(report), *FAST, *args])
    out = capsys.readouterr()
    return code, json.loads(report.read_text()), out.out + out.err


def records(store: Path) -> list[dict]:
    return [json.loads(line) for line in store.read_text().splitlines() if line.strip()]


def by_id(store: Path) -> dict[str, dict]:
    return {r["id"]: r for r in records(store)}


def assert_no_secret(root: Path, *printed: str) -> None:
    written = [p for p in root.rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path
    for text in printed:
        assert KEY not in text


def test_success_stores_verified_cots_for_the_training_split_only(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "cot.jsonl"
    train = clips(corpus)
    with serve(monkeypatch) as server:
        code, report, printed = run(corpus, store, capsys, *PRICES)
    assert code == 0
    assert (report["accepted"], report["rejected"], report["failed"]) == (6, 0, 0)
    assert report["acceptance_rate"] == 1.0 and report["attempts"] == 6
    assert report["cost_usd"] == pytest.approx(6 * (RATIONALE_COST + VERIFY_COST))
    assert report["usage"] == {"requests": 12, "input_tokens": 7800, "audio_tokens": 2400, "output_tokens": 900}
    assert "acceptance rate 100.0 %" in printed

    # On the wire: one rationale + one verification per training clip; never a val/test clip.
    train_tags = {tag for _, tag in train}
    assert {c.clip for c in server.calls} == train_tags
    held_out = {tag for split in ("val", "test") for _, tag in clips(corpus, split)}
    assert not held_out & {c.clip for c in server.calls}
    for call in server.calls:
        assert call.headers["authorization"] == f"Bearer {KEY}"  # the key is used, never stored
        assert call.body["model"] == "gpt-4o-audio-preview"
        fmt = call.body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        if call.kind == "rationale":
            (audio,) = call.audio_parts
            assert audio["input_audio"]["format"] == "wav"
            assert fmt["json_schema"]["name"] == "structured_cot"
            assert "as a distribution:" in call.text and "minority" in call.text
        else:  # the reader sees the rationale only: no audio, no target
            assert not call.audio_parts and "as a distribution:" not in call.text
            assert fmt["json_schema"]["name"] == "emotion_distribution"
            assert f"clip {call.clip}" in call.text
    assert server.count("rationale") == 6 and server.count("verify") == 6

    stored = by_id(store)
    assert set(stored) == {uid for uid, _ in train}
    sha = {uid: tag for uid, tag in train}
    for uid, record in stored.items():
        assert record["status"] == "accepted" and record["audio_sha256"].startswith(sha[uid])
        assert record["model"] == "gpt-4o-audio-preview" and record["prompt_version"].endswith("/audio")
        assert record["js"] <= 0.2 and len(record["attempts"]) == 1
    curated = load_accepted(store)
    assert curated == {uid: r["cot"] for uid, r in stored.items()}
    assert all(text.endswith("Emotion:") and "[Step3: Synthesis]" in text for text in curated.values())
    assert_no_secret(tmp_path, printed)


def test_non_json_and_schema_violating_answers_are_regenerated_then_rejected(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (id_a, tag_a), (id_b, tag_b) = clips(corpus)[:2]

    def script(call: Call) -> Reply | None:
        if call.kind != "rationale":
            return None
        if call.clip == tag_a and call.n == 1:
            return Reply(content="Sure! The speaker sounds angry.")
        if call.clip == tag_a and call.n == 2:
            return Reply(content=json.dumps({"keywords": "x", "text_analysis": "y", "audio_analysis": "z"}))
        if call.clip == tag_b:
            return Reply(content="<html>not json</html>")
        return None

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, script) as server:
        code, report, printed = run(corpus, store, capsys)
    assert code == 0  # a rejected clip is a final answer, not a failure
    assert (report["accepted"], report["rejected"], report["failed"]) == (5, 1, 0)
    assert report["acceptance_rate"] == pytest.approx(5 / 6)
    a, b = by_id(store)[id_a], by_id(store)[id_b]
    assert a["status"] == "accepted"
    assert [x["outcome"] for x in a["attempts"]] == ["invalid", "invalid", "accepted"]
    assert "not JSON" in a["attempts"][0]["reason"] and "schema violation" in a["attempts"][1]["reason"]
    assert b["status"] == "rejected" and b["cot"] is None and len(b["attempts"]) == 3
    assert "not JSON" in b["reason"]
    assert server.count("rationale", tag_b) == 3 and server.count("verify", tag_b) == 0  # invalid: never verified
    assert id_b not in load_accepted(store)
    assert_no_secret(tmp_path, printed)


def test_rate_limit_is_retried_by_the_client(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def script(call: Call) -> Reply | None:
        if call.kind == "rationale" and call.n == 1:
            return Reply(status=429, error="Rate limit reached", headers={"retry-after-ms": "5"})
        return None

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, script) as server:
        code, report, printed = run(corpus, store, capsys)
    assert code == 0 and report["accepted"] == 6 and report["failed"] == 0
    for _, tag in clips(corpus):
        assert [c.n for c in server.of("rationale", tag)] == [1, 2]
        assert server.of("rationale", tag)[1].headers["x-stainless-retry-count"] == "1"
    assert report["usage"]["requests"] == 12  # the 429s cost nothing
    assert_no_secret(tmp_path, printed)


def test_server_errors_fail_one_clip_not_the_run_and_are_retried_next_time(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    id_a, tag_a = clips(corpus)[0]
    broken = threading.Event()
    broken.set()

    def script(call: Call) -> Reply | None:
        if call.clip == tag_a and broken.is_set():  # the error body echoes the request's key
            echo = f"internal error; request had authorization: {call.headers['authorization']}"
            return Reply(status=500, error=echo, headers={"retry-after-ms": "5"})
        return None

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, script) as server:
        code, report, printed = run(corpus, store, capsys)
        assert code == 3  # incomplete: rerun to retry
        assert (report["accepted"], report["failed"]) == (5, 1)
        assert server.count("rationale", tag_a) == 3  # 1 + max_retries=2
        failed = by_id(store)[id_a]
        assert failed["status"] == "failed" and failed["reason"].startswith("HTTP 500")
        assert "[REDACTED]" in failed["reason"] and report["failures"][0]["id"] == id_a
        assert "failed " + id_a in printed

        code, report, printed2 = run(corpus, store, capsys, "--skip-failed")
        assert report["skipped_failed"] == 1 and report["due"] == 0 and server.count() == 3 + 10

        broken.clear()
        before = server.count()
        code, report, printed3 = run(corpus, store, capsys)
        assert code == 0 and report["already_done"] == 5 and report["accepted"] == 1
        assert {c.clip for c in server.calls[before:]} == {tag_a}
    assert len(load_accepted(store)) == 6
    assert_no_secret(tmp_path, printed, printed2, printed3)


def test_slow_answers_time_out_and_fail_that_clip(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    id_a, tag_a = clips(corpus)[0]

    def script(call: Call) -> Reply | None:
        return Reply(delay=5.0) if call.clip == tag_a else None

    store = tmp_path / "cot.jsonl"
    started = time.time()
    with serve(monkeypatch, script) as server:
        code, report, printed = run(corpus, store, capsys, "timeout=0.4", "max_retries=1")
        assert server.count("rationale", tag_a) == 2  # the first try and one retry
    assert time.time() - started < 15
    assert code == 3 and (report["accepted"], report["failed"]) == (5, 1)
    record = by_id(store)[id_a]
    assert record["status"] == "failed" and "timed out" in record["reason"]
    assert_no_secret(tmp_path, printed)


def test_verification_rejection_regenerates_with_feedback_then_accepts(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (id_a, tag_a), (id_b, tag_b) = clips(corpus)[:2]
    far = {name: (1.0 if name == "sadness" else 0.0) for name in CREMA_D_CLASSES}

    def script(call: Call) -> Reply | None:
        if call.kind == "verify" and ((call.clip == tag_a and call.n == 1) or call.clip == tag_b):
            return Reply(content=json.dumps({"distribution": far}))
        return None

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, script) as server:
        code, report, printed = run(corpus, store, capsys, "--max-attempts", "2")
        second = server.of("rationale", tag_a)[1]
    assert code == 0
    assert (report["accepted"], report["rejected"]) == (5, 1) and report["acceptance_rate"] == pytest.approx(5 / 6)
    assert report["attempts"] == 8 and report["accepted_first_attempt"] == 4
    a = by_id(store)[id_a]
    assert a["status"] == "accepted" and [x["outcome"] for x in a["attempts"]] == ["rejected", "accepted"]
    assert a["attempts"][0]["js"] > 0.2 >= a["attempts"][1]["js"] == a["js"]
    assert a["attempts"][0]["verified"] == [far[c] for c in CREMA_D_CLASSES]
    assert "A previous analysis" in second.text and '"sadness": 1.0' in second.text  # the feedback
    b = by_id(store)[id_b]
    assert b["status"] == "rejected" and b["cot"] is None and "threshold 0.2" in b["reason"]
    assert_no_secret(tmp_path, printed)


def test_killed_run_resumes_without_resending_stored_clips(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train = clips(corpus)
    hang_tag = train[3][1]
    hang = threading.Event()
    hang.set()

    def script(call: Call) -> Reply | None:  # the 4th clip's request hangs until the run is killed
        return Reply(delay=120) if call.clip == hang_tag and hang.is_set() else None

    store = tmp_path / "cot.jsonl"
    log = tmp_path / "killed-run.log"
    with serve(monkeypatch, script) as server:
        command = [sys.executable, "-m", "ambemo.cli", "curate", str(corpus), "--store", str(store)]
        with open(log, "wb") as out:
            proc = subprocess.Popen([*command, "concurrency=1", "--no-progress"], cwd=REPO, stdout=out, stderr=out)
            deadline = time.time() + 120
            while server.count("rationale", hang_tag) == 0:
                assert proc.poll() is None, log.read_text()
                assert time.time() < deadline, "the run never reached the 4th clip"
                time.sleep(0.05)
            proc.kill()
            proc.wait()
        stored = {r["id"] for r in records(store)}
        assert stored == {uid for uid, _ in train[:3]}  # flushed before the kill
        with open(store, "ab") as handle:  # and a record cut off mid-write, as a kill can leave
            handle.write(b'{"store_version": 1, "id": "syn000')
        before = server.count()
        assert before == 7  # 3 x (rationale + verify) + the hung request

        hang.clear()
        code, report, printed = run(corpus, store, capsys, "concurrency=1")
        resumed = server.calls[before:]
    assert code == 0 and report["repaired_truncated_line"]
    assert (report["already_done"], report["due"], report["accepted"]) == (3, 3, 3)
    stored_tags = {tag for uid, tag in train if uid in stored}
    assert not [c for c in resumed if c.clip in stored_tags]  # no stored clip was sent again
    assert {c.clip for c in resumed} == {tag for _, tag in train[3:]}
    for tag in stored_tags:
        assert server.count("rationale", tag) == 1 and server.count("verify", tag) == 1
    assert sorted(r["id"] for r in records(store)) == sorted(uid for uid, _ in train)
    assert len(load_accepted(store)) == 6
    assert_no_secret(tmp_path, printed)


def test_cost_ceiling_stops_new_requests(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train = clips(corpus)
    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch) as server:
        # 2 clips cost 0.0056; the 3rd rationale brings the spend to 0.0076 >= 0.006: no verification.
        code, report, printed = run(corpus, store, capsys, *PRICES, "--max-cost", "0.006", "concurrency=1")
        assert (server.count("rationale"), server.count("verify")) == (3, 2)
        assert code == 3
        assert (report["accepted"], report["failed"], report["not_started"]) == (2, 1, 3)
        assert report["cost_usd"] == pytest.approx(3 * RATIONALE_COST + 2 * VERIFY_COST)
        assert "max cost $0.0060 reached" in report["stopped"] and "stopped early" in printed
        third = by_id(store)[train[2][0]]
        assert third["status"] == "failed" and "stopped before verification" in third["reason"]
        assert third["cost_usd"] == pytest.approx(RATIONALE_COST) and third["attempts"][0]["outcome"] == "unverified"
        assert sum(r["cost_usd"] for r in records(store)) == pytest.approx(report["cost_usd"])

        code, report, printed2 = run(corpus, store, capsys, *PRICES, "--max-cost", "1")
        assert code == 0 and (report["already_done"], report["accepted"]) == (2, 4)
    assert len(load_accepted(store)) == 6
    assert_no_secret(tmp_path, printed, printed2)


def test_cost_ceiling_records_requests_in_flight(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    slow_first = threading.Barrier(3, timeout=10)

    def overlapping(call: Call) -> Reply | None:
        if call.kind == "rationale":
            slow_first.wait()  # all three clips' first requests are in flight together
        return None

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, overlapping) as server:
        code, report, printed = run(corpus, store, capsys, *PRICES, "--max-cost", "0.001", "concurrency=3")
        assert (server.count("rationale"), server.count("verify")) == (3, 0)
    assert code == 3 and (report["failed"], report["not_started"]) == (3, 3)
    assert report["cost_usd"] == pytest.approx(3 * RATIONALE_COST)  # the ceiling plus the in-flight ones
    assert sum(r["cost_usd"] for r in records(store)) == pytest.approx(report["cost_usd"])
    assert_no_secret(tmp_path, printed)


def test_dry_run_estimates_without_a_key_or_a_request(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch) as server:
        code, report, printed = run(corpus, store, capsys, "--dry-run")
        assert server.count() == 0
    assert code == 0 and not store.exists()
    estimate = report["estimate"]
    rows = [r for r in read_manifest(corpus / "manifest.jsonl", CREMA_D_CLASSES) if r.split == "train"]
    seconds = [sf.info(str(r.audio)).duration for r in rows]
    assert estimate["audio_seconds"] == pytest.approx(sum(seconds))
    assert estimate["audio_tokens"] == sum(round(s * 10) for s in seconds)
    assert estimate["requests"] == 12 and estimate["output_tokens"] == 6 * (350 + 60)
    assert estimate["input_tokens"] > estimate["audio_tokens"] > 0
    assert estimate["cost_usd"] > 0 and estimate["cost_max_usd"] == pytest.approx(3 * estimate["cost_usd"])
    assert "dry run, no requests" in printed and "estimated cost $" in printed


def test_text_only_mode_sends_measured_descriptors_instead_of_audio(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch) as server:
        code, report, printed = run(corpus, store, capsys, "--text-only", "--model", "gpt-4o", "--limit", "2")
        rationales = [c for c in server.calls if c.kind == "rationale"]
    assert code == 0 and report["accepted"] == 2 and report["mode"] == "text"
    for call in rationales:
        assert not call.audio_parts and call.body["model"] == "gpt-4o"
        assert "acoustic measurements" in call.text and "pitch: median" in call.text and "syllables/s" in call.text
    for record in records(store):
        assert record["mode"] == "text" and record["prompt_version"].endswith("/text")
    assert_no_secret(tmp_path, printed)


def test_an_unauthorised_key_stops_the_run_at_once(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch, lambda call: Reply(status=401, error="Incorrect API key provided")) as server:
        code, report, printed = run(corpus, store, capsys, "concurrency=1")
        assert server.count() == 1  # 401 is not retried, and no other clip is tried
    assert code == 3 and (report["failed"], report["not_started"]) == (1, 5)
    assert "HTTP 401" in report["stopped"]
    assert_no_secret(tmp_path, printed)


def test_unreadable_audio_fails_that_clip_only(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    (missing_id, _), (junk_id, _) = clips(corpus)[:2]
    (copy / "wav" / f"{missing_id}.wav").unlink()
    (copy / "wav" / f"{junk_id}.wav").write_bytes(b"not audio at all")
    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch) as server:
        code, report, printed = run(copy, store, capsys)
        assert server.count("rationale") == 4
    assert code == 3 and (report["accepted"], report["failed"], report["unreadable"]) == (4, 1, 1)
    assert {f["id"] for f in report["failures"]} == {missing_id, junk_id}
    assert missing_id not in by_id(store)  # no audio, no key: reported, not stored
    assert by_id(store)[junk_id]["status"] == "failed" and "cannot read audio" in by_id(store)[junk_id]["reason"]
    assert_no_secret(tmp_path, printed)


@pytest.mark.skipif("cot_store" not in DataConfig.__dataclass_fields__, reason="data.cot_store is not wired yet")
def test_curated_store_feeds_training(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ambemo.config import compose
    from ambemo.model.inputs import Clip, PromptEncoder
    from ambemo.train import train

    store = tmp_path / "cot.jsonl"
    with serve(monkeypatch):
        code, _, printed = run(corpus, store, capsys)
    assert code == 0
    curated = load_accepted(store)
    overrides = [
        f"data.root={corpus}",
        "data.n_train=6",
        "data.n_val=1",
        "data.n_test=1",
        f"data.cot_store={store}",
        "data.batch_size=2",
        "data.eval_batch_size=2",
        f"out_dir={tmp_path / 'runs'}",
        "strategy.max_new_tokens=8",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "logger=csv",
    ]
    cfg = compose("sft_cot", overrides)
    seen: dict[str, str | None] = {}  # what the training batches carry, clip by clip
    original = PromptEncoder.training_batch

    def spy(self: PromptEncoder, clips: Sequence[Clip]) -> dict:
        seen.update({clip.id: clip.cot for clip in clips})
        return original(self, clips)

    monkeypatch.setattr(PromptEncoder, "training_batch", spy)
    run_dir = train(cfg)
    assert seen == curated  # every training clip, with the store's reasoning
    assert (run_dir / "summary.json").is_file()
    assert str(store) in (run_dir / "config.yaml").read_text()
    assert_no_secret(tmp_path, printed, capsys.readouterr().out)


def test_usage_errors_exit_2_with_a_message(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "cot.jsonl")
    assert main([str(corpus), "--store", store, "--model", "my-model", "--dry-run"]) == 2
    assert "no price for model 'my-model'" in capsys.readouterr().err
    assert main([str(corpus), "--store", store, "thresold=0.1"]) == 2
    assert "Valid keys" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY")
    assert main([str(corpus), "--store", store]) == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--store", store]) == 2
    assert "no such manifest" in capsys.readouterr().err
    assert not (tmp_path / "cot.jsonl").exists()
