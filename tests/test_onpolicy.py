"""On-policy pieces beyond the loss formulas: answer-only rollouts (DPO/GRPO without CoT) and
GRPO's several optimisation passes per batch of rollouts."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ambemo.bench import bench_clips
from ambemo.config import ConfigError, compose
from ambemo.model.backbone import load_backbone
from ambemo.objectives.rewards import answer_reward
from ambemo.strategies import build_strategy
from ambemo.strategies.base import OnPolicyModule
from ambemo.train import train


def test_answer_reward_policy_gradient_is_the_forward_kl_gradient() -> None:
    # E_{c ~ p}[r(c) grad log p(c)] with r = p_human / p, summed exactly over the classes,
    # must equal -grad KL(p_human || p): the reward optimises the paper's objective.
    torch.manual_seed(0)
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.softmax(torch.randn(3, 5, dtype=torch.float64), -1)
    target[0, 1] = 0.0  # a class nobody voted for
    target = target / target.sum(-1, keepdim=True)
    log_p = torch.log_softmax(logits, -1)
    every = torch.arange(5).expand(3, 5)
    reward = answer_reward(target, log_p.detach(), every)
    surrogate = (log_p.detach().exp() * reward * log_p).sum()
    (policy_gradient,) = torch.autograd.grad(surrogate, logits)
    kl = (torch.xlogy(target, target) - target * torch.log_softmax(logits, -1)).sum()
    (kl_gradient,) = torch.autograd.grad(kl, logits)
    torch.testing.assert_close(policy_gradient, -kl_gradient)
    assert reward[0, 1] == 0  # an emotion nobody heard earns nothing


def _sampler(temperature: float, top_p: float, top_k: int = 0) -> SimpleNamespace:
    strategy = SimpleNamespace(rollout_temperature=temperature, rollout_top_p=top_p, rollout_top_k=top_k)
    sampler = SimpleNamespace(cfg=SimpleNamespace(strategy=strategy))
    sampler.answer_sampling_probs = lambda log_p: OnPolicyModule.answer_sampling_probs(sampler, log_p)
    return sampler


def test_sample_answers_follows_temperature_and_top_p() -> None:
    torch.manual_seed(0)
    log_p = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.05, 0.9]]))
    drawn = OnPolicyModule.sample_answers(_sampler(1.0, 1.0), log_p, 4000)
    assert drawn.shape == (2, 4000)
    share = torch.stack([(drawn[0] == c).float().mean() for c in range(3)])
    torch.testing.assert_close(share, torch.tensor([0.6, 0.3, 0.1]), atol=0.03, rtol=0)
    # top-p 0.5 keeps only the most likely class of each row; 0.85 the two largest of row 0
    assert (OnPolicyModule.sample_answers(_sampler(1.0, 0.5), log_p, 200) == torch.tensor([[0], [2]])).all()
    nucleus = OnPolicyModule.sample_answers(_sampler(1.0, 0.85), log_p, 500)[0]
    assert set(nucleus.tolist()) == {0, 1}
    assert set(OnPolicyModule.sample_answers(_sampler(1.0, 1.0, top_k=2), log_p, 500)[0].tolist()) == {0, 1}
    # a low temperature concentrates on the mode
    assert (OnPolicyModule.sample_answers(_sampler(0.05, 1.0), log_p, 200)[0] == 0).float().mean() > 0.99


def test_grpo_config_checks_reasoning_passes_and_accumulation() -> None:
    with pytest.raises(ConfigError, match="include_curated"):
        compose("grpoz_cot", ["strategy.use_cot=false"])
    with pytest.raises(ConfigError, match="set one of them to 1"):
        compose("grpo_cot", ["trainer.accumulate_grad_batches=2", "strategy.num_iterations=2"])
    with pytest.raises(ConfigError, match="num_iterations"):
        compose("grpo", ["strategy.num_iterations=0"])


@pytest.mark.parametrize(
    ("experiment", "stepping", "optimizer_steps"),
    [
        # 48 clips / batch 8 = 6 rollout batches, 3 optimizer steps each: the LR schedule counts all 18
        ("grpo", ["strategy.num_iterations=3"], 18),
        # one pass, gradients accumulated over 4 rollout batches: steps after batches 4 and 6 (the last)
        ("grpoz_cot", ["trainer.accumulate_grad_batches=4"], 2),
    ],
)
def test_grpo_steps_its_optimizer(
    experiment: str, stepping: list[str], optimizer_steps: int, fast_overrides: list[str]
) -> None:
    overrides = [
        *fast_overrides,
        *stepping,
        "model.init_from=null",
        "strategy.group_size=2",
        "strategy.rollout_max_new_tokens=16",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    ]
    run_dir = train(compose(experiment, overrides))
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == optimizer_steps
    assert last["lr_schedulers"][0]["last_epoch"] == optimizer_steps
    rows = list(csv.DictReader(Path(run_dir / "metrics.csv").read_text().splitlines()))
    clip = [float(r["train/clip_fraction"]) for r in rows if r.get("train/clip_fraction")]
    rewards = [float(r["train/reward"]) for r in rows if r.get("train/reward")]
    assert len(rewards) == 6 and len(clip) == 6  # logged per rollout batch, whatever the stepping
    assert all(0.0 <= c <= 1.0 for c in clip)
    spread = [float(r["train/reward_spread"]) for r in rows if r.get("train/reward_spread")]
    # with reasoning, the spread of the K=2 sampled members' rewards per group; without, no such groups
    assert len(spread) == (6 if experiment.endswith("_cot") else 0) and all(x >= 0.0 for x in spread)


def test_grpo_micro_batches_give_the_whole_batch_gradient(fast_overrides: list[str]) -> None:
    # score_rows splits a pass into forward+backward parts weighted by their share of the members:
    # the gradient and the logged loss must be those of scoring every member at once. An uneven
    # split (3 + 1 of a GRPO_z group of 3 rollouts + the curated member) checks the weights.
    cfg = compose(
        "grpoz_cot",
        [*fast_overrides, "model.init_from=null", "strategy.group_size=3", "strategy.rollout_max_new_tokens=12"],
    )
    torch.manual_seed(0)
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    module.freeze_reference()  # what on_fit_start does for a fully fine-tuned model
    batch = module.encoder.training_batch(bench_clips(1, 2.0, 24, len(cfg.data.classes)))
    rollouts = module.rollouts(batch)
    module.model.eval()  # no dropout: both ways see the same function
    params = [p for p in module.model.parameters() if p.requires_grad]
    results = {}
    for rows in (0, 3, 1):
        module.cfg.strategy.score_rows = rows
        module.model.zero_grad(set_to_none=True)
        loss = module.optimise(rollouts, backward=torch.Tensor.backward, step=None)
        results[rows] = (loss, [p.grad.clone() for p in params if p.grad is not None])
    whole_loss, whole_grads = results[0]
    assert len(whole_grads) > 0 and any(g.abs().sum() > 0 for g in whole_grads)
    for rows in (3, 1):
        loss, grads = results[rows]
        torch.testing.assert_close(loss, whole_loss, rtol=1e-5, atol=1e-7)
        assert len(grads) == len(whole_grads)
        for got, want in zip(grads, whole_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
