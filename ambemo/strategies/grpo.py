"""GRPO and GRPO_z with the distribution reward (the paper's Eqs. 6-7).

Per utterance: K reasonings sampled from the current policy; each is read out and rewarded
r = -KL(p_human || p_hat) + format_weight * r_format (``ambemo.objectives.rewards``);
advantages are the rewards normalised within the utterance's group; the loss is the clipped,
token-level, length-normalised ratio objective plus beta * KL(pi || pi_ref).

GRPO_z (``include_curated=True``): the curated reasoning joins the group as member K+1 and is
rewarded the same way, from its own read-out. It is not forced to be the best: when a sampled
reasoning reads out closer to the human distribution, the curated one gets a lower (possibly
negative) advantage like any other member, so the policy is pulled towards whichever reasoning
explains the votes best. ``train/curated_best`` logs how often it tops its group.

One optimisation pass per batch of rollouts (pi_old = the sampling policy, so the ratio is 1
in value and carries the gradient, as in trl with ``num_iterations=1``). Assumptions:
``use_cot=True``; the reference policy as in DPO.
"""

from __future__ import annotations

import torch

from ambemo.model.readout import forward_logits, readout_after
from ambemo.objectives.policy import group_advantages, grpo_loss, token_logprobs
from ambemo.objectives.rewards import distribution_reward, format_reward
from ambemo.strategies.base import OnPolicyModule


class GRPOModule(OnPolicyModule):
    """Group-relative policy optimisation on the read-out's distribution reward."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        s = self.cfg.strategy
        target = batch["target"]
        size, k = target.shape[0], s.group_size
        prompts, curated, gen = self.prompt_and_curated(batch)
        _, rollouts, p_rollout = self.sample(gen, k)

        # members of group i: rows i*k .. i*k+k-1 are rollouts, then (GRPO_z) the curated one
        members = [[rollouts.ids[i * k + j] for j in range(k)] for i in range(size)]
        texts = [[rollouts.texts[i * k + j] for j in range(k)] for i in range(size)]
        distributions = p_rollout.view(size, k, -1)
        if s.include_curated:
            with torch.no_grad():
                p_curated = readout_after(self.backbone, gen, curated)
            decode = self.backbone.tokenizer.decode
            for i in range(size):
                members[i].append(curated[i])
                texts[i].append(decode(curated[i]))
            distributions = torch.cat([distributions, p_curated.unsqueeze(1)], dim=1)
        group = len(members[0])
        fmt = torch.tensor([[format_reward(t) for t in row] for row in texts], device=target.device)
        kl_reward = distribution_reward(distributions.reshape(size * group, -1), target.repeat_interleave(group, 0))
        rewards = kl_reward.view(size, group) + s.format_weight * fmt
        advantages = group_advantages(rewards).flatten()

        flat = [m for row in members for m in row]
        seq = self.sequences(
            [prompts[i] for i in range(size) for _ in range(group)],
            flat,
            batch,
            [i for i in range(size) for _ in range(group)],
        )
        logp, mask = token_logprobs(forward_logits(self.model, seq), seq["labels"])
        reference = token_logprobs(self.reference_logits(seq), seq["labels"])[0] if s.beta else None
        loss, mean_kl = grpo_loss(logp, logp.detach(), advantages, mask, s.clip_epsilon, s.beta, reference)
        logs = {
            "train/loss": loss,
            "train/reward": rewards[:, :k].mean(),
            "train/reward_kl": kl_reward.view(size, group)[:, :k].mean(),
            "train/format_reward": fmt[:, :k].mean(),
            "train/policy_kl": mean_kl,
        }
        if s.include_curated:
            logs["train/reward_curated"] = rewards[:, k].mean()
            logs["train/curated_best"] = (rewards.argmax(dim=1) == k).float().mean()
        self.log_dict(logs, prog_bar=True, batch_size=size)
        return loss
