"""Settings per strategy: ``cfg.strategy`` is typed by the chosen strategy's settings class, a key
of another strategy is an error naming it, ``--help`` lists the chosen strategy's keys only, GRPO's
``strategy.beta`` is read as ``strategy.ref_kl_weight`` with a warning, and run configs saved
before the split (every strategy's keys in one section) still read back and resume."""

from __future__ import annotations

import warnings
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import assert_saved_config_reads_back
from omegaconf import OmegaConf

from ambemo.cli import main
from ambemo.config import ConfigError, StrategyConfig, compose, field_docs, strategy_settings
from ambemo.registry import STRATEGIES
from ambemo.resume import config_differences
from ambemo.strategies.dpo import DPOConfig
from ambemo.strategies.grpo import GRPOConfig
from ambemo.strategies.sft import SFTConfig

#: The strategy sections of run configs saved before the split: one 25-key class for every strategy.
OLD_SHARED = {
    "answer_ce_weight": 0.0,
    "betas": [0.9, 0.999],
    "clip_epsilon": 0.2,
    "cot_token_dropout": 0.0,
    "curated_reward": "group_max",
    "format_weight": 0.1,
    "group_size": 4,
    "max_new_tokens": 160,
    "min_lr_ratio": 0.1,
    "num_iterations": 1,
    "num_rollouts": 4,
    "own_readout_weight": 0.0,
    "rejected_min_js": 0.05,
    "rollout_max_new_tokens": 140,
    "rollout_temperature": 0.7,
    "rollout_top_k": 0,
    "rollout_top_p": 1.0,
    "use_cot": True,
    "warmup_ratio": 0.03,
    "weight_decay": 0.01,
}
OLD_GRPOZ_COT = OLD_SHARED | {"name": "grpo", "beta": 0.04, "ce_weight": 1.0, "kl_weight": 1.0, "lr": 1e-4}
OLD_GRPOZ_COT |= {"include_curated": True}
OLD_DPO_COT = OLD_SHARED | {"name": "dpo", "beta": 0.1, "ce_weight": 0.1, "kl_weight": 0.1, "lr": 2e-4}
OLD_DPO_COT |= {"include_curated": False}


def _quiet_compose(experiment: str, overrides: list[str] | None = None) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no built-in experiment uses a deprecated key
        return compose(experiment, overrides or [])


@pytest.mark.parametrize(
    ("experiment", "settings"), [("sft_cot", SFTConfig), ("dpo_cot", DPOConfig), ("grpo_cot", GRPOConfig)]
)
def test_the_strategy_section_is_typed_by_the_chosen_strategy(experiment: str, settings: type) -> None:
    cfg = _quiet_compose(experiment)
    assert OmegaConf.get_type(cfg.strategy) is settings and strategy_settings(cfg.strategy.name) is settings
    assert list(cfg.strategy) == [f.name for f in fields(settings)]
    switched = compose("sft_cot", ["strategy.name=grpo"])  # a later layer choosing another strategy retypes
    assert OmegaConf.get_type(switched.strategy) is GRPOConfig and switched.strategy.lr == 2e-3


def test_a_key_of_another_strategy_names_its_strategy() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'strategy\.group_size': it is a setting of strategy grpo, "
        r"and this run's strategy is dpo\. Valid keys under 'strategy\.': .*rejected_min_js",
    ):
        compose("dpo_cot", ["strategy.group_size=8"])
    with pytest.raises(ConfigError, match=r"'strategy\.rejected_min_js': it is a setting of strategy dpo"):
        compose("grpo_cot", ["strategy.rejected_min_js=0.1"])
    with pytest.raises(ConfigError, match=r"'strategy\.beta': it is a setting of strategy dpo and grpo"):
        compose("sft_cot", ["strategy.beta=0.1"])
    with pytest.raises(ConfigError, match=r"bad value for 'strategy\.name': 'nope'\. Valid choices: .*grpo"):
        compose("sft_cot", ["strategy.name=nope"])


def test_each_settings_class_checks_its_own_fields() -> None:
    with pytest.raises(ConfigError, match="GRPO takes its importance ratio"):
        compose("grpo_cot", ["strategy.rollout_top_p=0.9"])
    assert compose("dpo_cot", ["strategy.rollout_top_p=0.9"]).strategy.rollout_top_p == 0.9  # DPO may truncate
    with pytest.raises(ConfigError, match=r"'strategy\.num_rollouts' must be >= 1"):
        compose("dpo_cot", ["strategy.num_rollouts=0"])
    with pytest.raises(ConfigError, match=r"'strategy\.cot_token_dropout' must be in \[0, 1\)"):
        compose("sft_cot", ["strategy.cot_token_dropout=1.0"])
    with pytest.raises(ConfigError, match=r"bad value for 'strategy\.ref_kl_weight': -1\.0\. It must be >= 0"):
        compose("grpo_cot", ["strategy.ref_kl_weight=-1.0"])
    with pytest.raises(ConfigError, match=r"bad value for 'strategy\.curated_reward': 'best'\. Valid choices"):
        compose("grpoz_cot", ["strategy.curated_reward=best"])


def test_help_lists_only_the_chosen_strategys_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "experiment=grpo_cot", "--help"]) == 0
    out = capsys.readouterr().out
    assert "strategy.group_size = 4" in out and "strategy.ref_kl_weight = 0.04  # Weight of KL(pi || pi_ref)" in out
    assert "strategy.lr = 0.0001" in out and "Choices: group_max, own." in out
    assert "rejected_min_js" not in out and "strategy.kl_weight" not in out and "strategy.beta " not in out
    assert main(["train", "experiment=dpo_cot", "--help"]) == 0
    out = capsys.readouterr().out
    assert "strategy.rejected_min_js = 0.05" in out and "strategy.beta = 0.1  # Inverse temperature" in out
    assert "group_size" not in out and "curated_reward" not in out and "own_readout_weight" not in out


def test_every_strategys_settings_are_documented() -> None:
    for name in STRATEGIES.names():
        settings = strategy_settings(name)
        assert issubclass(settings, StrategyConfig)
        docs = field_docs(settings)
        assert not [f.name for f in fields(settings) if not docs.get(f.name)], settings.__name__


def test_grpo_beta_is_read_as_ref_kl_weight_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(FutureWarning, match=r"'strategy\.beta' is the old name of 'strategy\.ref_kl_weight'"):
        cfg = compose("grpo_cot", ["strategy.beta=0.2"])
    assert cfg.strategy.ref_kl_weight == 0.2 and "beta" not in cfg.strategy
    # an experiment file written with the old key composes to the same config as one with the new key
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "old_grpo.yaml").write_text("extends: grpo_cot\nstrategy:\n  beta: 0.0\n")
    monkeypatch.setenv("AMBEMO_CONFIG_PATH", str(tmp_path))
    with pytest.warns(FutureWarning, match="old_grpo.yaml"):
        old = compose("old_grpo", [])
    assert old.strategy.ref_kl_weight == 0.0
    assert config_differences(old, compose("grpo_cot", ["strategy.ref_kl_weight=0.0"])) == ["experiment"]
    with pytest.raises(ConfigError, match=r"sets both 'strategy\.beta' \(0\.2\) and 'strategy\.ref_kl_weight'"):
        compose("grpo_cot", ["strategy.beta=0.2", "strategy.ref_kl_weight=0.3"])
    assert _quiet_compose("dpo_cot", ["strategy.beta=0.3"]).strategy.beta == 0.3  # DPO's own beta: no warning


@pytest.mark.parametrize(("experiment", "old_section"), [("grpoz_cot", OLD_GRPOZ_COT), ("dpo_cot", OLD_DPO_COT)])
def test_a_run_config_saved_before_the_split_reads_back(tmp_path: Path, experiment: str, old_section: dict) -> None:
    cfg = _quiet_compose(experiment)
    saved = OmegaConf.to_container(cfg)
    saved["strategy"] = old_section  # type: ignore[index]
    assert_saved_config_reads_back(cfg, saved, tmp_path / "runs" / experiment / "20250101-000000", "strategy")
