"""Every experiment file runs end to end on the tiny setup, and writes the run folder it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ambemo.config import compose, experiment_names
from ambemo.score import main as score_main
from ambemo.train import train

METRIC_KEYS = {"js", "bc", "r2", "brier", "accuracy", "macro_f1", "n"}


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_runs(name: str, fast_overrides: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    one_epoch = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1"]
    cfg = compose(name, [*fast_overrides, *one_epoch])
    run_dir = train(cfg)

    assert run_dir.parent == Path(cfg.out_dir) / name
    assert f"experiment: {name}\n" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    metrics_csv = (run_dir / "metrics.csv").read_text()
    assert "train/loss" in metrics_csv and "val/js" in metrics_csv

    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["test"]) >= METRIC_KEYS
    assert summary["test"]["n"] == 8
    assert set(summary["reference"]) == {"prior", "oracle"}
    assert summary["reference"]["oracle"]["js"] < summary["reference"]["prior"]["js"]

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    for row in rows:
        assert set(row["distribution"]) == set(cfg.data.classes)
        assert abs(sum(row["distribution"].values()) - 1) < 1e-5
        assert ("reasoning" in row) == cfg.strategy.use_cot

    # The predictions file re-scores to the logged test metrics.
    capsys.readouterr()
    assert score_main([str(run_dir / "predictions.jsonl")]) == 0
    rescored = json.loads(capsys.readouterr().out)
    for key in ("js", "bc", "r2", "brier"):
        assert rescored[key] == pytest.approx(summary["test"][key], abs=1e-5)

    if cfg.logger.name == "wandb":  # offline: a local run folder to `wandb sync` later
        assert list((run_dir / "wandb").glob("offline-run-*"))
