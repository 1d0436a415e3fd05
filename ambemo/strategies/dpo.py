"""On-policy DPO with the ambiguity-aware terms (the paper's Eqs. 4-5).

Per utterance: sample ``num_rollouts`` reasonings from the current policy and read out p_hat
for each; the rollout farthest from the human distribution (JS, above ``rejected_min_js``) is
*rejected*, the curated reasoning is *chosen*. Then

    L = DPO_beta(chosen, rejected) + kl_weight * KL(p_human || p_hat) + ce_weight * CE(curated)

with p_hat read at the answer slot of both the chosen and the rejected sequence, so the
read-out also learns on the model's own reasoning, which is what it reads at test time.

Without CoT (``use_cot=False``, the ``dpo`` experiment) the policy *is* the read-out: a rollout
is one emotion drawn from p_hat (rollout temperature / top-p); rejected = the drawn emotion with
the smallest human vote share (if its one-hot answer is more than ``rejected_min_js`` from the
human distribution), chosen = the human majority; the DPO log-probabilities are log p_hat of
those answers. KL and the majority-answer CE are then taken on every utterance of the batch.

Assumptions: the reference policy is the starting weights (LoRA: adapters
disabled; full fine-tuning: a frozen copy taken at the start of fit). Utterances whose rollouts
are all close enough are skipped and counted; a batch with none left takes a zero-gradient step
(not a skipped one, so that DDP ranks stay in step; AdamW's momentum and weight decay still act).
"""

from __future__ import annotations

import torch

from ambemo.metrics.functional import js_divergence
from ambemo.model.readout import LazyLogits, class_logits
from ambemo.objectives.distribution import readout_kl
from ambemo.objectives.policy import dpo_loss
from ambemo.strategies.base import OnPolicyModule


class DPOModule(OnPolicyModule):
    """Curated reasoning vs the policy's worst rollout, plus the KL read-out and CE terms."""

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
        if not keep:
            return self.zero_loss()  # nothing to prefer against (not None: DDP ranks must all step)

        chosen = [curated[i] for i in keep]
        rejected = [rollouts.ids[i * n + int(worst[i])] for i in keep]
        pair = self.sequences([prompts[i] for i in keep] * 2, chosen + rejected, batch, keep * 2)
        outputs = LazyLogits(self.model, pair)  # logits only at the labels and the slot
        logp, mask = outputs.label_logprobs(pair["labels"])
        reference_logp, _ = self.reference(pair, lambda reference: reference.label_logprobs(pair["labels"]))
        k = len(keep)
        policy_seq, reference_seq = logp.sum(-1), reference_logp.sum(-1)
        preference, chosen_reward, rejected_reward = dpo_loss(
            policy_seq[:k], policy_seq[k:], reference_seq[:k], reference_seq[k:], s.beta
        )
        slot = class_logits(outputs.at(pair["slot_index"]), self.backbone.class_token_ids)
        kl = readout_kl(slot, target[keep].repeat(2, 1))
        ce = -logp[:k].sum() / mask[:k].sum()  # token CE of the chosen (curated) reasonings
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
