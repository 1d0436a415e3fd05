"""Reasoning generation and the distribution read-out.

p_hat = softmax over the LM-head logits of the class names' first tokens at the answer slot's
last token (docs/method.md, "Read-out"). Nothing is parsed from text, so a distribution always
exists and is differentiable. Whether the model *itself* reached a well-formed reasoning and
answer slot is reported separately as ``format_ok``: when it did not, the slot is appended
(forced) so a distribution can still be read, and the row counts against ``format_ok_rate``.
A forced slot is preceded by a line break, as in every curated reasoning, so the read-out sees
the context it was trained on; its tokens were not sampled, so policy losses leave them out
(``Reasoning.forced_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ambemo.model.backbone import Backbone
from ambemo.model.inputs import left_padded, unpadded_prompts
from ambemo.model.prompts import SLOT_PREFIX, parse_cot

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


class StopAfterSlot(StoppingCriteria):
    """Stops each row once its newly generated tokens end with the answer slot's token ids."""

    def __init__(self, slot_ids: Sequence[int], prompt_length: int) -> None:
        self.slot = torch.tensor(list(slot_ids))
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        k = len(self.slot)
        new = input_ids[:, self.prompt_length :]
        if new.shape[1] < k:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return (new[:, -k:] == self.slot.to(input_ids.device)).all(-1)


def cut_at_slot(generated: Sequence[int], slot_ids: Sequence[int], forced_ids: Sequence[int]) -> tuple[list[int], int]:
    """Tokens up to and including the first answer slot, and how many tokens were forced (0: the
    model wrote the slot). Without a slot: the generated tokens (minus padding, done by the caller)
    plus ``forced_ids`` (line break + slot), or just the slot when the model ended on the line break."""
    gen, slot, k = list(generated), list(slot_ids), len(slot_ids)
    for end in range(k, len(gen) + 1):
        if gen[end - k : end] == slot:
            return gen[:end], 0
    prefix = list(forced_ids)[: len(forced_ids) - k]
    tail = slot if prefix and gen[-len(prefix) :] == prefix else list(forced_ids)
    return gen + tail, len(tail)


@dataclass
class Reasoning:
    """Generated reasoning per row, each ending with the answer slot (forced where missing)."""

    ids: list[list[int]]
    texts: list[str]
    format_ok: torch.Tensor
    """Per row: did the model itself write a well-formed reasoning ending in the answer slot."""
    forced_tokens: list[int]
    """Per row: how many tokens at the end of ``ids`` were appended, not sampled (0: the model
    wrote the slot). Cut off at ``max_new_tokens`` or ended (EOS) before the slot."""


def forced_slot_ids(backbone: Backbone) -> list[int]:
    """What a forced slot appends: the line break before the slot, then the slot (Qwen's tokenizers
    never merge a line break into the following word, so a curated reasoning ends with these ids)."""
    return backbone.tokenizer.encode(SLOT_PREFIX, add_special_tokens=False) + list(backbone.answer_slot_ids)


@dataclass
class Reading:
    """What evaluation of one batch produced."""

    distribution: torch.Tensor
    """p_hat, shape (B, C)."""
    reasoning: list[str] | None
    """Generated reasoning per row (None when the prompt answers directly)."""
    format_ok: torch.Tensor | None
    """Per row: did the model itself write a well-formed reasoning ending in the answer slot."""


def repeat_rows(batch: dict, times: int) -> dict:
    """Each row ``times`` times in a row (tensors and lists alike): K rollouts of one prompt."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.repeat_interleave(times, dim=0)
        else:
            out[key] = [item for item in value for _ in range(times)]
    return out


@torch.no_grad()
def generate_sequences(
    backbone: Backbone,
    batch: dict,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    group: int = 1,
    engine: str = "fast",
    top_k: int = 0,
) -> torch.Tensor:
    """Prompt + generated ids for ``group`` continuations of each row of a left-padded prompt batch,
    rows as in ``repeat_rows(batch, group)``, stopping after the answer slot. ``engine``: ``fast``
    (prompt and audio once per group, static cache, merged LoRA: ``ambemo.model.rollout``) or
    ``generate`` (plain ``model.generate`` on ``group`` copies of each prompt). Sampling uses
    exactly ``temperature``, ``top_k`` (0 = off) and ``top_p``, never filters or penalties from
    the checkpoint's generation config (``ambemo.model.rollout.explicit_sampling``)."""
    pad = backbone.tokenizer.pad_token_id
    if engine not in ("fast", "generate"):
        raise ValueError(f"unknown rollout engine {engine!r}: choose fast or generate (model.rollout_engine)")
    from ambemo.model.rollout import engine_for, explicit_sampling, sampling_rules, supports

    if engine == "fast" and supports(backbone.model):
        return engine_for(backbone.model).sequences(
            batch,
            group,
            max_new_tokens,
            stop_ids=backbone.answer_slot_ids,
            suppress_ids=backbone.audio_token_ids,
            pad_id=pad,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
        )
    # engine == "generate", or a backbone the fast engine does not know yet: plain generate, with
    # the same explicit settings (sampling_rules refuses a processor they do not name)
    sampling_rules(
        unwrap(backbone.model), batch["input_ids"], do_sample, temperature, top_p, backbone.audio_token_ids, pad, top_k
    )
    batch = repeat_rows(batch, group) if group > 1 else batch
    sampling = explicit_sampling(do_sample, temperature, top_p, top_k)
    return backbone.model.generate(
        **model_inputs(batch),
        max_new_tokens=max_new_tokens,
        stopping_criteria=StoppingCriteriaList([StopAfterSlot(backbone.answer_slot_ids, batch["input_ids"].shape[1])]),
        pad_token_id=pad,
        suppress_tokens=backbone.audio_token_ids,
        **sampling,
    )


def generate_reasoning(backbone: Backbone, batch: dict, max_new_tokens: int, **options: Any) -> Reasoning:
    """Generate reasonings for the rows of a left-padded prompt batch, each cut at the answer slot
    (forced where the model wrote none). ``options``: those of ``generate_sequences`` (``do_sample``,
    ``temperature``, ``top_p``, ``top_k``, ``group``, ``engine``)."""
    sequences = generate_sequences(backbone, batch, max_new_tokens, **options)
    pad = backbone.tokenizer.pad_token_id
    forced_ids = forced_slot_ids(backbone)
    ids, texts, ok, forced = [], [], [], []
    for generated in sequences[:, batch["input_ids"].shape[1] :].tolist():
        reasoning, appended = cut_at_slot([t for t in generated if t != pad], backbone.answer_slot_ids, forced_ids)
        text = backbone.tokenizer.decode(reasoning, skip_special_tokens=False)
        ids.append(reasoning)
        texts.append(text)
        ok.append(not appended and parse_cot(text) is not None)
        forced.append(appended)
    return Reasoning(ids, texts, torch.tensor(ok, device=batch["input_ids"].device), forced)


def readout_after(backbone: Backbone, batch: dict, reasoning_ids: list[list[int]]) -> torch.Tensor:
    """p_hat (B, C) read at the end of prompt + reasoning (left-padded, so the slot ends every row)."""
    rows = [prompt + list(r) for prompt, r in zip(unpadded_prompts(batch), reasoning_ids, strict=True)]
    readout_batch = left_padded(rows, backbone.tokenizer.pad_token_id, batch["input_ids"].device)
    readout_batch.update({k: batch[k] for k in AUDIO_KEYS})
    logits = LazyLogits(backbone.model, readout_batch).last()  # the slot's logits only
    return torch.softmax(class_logits(logits, backbone.class_token_ids).float(), -1)


@torch.no_grad()
def read_distribution(
    backbone: Backbone,
    batch: dict,
    use_cot: bool,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    engine: str = "fast",
) -> Reading:
    """Generate the reasoning (if ``use_cot``) from a left-padded prompt batch, then read out p_hat."""
    if not use_cot:
        logits = LazyLogits(backbone.model, batch).last()
        return Reading(torch.softmax(class_logits(logits, backbone.class_token_ids).float(), -1), None, None)
    reasoning = generate_reasoning(
        backbone, batch, max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, engine=engine
    )
    distribution = readout_after(backbone, batch, reasoning.ids)
    return Reading(distribution, reasoning.texts, reasoning.format_ok)
