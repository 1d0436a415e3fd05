"""DDP on CPU (gloo, 2 processes): an on-policy run end to end, with evaluation equal to one process's.

The 2-process run goes through the real command line (``python -m ambemo.cli train
trainer=ddp_cpu``): Lightning's launcher re-runs that command for rank 1, which is how DDP is
launched on one node, and the only way the run-folder sharing through the environment is
exercised. (``ddp_spawn`` is refused by the config: spawned workers cannot hand the test
predictions back.) Evaluation has an odd number of clips, so the ranks score 3 and 2 clips in a
different number of batches: the run must not hang, and no clip may be counted twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ambemo.config import ConfigError, compose
from ambemo.data.datamodule import ShardSampler
from ambemo.train import RUN_DIR_ENV, train

REPO = Path(__file__).resolve().parent.parent
N_EVAL = 5  # odd: rank 0 scores 3 clips, rank 1 scores 2


def test_shards_cover_each_clip_once_in_evaluation_and_evenly_in_training() -> None:
    evaluation = [list(ShardSampler(N_EVAL, shuffle=False, seed=0, rank=r, world=2)) for r in (0, 1)]
    assert sorted(evaluation[0] + evaluation[1]) == list(range(N_EVAL))  # no padding, no duplicate
    assert [len(s) for s in evaluation] == [3, 2]
    training = [ShardSampler(7, shuffle=True, seed=0, rank=r, world=2) for r in (0, 1)]
    for epoch in (0, 1):
        for s in training:
            s.set_epoch(epoch)
        shares = [list(s) for s in training]
        assert [len(s) for s in shares] == [4, 4] == [len(s) for s in training]  # equal steps on every rank
        assert set(shares[0] + shares[1]) == set(range(7))  # one clip repeated to even out, none left out


def test_ddp_spawn_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"use trainer\.distributed=ddp"):
        compose("sft", ["trainer.distributed=ddp_spawn"])


def test_two_process_dpo_run_matches_one_process_evaluation(fast_overrides: list[str], tmp_path: Path) -> None:
    overrides = [
        *fast_overrides,
        "data.limit_train=8",  # 2 ranks x batch 2 = 2 steps, one epoch
        "data.batch_size=2",
        f"data.limit_eval={N_EVAL}",
        "data.eval_batch_size=1",  # batch composition cannot change a clip's numbers
        "strategy.num_rollouts=2",
        "strategy.rollout_max_new_tokens=6",
        "strategy.max_new_tokens=6",
        "strategy.rejected_min_js=0",
        "model.init_from=null",
        "trainer.test_weights=last",
        "trainer.log_every_n_steps=1",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop(RUN_DIR_ENV, None)
    command = [sys.executable, "-m", "ambemo.cli", "train", "experiment=dpo_cot", "trainer=ddp_cpu", *overrides]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # one run folder, written once: config, checkpoint, results, one W&B run
    (run_dir,) = (tmp_path / "runs" / "dpo_cot").iterdir()  # fast_overrides' out_dir
    assert {"config.yaml", "summary.json", "predictions.jsonl", "metrics.csv"} <= {p.name for p in run_dir.iterdir()}
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    random_states = checkpoint["callbacks"]["ExactResume"]["ranks"]
    assert len(random_states) == 2 and not torch.equal(random_states[0]["torch"], random_states[1]["torch"])
    assert "train/reward_margin" in (run_dir / "metrics.csv").read_text()

    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == N_EVAL == len({p["id"] for p in predictions})
    two = json.loads((run_dir / "summary.json").read_text())["test"]
    assert two["n"] == N_EVAL

    # the same checkpoint scored by one process
    one_dir = train(
        compose(
            "dpo_cot",
            [*overrides, "trainer=cpu", "trainer.max_epochs=0", f"model.init_from={run_dir}/checkpoints/last.ckpt"],
        )
    )
    one = json.loads((one_dir / "summary.json").read_text())["test"]
    assert one.keys() == two.keys()
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    by_id = {
        json.loads(line)["id"]: json.loads(line) for line in (one_dir / "predictions.jsonl").read_text().splitlines()
    }
    for row in predictions:
        assert row["distribution"] == pytest.approx(by_id[row["id"]]["distribution"], abs=1e-6)
