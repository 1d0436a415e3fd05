"""On-policy DPO with the ambiguity-aware terms (the paper's Eqs. 4-5).

Per utterance: sample ``num_rollouts`` reasonings from the current policy and read out p_hat
for each; the rollout farthest from the human distribution (JS, above ``rejected_min_js``) is
*rejected*, the curated reasoning is *chosen*. Then

    L = DPO_beta(chosen, rejected) + kl_weight * KL(p_human || p_hat) + ce_weight * CE(curated)

with p_hat read at the answer slot of the curated reasoning of *every* utterance (the KL and CE
terms are the paper's total loss, not conditional on a pair) and of each rejected rollout, so the
read-out also learns on the model's own reasoning, which is what it reads at test time. A
rejected rollout's forced answer slot (reasoning cut off before it) is read but not scored by
the DPO term: the policy did not sample those tokens. The DPO log-probs are the policy's own
(temperature 1, as trl's DPO): the rollout temperature only decides which sequence is rejected.

Without CoT (``use_cot=False``, the ``dpo`` experiment) the policy *is* the read-out: a rollout
is one emotion drawn from p_hat (rollout temperature / top-p); rejected = the drawn emotion with
the smallest human vote share (if its one-hot answer is more than ``rejected_min_js`` from the
human distribution), chosen = the human majority; the DPO log-probabilities are log p_hat of
those answers. KL and the majority-answer CE are then taken on every utterance of the batch.

Assumptions: the reference policy is the starting weights (LoRA: adapters
disabled; full fine-tuning: a frozen copy taken at the start of fit). Utterances whose rollouts
are all close enough get no DPO term (counted in ``train/dpo_skipped``) but keep their KL and CE
terms, so every DDP rank steps on every batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig

from ambemo.config import ConfigError
from ambemo.metrics.functional import js_divergence
from ambemo.model.readout import LazyLogits, class_logits
from ambemo.objectives.distribution import readout_kl
from ambemo.objectives.policy import dpo_loss
from ambemo.registry import STRATEGIES
from ambemo.strategies.base import OnPolicyConfig, OnPolicyModule, SupervisedLossConfig, labelled_logprobs


@dataclass
class DPOConfig(OnPolicyConfig, SupervisedLossConfig):
    """DPO's settings: the rollouts a rejected sequence is chosen from, and the preference loss."""

    num_rollouts: int = 4
    """Rollouts sampled per utterance to find a rejected one (reasonings; without CoT, emotions
    drawn from the read-out p_hat)."""
    rejected_min_js: float = 0.05
    """The worst rollout is rejected only if its JS (bits) to the human distribution exceeds this;
    utterances without one are skipped and counted (``train/dpo_skipped``)."""
    beta: float = 0.1
    """Inverse temperature of the preference loss (trl's DPO ``beta``)."""

    ROLLOUTS: ClassVar[str] = "num_rollouts"
    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {"rejected_min_js": (0, True), "beta": (0, True)}

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.strategy.num_rollouts < 1:
            raise ConfigError("'strategy.num_rollouts' must be >= 1: DPO needs at least one rollout to reject")


@STRATEGIES.register("dpo")
class DPOModule(OnPolicyModule):
    """Curated reasoning vs the policy's worst rollout, plus the KL read-out and CE terms."""

    settings = DPOConfig
    objective_metric = "train/reward_margin"

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if not self.use_cot:
            return self.answer_step(batch)
        s = self.cfg.strategy
        target = batch["target"]
        prompts, curated, gen = self.prompt_and_curated(batch)
        n = s.num_rollouts
        _, rollouts, p_rollout = self.sample(gen, n)
        js = js_divergence(p_rollout, target.repeat_interleave(n, 0)).view(-1, n)
        worst_js, worst = js.max(dim=1)
        keep = (worst_js > s.rejected_min_js).nonzero().flatten().tolist()
        size = target.shape[0]
        self.log_dict(
            {
                "train/rollout_js": js.mean(),
                "train/rollout_format_ok": rollouts.format_ok.float().mean(),
                "train/dpo_skipped": torch.tensor(float(size - len(keep))),
            },
            batch_size=size,
        )

        # rows: every utterance's curated reasoning (chosen; the KL and CE terms of the paper's
        # total loss apply to all of them), then the rejected rollout of each utterance that has one
        rejected = [i * n + int(worst[i]) for i in keep]
        seq = self.sequences(
            prompts + [prompts[i] for i in keep],
            curated + [rollouts.ids[r] for r in rejected],
            batch,
            list(range(size)) + keep,
            forced_tokens=[0] * size + [rollouts.forced_tokens[r] for r in rejected],
        )
        outputs = LazyLogits(self.model, seq)  # vocabulary logits only at the labels and the slots
        logp, mask = labelled_logprobs(outputs, seq["labels"])
        slot = class_logits(outputs.at(seq["slot_index"]), self.backbone.class_token_ids)
        kl = readout_kl(slot, torch.cat([target, target[keep]]))
        ce = -logp[:size].sum() / mask[:size].sum()  # token CE of the curated reasonings
        if keep:
            pair_rows = keep + list(range(size, size + len(keep)))
            pair = {key: value[pair_rows] for key, value in seq.items()}
            reference_logp, _ = self.reference(pair, lambda reference: labelled_logprobs(reference, pair["labels"]))
            policy_seq, reference_seq = logp[pair_rows].sum(-1), reference_logp.sum(-1)
            k = len(keep)
            preference, chosen_reward, rejected_reward = dpo_loss(
                policy_seq[:k], policy_seq[k:], reference_seq[:k], reference_seq[k:], s.beta
            )
        else:  # nothing to prefer against: the KL and CE terms still train (every DDP rank steps)
            preference = logp.new_zeros(())
            chosen_reward = rejected_reward = torch.zeros(0, device=logp.device)
        loss = preference + s.kl_weight * kl + s.ce_weight * ce
        self.log_preference(loss, preference, kl, ce, chosen_reward, rejected_reward)
        return loss

    def answer_step(self, batch: dict) -> torch.Tensor:
        """DPO between answers, without reasoning: majority emotion vs the worst drawn one."""
        s = self.cfg.strategy
        target = batch["target"]
        log_p = self.answer_log_probs(LazyLogits(self.model, batch), batch)
        reference_log_p = self.reference(batch, lambda reference: self.answer_log_probs(reference, batch))
        drawn = self.sample_answers(log_p, s.num_rollouts)
        worst = drawn.gather(1, target.gather(1, drawn).argmin(dim=1, keepdim=True)).squeeze(1)
        majority = target.argmax(dim=1)
        one_hot = torch.nn.functional.one_hot(worst, target.shape[1]).to(target.dtype)
        keep = (worst != majority) & (js_divergence(one_hot, target) > s.rejected_min_js)
        size = target.shape[0]
        self.log_dict(
            {
                "train/rollout_js": js_divergence(log_p.detach().exp(), target).mean(),
                "train/dpo_skipped": (~keep).sum().float(),
            },
            batch_size=size,
        )

        def pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return values[keep].gather(1, index[keep, None]).squeeze(1)

        preference, chosen_reward, rejected_reward = dpo_loss(
            pick(log_p, majority),
            pick(log_p, worst),
            pick(reference_log_p, majority),
            pick(reference_log_p, worst),
            s.beta,
        )
        if not keep.any():
            preference = log_p.sum() * 0.0  # no pair this batch: the read-out terms still train
        kl = readout_kl(log_p, target)  # log-softmax logits: the same KL as on the raw class logits
        ce = torch.nn.functional.nll_loss(log_p, majority)
        loss = preference + s.kl_weight * kl + s.ce_weight * ce
        self.log_preference(loss, preference, kl, ce, chosen_reward, rejected_reward)
        return loss

    def log_preference(
        self,
        loss: torch.Tensor,
        preference: torch.Tensor,
        kl: torch.Tensor,
        ce: torch.Tensor,
        chosen_reward: torch.Tensor,
        rejected_reward: torch.Tensor,
    ) -> None:
        """The DPO training curves: loss terms, implicit rewards beta*log(pi/pi_ref), margin, accuracy."""
        margin = chosen_reward - rejected_reward
        logs = {"train/loss": loss, "train/dpo_loss": preference, "train/kl": kl, "train/ce": ce}
        if margin.numel():
            logs |= {
                "train/reward_chosen": chosen_reward.mean(),
                "train/reward_rejected": rejected_reward.mean(),
                "train/reward_margin": margin.mean(),
                "train/reward_accuracy": (margin > 0).float().mean(),
            }
        self.log_dict(logs, prog_bar=True, batch_size=max(1, margin.numel()))
