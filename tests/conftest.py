"""Shared fixtures: one small built-in corpus per test session, and overrides for tiny, fast runs."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from ambemo.config import compose
from ambemo.registry import REGISTRIES

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)  # tests never talk to a W&B server
# Under pytest-xdist (`make test` runs one worker per core) each worker keeps to one thread: the tiny
# model's ops are too small to gain from a second thread, and two workers x two threads on two
# cores would only contend.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

SMALL = {"n_train": 48, "n_val": 8, "n_test": 8}
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_example"
PLUGIN = "toy_ambemo_plugin"


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-clip built-in corpus (generated once per test session)."""
    from ambemo.data.synthetic import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    generate_corpus(root, seed=0, workers=1, **SMALL)
    return root


@pytest.fixture
def fast_overrides(small_corpus: Path, tmp_path: Path) -> list[str]:
    """Overrides that make any experiment a seconds-long run on the small corpus."""
    return [
        f"data.root={small_corpus}",
        *(f"data.{k}={v}" for k, v in SMALL.items()),
        "data.batch_size=8",
        "data.eval_batch_size=8",
        f"out_dir={tmp_path / 'runs'}",
        "strategy.max_new_tokens=24",
        "trainer.accelerator=cpu",
    ]


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example plugin (tests/plugin_example/), enabled the way a user does; its registrations
    are undone afterwards."""
    for registry in REGISTRIES.values():  # a copy, so the test's entries go when monkeypatch restores
        monkeypatch.setattr(registry, "_entries", dict(registry.items()))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("AMBEMO_PLUGINS", PLUGIN)
    monkeypatch.setenv("AMBEMO_CONFIG_PATH", str(PLUGIN_DIR))
    yield PLUGIN
    sys.modules.pop(PLUGIN, None)  # imported again (and so registered again) by the next test that enables it


def for_its_corpus(experiment: str, overrides: list[str]) -> list[str]:
    """``overrides`` without the ``data.*`` keys that ``experiment``'s corpus does not have: each
    corpus has settings of its own, and ``fast_overrides`` sizes the synthetic corpus."""
    data = compose(experiment, []).data

    def its_own(item: str) -> bool:
        key = item.partition("=")[0]
        return not key.startswith("data.") or key.removeprefix("data.") in data

    return [item for item in overrides if its_own(item)]


@pytest.fixture(autouse=True)
def _fresh_run_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The recipe shares its run folder with DDP ranks through this variable; tests start clean.
    monkeypatch.delenv("AMBEMO_RUN_DIR", raising=False)


def assert_saved_config_reads_back(cfg: DictConfig, saved: dict, run_dir: Path, section: str) -> None:
    """A run folder whose ``config.yaml`` is ``saved`` (``cfg`` as an older release wrote it) reads back
    as ``cfg``: typed by the same settings class, without a warning, and resumable as the same config."""
    from omegaconf import OmegaConf

    from ambemo.config import to_yaml
    from ambemo.resume import compose_resumed, config_differences
    from ambemo.runs import read_config

    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a saved file is read without a warning
        back = read_config(run_dir)
    assert OmegaConf.get_type(back[section]) is OmegaConf.get_type(cfg[section])
    assert config_differences(cfg, back) == []  # resuming it compares equal to a fresh compose
    assert to_yaml(back) == to_yaml(cfg)
    resumed = compose_resumed([f"trainer.resume={run_dir}"])
    assert resumed is not None and config_differences(cfg, resumed) == []
