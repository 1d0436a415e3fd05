"""Curation building blocks without a server: answer validation, config, cost, store, acoustics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ambemo.cot import protocol
from ambemo.cot.acoustics import describe, measure
from ambemo.cot.budget import Budget, Usage
from ambemo.cot.client import public_endpoint, redact
from ambemo.cot.config import CurateConfigError, Price, load_config, price_for
from ambemo.cot.store import CotStore, StoreError, load_accepted, read_store
from ambemo.model.prompts import CoT, format_cot, parse_cot

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
PARTS = {
    "keywords": "raised voice, 'exactly'",
    "text_analysis": "A flat statement; neutral or annoyed.",
    "audio_analysis": "Loud, fast, high pitch with a wide range; harsh tone.",
    "synthesis": "Anger clearly dominates; a few listeners hear disgust.",
}


# -- answer validation ------------------------------------------------------------------------


def test_valid_rationale_round_trips_through_the_training_format() -> None:
    cot = protocol.parse_rationale(json.dumps(PARTS))
    assert cot == CoT(*PARTS.values())
    assert parse_cot(format_cot(cot)) == cot


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("Sure! Here is the analysis: anger.", "not JSON"),
        ("", "empty answer"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in PARTS.items() if k != "synthesis"}), "schema violation"),
        (json.dumps({**PARTS, "emotion": "anger"}), "schema violation"),
        (json.dumps({**PARTS, "keywords": 3}), "schema violation"),
        (json.dumps({**PARTS, "keywords": "  "}), "schema violation"),
        (json.dumps({**PARTS, "synthesis": "Emotion: anger"}), "format marker"),
        (json.dumps({**PARTS, "text_analysis": "[Step2: Audio Analysis] x"}), "format marker"),
        (json.dumps({**PARTS, "synthesis": "About 60% anger and 0.3 disgust."}), "quotes numbers"),
        (json.dumps({**PARTS, "synthesis": "7 out of 9 listeners hear anger."}), "quotes numbers"),
        (json.dumps({**PARTS, "audio_analysis": "x" * 3000}), "too long"),
    ],
)
def test_unusable_rationales_are_rejected_with_a_reason(content: str, why: str) -> None:
    with pytest.raises(protocol.InvalidAnswer, match=why):
        protocol.parse_rationale(content)


def test_rationale_in_a_code_fence_and_numbers_outside_the_synthesis_are_fine() -> None:
    parts = {**PARTS, "audio_analysis": "Pitch around 220 Hz, 5.5 syllables/s."}
    cot = protocol.parse_rationale(f"```json\n{json.dumps(parts)}\n```")
    assert "220 Hz" in cot.audio_analysis
    quoting = json.dumps({**PARTS, "synthesis": "60% anger"})
    assert protocol.parse_rationale(quoting, allow_numbers_in_synthesis=True).synthesis == "60% anger"


def test_reader_distribution_is_validated_and_renormalised() -> None:
    answer = protocol.parse_distribution(json.dumps({"distribution": dict.fromkeys(CLASSES, 50)}), CLASSES)
    assert answer.distribution == pytest.approx([1 / 6] * 6) and answer.renormalised
    exact = {"anger": 0.5, "disgust": 0.5, "fear": 0, "happiness": 0, "neutral": 0, "sadness": 0}
    answer = protocol.parse_distribution(json.dumps({"distribution": exact}), CLASSES)
    assert answer.distribution == (0.5, 0.5, 0.0, 0.0, 0.0, 0.0) and not answer.renormalised
    for bad, why in [
        ({"distribution": {**exact, "anger": -1}}, "probability of 'anger'"),
        ({"distribution": {**exact, "anger": True}}, "probability of 'anger'"),
        ({"distribution": {k: v for k, v in exact.items() if k != "fear"}}, "missing classes"),
        ({"distribution": {**exact, "surprise": 0.1}}, "unexpected"),
        ({"distribution": dict.fromkeys(CLASSES, 0)}, "all probabilities are zero"),
        (exact, "schema violation"),
    ]:
        with pytest.raises(protocol.InvalidAnswer, match=why):
            protocol.parse_distribution(json.dumps(bad), CLASSES)


def test_requests_show_the_target_only_to_the_writer() -> None:
    target = (0.7, 0.1, 0.0, 0.0, 0.2, 0.0)
    writer = protocol.generation_text(CLASSES, target, "Don't forget a jacket", descriptors=None)
    assert '"anger": 0.7' in writer and "Don't forget a jacket" in writer and "minority" in writer
    reader = protocol.verification_text(CLASSES, format_cot(CoT(*PARTS.values())))
    assert "0.7" not in reader and "Don't forget" not in reader
    assert PARTS["synthesis"] in reader and not reader.rstrip().endswith("Emotion:")
    schema = protocol.distribution_schema(CLASSES)["json_schema"]
    assert schema["strict"] and schema["schema"]["properties"]["distribution"]["required"] == list(CLASSES)
    assert protocol.prompt_version(True).endswith("/text") and protocol.prompt_version(False).endswith("/audio")


# -- config, cost, secrets --------------------------------------------------------------------


def test_config_overrides_prices_and_errors() -> None:
    cfg = load_config(["threshold=0.1", "model=my-local", "prices.my-local.input=0"])
    assert cfg.threshold == 0.1 and price_for(cfg) == Price(0.0, 0.0, None)
    dated = load_config(["model=gpt-4o-audio-preview-2025-06-03"])
    assert price_for(dated) == dated.prices["gpt-4o-audio-preview"]  # longest prefix, not gpt-4o
    with pytest.raises(CurateConfigError, match="no price for model 'other'"):
        price_for(load_config(["model=other"]))
    with pytest.raises(CurateConfigError, match=r"thresh.*Valid keys"):
        load_config(["thresh=0.1"])
    with pytest.raises(CurateConfigError, match=r"'threshold' is 2\.0"):
        load_config(["threshold=2"])


def test_cost_uses_audio_prices_when_reported() -> None:
    usage = Usage(requests=2, input_tokens=1000, audio_tokens=400, output_tokens=100)
    assert usage.cost(Price(input=1.0, output=10.0, audio_input=40.0)) == pytest.approx((600 + 16000 + 1000) / 1e6)
    assert usage.cost(Price(input=1.0, output=10.0)) == pytest.approx((1000 + 1000) / 1e6)
    budget = Budget(Price(input=1.0), max_cost=0.0015)
    budget.add(Usage(1, 1000, 0, 0))
    assert budget.may_request()
    budget.add(Usage(1, 1000, 0, 0))
    assert not budget.may_request() and "max cost" in (budget.stop_reason or "")


def test_redaction() -> None:
    text = "echo: authorization=Bearer sk-live-1234567890 key sk-abcdefghij and my-secret"
    clean = redact(text, ["my-secret"])
    assert "1234567890" not in clean and "sk-abcdefghij" not in clean and "my-secret" not in clean
    assert public_endpoint("https://user:pw@host.example:8443/v1?key=x") == "https://host.example:8443/v1"


# -- store ------------------------------------------------------------------------------------


def _record(uid: str, status: str = "accepted", cot: str | None = None, model: str = "m") -> dict:
    text = cot if cot is not None else format_cot(CoT(f"k {uid}", "t", "a", "s"))
    return {
        "store_version": 1,
        "id": uid,
        "audio_sha256": "ab" * 32,
        "prompt_version": "p",
        "model": model,
        "status": status,
        "cot": text if status == "accepted" else None,
    }


def _write(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")


def test_load_accepted_takes_the_latest_accepted_per_id(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    newer = format_cot(CoT("newer", "t", "a", "s"))
    _write(store, [_record("a"), _record("b", "rejected"), _record("c", "failed"), _record("a", cot=newer, model="m2")])
    assert load_accepted(store) == {"a": newer}
    assert read_store(store).counts() == {"accepted": 2, "rejected": 1, "failed": 1}


def test_truncated_last_line_is_skipped_but_a_corrupt_line_is_an_error(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    _write(store, [_record("a"), _record("b")], tail='{"store_version": 1, "id": "c", "co')
    assert set(load_accepted(store)) == {"a", "b"}
    assert read_store(store).truncated_tail
    _write(store, [_record("a")], tail='{"broken\n' + json.dumps(_record("b")) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl line 2: not a JSON line"):
        load_accepted(store)
    _write(store, [_record("a"), {**_record("b"), "status": "done"}])
    with pytest.raises(ValueError, match="line 2: status 'done'"):
        load_accepted(store)
    _write(store, [_record("a", cot="free text without the format")])
    with pytest.raises(ValueError, match=r"line 1: the accepted CoT of 'a'.*not well formed"):
        load_accepted(store)
    with pytest.raises(ValueError, match="no such CoT store"):
        load_accepted(tmp_path / "missing.jsonl")


def test_store_writer_repairs_the_tail_and_locks_the_file(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    _write(store, [_record("a")], tail='{"store_version": 1, "id": "b"')
    with CotStore(store) as writer:
        assert writer.repaired_tail
        writer.append(_record("c"))
        with pytest.raises(StoreError, match="another `ambemo curate` run"):
            CotStore(store)
    assert [r["id"] for _, r in read_store(store).records] == ["a", "c"]
    assert not read_store(store).truncated_tail
    store.write_text(json.dumps(_record("x")), encoding="utf-8")  # complete, but no final newline
    with CotStore(store) as writer:
        writer.append(_record("y"))
    assert [r["id"] for _, r in read_store(store).records] == ["x", "y"]


# -- acoustics --------------------------------------------------------------------------------


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """As ``ambemo curate`` runs it: on a busy 2-core host, intra-op threads make these tiny ops 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_descriptors_of_a_tone_with_a_pause() -> None:
    rate = 16000
    t = torch.arange(int(0.8 * rate)) / rate
    tone = 0.3 * torch.sin(2 * math.pi * 200 * t)
    gap = torch.zeros(int(0.4 * rate))
    quiet = 0.1 * tone
    wave = torch.cat([gap[:1600], tone, gap, quiet, gap[:1600]])
    d = measure(wave, rate)
    assert d.pitch_median_hz == pytest.approx(200, rel=0.03)
    assert d.pitch_range_st < 0.5 and d.pitch_sd_st < 0.5
    assert d.pauses == 1 and d.pause_total_s == pytest.approx(0.4, abs=0.05)
    assert d.speech_s == pytest.approx(1.6, abs=0.1) and d.duration_s == pytest.approx(2.2)
    assert d.loudness_range_db == pytest.approx(20, abs=2)  # the quiet half is 20 dB down
    text = describe(d)
    assert "median 200 Hz" in text and "pauses (>= 0.15 s): 1" in text and "syllables/s" in text
    silent = measure(torch.zeros(rate), rate)
    assert silent.speech_s == 0 and "no voiced frames" in describe(silent)
