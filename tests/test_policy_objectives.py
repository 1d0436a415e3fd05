"""DPO and GRPO math against trl's own implementation on the same tensors, and by hand.

trl computes its losses inside trainer methods; the tests call those methods unbound with a
stand-in ``self`` that carries only the settings they read, and a stand-in model whose outputs
are the per-token log-probs we feed to our functions too. trl is a test-only dependency.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from ambemo.objectives.policy import dpo_loss, group_advantages, grpo_loss, token_logprobs

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")


def _accelerator() -> SimpleNamespace:
    same = lambda x: x  # noqa: E731 - one process: gathering is the identity
    return SimpleNamespace(
        device="cpu",
        gather=same,
        gather_for_metrics=same,
        reduce=lambda x, reduction="sum": x,
        num_processes=1,
        sync_gradients=True,
    )


def test_token_logprobs_by_hand() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[-100, 1, 2]])  # position 0 predicts label 1, position 1 predicts label 2
    logp, mask = token_logprobs(logits, labels)
    torch.testing.assert_close(logp, torch.tensor([[math.log(0.25), math.log(0.1)]]))
    assert mask.tolist() == [[True, True]]


def test_dpo_loss_matches_trl() -> None:
    torch.manual_seed(0)
    pairs, length, beta = 3, 5, 0.1
    per_token = -torch.rand(2 * pairs, length)  # rows: chosen then rejected, as trl orders them
    completion_mask = torch.ones(2 * pairs, length + 1, dtype=torch.long)
    completion_mask[:, 0] = 0  # the first position is prompt
    completion_mask[1, -2:] = 0  # a shorter completion
    shift_mask = completion_mask[:, 1:]
    per_token = per_token * shift_mask
    ref_chosen, ref_rejected = -torch.rand(pairs) * 5, -torch.rand(pairs) * 5

    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros(2 * pairs, length),
        mean_logits=torch.zeros(2 * pairs, length),
        is_top1=torch.zeros(2 * pairs, length, dtype=torch.bool),
    )
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * pairs, length + 1, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, length + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    trl_loss = trl_dpo.DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, return_outputs=False)
    sums = per_token.sum(-1)
    ours, chosen_reward, rejected_reward = dpo_loss(sums[:pairs], sums[pairs:], ref_chosen, ref_rejected, beta)
    torch.testing.assert_close(ours, trl_loss)
    torch.testing.assert_close(chosen_reward.mean().item(), fake._metrics["train"]["rewards/chosen"][0])
    torch.testing.assert_close(rejected_reward.mean().item(), fake._metrics["train"]["rewards/rejected"][0])


def test_group_advantages_match_trl_normalisation() -> None:
    torch.manual_seed(1)
    rewards = torch.randn(4, 5)
    ours = group_advantages(rewards)
    # trl: rewards - group mean, divided by (nanstd of the group + 1e-4)
    mean = rewards.mean(1, keepdim=True)
    std = torch.stack([trl_grpo.nanstd(row) for row in rewards]).unsqueeze(1)
    torch.testing.assert_close(ours, (rewards - mean) / (std + 1e-4))
    # a group with equal rewards carries no signal
    assert torch.equal(group_advantages(torch.ones(1, 4)), torch.zeros(1, 4))


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_matches_trl(beta: float) -> None:
    torch.manual_seed(2)
    rows, length, eps = 6, 7, 0.2
    logp = -torch.rand(rows, length)
    old = logp + 0.3 * torch.randn(rows, length)  # off-policy enough for the clip to bite
    ref = logp + 0.2 * torch.randn(rows, length)
    advantages = torch.randn(rows)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, -3:] = 0

    fake = mock.MagicMock()
    fake.configure_mock(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type="grpo",
        epsilon_low=eps,
        epsilon_high=eps,
        use_vllm=False,
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        accelerator=_accelerator(),
        _metrics={"train": defaultdict(list)},
    )
    fake.model.training = True
    fake.args.use_bias_correction_kl = False
    fake.args.delta = None
    fake._get_per_token_logps_and_entropies.return_value = (logp, torch.zeros(rows, length), None)
    inputs = {
        "prompt_ids": torch.zeros(rows, 2, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.zeros(rows, length, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
    }
    trl_loss = trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)
    ours, _ = grpo_loss(logp, old, advantages, mask, eps, beta, ref)
    torch.testing.assert_close(ours, trl_loss)
