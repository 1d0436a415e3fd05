"""The distribution read-out.

p_hat = softmax over the LM-head logits of the class names' first tokens at the answer slot's
last token (docs/method.md, "Read-out"). Nothing is parsed from text, so a distribution always
exists and is differentiable. The reasoning that precedes the slot is generated in
``ambemo.model.generation``; this module reads the slot's logits (``LazyLogits`` keeps the full
vocabulary logits out of memory) after a prompt or after a prompt and its reasoning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ambemo.model.backbone import Backbone
from ambemo.model.inputs import left_padded, unpadded_prompts

AUDIO_KEYS = ("input_features", "feature_attention_mask")


def gather_rows(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``logits[b, index[b]]`` for each row: (B, T, V) -> (B, V)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), index]


def class_logits(slot_logits: torch.Tensor, class_token_ids: Sequence[int]) -> torch.Tensor:
    """The read-out logits (B, C): the slot's vocabulary logits at the class names' first tokens."""
    return slot_logits[:, list(class_token_ids)]


def model_inputs(batch: dict) -> dict:
    """What the model's forward takes from a batch: token ids, their mask and the audio."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", *AUDIO_KEYS)}


def forward_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Full-sequence logits (B, T, V) for a batch with audio."""
    return model(**model_inputs(batch)).logits


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def forward_hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor | None:
    """Last hidden states (B, T, H) for a batch with audio: ``forward_logits`` without the LM head,
    so a loss can apply the head (``output_head``) only where it needs logits. LoRA layers live
    inside the modules, so calling the headless model trains them as the full forward does.
    None for a family without a headless audio+text module (Qwen2.5-Omni's thinker: its
    ``model`` is the text decoder alone): use ``forward_logits`` there."""
    base = unwrap(model)
    headless = getattr(base, base.base_model_prefix, None)
    if headless is None:
        return None
    return headless(**model_inputs(batch)).last_hidden_state


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head (hidden states -> vocabulary logits)."""
    return unwrap(model).get_output_embeddings()


class LazyLogits:
    """One forward pass of ``model`` on ``batch`` whose vocabulary logits are computed only where
    they are used: the last hidden states, with the LM head applied at the positions asked for.
    A (B, T, V) logits tensor is most of the memory of a training step at 7B (156k tokens per
    position), and the losses need it at the answer slot and the labelled tokens only.

    A family without a headless forward (``forward_hidden`` is None: Qwen2.5-Omni) keeps its full
    logits behind an identity head, so callers have one code path and the same values."""

    def __init__(self, model: torch.nn.Module, batch: dict) -> None:
        hidden = forward_hidden(model, batch)
        if hidden is None:
            self.states, self.head = forward_logits(model, batch), torch.nn.Identity()
        else:
            self.states, self.head = hidden, output_head(model)

    def at(self, index: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (B, V) at position ``index[b]`` of each row."""
        return self.head(gather_rows(self.states, index))

    def last(self) -> torch.Tensor:
        """Vocabulary logits (B, V) at the last position (a left-padded batch's next token)."""
        return self.head(self.states[:, -1])

    # Per-token log-probs of labels: ``objectives.policy.label_logprobs(self.states, self.head, ...)``
    # (``strategies.base.labelled_logprobs``), kept out of this class because the model layer sits
    # below the objectives.


def readout_after(backbone: Backbone, batch: dict, reasoning_ids: list[list[int]]) -> torch.Tensor:
    """p_hat (B, C) read at the end of prompt + reasoning (left-padded, so the slot ends every row)."""
    rows = [prompt + list(r) for prompt, r in zip(unpadded_prompts(batch), reasoning_ids, strict=True)]
    readout_batch = left_padded(rows, backbone.tokenizer.pad_token_id, batch["input_ids"].device)
    readout_batch.update({k: batch[k] for k in AUDIO_KEYS})
    logits = LazyLogits(backbone.model, readout_batch).last()  # the slot's logits only
    return torch.softmax(class_logits(logits, backbone.class_token_ids).float(), -1)
