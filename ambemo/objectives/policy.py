"""Preference and policy-gradient objectives (DPO, GRPO) as pure tensor functions.

Conventions follow trl (``trl/trainer/dpo_trainer.py``, ``grpo_trainer.py``), and the tests
check these functions against trl's code on the same tensors:

- log-probabilities are per *completion* token: ``token_logprobs`` shifts logits against labels
  as causal LM training does, with label -100 marking prompt and padding; with a ``temperature``
  they are those of the tempered distribution softmax(logits / T) that rollouts are sampled from
  (trl divides the logits by its ``temperature`` the same way for pi, pi_old and pi_ref);
  ``label_logprobs`` gives the same values from the last hidden states, applying the LM head only
  at the positions that predict a label (the prompt, audio and padding are most of a sequence);
- DPO is the sigmoid loss on summed sequence log-ratios;
- GRPO advantages are group-normalised rewards ``(r - mean) / (std + 1e-4)`` with the unbiased
  std; the GRPO loss is token-level, clipped, plus beta times the k3 estimator of
  KL(pi || pi_ref), averaged over each sequence's tokens and then over sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

#: Vocabulary logits computed at once by ``label_logprobs``: rows per chunk = this // vocabulary
#: size (about 430 rows of Qwen2-Audio's 156k tokens: 0.27 GB in float32).
CHUNK_ELEMENTS = 2**26


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, mask)``, both (B, T-1): log p_T(label_t+1 | prefix) under softmax(logits / temperature),
    and where a label exists."""
    labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def label_logprobs(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs(head(hidden) / temperature, labels)`` with ``head`` applied only at the
    positions that predict a label: ``(logp, mask)``, both (B, T-1), float32.

    ``hidden`` (B, T, H) are the last hidden states and ``head`` the LM head (or, for a model
    without a headless forward, the logits themselves with an identity head). The labelled rows go
    through ``head``, the division by ``temperature`` (log-probs under the sampling distribution)
    and a cross-entropy in chunks of ``CHUNK_ELEMENTS // V`` rows; with a gradient each chunk is
    recomputed in the backward pass instead of keeping its (rows, V) float32 log-softmax, so the
    memory of the log-probs no longer grows with the vocabulary.
    """
    labels = labels[:, 1:]
    mask = labels != -100
    rows, targets = hidden[:, :-1][mask], labels[mask]
    logp = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    if not len(rows):
        return logp, mask

    def chunk_logprobs(states: torch.Tensor, chunk_targets: torch.Tensor) -> torch.Tensor:
        logits = head(states).float()
        if temperature != 1.0:
            logits = logits / temperature
        return -F.cross_entropy(logits, chunk_targets, reduction="none")

    size = max(1, CHUNK_ELEMENTS // head(rows[:1]).shape[-1])
    recompute = torch.is_grad_enabled() and rows.requires_grad
    parts = [
        checkpoint(chunk_logprobs, rows[i : i + size], targets[i : i + size], use_reentrant=False)
        if recompute
        else chunk_logprobs(rows[i : i + size], targets[i : i + size])
        for i in range(0, len(rows), size)
    ]
    logp[mask] = torch.cat(parts)
    return logp, mask


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO on summed sequence log-probs (B,). Returns ``(mean loss, chosen reward,
    rejected reward)``, the rewards being beta * log(pi / pi_ref) (detached, for logging)."""
    chosen = policy_chosen - reference_chosen
    rejected = policy_rejected - reference_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected))
    return loss.mean(), beta * chosen.detach(), beta * rejected.detach()


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages for rewards of shape (num_groups, group_size)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float,
    beta: float = 0.0,
    reference_logp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped token-level GRPO loss, length-normalised per sequence. Shapes: (B, T) for token
    tensors, (B,) for ``advantages``. Returns ``(loss, mean per-token KL to the reference)``."""
    ratio = torch.exp(logp - old_logp)
    advantages = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)
    kl = torch.zeros_like(per_token)
    if beta:
        if reference_logp is None:
            raise ValueError("beta > 0 needs the reference model's log-probs")
        delta = reference_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    mask = mask.to(per_token.dtype)
    loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    mean_kl = ((kl * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return loss, mean_kl.detach()
