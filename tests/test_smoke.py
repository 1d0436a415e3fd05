"""``trainer.fast_dev_run=true`` runs every experiment from an empty output folder, and its runs are
marked so that ``latest:`` never picks one: a real run made after them starts from a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import for_its_corpus

from ambemo import cli
from ambemo.config import compose, experiment_names
from ambemo.runs import FAST_DEV_RUN, FINISHED, latest_run, read_summary, run_folders, scoring_checkpoint, status

#: The smallest settings that still run every stage: one batch of two clips per split, a few tokens.
TINY = [
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.limit_eval=2",
    "strategy.max_new_tokens=4",
    "logger=csv",
]
#: The rollouts' budget: a setting of the on-policy strategies only (each strategy has its own keys).
ROLLOUT = ["strategy.rollout_max_new_tokens=4"]
REAL = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "data.limit_train=8"]


def _train(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["train", *args])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    return printed.out + printed.err


def test_fast_dev_run_of_every_experiment_then_real_runs(
    fast_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert not out.exists()
    fast = [*fast_overrides, *TINY, "trainer.fast_dev_run=true"]
    for name in experiment_names():
        extra = []
        if compose(name, []).data.name == "iemocap":  # cross-corpus evaluation: a miniature IEMOCAP release
            from test_corpora_iemocap import build_release

            root = build_release(tmp_path / "IEMOCAP_full_release")
            extra = [f"data.root={root}", "data.classes=[anger,happiness,sadness,neutral]"]
        if "rollout_max_new_tokens" in compose(name, []).strategy:
            extra += ROLLOUT
        printed = _train([f"experiment={name}", *for_its_corpus(name, fast), *extra], capsys)
        (run,) = run_folders(out, name)
        assert status(run) == FAST_DEV_RUN, name
        if str(compose(name, []).model.init_from or "").startswith("latest:"):
            assert "trainer.fast_dev_run starts from the base model" in printed, name
    # Every dependency was a fast-dev run: none of them is ever picked.
    assert latest_run(out, "sft_cot") is None and latest_run(out, "sft") is None

    _train(["experiment=sft_cot", *fast_overrides, *TINY, *REAL], capsys)
    real = latest_run(out, "sft_cot")
    assert real is not None and status(real) == FINISHED
    # A fast-dev run made after the real one is newer, and skipped with a word.
    _train(["experiment=sft_cot", *fast], capsys)
    newer = run_folders(out, "sft_cot")[-1]
    assert status(newer) == FAST_DEV_RUN

    printed = _train(["experiment=dpo_cot", *fast_overrides, *TINY, *ROLLOUT, *REAL], capsys)
    assert f"latest:sft_cot: skipped {newer}: a fast_dev_run" in printed
    dpo = latest_run(out, "dpo_cot")
    assert dpo is not None and status(dpo) == FINISHED
    assert read_summary(dpo)["init_from"] == str(scoring_checkpoint(real))
    assert json.loads((dpo / "summary.json").read_text())["test_weights"].endswith(".ckpt")
