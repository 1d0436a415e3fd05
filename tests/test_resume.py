"""Exact resume, torchtune-style: a run preempted mid-epoch and resumed in a fresh Trainer logs
exactly the per-step losses and learning rates of the same run left uninterrupted."""

from __future__ import annotations

import csv
import itertools
import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import ambemo.train
from ambemo import cli
from ambemo.config import ConfigError, compose, to_yaml
from ambemo.data.datamodule import ResumableLoader, ShardSampler
from ambemo.errors import CheckpointError
from ambemo.resume import AtomicCheckpointIO, compose_resumed, find_resume_checkpoint
from ambemo.train import RUN_DIR_ENV, train

STEPS, PREEMPT_AT = 5, 2  # 24 clips / batch 8 = 3 steps per epoch: preempted mid-epoch 0, resumed into epoch 1


class SignalAt(Callback):
    """Sends this process SIGUSR1 at the end of one training step (a preemption notice)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


#: Throughput logs (ambemo.throughput): wall-clock measurements, not training state.
WALL_CLOCK = {"train/step_seconds", "train/tokens_per_s", "train/mfu"}


def per_step(run_dir: Path) -> dict[int, dict[str, str]]:
    """The training rows of metrics.csv by step: loss terms and learning rate, as logged."""
    rows: dict[int, dict[str, str]] = {}
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            values = {
                k: v
                for k, v in row.items()
                if v and (k.startswith("train/") or k.startswith("lr-")) and k not in WALL_CLOCK
            }
            if values:
                rows.setdefault(int(row["step"]), {}).update(values)
    return rows


def run(overrides: list[str]) -> Path:
    os.environ.pop(RUN_DIR_ENV, None)  # each call is a fresh launch
    return train(compose(None, overrides))


@pytest.mark.parametrize(
    "experiment",
    [
        # reasoning-token dropout and LoRA dropout draw random numbers; the own-reasoning KL generates
        ["experiment=sft_cot", "strategy.cot_token_dropout=0.2"],
        # rollouts are sampled: the RNG must come back for the same rollouts to be drawn
        [
            "experiment=dpo_cot",
            "model.init_from=null",
            "strategy.num_rollouts=2",
            "strategy.rejected_min_js=0",
            "strategy.rollout_max_new_tokens=6",
        ],
    ],
    ids=["sft_cot", "dpo_cot"],
)
def test_preempted_run_resumes_exactly(
    experiment: list[str], fast_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    overrides = [
        *fast_overrides,
        *experiment,
        "logger=csv",
        "data.limit_train=24",
        "data.limit_eval=1",
        "trainer.limit_val_batches=0",
        f"trainer.max_steps={STEPS}",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.test_weights=last",
        "strategy.max_new_tokens=6",
    ]
    uninterrupted = per_step(run(overrides))
    assert sorted(uninterrupted) == list(range(STEPS)) and all("train/loss" in r for r in uninterrupted.values())

    make_callbacks = ambemo.train.make_callbacks
    monkeypatch.setattr(ambemo.train, "make_callbacks", lambda *a: [SignalAt(PREEMPT_AT), *make_callbacks(*a)])
    with pytest.raises(SystemExit):
        run(overrides)
    monkeypatch.setattr(ambemo.train, "make_callbacks", make_callbacks)

    checkpoint = find_resume_checkpoint(compose(None, [*overrides, "trainer.resume=auto"]))
    assert checkpoint is not None
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # plain tensors and containers
    assert saved["global_step"] == PREEMPT_AT
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "batches": PREEMPT_AT}]

    resumed_dir = run([*overrides, "trainer.resume=auto"])
    assert resumed_dir == checkpoint.parent.parent  # continues in the preempted run's folder
    resumed = per_step(resumed_dir)
    assert sorted(resumed) == list(range(STEPS))
    for step in range(PREEMPT_AT, STEPS):  # every logged value after the resume point, bit for bit
        assert resumed[step] == uninterrupted[step], step


def test_resume_refuses_a_checkpoint_without_the_trainable_weights(tmp_path: Path, fast_overrides: list[str]) -> None:
    every_step = ["trainer.max_steps=1", "trainer.checkpoint_every_n_steps=1", "trainer.limit_val_batches=0"]
    cfg = compose("sft", [*fast_overrides, "logger=csv", *every_step])
    checkpoint = train(cfg) / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # what train.py loads it with
    dropped = sorted(state["state_dict"])[0]
    del state["state_dict"][dropped]
    torch.save(state, tmp_path / "broken.ckpt")
    os.environ.pop(RUN_DIR_ENV, None)
    cfg.trainer.resume = str(tmp_path / "broken.ckpt")
    cfg.trainer.max_steps = 2
    with pytest.raises(ValueError, match="1 trainable tensors missing"):
        train(cfg)


def test_resume_names_a_missing_checkpoint(tmp_path: Path) -> None:
    cfg = compose("sft", [f"trainer.resume={tmp_path}", f"out_dir={tmp_path}"])
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*last\.ckpt"):
        find_resume_checkpoint(cfg)
    cfg.trainer.resume = "auto"
    assert find_resume_checkpoint(cfg) is None  # nothing to resume: a fresh start


def interrupted_run(folder: Path, overrides: list[str]) -> Path:
    """A run folder as an interrupted run leaves it: its config and a (weightless) last.ckpt."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(compose(None, overrides)))
    torch.save({"state_dict": {}, "global_step": 7}, folder / "checkpoints" / "last.ckpt")
    return folder


def test_resume_of_a_run_folder_takes_the_runs_own_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = interrupted_run(tmp_path / "run", ["experiment=grpoz_cot", "strategy.group_size=4", "seed=3"])
    cfg = compose_resumed([f"trainer.resume={run_dir}", "logger=csv", "trainer.torch_threads=1"])
    assert cfg is not None
    assert (cfg.experiment, cfg.strategy.group_size, cfg.seed) == ("grpoz_cot", 4, 3)
    assert (cfg.logger.name, cfg.trainer.torch_threads) == ("csv", 1)
    assert compose_resumed([f"trainer.resume={run_dir}", "experiment=grpoz_cot"]) is None  # composes as usual
    assert cli.main(["train", f"trainer.resume={run_dir / 'checkpoints' / 'last.ckpt'}", "--print-config"]) == 0
    assert "experiment: grpoz_cot" in capsys.readouterr().out


def test_resume_with_a_config_that_trains_something_else_is_refused(tmp_path: Path) -> None:
    """Before: ``trainer.resume=RUN experiment=sft_cot`` (or no experiment at all) trained the
    default experiment from a GRPO_z run's checkpoint, in its folder, over its metrics."""
    run_dir = interrupted_run(tmp_path / "run", ["experiment=grpoz_cot", f"out_dir={tmp_path}"])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    cfg = compose(None, ["experiment=sft_cot", f"trainer.resume={run_dir}", f"out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"experiment \('sft_cot' here, 'grpoz_cot' in the run\)"):
        train(cfg)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched
    same = compose(None, ["experiment=grpoz_cot", f"trainer.resume={run_dir}", "strategy.group_size=2"])
    with pytest.raises(ConfigError, match=r"strategy.group_size \(2 here, 4 in the run\)"):
        train(same)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("killed mid-write")


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "blob": torch.zeros(1000)}, target)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.save_checkpoint({"step": 2, "blob": torch.zeros(1000), "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=False)["step"] == 1  # the previous checkpoint is intact
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # and no partial file is left


def test_shard_sampler_order_is_a_function_of_the_epoch() -> None:
    sampler = ShardSampler(10, shuffle=True, seed=3)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0 and sorted(list(sampler)) == list(range(10))
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # no hidden running state: a resumed process draws the same order
    sampler.start = 4
    assert list(sampler) == epoch0[4:]


def test_loader_position_survives_two_resumes_in_one_epoch() -> None:
    def loader() -> ResumableLoader:
        return ResumableLoader(list(range(10)), batch_size=2, sampler=ShardSampler(10, shuffle=True, seed=1))

    whole = [b.tolist() for b in loader()]
    first = loader()
    seen = [b.tolist() for b in itertools.islice(first, 2)]
    second = loader()
    second.load_state_dict(first.state_dict())
    seen += [b.tolist() for b in itertools.islice(second, 1)]
    assert second.state_dict() == {"epoch": 0, "batches": 3}  # counted from the epoch start, not the resume
    third = loader()
    third.load_state_dict(second.state_dict())
    assert seen + [b.tolist() for b in third] == whole
    third.sampler.set_epoch(1)
    assert [b.tolist() for b in third] != whole  # the saved position applies to its own epoch only
