"""Rewards for on-policy training (GRPO), as pure functions.

r = -KL(p_human || p_hat) + format_weight * r_format (docs/method.md, GRPO). The format reward is
strict on purpose: a lax one is the first thing RL learns to game (empty sections, duplicated
blocks, bare tags, endless text). ``format_reward`` is 1 only for a reasoning whose answer slot
the model wrote itself (a slot forced after a reasoning cut off at the token budget, or ended
early, earns nothing), that ``parse_cot`` accepts (every marker exactly once, in order,
non-empty parts, ending at the answer slot) *and* whose parts each carry real words, contain no
tag-like markup of their own (chat and special tokens such as ``<|im_end|>`` included), and fit
the length bound; otherwise 0.
"""

from __future__ import annotations

import re

import torch

from ambemo.metrics.functional import kl_divergence
from ambemo.model.prompts import parse_cot

_WORD = re.compile(r"[A-Za-z]{2,}")
_MARKUP = re.compile(r"</?\s*[A-Za-z]+\s*>|<\|[^|]*\|>|\[\s*Step\s*\d", re.IGNORECASE)


def format_reward(text: str, *, slot_written: bool, max_words: int = 200, min_words_per_part: int = 2) -> float:
    """1.0 for a well-formed, non-degenerate structured reasoning whose answer slot the model wrote
    (``slot_written``; see ``Reasoning.forced_tokens``), else 0.0."""
    if not slot_written:
        return 0.0
    cot = parse_cot(text)
    if cot is None or len(text.split()) > max_words:
        return 0.0
    for part in (cot.keywords, cot.text_analysis, cot.audio_analysis, cot.synthesis):
        if len(_WORD.findall(part)) < min_words_per_part or _MARKUP.search(part):
            return 0.0
    return 1.0


def distribution_reward(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-KL(target || pred) per row (nats): 0 is a perfect match, more negative is worse."""
    return -kl_divergence(target, pred.clamp_min(1e-12))


def answer_reward(target: torch.Tensor, old_log_p: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    """Reward of emotions drawn from the read-out itself (GRPO without reasoning): p_human(c) / p_old(c).

    ``target`` and ``old_log_p`` are (B, C), ``drawn`` (B, K) class indices sampled from p_old:
    p_old must be the distribution they were actually drawn with (the tempered read-out), else
    the identity below does not hold.
    -KL(p_human || p_hat) cannot rank the members of such a group (it does not depend on which
    emotion was drawn), but this importance-weighted reward does, and its score-function gradient
    E_{c ~ p_old}[r(c) grad log p_hat(c)] = sum_c p_human(c) grad log p_hat(c) = -grad KL(p_human || p_hat)
    at p_hat = p_old: the same ambiguity-aware objective, estimated from K draws.
    """
    return target.gather(1, drawn) / old_log_p.exp().gather(1, drawn)
