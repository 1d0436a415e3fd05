"""GRPO and GRPO_z with the distribution reward (the paper's Eqs. 6-7).

Per utterance: K reasonings sampled from the current policy; each is read out and rewarded
r = -KL(p_human || p_hat) + format_weight * r_format (``ambemo.objectives.rewards``);
advantages are the rewards normalised within the utterance's group; the loss is the clipped,
token-level, length-normalised ratio objective plus ref_kl_weight * KL(pi || pi_ref) (trl's ``beta``).

Every log-prob (pi, pi_old, pi_ref) is taken under the distribution the rollouts were sampled
from: softmax(logits / rollout_temperature), as trl does; top-k / top-p are refused for GRPO
(config check), and no sampling setting comes from the checkpoint's generation config. A
rollout cut off before the answer slot is read after a forced slot (a line break and the slot,
as in the curated reasoning); those appended tokens are not the policy's samples, so they are
left out of the loss, and the member earns no format reward.

GRPO_z (``include_curated=True``): the curated reasoning joins the group as member K+1, read out
in eval mode like the K rollouts. ``curated_reward`` says how it is rewarded:
``group_max`` (the default, the paper's "the ground-truth reasoning trajectory consistently
receives the highest reward"): its own reward raised to the best reward of its group, so its
advantage is the group's highest (tied when a rollout does as well); ``own``: rewarded from its
own read-out like any member, so it gets a lower, possibly negative, advantage when a sampled
reasoning reads out closer to the human distribution. ``train/curated_best`` logs how often its
own reward is the group's highest (ties included), whatever the rule; ``train/reward_curated``
the reward it is trained with, ``train/reward_curated_own`` its own; ``train/reward_spread`` is the
within-group standard deviation of the sampled members' rewards. The policy did not sample the curated member, so
its importance ratio is pi / pi_old of a sequence drawn from the curator, not from pi_old: at
the first pass the ratio is 1 in value and its gradient is the advantage times the gradient of
the curated reasoning's log-likelihood (an advantage-weighted SFT term, length-normalised like
the rest); later passes clip it like any member's. There is no off-policy correction for the
curator's own probabilities (unknown), unlike LUFFY's regularised importance sampling.

Without CoT (``use_cot=False``, the ``grpo`` experiment) the policy is the read-out itself and
a trajectory is one emotion c drawn from q = softmax(log p_hat / rollout_temperature). -KL(p_human
|| p_hat) would be the same for every member of a group (no reasoning differs between them), so
each member is rewarded r(c) = p_human(c) / q(c) (``objectives.rewards.answer_reward``), q being
the probability it was actually drawn with: its policy gradient E_c~q[r(c) grad log p_hat(c)] is
exactly -grad KL(p_human || p_hat), the same ambiguity-aware objective, estimated from samples.
The identity needs every class to be drawable (q > 0 wherever p_human > 0): hence no top-k / top-p.
``train/reward`` logs -KL(p_human || p_hat).

Several optimisation passes per batch of rollouts (``num_iterations``, trl's name): the
rollouts, rewards, advantages and reference log-probs are computed once; each pass recomputes
the policy's log-probs, takes an optimizer step, and pi_old stays the sampling policy (pass 0's
log-probs, detached: the weights have not moved yet). With one pass the ratio is 1 in value and
carries the gradient, as in trl with ``num_iterations=1``. The module steps its optimizer
itself (manual optimisation), so gradient clipping (``trainer.gradient_clip_val``) and, with one
pass, gradient accumulation over rollout batches (``trainer.accumulate_grad_batches``) happen here.
Each pass can score the rollouts in micro-batches of ``score_rows`` members, a forward and a
backward each, their losses weighted by their share of the members: the loss is a mean over
members, so the gradient is the one of the whole batch, while the activations held at once (one
decoder layer's, recomputed under gradient checkpointing, for every member of every group) shrink
with the micro-batch. Without CoT a member is one answer of its prompt's single forward, so that
path always scores whole.
Assumptions: the reference policy as in DPO; several passes and accumulation exclude each other
(a pass needs the whole accumulated batch; checked at start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig

from ambemo.config import ConfigError
from ambemo.model.backbone import Backbone
from ambemo.model.readout import LazyLogits, readout_after
from ambemo.objectives.policy import group_advantages, grpo_loss
from ambemo.objectives.rewards import answer_reward, distribution_reward, format_reward
from ambemo.registry import STRATEGIES
from ambemo.strategies.base import OnPolicyConfig, OnPolicyModule, labelled_logprobs


@dataclass
class RolloutBatch:
    """What every optimisation pass over one batch of rollouts shares."""

    score: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    """``score(rows=slice(None))``: policy log-probs and mask of the tokens of the members ``rows``
    (a slice of the B*G; all by default), (rows, T), with gradient."""
    advantages: torch.Tensor
    """Group-normalised advantage per member, (B*G,)."""
    reference_logp: torch.Tensor | None
    """Reference policy's log-probs of the same tokens (None when ref_kl_weight = 0)."""
    logs: dict[str, torch.Tensor]
    """Rollout statistics (rewards) to log once."""
    divisible: bool = True
    """Whether ``score`` may be called on parts of the members (micro-batches of ``score_rows``)."""


@dataclass
class GRPOConfig(OnPolicyConfig):
    """GRPO's settings (GRPO_z with ``include_curated``): the groups, their rewards, the clipped objective."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"curated_reward": ("group_max", "own")}
    # before the settings were split by strategy, one ``beta`` was DPO's temperature and GRPO's KL weight
    RENAMED: ClassVar[dict[str, str]] = {"beta": "ref_kl_weight"}
    ROLLOUTS: ClassVar[str] = "group_size"

    group_size: int = 4
    """K sampled trajectories per utterance (GRPO_z adds the curated one as member K+1)."""
    include_curated: bool = False
    """GRPO_z: the curated reasoning joins each group as member K+1 (rewarded by ``curated_reward``)."""
    curated_reward: str = "group_max"
    """GRPO_z: the curated member's reward. ``group_max`` (the paper: it "consistently receives the
    highest reward"): its own reward raised to the best of its group, so its advantage is never
    below any sampled member's; ``own``: rewarded from its own read-out like any member (it can
    then get a negative advantage when a rollout reads out closer to the human distribution)."""
    ref_kl_weight: float = 0.1
    """Weight of KL(pi || pi_ref), the policy's divergence from the reference (trl's GRPO ``beta``;
    ``strategy.beta`` is read as this key, with a warning, until the next release)."""
    clip_epsilon: float = 0.2
    """The ratio pi / pi_old is clipped to [1 - eps, 1 + eps]."""
    num_iterations: int = 1
    """Optimisation passes (optimizer steps) per batch of rollouts, each against the same pi_old
    (trl's ``num_iterations``, the PPO epochs). >1 reuses the costly rollouts; the clip then
    matters. The LR schedule counts every pass."""
    format_weight: float = 0.1
    """Weight of the format reward (lambda_3); reward = -KL(p_human || p_hat) + w * r_format.
    Unused without CoT (no text to check)."""
    score_rows: int = 0
    """Members scored per forward and backward in each pass (0 = all at once). Smaller lowers the
    step's peak memory (activations scale with the rows) with the same gradient, at some speed."""

    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {
        "group_size": (1, True),
        "score_rows": (0, True),
        "ref_kl_weight": (0, True),
        "clip_epsilon": (0, True),
        "format_weight": (0, True),
    }

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        s = cfg.strategy
        if s.include_curated and not s.use_cot:
            raise ConfigError(
                "strategy.include_curated=true (GRPO_z) adds the curated reasoning to each group: it needs "
                "strategy.use_cot=true"
            )
        if s.rollout_top_p < 1.0 or s.rollout_top_k > 0:
            raise ConfigError(
                f"strategy.rollout_top_p={s.rollout_top_p} / rollout_top_k={s.rollout_top_k}: GRPO takes its "
                "importance ratio and KL under the sampling distribution (logits / rollout_temperature); a "
                "truncated one would change both and, without CoT, break the reward's gradient identity. Set "
                "strategy.rollout_top_p=1.0 and strategy.rollout_top_k=0 (control diversity with rollout_temperature)"
            )
        if s.num_iterations < 1:
            raise ConfigError("'strategy.num_iterations' must be >= 1 (optimisation passes per batch of rollouts)")
        if cfg.trainer.accumulate_grad_batches > 1 and s.num_iterations > 1:
            raise ConfigError(
                f"strategy.num_iterations={s.num_iterations} optimisation passes need the whole rollout batch "
                f"in each step, so they cannot accumulate gradients over trainer.accumulate_grad_batches="
                f"{cfg.trainer.accumulate_grad_batches} batches: set one of them to 1"
            )
        members = s.group_size + int(s.include_curated)
        if members < 2:
            raise ConfigError(
                f"GRPO groups have {members} member(s) (strategy.group_size={s.group_size}"
                f"{' + the curated one' if s.include_curated else ''}): advantages are relative to the "
                "group, so set strategy.group_size >= 2 (or >= 1 with strategy.include_curated=true)"
            )


@STRATEGIES.register("grpo")
class GRPOModule(OnPolicyModule):
    """Group-relative policy optimisation on the read-out's distribution reward."""

    settings = GRPOConfig
    objective_metric = "train/reward"

    def __init__(self, cfg: DictConfig, backbone: Backbone) -> None:
        super().__init__(cfg, backbone)
        self.automatic_optimization = False  # several optimizer steps per batch of rollouts
        self.accumulate = int(cfg.trainer.accumulate_grad_batches)  # the Trainer gets 1 (manual optimisation)
        self.optimizer_steps_per_batch = cfg.strategy.num_iterations / self.accumulate

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # one pass: gradients may accumulate over rollout batches; several passes: a step each
        several = self.cfg.strategy.num_iterations > 1
        step_now = several or (batch_idx + 1) % self.accumulate == 0 or self.trainer.is_last_batch
        optimizer = self.optimizers()
        return self.optimise(
            self.rollouts(batch),
            backward=lambda loss: self.manual_backward(loss if several else loss / self.accumulate),
            step=(lambda: self.optimizer_step_and_schedule(optimizer)) if step_now else None,
        )

    def rollouts(self, batch: dict) -> RolloutBatch:
        """Sample and reward this batch's groups (reasonings, or emotions without CoT)."""
        return self.reasoning_rollouts(batch) if self.use_cot else self.answer_rollouts(batch)

    def optimise(
        self,
        rollouts: RolloutBatch,
        backward: Callable[[torch.Tensor], None],
        step: Callable[[], None] | None,
    ) -> torch.Tensor:
        """``num_iterations`` passes over one batch of rollouts: loss, ``backward``, ``step``
        (None: accumulate). Pure of the Trainer, so a benchmark can drive it with plain torch."""
        s = self.cfg.strategy
        members = len(rollouts.advantages)
        size = s.score_rows if s.score_rows and rollouts.divisible else members
        parts = [slice(i, min(i + size, members)) for i in range(0, members, size)]
        old_logp: list[torch.Tensor] = []  # pi_old per part: the weights that sampled (pass 0, nothing stepped yet)
        for _ in range(s.num_iterations):
            loss, mean_kl, ratios = 0.0, 0.0, []
            for i, rows in enumerate(parts):
                logp, mask = rollouts.score(rows)
                if len(old_logp) == i:
                    old_logp.append(logp.detach())
                reference = None if rollouts.reference_logp is None else rollouts.reference_logp[rows]
                part_loss, part_kl = grpo_loss(
                    logp, old_logp[i], rollouts.advantages[rows], mask, s.clip_epsilon, s.ref_kl_weight, reference
                )
                share = (rows.stop - rows.start) / members  # the loss is a mean over members
                backward(part_loss * share)  # x 1.0 (one part) leaves the gradient as it was
                loss, mean_kl = loss + part_loss.detach() * share, mean_kl + part_kl * share
                ratios.append(torch.exp(logp.detach() - old_logp[i])[mask])
            if step is not None:
                step()
        ratio = torch.cat(ratios)
        clipped = ((ratio - 1).abs() > s.clip_epsilon).float().mean() if ratio.numel() else ratio.sum()
        logs = {"train/loss": loss, "train/policy_kl": mean_kl, "train/clip_fraction": clipped}
        self.log_dict(logs | rollouts.logs, prog_bar=True, batch_size=len(rollouts.advantages))
        return loss

    def optimizer_step_and_schedule(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip (``trainer.gradient_clip_val``), step, zero the gradients, advance the LR schedule."""
        clip = self.cfg.trainer.gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad()
        self.lr_schedulers().step()

    def reasoning_rollouts(self, batch: dict) -> RolloutBatch:
        """K sampled reasonings per utterance (+ the curated one for GRPO_z), rewarded by their read-out."""
        s = self.cfg.strategy
        target = batch["target"]
        size, k = target.shape[0], s.group_size
        prompts, curated, gen = self.prompt_and_curated(batch)
        _, rollouts, p_rollout = self.sample(gen, k)

        # members of group i: rows i*k .. i*k+k-1 are rollouts, then (GRPO_z) the curated one
        members = [[rollouts.ids[i * k + j] for j in range(k)] for i in range(size)]
        texts = [[rollouts.texts[i * k + j] for j in range(k)] for i in range(size)]
        forced = [[rollouts.forced_tokens[i * k + j] for j in range(k)] for i in range(size)]
        distributions = p_rollout.view(size, k, -1)
        if s.include_curated:
            with torch.no_grad(), self.evaluating():  # read like the rollouts: no dropout
                p_curated = readout_after(self.backbone, gen, curated)
            decode = self.backbone.tokenizer.decode
            for i in range(size):
                members[i].append(curated[i])
                texts[i].append(decode(curated[i]))
                forced[i].append(0)
            distributions = torch.cat([distributions, p_curated.unsqueeze(1)], dim=1)
        group = len(members[0])
        fmt = torch.tensor(
            [
                [format_reward(t, slot_written=not f) for t, f in zip(text_row, forced_row, strict=True)]
                for text_row, forced_row in zip(texts, forced, strict=True)
            ],
            device=target.device,
        )
        kl_reward = distribution_reward(distributions.reshape(size * group, -1), target.repeat_interleave(group, 0))
        rewards = kl_reward.view(size, group) + s.format_weight * fmt
        logs = {
            "train/reward": rewards[:, :k].mean(),
            "train/reward_kl": kl_reward.view(size, group)[:, :k].mean(),
            "train/format_reward": fmt[:, :k].mean(),
        }
        if k > 1:  # what the policy can prefer among its own samples: their rewards' spread in a group
            logs["train/reward_spread"] = rewards[:, :k].std(dim=1).mean()
        if s.include_curated:
            # on its own merit, whatever the rule: does the curated reasoning read out best?
            logs["train/curated_best"] = (rewards[:, k] >= rewards[:, :k].max(dim=1).values).float().mean()
            logs["train/reward_curated_own"] = rewards[:, k].mean()
            if s.curated_reward == "group_max":
                rewards[:, k] = rewards.max(dim=1).values
            logs["train/reward_curated"] = rewards[:, k].mean()

        seq = self.sequences(
            [prompts[i] for i in range(size) for _ in range(group)],
            [m for row in members for m in row],
            batch,
            [i for i in range(size) for _ in range(group)],
            forced_tokens=[f for row in forced for f in row],
        )
        temperature = s.rollout_temperature  # the distribution the rollouts were drawn from
        labels = seq["labels"]
        reference = None
        if s.ref_kl_weight:
            reference = self.reference(seq, lambda ref: labelled_logprobs(ref, labels, temperature)[0])

        def score(rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
            part = {k: v[rows] for k, v in seq.items()}  # views: no copy
            return labelled_logprobs(LazyLogits(self.model, part), labels[rows], temperature)

        return RolloutBatch(
            score=score,
            advantages=group_advantages(rewards).flatten(),
            reference_logp=reference,
            logs=logs,
        )

    def answer_rollouts(self, batch: dict) -> RolloutBatch:
        """Without reasoning: K emotions drawn from q (p_hat at the rollout temperature), rewarded p_human(c) / q(c)."""
        s = self.cfg.strategy
        target = batch["target"]
        with torch.no_grad():  # the sampling policy: no graph (each pass's ``score`` has its own)
            log_p = self.answer_log_probs(LazyLogits(self.model, batch), batch)
        sampling = self.answer_sampling_probs(log_p)
        drawn = torch.multinomial(sampling, s.group_size, replacement=True)  # (B, K)
        rewards = answer_reward(target, sampling.log(), drawn)
        reference = None
        if s.ref_kl_weight:
            reference_log_p = self.reference(batch, lambda ref: self.answer_log_probs(ref, batch))
            reference = reference_log_p.gather(1, drawn).reshape(-1, 1)

        def score(rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
            logp = self.answer_log_probs(LazyLogits(self.model, batch), batch).gather(1, drawn).reshape(-1, 1)[rows]
            return logp, torch.ones_like(logp, dtype=torch.bool)

        return RolloutBatch(
            score=score,
            advantages=group_advantages(rewards).flatten(),
            reference_logp=reference,
            divisible=False,  # one forward of the prompts gives every member's log-prob
            logs={
                # the objective itself (what rises), and the raw importance-weighted reward
                "train/reward": distribution_reward(log_p.exp(), target).mean(),
                "train/answer_reward": rewards.mean(),
            },
        )
