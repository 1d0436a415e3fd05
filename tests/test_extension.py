"""Extension points: the config's choices are the registries', and a strategy and a corpus from
outside the package (tests/plugin_example/) register through ``AMBEMO_PLUGINS`` and
``AMBEMO_CONFIG_PATH`` alone and train in a fast dev run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import for_its_corpus

from ambemo import cli
from ambemo.config import compose, experiment_names, group_options, valid_choices
from ambemo.registry import BACKBONES, CORPORA, STRATEGIES, RegistryError
from ambemo.runs import FAST_DEV_RUN, run_folders, status


def test_config_choices_are_the_registries() -> None:
    choices = valid_choices()
    assert choices["strategy.name"] == tuple(STRATEGIES.names())
    assert choices["data.name"] == tuple(CORPORA.names())
    assert choices["model.name"] == tuple(BACKBONES.choices())
    assert {"sft", "dpo", "grpo"} <= set(STRATEGIES.names())
    assert {"synthetic", "manifest", "iemocap", "crema_d"} <= set(CORPORA.names())
    assert {"qwen2_audio", "tiny", "qwen2_5_omni", "tiny_omni"} == set(choices["model.name"])


def test_plugin_adds_choices_and_blocks(plugin: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "toy_sft" in valid_choices()["strategy.name"] and "toy_subset" in valid_choices()["data.name"]
    assert "toy_sft" in group_options("strategy") and "toy_subset" in group_options("data")
    assert "toy_sft" in experiment_names()
    with pytest.raises(RegistryError, match=r"'strategy\.name': 'nope'\. Valid choices: .*toy_sft"):
        STRATEGIES["nope"]
    assert cli.main(["train", "experiment=toy_sft", "--help"]) == 0
    assert "Choices: " in (out := capsys.readouterr().out) and "toy_sft" in out and "toy_subset" in out


def test_missing_plugin_is_a_config_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AMBEMO_PLUGINS", "no_such_ambemo_plugin")
    assert cli.main(["train", "experiment=sft", "--print-config"]) == 2
    assert "AMBEMO_PLUGINS names module 'no_such_ambemo_plugin'" in capsys.readouterr().err


def test_toy_strategy_and_corpus_train(
    plugin: str, fast_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = [
        *for_its_corpus("toy_sft", fast_overrides),  # the toy corpus has the shared settings only
        "trainer.fast_dev_run=true",
        "data.eval_batch_size=2",
        "strategy.max_new_tokens=4",
    ]
    cfg = compose("toy_sft", fast)
    assert (cfg.strategy.name, cfg.data.name) == ("toy_sft", "toy_subset")
    code = cli.main(["train", "experiment=toy_sft", *fast])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]

    (run,) = run_folders(tmp_path / "runs", "toy_sft")
    assert status(run) == FAST_DEV_RUN
    toy = sys.modules[plugin]
    assert toy.ToySFTModule.steps_taken >= 1  # the plugin's LightningModule did the training
    assert "name: toy_sft" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(row["id"].startswith(toy.TOY_PREFIX) for row in rows)  # the plugin's corpus was read
