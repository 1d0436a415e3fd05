"""The device check is ready to run in one go: its wheelhouse is exactly what the GPU image lacks,
its GPU commands compose, and its pieces run on the CPU without wandb, optuna, openai and
espeakng-loader (a ``logger=csv`` fast dev run among them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ambemo import gpucheck
from ambemo.bench import parse_arguments
from ambemo.config import compose, parse_overrides

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements"


def test_wheelhouse_is_what_training_needs_minus_what_the_gpu_image_has() -> None:
    listed = gpucheck.read_requirements(REQUIREMENTS / "wheelhouse.txt")
    assert listed == gpucheck.wheelhouse_plan()  # recomputed from the installed packages' metadata
    lock = gpucheck.read_requirements(REQUIREMENTS / "cpu-lock.txt")
    assert all(lock[name] == version for name, version in listed.items())  # the versions tested here
    image = gpucheck.read_requirements(REQUIREMENTS / "gpu-image.txt")
    assert {"torch", "transformers", "lightning"} <= set(image)
    assert not set(listed) & set(image)  # never a second torch (or anything else the image has)
    assert {"omegaconf", "datasets", "soundfile"} <= set(listed)  # imported by every training run
    optional = {"wandb", "optuna", "openai", "espeakng-loader", "trl"}
    assert not set(listed) & optional  # imported only where used: a logger=csv run needs none


def test_wheelhouse_folder_check(tmp_path: Path) -> None:
    listed = gpucheck.read_requirements(REQUIREMENTS / "wheelhouse.txt")
    for name, version in listed.items():
        (tmp_path / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"0" * 1024)
    assert gpucheck.check_wheelhouse(tmp_path) == []
    (tmp_path / "dill-0.4.1-py3-none-any.whl").rename(tmp_path / "dill-0.3.0-py3-none-any.whl")
    (tmp_path / "torch-2.11.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"0")
    problems = gpucheck.check_wheelhouse(tmp_path)
    assert any("dill-0.3.0" in p and "pins 0.4.1" in p for p in problems)
    assert any(p.startswith("torch-2.11.0") and "not in wheelhouse.txt" in p for p in problems)


@pytest.mark.parametrize("gpus", [1, 2])
def test_gpu_plan_commands_compose(small_corpus: Path, tmp_path: Path, gpus: int) -> None:
    args = argparse.Namespace(
        device="cuda", tiny=False, out=str(tmp_path), corpus=str(small_corpus), only="", time_scale=0
    )
    checks = {check.name: check for check in gpucheck.plan(args, gpus)}
    assert list(checks) == ["bench", "equivalence", "sft_cot", "dpo_cot", "grpoz_cot", "ddp"]
    assert bool(checks["ddp"].skipped) == (gpus == 1)
    assert gpucheck.BUDGET <= 7.5 * 60  # all checks together: under 8 minutes with the installation
    assert all(c.timeout <= gpucheck.BUDGET for c in checks.values())
    options, overrides = parse_arguments(checks["bench"].argv[4:])
    assert (options.size, options.group, options.new_tokens, overrides) == ("7b", 8, 128, [])
    for name in ("sft_cot", "dpo_cot", "grpoz_cot", "ddp"):
        argv = checks[name].argv
        assert argv[2:4] == ["ambemo.cli", "train"]
        cfg = compose(None, parse_overrides(argv[4:]))  # a key misspelt in the plan fails here
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.fast_dev_run and cfg.logger.name == "csv"
        assert cfg.data.n_train == 48 and cfg.model.name == "tiny"  # the corpus's own sizes: reused as it is
    assert compose(None, parse_overrides(checks["ddp"].argv[4:])).trainer.devices == 2


def test_summary_reports_figures_against_the_targets() -> None:
    results = {
        "group": 8,
        "steps": {
            "sft": {"tokens_per_second": 9000.0, "mfu": 0.47, "seconds_per_step": 0.5, "peak_memory_gb": 30.0},
            "grpoz": {"seconds_per_step": 6.0, "peak_memory_gb": 41.5},
        },
        "rollouts": {"fast": {"tokens_per_second": 900.0}, "generate": {"tokens_per_second": 100.0}, "speedup": 9.0},
    }
    text = gpucheck.bench_summary(results)
    assert "MFU 47.0 % (target met)" in text and "grpoz 6.00 s/step, peak 41.5 GB" in text
    assert "fast 900 tok/s vs generate 100 (9.0x) (BELOW" in text
    rows = [{"name": "bench", "status": "ok", "seconds": 200.0, "detail": text}]
    assert "bench        ok" in gpucheck.format_summary(rows, "header")


def test_cpu_dry_run_without_the_optional_packages(small_corpus: Path, tmp_path: Path) -> None:
    # The pieces at tiny scale on the CPU, wandb/optuna/openai/espeakng-loader unimportable in
    # every child process: the equivalence check and a GRPO_z fast dev run with logger=csv (the
    # other experiments' commands are the same but for the name; bench is tests/test_bench.py's).
    out = tmp_path / "check"
    # (generous time limits: the suite's CPU may be shared with other jobs)
    argv = ["--device", "cpu", "--tiny", "--out", str(out), "--corpus", str(small_corpus), "--time-scale", "20"]
    assert gpucheck.main([*argv, "--only", "equivalence,grpoz_cot"]) == 0, (out / "grpoz_cot.log").read_text()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["name"], r["status"]) for r in summary["checks"]] == [("equivalence", "ok"), ("grpoz_cot", "ok")]
    assert "float32: tokens equal; weights bit-identical" in summary["checks"][0]["detail"]
    assert "trained and tested" in summary["checks"][1]["detail"]
    blocked = (out / ".without-optional" / "sitecustomize.py").read_text()
    assert all(name in blocked for name in ("wandb", "optuna", "openai", "espeakng_loader"))
    assert "grpoz_cot" in (out / "summary.txt").read_text()
