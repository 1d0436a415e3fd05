"""Config composition: experiments, building blocks, overrides in both forms, and clear errors."""

from __future__ import annotations

import warnings
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ambemo.cli import main
from ambemo.config import (
    CONFIG_PATH_ENV,
    ConfigError,
    RunConfig,
    _field_types,
    compose,
    experiment_names,
    field_docs,
    parse_overrides,
)
from ambemo.runs import read_config


def test_every_experiment_composes() -> None:
    names = experiment_names()
    assert {"sft", "sft_cot", "sft_cot_nokl"} <= set(names)
    for name in names:
        cfg = compose(name, [])
        assert cfg.experiment == name


def test_experiment_values_and_blocks_apply() -> None:
    cfg = compose("sft", [])
    assert cfg.strategy.use_cot is False  # from experiments/sft.yaml
    assert cfg.model.finetune == "full"  # from conf/model/tiny.yaml
    assert cfg.trainer.accelerator == "cpu"  # from conf/trainer/cpu.yaml
    nokl = compose("sft_cot_nokl", [])
    assert nokl.strategy.kl_weight == 0.0


def test_both_override_forms_and_types() -> None:
    argv = ["trainer.max_epochs=3", "--strategy.lr=0.5", "--data.batch_size", "4", "--strategy.use_cot=false"]
    cfg = compose("sft_cot", parse_overrides(argv))
    assert cfg.trainer.max_epochs == 3 and isinstance(cfg.trainer.max_epochs, int)
    assert cfg.strategy.lr == 0.5
    assert cfg.data.batch_size == 4
    assert cfg.strategy.use_cot is False


def test_group_choice_on_command_line() -> None:
    cfg = compose("sft_cot", ["logger=csv", "experiment=sft"])
    assert cfg.logger.name == "csv"
    assert cfg.experiment == "sft"


def test_unknown_key_names_key_and_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        compose("sft_cot", ["strategy.lrr=1"])
    msg = str(err.value)
    assert "strategy.lrr" in msg and "kl_weight" in msg and "lr" in msg


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'epochs'"):
        compose("sft_cot", ["epochs=3"])


def test_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        compose("sft_cot", ["trainer.max_epochs=many"])


def test_unknown_group_option_lists_choices() -> None:
    with pytest.raises(ConfigError) as err:
        compose("sft_cot", ["model=gpt5"])
    assert "model option 'gpt5'" in str(err.value) and "tiny" in str(err.value) and "qwen2_audio_7b" in str(err.value)


def test_unknown_experiment_lists_choices() -> None:
    with pytest.raises(ConfigError, match="sft_cot"):
        compose("nope", [])


def test_bad_choice_value() -> None:
    with pytest.raises(ConfigError, match=r"model\.finetune"):
        compose("sft_cot", ["model.finetune=qlora"])


def test_real_model_needs_a_path() -> None:
    with pytest.raises(ConfigError, match=r"model\.path"):
        compose("sft_cot", ["model=qwen2_audio_7b"])


def test_override_without_value() -> None:
    with pytest.raises(ConfigError, match=r"no value"):
        parse_overrides(["--strategy.lr"])
    with pytest.raises(ConfigError, match=r"key=value"):
        parse_overrides(["strategy.lr"])


def _all_dataclasses(cls: type) -> list[type]:
    found = [cls]
    for f in fields(cls):
        hint = _field_types(cls)[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            found += _all_dataclasses(hint)
    return found


def test_every_field_has_a_docstring() -> None:
    for cls in _all_dataclasses(RunConfig):
        docs = field_docs(cls)
        missing = [f.name for f in fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_cli_help_and_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "experiment=sft", "--help"]) == 0
    out = capsys.readouterr().out
    assert "strategy.kl_weight = 1.0  # lambda" in out
    assert main(["train", "experiment=sft", "--trainer.max_epochs=7", "--print-config"]) == 0
    assert "max_epochs: 7" in capsys.readouterr().out


def test_cli_config_error_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "experiment=sft", "strategy.nope=1"]) == 2
    assert "config error" in capsys.readouterr().err


def test_renamed_trainer_strategy_is_read_as_trainer_distributed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the command line (both override forms), an experiment file and a building block
    for argv in (["trainer.strategy=ddp"], ["--trainer.strategy", "ddp"]):
        with pytest.warns(FutureWarning, match=r"'trainer\.strategy' is deprecated, renamed 'trainer\.distributed'"):
            cfg = compose("sft", parse_overrides(argv))
        assert cfg.trainer.distributed == "ddp" and "strategy" not in cfg.trainer
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "old_ddp.yaml").write_text("extends: sft\ntrainer:\n  strategy: ddp\n")
    (tmp_path / "conf" / "trainer").mkdir(parents=True)
    (tmp_path / "conf" / "trainer" / "old_block.yaml").write_text("accelerator: cpu\nstrategy: ddp\n")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path))
    with pytest.warns(FutureWarning, match=r"old_ddp\.yaml: 'trainer\.strategy'"):
        assert compose("old_ddp", []).trainer.distributed == "ddp"
    with pytest.warns(FutureWarning, match=r"old_block\.yaml: 'trainer\.strategy'"):
        assert compose("sft", ["trainer=old_block"]).trainer.distributed == "ddp"
    # the old key's checks name the new one; both names at once is refused
    with pytest.raises(ConfigError, match=r"use trainer\.distributed=ddp"), pytest.warns(FutureWarning):
        compose("sft", ["trainer.strategy=ddp_spawn"])
    with pytest.raises(ConfigError, match=r"sets both 'trainer\.strategy' and 'trainer\.distributed'"):
        compose("sft", ["trainer.strategy=ddp", "trainer.distributed=auto"])


def test_a_run_saved_with_trainer_strategy_reads_back(tmp_path: Path) -> None:
    saved = OmegaConf.to_container(compose("sft", []))
    del saved["trainer"]["distributed"]
    saved["trainer"]["strategy"] = "ddp"  # as a run of the previous release saved it
    OmegaConf.save(saved, tmp_path / "config.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read silently: a saved run's file is not the user's to edit
        cfg = read_config(tmp_path)
    assert cfg.trainer.distributed == "ddp" and "strategy" not in cfg.trainer
