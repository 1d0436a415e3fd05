"""Supervised fine-tuning with the ambiguity-aware read-out loss (the paper's Eq. 3).

    L = ce_weight * CE(curated reasoning tokens) + kl_weight * KL(p_human || p_hat)
        [+ answer_ce_weight * CE(majority class token at the slot)]

Features: structured-CoT targets (``use_cot=True``) or direct answers (``use_cot=False``, the
read-out alone is trained); the KL ablation (``kl_weight=0`` with ``answer_ce_weight=1``).
Assumptions: every training clip has a curated reasoning when ``use_cot=True`` (a clip without
one is an error, not a silent skip); p_hat is taken at the answer slot of the *curated*
reasoning during training and of the *generated* one in evaluation.
"""

from __future__ import annotations

import torch

from ambemo.model.readout import class_logits, forward_logits, gather_rows
from ambemo.objectives.distribution import majority_cross_entropy, readout_kl, token_cross_entropy
from ambemo.strategies.base import EmotionModule


class SFTModule(EmotionModule):
    """Token CE on the curated reasoning plus lambda * KL at the answer slot."""

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        s = self.cfg.strategy
        logits = forward_logits(self.model, batch)
        slot = gather_rows(logits, batch["slot_index"])
        kl = readout_kl(class_logits(slot, self.backbone.class_token_ids), batch["target"])
        loss = s.kl_weight * kl
        logs = {"train/kl": kl}
        if self.use_cot and s.ce_weight:
            ce = token_cross_entropy(logits, batch["labels"])
            loss = loss + s.ce_weight * ce
            logs["train/ce"] = ce
        if s.answer_ce_weight:
            answer = majority_cross_entropy(slot, batch["target"], self.backbone.class_token_ids)
            loss = loss + s.answer_ce_weight * answer
            logs["train/answer_ce"] = answer
        logs["train/loss"] = loss
        self.log_dict(logs, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss
