"""``ambemo probe-reasoning``: the read-out after the model's own, an empty and a shuffled reasoning."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ambemo.config import compose
from ambemo.probe import main, probe_reasoning
from ambemo.train import train


@pytest.fixture(scope="module")
def run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sft_cot run of one epoch on 8 clips, tested on 6 in batches of 4 (the shuffled
    reasoning crosses batch boundaries)."""
    out = tmp_path_factory.mktemp("runs")
    overrides = [
        f"data.root={small_corpus}",
        "data.n_train=48",
        "data.n_val=8",
        "data.n_test=8",
        "data.limit_train=8",
        "data.limit_eval=6",
        "data.batch_size=8",
        "data.eval_batch_size=4",
        "strategy.max_new_tokens=8",
        "strategy.own_readout_weight=0",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "logger=csv",
        f"out_dir={out}",
    ]
    os.environ.pop("AMBEMO_RUN_DIR", None)
    made = train(compose("sft_cot", overrides))
    os.environ.pop("AMBEMO_RUN_DIR", None)
    return made


def test_probe_reads_own_empty_and_shuffled(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = probe_reasoning(run, resamples=200)
    summary = json.loads((run / "summary.json").read_text())
    assert result["n"] == 6 and set(result["js"]) == {"own", "empty", "shuffled"}
    # the own read-out is evaluation's: it reproduces the run's predictions and test JS
    assert result["own_vs_predictions_max_abs"] < 1e-5
    assert result["js"]["own"] == pytest.approx(summary["test"]["js"], abs=1e-5)
    for name in ("empty", "shuffled"):
        cell = result["paired"][f"{name} - own"]
        assert cell["mean"] == pytest.approx(result["js"][name] - result["js"]["own"], abs=1e-9)
        assert cell["low"] <= cell["mean"] <= cell["high"]

    out = tmp_path / "probe.json"
    assert main([str(run), "--bootstrap", "100", "--out", str(out)]) == 0
    assert "shuffled - own" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 6
    assert main([str(run), "--limit", "1"]) == 2  # one utterance: nothing to shuffle with
    assert "at least two" in capsys.readouterr().err
