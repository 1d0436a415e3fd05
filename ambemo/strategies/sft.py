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

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig

from ambemo.config import ConfigError
from ambemo.model.generation import generate_reasoning
from ambemo.model.readout import class_logits, forward_hidden, forward_logits, gather_rows, output_head, readout_after
from ambemo.objectives.distribution import (
    majority_cross_entropy,
    readout_kl,
    target_token_cross_entropy,
    token_cross_entropy,
)
from ambemo.registry import STRATEGIES
from ambemo.strategies.base import EmotionModule, SupervisedLossConfig


def corrupt_reasoning(batch: dict, rate: float, slot_length: int, ordinary_ids: torch.Tensor) -> torch.Tensor:
    """Input ids with a ``rate`` fraction of reasoning tokens replaced by random ordinary tokens.

    Only tokens the CE is computed on (the reasoning) are touched, never the prompt or the
    answer slot the read-out sits on, and never the special tokens.
    """
    ids = batch["input_ids"]
    positions = torch.arange(ids.shape[1], device=ids.device)
    reasoning = (batch["labels"] != -100) & (positions[None, :] <= batch["slot_index"][:, None] - slot_length)
    replace = reasoning & (torch.rand(ids.shape, device=ids.device) < rate)
    ordinary_ids = ordinary_ids.to(ids.device)
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), ids.shape, device=ids.device)]
    return torch.where(replace, random_ids, ids)


@dataclass
class SFTConfig(SupervisedLossConfig):
    """SFT's settings: the supervised terms' weights, and its variants' extra terms."""

    answer_ce_weight: float = 0.0
    """Weight of a hard cross-entropy on the majority class's token at the answer slot (plain-SFT
    baseline; the KL ablation uses it so the model still learns to name an emotion there)."""
    own_readout_weight: float = 0.0
    """Weight of a second KL(p_human || p_hat), read after the model's *own* greedy reasoning
    (generated each step without gradient; the read-out forward has gradient). The read-out then
    learns how far to trust the reasoning it will read at test time. 0 = the paper's SFT."""
    cot_token_dropout: float = 0.0
    """Training: replace this fraction of the curated reasoning's *input* tokens by random tokens
    (the CE targets stay the true tokens). The read-out then learns not to trust the reasoning
    blindly: at test time it reads the model's own, imperfect reasoning, not the curated one."""

    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {"answer_ce_weight": (0, True), "own_readout_weight": (0, True)}

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        if not 0.0 <= cfg.strategy.cot_token_dropout < 1.0:
            raise ConfigError("'strategy.cot_token_dropout' must be in [0, 1)")


@STRATEGIES.register("sft")
class SFTModule(EmotionModule):
    """Token CE on the curated reasoning plus lambda * KL at the answer slot."""

    settings = SFTConfig
    objective_metric = "train/kl"

    @functools.cached_property
    def ordinary_token_ids(self) -> torch.Tensor:
        """Every non-special token id: what ``cot_token_dropout`` draws replacements from."""
        tokenizer = self.backbone.tokenizer
        # added tokens include the audio placeholders, which must never appear in the text
        special = (
            set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder) | set(self.backbone.audio_token_ids)
        )
        return torch.tensor([i for i in range(len(self.backbone.tokenizer)) if i not in special])

    def own_readout_kl(self, batch: dict) -> torch.Tensor:
        """KL at the answer slot after the model's own greedy reasoning (see ``own_readout_weight``)."""
        _, _, prompts = self.prompt_and_curated(batch)
        self.model.eval()  # generate as in evaluation: no dropout, greedy
        reasoning = generate_reasoning(
            self.backbone, prompts, self.cfg.strategy.max_new_tokens, engine=self.cfg.model.rollout_engine
        )
        self.model.train()
        p_hat = readout_after(self.backbone, prompts, reasoning.ids)
        return readout_kl(torch.log(p_hat.clamp_min(1e-12)), batch["target"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        s = self.cfg.strategy
        if self.use_cot and s.cot_token_dropout:
            slot = len(self.backbone.answer_slot_ids)
            corrupted = corrupt_reasoning(batch, s.cot_token_dropout, slot, self.ordinary_token_ids)
            batch = {**batch, "input_ids": corrupted}
        # The LM head runs only where a logit is used (the slot and the reasoning tokens): the
        # same loss as on full (B, T, V) logits without computing most of them.
        hidden = forward_hidden(self.model, batch)
        if hidden is None:  # no headless forward for this family: full logits, same loss
            logits = forward_logits(self.model, batch)
            slot = gather_rows(logits, batch["slot_index"])
        else:
            head = output_head(self.model)
            slot = head(gather_rows(hidden, batch["slot_index"]))
        kl = readout_kl(class_logits(slot, self.backbone.class_token_ids), batch["target"])
        loss = s.kl_weight * kl
        logs = {"train/kl": kl}
        if self.use_cot and s.ce_weight:
            if hidden is None:
                ce = token_cross_entropy(logits, batch["labels"])
            else:
                ce = target_token_cross_entropy(hidden, head.weight, batch["labels"])
            loss = loss + s.ce_weight * ce
            logs["train/ce"] = ce
        if self.use_cot and s.own_readout_weight:
            own = self.own_readout_kl(batch)
            loss = loss + s.own_readout_weight * own
            logs["train/own_kl"] = own
        if s.answer_ce_weight:
            answer = majority_cross_entropy(slot, batch["target"], self.backbone.class_token_ids)
            loss = loss + s.answer_ce_weight * answer
            logs["train/answer_ce"] = answer
        logs["train/loss"] = loss
        self.log_dict(logs, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss
