"""``ambemo bench`` on the tiny model: one step of each strategy and one tiny rollout group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ambemo.bench import build_backbone
from ambemo.cli import main
from ambemo.config import compose


def test_bench_reports_steps_and_rollouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = ["--group", "2", "--new-tokens", "4", "--steps", "1", "--warmup", "0", "--batch", "1"]
    assert main(["bench", *args, "--cot-words", "24", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("sft step", "dpo step", "grpo step", "rollout generate", "rollout fast", "fast rollouts:"):
        assert row in printed
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["group"] == 2
    for name in ("sft", "dpo", "grpo"):
        step = results["steps"][name]
        assert step["seconds_per_step"] > 0 and step["peak_memory_gb"] > 0
    sft = results["steps"]["sft"]
    assert sft["tokens_per_second"] > 0 and sft["tokens_per_step"] > 0 and sft["mfu"] is None  # no GPU peak
    for engine in ("generate", "fast"):
        rollout = results["rollouts"][engine]
        assert rollout["tokens_per_second"] > 0 and rollout["ms_per_decode_step"] > 0
    assert results["rollouts"]["speedup"] > 0


def test_bench_7b_model_has_qwen2_audio_7b_size() -> None:
    # built on the meta device: the shapes without the memory
    cfg = compose("sft_cot", ["model=qwen2_audio_7b", "model.path=random-weights"])
    model = build_backbone(cfg, "7b", torch.device("meta")).model
    total = sum(p.numel() for p in model.parameters())
    assert 8.3e9 < total < 8.5e9  # Qwen2-Audio-7B: 8.4B parameters
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
