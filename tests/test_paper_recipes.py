"""The paper recipes compose to the paper's settings (ambemo/paper.py, the one table), the CPU demo
declares every departure from them, the README shows those tables, and IEMOCAP's folds run as one
command. Composition only: no 7B weights are needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ambemo.cli import main as cli_main
from ambemo.config import PACKAGE_ROOT, compose, experiment_names
from ambemo.paper import (
    DEPARTURES,
    RECIPES,
    markdown_departures,
    markdown_settings,
    paper_row,
    recipe_names,
    recipe_of,
    settings_for,
)


def _value(cfg, key: str):
    value = OmegaConf.select(cfg, key, default="<missing>")
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def test_every_table_row_and_corpus_has_a_recipe() -> None:
    names = set(recipe_names())
    for row in ("base", "sft_cot", "dpo_cot", "grpo_cot", "grpoz_cot"):
        for corpus in ("iemocap", "crema_d"):
            assert f"paper/{row}_{corpus}" in names
    on_disk = {f"paper/{p.stem}" for p in (PACKAGE_ROOT / "experiments" / "paper").glob("*.yaml")}
    assert on_disk == names


@pytest.mark.parametrize("name", recipe_names())
def test_paper_experiment_composes_to_the_table(name: str) -> None:
    cfg = compose(name, [])
    recipe = recipe_of(name)
    changes = dict(recipe.changes)
    assert cfg.model.name == "qwen2_audio" and cfg.model.path and cfg.trainer.accelerator == "gpu"
    assert paper_row(cfg) == recipe.row
    assert cfg.data.name == ("crema_d" if name.endswith("crema_d") else "iemocap")
    for setting in settings_for(recipe.row, cfg.data.name):
        expected = changes.get(setting.key, setting.value)
        assert _value(cfg, setting.key) == expected, f"{name}: {setting.key}"
    for key, value in changes.items():
        assert _value(cfg, key) == value, f"{name}: {key}"


def test_paper_recipes_do_not_truncate_real_utterances() -> None:
    for name in recipe_names():
        cfg = compose(name, [])
        assert cfg.data.max_seconds == 30.0 and cfg.model.chunk_seconds == 30, name


@pytest.mark.parametrize("name", experiment_names())
def test_demo_departures_from_the_paper_are_all_declared(name: str) -> None:
    cfg = compose(name, [])
    declared = {d.key: d.value for d in DEPARTURES if name in d.experiments}
    for setting in settings_for(paper_row(cfg), cfg.data.name):
        value = _value(cfg, setting.key)
        if value != setting.value:
            assert setting.key in declared, f"{name}: {setting.key}={value!r} departs from the paper undeclared"
            assert declared[setting.key] == value, f"{name}: {setting.key} declared {declared[setting.key]!r}"
    for key, value in declared.items():  # and no stale declaration
        assert _value(cfg, key) == value, f"{name}: declared {key}={value!r}, has {_value(cfg, key)!r}"


def test_sft_cot_is_the_papers_objective_and_the_variant_is_named() -> None:
    assert compose("sft_cot", []).strategy.own_readout_weight == 0.0
    assert compose("sft_cot_own", []).strategy.own_readout_weight == 1.0


def test_readme_shows_the_tables() -> None:
    readme = (PACKAGE_ROOT / "README.md").read_text()
    assert markdown_settings() in readme
    assert markdown_departures() in readme
    for recipe in RECIPES:
        assert f"paper/{recipe.name}_" in readme


def test_print_config_shows_the_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["train", "experiment=paper/grpoz_cot_iemocap", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "# Paper settings for Table 2 row 'grpoz'" in out
    assert "strategy.lr = 2e-05  [2e-5 for GRPO (§4); AdamW]" in out
    assert "strategy.group_size = 8  [K not given (§3.3.3); TRL GRPOConfig default num_generations (8)]" in out
    assert "differs from the table" not in out
    assert cli_main(["train", "experiment=paper/grpoz_cot_iemocap", "strategy.lr=1e-4", "--print-config"]) == 0
    assert (
        "strategy.lr = 0.0001  [2e-5 for GRPO (§4); AdamW]  <- differs from the table (2e-05)"
        in capsys.readouterr().out
    )


def test_iemocap_folds_run_and_report_the_fold_average(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_corpora_iemocap import build_release

    release = build_release(tmp_path / "IEMOCAP_full_release")
    overrides = [
        "experiment=sft",
        "data=iemocap",
        f"data.root={release}",
        "data.classes=[anger,happiness,sadness,neutral]",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.accelerator=cpu",
        "logger=csv",
        f"out_dir={tmp_path / 'runs'}",
    ]
    assert cli_main(["folds", *overrides, "--folds", "1,2"]) == 0
    out = capsys.readouterr().out
    (written,) = (tmp_path / "runs" / "sft").glob("folds-*.json")
    report = json.loads(written.read_text())
    assert [f["fold"] for f in report["folds"]] == [1, 2]
    runs = {Path(f["run_dir"]) for f in report["folds"]}
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)
    for key in ("js", "bc", "r2", "brier"):
        per_fold = [f["test"][key] for f in report["folds"]]
        assert report["mean"][key] == pytest.approx(sum(per_fold) / 2)
    assert f"js {report['mean']['js']:.4f}" in out
    # each fold tests on its own session
    for fold in report["folds"]:
        rows = (Path(fold["run_dir"]) / "predictions.jsonl").read_text().splitlines()
        assert rows and all(json.loads(r)["id"].startswith(f"Ses0{fold['fold']}") for r in rows)
