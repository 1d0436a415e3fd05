"""The learning test: a short run of the real recipe must beat the global prior on held-out clips.

This is the claim the whole framework rests on (an LALM learns human vote *distributions* from
speech), asserted on a small built-in corpus with a fixed seed, in well under a minute on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from ambemo.config import compose
from ambemo.data.synthetic import generate_corpus
from ambemo.train import train


def test_sft_beats_the_prior(tmp_path: Path) -> None:
    sizes = {"n_train": 480, "n_val": 16, "n_test": 160}
    generate_corpus(tmp_path / "corpus", seed=3, workers=2, **sizes)
    cfg = compose(
        "sft",
        [
            f"data.root={tmp_path / 'corpus'}",
            *(f"data.{k}={v}" for k, v in sizes.items()),
            f"out_dir={tmp_path / 'runs'}",
            "logger=csv",
            "trainer.max_epochs=10",
            "trainer.check_val_every_n_epoch=10",
            "strategy.lr=3e-3",
        ],
    )
    summary = json.loads((train(cfg) / "summary.json").read_text())
    model, prior = summary["test"], summary["reference"]["prior"]
    assert model["n"] == 160
    # JS at least 10 % below the train-mean prior, and the other distribution metrics agree.
    assert model["js"] < 0.9 * prior["js"], (model["js"], prior["js"])
    assert model["bc"] > prior["bc"]
    assert model["brier"] < prior["brier"]
