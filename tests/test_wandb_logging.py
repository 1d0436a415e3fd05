"""W&B logging: stable metric names, a config without secrets, and the end-of-training table and plots
(offline W&B run folder and ``plots/`` in the run folder)."""

from __future__ import annotations

import csv
import json
import re
import struct
import time
from pathlib import Path

import pytest
import torch

from ambemo.config import compose
from ambemo.logging_wandb import REDACTED, TABLE_COLUMNS, public_config, redact
from ambemo.plots import BUCKETS, ambiguity_buckets, read_predictions, reliability, sample_indices
from ambemo.train import train

METRIC_NAME = re.compile(r"^(train|val|test)/[a-z0-9_]+$")
SECRET = "sk-test-this-must-not-reach-wandb"


def test_redact_hides_secret_looking_keys_only() -> None:
    config = {"logger": {"project": "ambemo", "api_key": SECRET, "hf_token": "hf_x", "entity": None}, "l": [{"pw": 1}]}
    config["curate"] = {"password": "p", "secret": "", "authorization": "Bearer x", "key_frames": 2}
    clean = redact(config)
    assert clean["logger"] == {"project": "ambemo", "api_key": REDACTED, "hf_token": REDACTED, "entity": None}
    assert clean["curate"] == {"password": REDACTED, "secret": "", "authorization": REDACTED, "key_frames": 2}
    assert SECRET not in json.dumps(clean)
    strategy = public_config(compose("sft_cot", []))["strategy"]  # the rest is untouched, token counts too
    assert strategy["kl_weight"] == 1.0 and strategy["max_new_tokens"] == 160 and strategy["cot_token_dropout"] == 0


def _predictions(n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    classes = ["anger", "neutral", "sadness"]
    target = torch.softmax(3 * torch.randn(n, 3, generator=gen), -1)
    target[0] = torch.tensor([1.0, 0.0, 0.0])  # an unambiguous clip: entropy 0
    pred = torch.softmax(torch.randn(n, 3, generator=gen), -1)
    return [
        {
            "id": f"u{i}",
            "distribution": dict(zip(classes, pred[i].tolist(), strict=True)),
            "target": dict(zip(classes, target[i].tolist(), strict=True)),
        }
        for i in range(n)
    ]


def test_buckets_and_reliability_by_hand() -> None:
    p = read_predictions(_predictions(30))
    buckets = ambiguity_buckets(p)
    assert [b["bucket"] for b in buckets] == list(BUCKETS) and [b["n"] for b in buckets] == [10, 10, 10]
    assert buckets[0]["entropy_min"] == 0.0 and buckets[0]["entropy_max"] <= buckets[1]["entropy_min"]
    low = torch.argsort(p.vote_entropy, stable=True)[:10]
    assert buckets[0]["js"] == pytest.approx(float(p.js[low].mean()))
    rows, ece = reliability(p)
    top = [r for r in rows if r["curve"] == "top-class"]
    assert sum(r["n"] for r in top) == 30
    confidence, guess = p.pred.max(-1)
    correct = (guess == p.target.argmax(-1)).double()
    bins = (confidence * 10).floor().clamp(max=9)
    gaps = [
        abs(float(correct[bins == b].mean() - confidence[bins == b].mean())) * int((bins == b).sum())
        for b in bins.unique().tolist()
    ]
    assert ece == pytest.approx(sum(gaps) / 30)
    assert sum(r["n"] for r in rows if r["curve"] == "all classes") == 90
    picks = sample_indices(p)
    assert len(picks) == 6 and picks[0] == 0  # from the least ambiguous clip
    assert p.vote_entropy[picks].tolist() == sorted(p.vote_entropy[picks].tolist())


def _record_bytes(log: bytes) -> bytes:
    """The record payloads of a .wandb file, joined: the file is a LevelDB-style log (a 7-byte file
    header, then 32 KiB blocks of records, each with a 7-byte header: crc32, length, type), so a
    string can be split across two blocks in the raw bytes."""
    block, pos, out = 32768, 7, []
    while pos + 7 <= len(log):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", log[pos + 4 : pos + 7])
        if kind == 0:
            break
        out.append(log[pos + 7 : pos + 7 + length])
        pos += 7 + length
    return b"".join(out)


def _wandb_media(run_dir: Path, wait_for: bytes, seconds: float = 120) -> tuple[Path, bytes]:
    """The offline run's media folder and its .wandb records, once they hold ``wait_for``: the
    wandb-core process writes the log asynchronously and may still be at it after wandb.finish()."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = offline.glob("*.wandb")
    deadline = time.monotonic() + seconds
    while wait_for not in _record_bytes(log.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return offline / "files" / "media", _record_bytes(log.read_bytes())


def test_end_of_training_logs_table_and_plots(
    fast_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    one_step = [
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=1",
        "data.limit_train=8",
        "strategy.own_readout_weight=0",
        "strategy.max_new_tokens=16",
    ]
    run_dir = train(compose("sft_cot", [*fast_overrides, *one_step]))
    n_test = json.loads((run_dir / "summary.json").read_text())["test"]["n"]

    # Stable metric names: <split>/<metric>, plus Lightning's epoch/step and the LR monitor.
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    odd = [k for k in header if not METRIC_NAME.match(k) and k not in ("epoch", "step") and not k.startswith("lr-")]
    assert not odd and {"train/loss", "val/js", "test/js", "test/bc"} <= set(header)

    plots = run_dir / "plots"
    for name in ("samples", "reliability", "ambiguity_buckets"):
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(plots / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == n_test and set(TABLE_COLUMNS) <= set(table[0])
    assert all(r["reasoning"] and r["format_ok"] in ("True", "False") for r in table)
    with open(plots / "ambiguity_buckets.csv", newline="") as f:
        assert sum(int(r["n"]) for r in csv.DictReader(f)) == n_test

    media, log = _wandb_media(run_dir, wait_for=b"test/ambiguity_buckets")
    (table_file,) = (media / "table" / "test").glob("predictions_*.table.json")
    logged = json.loads(table_file.read_text())
    assert logged["columns"] == list(TABLE_COLUMNS) and len(logged["data"]) == n_test
    assert {r["id"] for r in table} == {row[0] for row in logged["data"]}
    for name in ("samples", "reliability", "ambiguity_buckets"):
        assert list((media / "images" / "test" / "plots").glob(f"{name}_*.png"))
    assert b"test/predictions" in log and b"test/ambiguity_buckets" in log
    assert b"kl_weight" in log and REDACTED.encode() not in log  # the resolved config went to the run ...
    assert SECRET.encode() not in log  # ... and nothing secret did
    assert SECRET not in (run_dir / "config.yaml").read_text()
