"""The ambiguity-aware objective and the token losses, as pure functions on tensors.

``readout_kl`` is KL(p_human || p_model) with p_model = softmax(class logits): the paper's
L_dist written as the forward KL its sum defines (the paper's Eq. 2 writes KL(p_model || p_human)
but sums p_human log(p_human / p_model); docs/method.md, "Objectives").
Its gradient w.r.t. the logits is ``softmax(logits) - p_human``, the same as soft-label
cross-entropy, which differs from it only by the constant entropy of p_human.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def readout_kl(class_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target || softmax(class_logits)), in nats. Shapes (B, C)."""
    log_q = F.log_softmax(class_logits.float(), dim=-1)
    return (torch.xlogy(target, target) - target * log_q).sum(-1).mean()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged over labelled tokens (label -100 = ignored).

    ``logits`` (B, T, V) at position t predict ``labels`` at t + 1, as in causal LM training.
    """
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)


def target_token_cross_entropy(hidden: torch.Tensor, head_weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``token_cross_entropy(hidden @ head_weight.T, labels)`` with the vocabulary logits computed
    only at the positions that predict a label: the prompt, the audio tokens and the padding (most
    of a sequence) never get a (V,)-wide logit row. ``hidden`` (B, T, H), ``head_weight`` (V, H)."""
    predicts = labels[:, 1:] != -100
    logits = hidden[:, :-1][predicts] @ head_weight.T
    return F.cross_entropy(logits.float(), labels[:, 1:][predicts])


def majority_cross_entropy(slot_logits: torch.Tensor, target: torch.Tensor, class_token_ids: list[int]) -> torch.Tensor:
    """Hard-label CE at the answer slot: the majority class's token over the whole vocabulary.

    What plain SFT on "reasoning + answer word" trains; the KL ablation uses it instead of the
    distribution loss so the no-KL model still learns to name an emotion at the slot.
    """
    ids = torch.as_tensor(class_token_ids, device=slot_logits.device)
    return F.cross_entropy(slot_logits.float(), ids[target.argmax(-1)])
