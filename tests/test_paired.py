"""Seeds and paired comparisons: seed aggregation, paired differences and the paired bootstrap,
checked against hand-computed cases; ``ambemo report --seeds --baseline``; ``--seeds`` training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ambemo import cli
from ambemo.config import compose
from ambemo.paired import (
    PairingError,
    paired_bootstrap,
    paired_differences,
    runs_by_seed,
    seed_mean_sd,
)
from ambemo.report import main as report_main
from ambemo.report import paired_rows, paired_table, signal_table, training_signal
from ambemo.train import latest_run

RIGHT, WRONG = {"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 0.0}
# Against the target RIGHT: a RIGHT prediction has JS 0, BC 1, Brier 0; a WRONG one JS 1 bit,
# BC 0, Brier ((1-0)^2 + (0-1)^2) / 2 = 1. Both have R2 1 (r = +1 and -1).


def write_run(root: Path, experiment: str, seed: int, right: list[bool], stamp: str = "20260101-000000") -> Path:
    """A finished run whose utterance ``u<i>`` is predicted right or wrong (target always RIGHT)."""
    run = root / experiment / f"{stamp}-s{seed}"
    run.mkdir(parents=True)
    lines = [
        json.dumps({"id": f"u{i}", "distribution": RIGHT if ok else WRONG, "target": RIGHT})
        for i, ok in enumerate(right)
    ]
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    (run / "config.yaml").write_text(f"experiment: {experiment}\nseed: {seed}\n")
    summary = {"experiment": experiment, "seed": seed, "dataset": "synthetic", "reference": {}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_seed_mean_and_sd_by_hand(tmp_path: Path) -> None:
    # per-run mean JS: 0.5, 1.0, 0.0 -> mean 0.5, sd sqrt(((0)^2 + 0.5^2 + 0.5^2) / 2) = 0.5
    runs = [
        write_run(tmp_path, "m", 0, [True, False]),
        write_run(tmp_path, "m", 1, [False, False]),
        write_run(tmp_path, "m", 2, [True, True]),
    ]
    stats = seed_mean_sd(runs)
    assert stats["js"] == pytest.approx((0.5, 0.5))
    assert stats["bc"] == pytest.approx((0.5, 0.5))
    assert stats["brier"] == pytest.approx((0.5, 0.5))
    assert stats["r2"] == pytest.approx((1.0, 0.0))
    mean, sd = seed_mean_sd(runs[:1])["js"]
    assert mean == 0.5 and sd != sd  # one seed: no sd


def test_paired_bootstrap_by_hand() -> None:
    diffs = torch.tensor([[1.0, 3.0], [3.0, 5.0]])  # seeds x utterances
    # the same utterances in every seed: [u0,u0] -> (1+1+3+3)/4 = 2, [u1,u1] -> 4, [u0,u1] -> 3
    index = torch.tensor([[0, 0], [1, 1], [0, 1]])
    mean, low, high = paired_bootstrap(diffs, index=index)
    assert mean == 3.0
    # percentiles of [2, 3, 4] with linear interpolation: 2 + 0.025 * 2, 2 + 0.975 * 2
    assert (low, high) == pytest.approx((2.05, 3.95))
    # two utterances, many resamples: P(all u0) = 1/4 > 2.5 %, so the interval is [d(u0), d(u1)]
    mean, low, high = paired_bootstrap(torch.tensor([0.0, 1.0]), 2000, torch.Generator().manual_seed(0))
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_paired_differences_match_ids_and_seeds(tmp_path: Path) -> None:
    base = {s: write_run(tmp_path, "base", s, [False, False, True]) for s in (0, 1, 2)}
    method = {s: write_run(tmp_path, "m", s, [True, False, True]) for s in (0, 1)}
    # the method's seed 1 lists its utterances in another order: matched by id, not by line
    lines = (method[1] / "predictions.jsonl").read_text().splitlines()
    (method[1] / "predictions.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    seeds, ids, diffs = paired_differences(method, base)
    assert seeds == [0, 1] and ids == ["u0", "u1", "u2"]  # seed 2: the baseline's only
    assert diffs["js"].tolist() == [[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]
    assert diffs["bc"].tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    mean, low, high = paired_bootstrap(diffs["js"], 500, torch.Generator().manual_seed(0))
    assert mean == pytest.approx(-1 / 3) and low < high <= 0.0

    with pytest.raises(PairingError, match="no seed in common"):
        paired_differences({5: method[0]}, base)
    other = write_run(tmp_path, "other", 0, [True, True])  # another test split
    with pytest.raises(PairingError, match="differ"):
        paired_differences({0: other}, base)


def test_report_seeds_and_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    n = 40
    for seed in (0, 1, 2):
        write_run(runs, "sft_cot", seed, [i % 2 == 0 for i in range(n)])
        write_run(runs / "headroom", "headroom/dpo_cot", seed, [i % 4 != 1 for i in range(n)])
        write_run(runs, "grpo_cot", seed, [i % 2 == 0 for i in range(n)])
    write_run(runs, "sft_cot", 0, [False] * n, stamp="20250101-000000")  # older: not used
    groups = runs_by_seed(runs)
    assert sorted(groups) == ["grpo_cot", "headroom/dpo_cot", "sft_cot"]
    assert sorted(groups["sft_cot"]) == [0, 1, 2] and "2026" in groups["sft_cot"][0].name

    out = tmp_path / "report.md"
    code = report_main(["--runs", str(runs), "--baseline", "sft_cot", "--bootstrap", "300", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and text.rstrip() == out.read_text().rstrip()
    assert "| sft_cot (seed 2) |" in text
    assert "| sft_cot | 0,1,2 | 0.500 ± 0.000 |" in text
    paired = {
        line.split("|")[1].strip(): line
        for line in text.split("Paired against")[1].splitlines()
        if line.startswith("| ")
    }
    # dpo: a quarter of the utterances wrong vs half: -0.25 bits, interval excluding 0
    assert "| 0,1,2 | 40 | -0.250 [" in paired["headroom/dpo_cot"] and "] *" in paired["headroom/dpo_cot"]
    assert "+0.000 [+0.000, +0.000] |" in paired["grpo_cot"]  # identical to the baseline: no mark
    assert paired["headroom/dpo_cot"].rstrip().endswith("| -0.250, -0.250, -0.250 |")  # seed by seed
    assert report_main(["--runs", str(runs), "--baseline", "nope"]) == 2
    assert "no finished run of it" in capsys.readouterr().err


def test_seeds_that_disagree_are_shown_beside_a_pooled_interval(tmp_path: Path) -> None:
    """One seed far better, two a little worse: the pooled interval excludes 0, the per-seed
    column says the seeds disagree (what a headroom run with one broken start looked like)."""
    runs, n = tmp_path / "runs", 40
    for seed in (0, 1, 2):
        write_run(runs, "sft_cot", seed, [i % 2 == 0 for i in range(n)] if seed else [False] * n)
        write_run(runs, "dpo_cot", seed, [True] * n if seed == 0 else [i % 4 == 0 for i in range(n)])
    rows = paired_rows(runs_by_seed(runs), "sft_cot", 300, seed=0)
    assert [round(d, 3) for d in rows[0]["js_per_seed"]] == [-1.0, 0.25, 0.25]
    line = paired_table(rows, "sft_cot").splitlines()[2]
    assert "| -0.167 [" in line and "] *" in line
    assert line.endswith("| -1.000, +0.250, +0.250 (seeds disagree) |")


def test_latest_run_pairs_seeds(tmp_path: Path) -> None:
    old = write_run(tmp_path, "sft_cot", 1, [True], stamp="20260101-000000")
    write_run(tmp_path, "sft_cot", 0, [True], stamp="20260102-000000")
    # weights=False: these hand-made runs have predictions but no checkpoints
    assert latest_run(tmp_path, "sft_cot", seed=1, weights=False) == old
    assert latest_run(tmp_path, "sft_cot", seed=3, weights=False) is None
    assert latest_run(tmp_path, "sft_cot", weights=False).name.startswith("20260102")


def test_train_seeds_option(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr("ambemo.train.train", lambda cfg: seen.append((cfg.experiment, cfg.seed)))
    assert cli.main(["train", "experiment=sft", "seed=4", "--seeds", "3", "trainer.max_epochs=1"]) == 0
    assert seen == [("sft", 4), ("sft", 5), ("sft", 6)]
    assert cli.main(["train", "experiment=sft", "--seeds=0"]) == 2


def test_headroom_experiments_extend_and_chain() -> None:
    start = compose("headroom/sft_cot_1ep", [])
    assert (
        start.trainer.max_epochs == 1
        and start.strategy.own_readout_weight == compose("sft_cot", []).strategy.own_readout_weight
    )
    for name in ("dpo_cot", "grpo_cot", "grpoz_cot"):
        cfg = compose(f"headroom/{name}", [])
        assert cfg.experiment == f"headroom/{name}"
        assert cfg.model.init_from == "latest:headroom/sft_cot_1ep"
        assert cfg.strategy.name == compose(name, []).strategy.name


def test_training_signal_first_and_last_third(tmp_path: Path) -> None:
    run = write_run(tmp_path, "grpo_cot", 0, [True])
    lines = ["epoch,step,train/reward,val/js"] + [f"0,{step},{step + 1}," for step in (5, 0, 1, 2, 3, 4)]
    lines.append("0,5,,0.25")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    # rewards by step: 1..6 -> first third (1, 2), last third (5, 6); val/js once
    assert training_signal(run) == {"train/reward": (1.5, 5.5), "val/js": (0.25, 0.25)}
    table = signal_table({"grpo_cot": {0: run}})
    assert "| grpo_cot | train/reward | 1 | 1.5000 | 5.5000 | +4.0000 |" in table
