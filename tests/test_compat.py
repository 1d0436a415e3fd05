"""ambemo.compat: each use of a library's private API does what its caller relies on, for the
library versions in ``compat.CHECKED`` (transformers 5.17.0, Lightning 2.6.6, wandb 0.31.0)."""

from __future__ import annotations

import csv
import importlib.metadata
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ambemo import compat


@pytest.mark.parametrize("library", sorted(compat.CHECKED))
def test_installed_versions_are_the_checked_ones(library: str) -> None:
    installed = importlib.metadata.version(library)
    assert installed == compat.CHECKED[library], (
        f"{library} {installed} is installed; ambemo/compat.py was checked against {compat.CHECKED[library]}: "
        "re-check its functions for this version (tests/test_compat.py), then update CHECKED"
    )


def test_generate_sampling_rules_transformers_5_17() -> None:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        SuppressTokensLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, eos_token_id=3)).eval()
    prompt = torch.tensor([[1, 2, 4]])
    processors, eos = compat.generate_sampling_rules(
        model, prompt, do_sample=True, temperature=0.7, top_p=0.9, suppress_tokens=[5], pad_token_id=0
    )
    kinds = {type(p): p for p in processors}
    assert kinds[TemperatureLogitsWarper].temperature == 0.7
    assert kinds[TopPLogitsWarper].top_p == 0.9
    assert SuppressTokensLogitsProcessor in kinds
    assert eos.tolist() == [3]
    # greedy: the processed scores are the ones generate itself produces
    processors, _ = compat.generate_sampling_rules(model, prompt, do_sample=False, suppress_tokens=[5], pad_token_id=0)
    out = model.generate(
        prompt, max_new_tokens=1, do_sample=False, suppress_tokens=[5], pad_token_id=0, output_scores=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    with torch.no_grad():
        logits = model(prompt).logits[:, -1]
    torch.testing.assert_close(processors(prompt, logits), out.scores[0])


def test_rng_states_round_trip_lightning_2_6() -> None:
    states = compat.collect_rng_states()
    assert {"torch", "numpy", "python"} <= set(states)
    first = (torch.rand(2), np.random.rand(2), random.random())
    compat.set_rng_states(states)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_csv_logger_rows_lightning_2_6(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=tmp_path, name="", version="")
    compat.prepend_logged_rows(logger, [{"step": 0, "val/js": 0.5}])
    logger.log_metrics({"train/loss": 2.0}, step=1)
    logger.log_metrics({"val/js": 0.25}, step=2)
    logger.save()
    metrics = tmp_path / "metrics.csv"
    with open(metrics, newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["0", "1", "2"]  # the prepended row first
    assert compat.logged_values(metrics, "val/js") == [0.5, 0.25]  # empty cells skipped
    assert compat.logged_values(metrics, "train/loss") == [2.0]
    assert compat.logged_values(tmp_path / "absent.csv", "val/js") == []


def test_sweep_command_wandb_0_31(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAG", "t1")
    command, macros = compat.sweep_command(["${interpreter}", "tag=${envvar:TAG}", "${args}"], {"lr": 0.1, "r": 4})
    assert command == ["${interpreter}", "tag=t1", "${args}"]
    assert macros["args"] == ["--lr=0.1", "--r=4"]
    assert macros["args_no_hyphens"] == ["lr=0.1", "r=4"]
    assert macros["args_json"] == ['{"lr": 0.1, "r": 4}']
