"""Every experiment file runs end to end on the tiny setup, and writes the run folder it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import for_its_corpus
from omegaconf import OmegaConf

from ambemo.config import EXPERIMENTS_DIR, compose, experiment_names
from ambemo.registry import STRATEGIES
from ambemo.score import main as score_main
from ambemo.train import train

METRIC_KEYS = {"js", "bc", "r2", "brier", "accuracy", "macro_f1", "n"}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One out_dir for the module: DPO/GRPO experiments start from `latest:sft_cot` (and the
    # headroom ones from `latest:headroom/sft_cot_1ep`), which run earlier in this module.
    return tmp_path_factory.mktemp("runs")


def _extends(name: str) -> bool:
    return "extends" in OmegaConf.load(EXPERIMENTS_DIR / f"{name}.yaml")


def _starts_first() -> list[str]:
    """Experiments with no `latest:` start point first: the runs they leave in `shared_runs` (with
    this test's tiny settings) are then the starts of the others, instead of each dependent
    experiment training its start with the start's full settings.

    Variants (``extends: PARENT``, e.g. ``headroom/*``: the parent with another start or epoch
    count) are left out: their parent runs here through the same code, and
    ``tests/test_smoke.py`` runs every experiment, variants included, as a fast dev run."""
    names = [n for n in experiment_names() if not _extends(n)]
    return sorted(names, key=lambda n: str(compose(n, []).model.init_from or "").startswith("latest:"))


@pytest.mark.parametrize("name", _starts_first())
def test_experiment_runs(
    name: str, fast_overrides: list[str], shared_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_epoch = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1"]
    # the rollouts' budget is a setting of the on-policy strategies only
    rollout = ["strategy.rollout_max_new_tokens=24"] if "rollout_max_new_tokens" in compose(name, []).strategy else []
    cfg = compose(name, [*for_its_corpus(name, fast_overrides), *one_epoch, f"out_dir={shared_runs}", *rollout])
    if compose(name, []).trainer.max_epochs == 0:
        cfg.trainer.max_epochs = 0  # evaluation-only experiments (zero-shot, cross-corpus) stay so
    if cfg.data.name == "iemocap":  # cross-corpus evaluation: a miniature IEMOCAP release
        from test_corpora_iemocap import build_release

        cfg.data.root = str(build_release(shared_runs / "IEMOCAP_full_release"))
        cfg.data.classes = ["anger", "happiness", "sadness", "neutral"]
        cfg.model.init_from = None  # the read-out mapping is under test, not the trained weights
    run_dir = train(cfg)

    assert run_dir.parent == Path(cfg.out_dir) / name
    assert f"experiment: {name}\n" in (run_dir / "config.yaml").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics_csv = (run_dir / "metrics.csv").read_text()
    if cfg.trainer.max_epochs == 0:
        assert not (run_dir / "checkpoints").exists() and summary["test_weights"] == "final weights"
    else:
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        if cfg.strategy.name == "sft":
            assert last["global_step"] == 6  # 48 clips / batch 8 = 6 optimizer steps: the final weights
        assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
        # what the strategy optimises, as it logs it
        assert STRATEGIES[cfg.strategy.name].objective_metric in metrics_csv and "val/js" in metrics_csv
        assert "train/tokens_per_s" in metrics_csv and "train/step_seconds" in metrics_csv  # ThroughputLog

    assert set(summary["test"]) >= METRIC_KEYS
    n_test = summary["test"]["n"]
    if cfg.data.name == "synthetic":
        assert n_test == 8
        assert set(summary["reference"]) == {"prior", "oracle"}
        assert summary["reference"]["oracle"]["js"] < summary["reference"]["prior"]["js"]
    else:
        assert n_test > 0 and set(summary["reference"]) == {"prior"}  # real corpora have no oracle

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n_test and len({r["id"] for r in rows}) == n_test
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
