"""Settings per corpus: ``cfg.data`` is typed by the chosen corpus's settings class (as
``cfg.strategy`` is by the strategy's), a key of another corpus is an error naming it, ``--help``
lists the chosen corpus's keys only, a plugin corpus without a settings class gets the shared
``DataConfig``, and run configs saved before the split (every corpus's keys) still read back."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from conftest import assert_saved_config_reads_back
from omegaconf import OmegaConf

from ambemo.cli import main
from ambemo.config import ConfigError, DataConfig, compose, corpus_settings, field_docs
from ambemo.data.corpus import CremaDConfig, IEMOCAPConfig, ManifestConfig, SyntheticConfig
from ambemo.registry import CORPORA

#: The data section of run configs saved before the split: one class with every corpus's keys.
OLD_DATA = {
    "name": "synthetic",
    "root": "data/builtin",
    "path": None,
    "classes": ["anger", "disgust", "fear", "happiness", "neutral", "sadness"],
    "seed": 0,
    "fold": 1,
    "val_fraction": 0.1,
    "test_fraction": 0.1,
    "out_of_set_votes": "renormalise",
    "multi_label_votes": "each",
    "consensus_in_classes": False,
    "on_bad_labels": "error",
    "on_bad_audio": "error",
    "n_train": 1200,
    "n_val": 150,
    "n_test": 300,
    "max_seconds": 3.0,
    "max_duration_policy": "truncate",
    "cache_dir": None,
    "batch_size": 32,
    "bucket_by_length": False,
    "eval_batch_size": 64,
    "num_workers": 0,
    "cot_store": None,
    "cache_encoded": True,
    "limit_train": 0,
    "limit_eval": 0,
}
MANIFEST = ["data=manifest", "data.path=corpus/manifest.jsonl"]


@pytest.mark.parametrize(
    ("overrides", "settings"),
    [
        ([], SyntheticConfig),
        (["data=iemocap"], IEMOCAPConfig),
        (["data=crema_d"], CremaDConfig),
        (MANIFEST, ManifestConfig),
    ],
)
def test_the_data_section_is_typed_by_the_chosen_corpus(overrides: list[str], settings: type) -> None:
    cfg = compose("sft_cot", overrides)
    assert OmegaConf.get_type(cfg.data) is settings and corpus_settings(cfg.data.name) is settings
    assert list(cfg.data) == [f.name for f in fields(settings)]


def test_a_later_layer_choosing_another_corpus_retypes_the_section() -> None:
    switched = compose("sft_cot", ["data.name=iemocap", "data.batch_size=4"])  # the experiment chose synthetic
    assert OmegaConf.get_type(switched.data) is IEMOCAPConfig and switched.data.batch_size == 4
    assert switched.data.fold == 1 and "n_train" not in switched.data


@pytest.mark.parametrize(
    ("experiment", "overrides", "message"),
    [
        (
            "sft_cot",
            ["data.fold=2"],
            r"command line: unknown key 'data\.fold': it is a setting of corpus iemocap, and this run's corpus is "
            r"synthetic\. Valid keys under 'data\.': .*n_train",
        ),
        ("sft_cot", ["data=iemocap", "data.n_train=8"], r"'data\.n_train': it is a setting of corpus synthetic, "),
        ("sft_cot", ["data=iemocap", "data.test_fraction=0.2"], r"of corpus manifest and crema_d, and .* is iemocap"),
        (
            "sft_cot",
            ["data.val_fraction=0.2"],
            r"'data\.val_fraction': it is a setting of corpus manifest, iemocap and",
        ),
        ("sft_cot", [*MANIFEST, "data.name=iemocap"], r"of corpus manifest, and this run's corpus is iemocap"),
        # a layer below the command line is named too: the experiment file that sets IEMOCAP's fold
        ("paper/sft_cot_iemocap", ["data=crema_d"], r"sft_cot_iemocap\.yaml: unknown key 'data\.fold'.* is crema_d"),
        ("sft_cot", ["data.name=nope"], r"bad value for 'data\.name': 'nope'\. Valid choices: synthetic, manifest"),
    ],
)
def test_a_key_of_another_corpus_names_its_corpus(experiment: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose(experiment, overrides)


@pytest.mark.parametrize(
    ("experiment", "overrides", "message"),
    [
        ("paper/sft_cot_iemocap", ["data.fold=7"], r"'data\.fold' must be 1\.\.5 \(the IEMOCAP session to test on\)"),
        ("sft_cot", ["data=iemocap", "data.val_fraction=1.0"], r"'data\.val_fraction' must be >= 0 and below 1, got"),
        (
            "sft_cot",
            ["data=crema_d", "data.val_fraction=0.5", "data.test_fraction=0.5"],
            r"'data\.val_fraction' and 'data\.test_fraction' must be >= 0 with a sum below 1",
        ),
        ("sft_cot", ["data=manifest"], r"data=manifest needs data\.path=FILE\.jsonl"),
        ("sft_cot", ["data=iemocap", "data.multi_label_votes=all"], r"'data\.multi_label_votes': 'all'\. Valid choi"),
        ("sft_cot", ["data=crema_d", "data.out_of_set_votes=keep"], r"'data\.out_of_set_votes': 'keep'\. Valid choi"),
        ("sft_cot", ["data.n_train=-1"], r"bad value for 'data\.n_train': -1\. It must be >= 0"),
        # the shared settings' checks apply to every corpus
        ("sft_cot", ["data=iemocap", "data.on_bad_audio=drop"], r"'data\.on_bad_audio': 'drop'\. Valid choices: erro"),
    ],
)
def test_each_settings_class_checks_its_own_fields(experiment: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose(experiment, overrides)


def test_help_lists_only_the_chosen_corpus_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "experiment=sft_cot", "data=iemocap", "--help"]) == 0
    out = capsys.readouterr().out
    assert "data.fold = 1  # ``iemocap``: leave-one-session-out" in out and "Choices: each, split." in out
    assert "data.val_fraction = 0.1  # Seeded validation share of the training sessions' dialogs" in out
    assert "data.batch_size = 32" in out and "data.out_of_set_votes = 'renormalise'" in out
    assert "n_train" not in out and "test_fraction" not in out and "data.path" not in out
    assert main(["train", "experiment=sft_cot", "--help"]) == 0
    out = capsys.readouterr().out
    assert "data.n_train = 1200  # Synthetic corpus: number of training clips." in out
    assert "data.fold" not in out and "val_fraction" not in out and "out_of_set_votes" not in out


def test_every_corpus_settings_are_documented() -> None:
    for name in CORPORA.names():
        settings = corpus_settings(name)
        assert issubclass(settings, DataConfig)
        docs = field_docs(settings)
        assert not [f.name for f in fields(settings) if not docs.get(f.name)], settings.__name__


def test_a_plugin_corpus_without_settings_gets_the_shared_ones(plugin: str) -> None:
    cfg = compose("toy_sft", [])
    assert cfg.data.name == "toy_subset" and OmegaConf.get_type(cfg.data) is DataConfig
    assert list(cfg.data) == [f.name for f in fields(DataConfig)]
    with pytest.raises(ConfigError, match=r"'data\.n_train': it is a setting of corpus synthetic, .* is toy_subset"):
        compose("toy_sft", ["data.n_train=8"])


@pytest.mark.parametrize(
    ("experiment", "overrides"), [("sft_cot", []), ("paper/sft_cot_iemocap", []), ("sft", MANIFEST)]
)
def test_a_run_config_saved_before_the_split_reads_back(tmp_path: Path, experiment: str, overrides: list[str]) -> None:
    cfg = compose(experiment, overrides)
    saved = OmegaConf.to_container(cfg)
    saved["data"] = OLD_DATA | saved["data"]  # type: ignore[index,operator]  # every corpus's keys, as saved before
    assert_saved_config_reads_back(cfg, saved, tmp_path / "runs" / experiment / "20250101-000000", "data")
