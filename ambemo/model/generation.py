"""Reasoning generation: the model writes its reasoning up to the answer slot, then p_hat is read there.

Whether the model *itself* reached a well-formed reasoning and answer slot is reported as
``format_ok``: when it did not, the slot is appended (forced) so a distribution can still be read
(``ambemo.model.readout``), and the row counts against ``format_ok_rate``. A forced slot is
preceded by a line break, as in every curated reasoning, so the read-out sees the context it was
trained on; its tokens were not sampled, so policy losses leave them out
(``Reasoning.forced_tokens``). The tokens themselves come from one of two engines
(``generate_sequences``): the fast rollout engine (``ambemo.model.rollout``) or plain ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteriaList

from ambemo.model.backbone import Backbone
from ambemo.model.prompts import SLOT_PREFIX, parse_cot
from ambemo.model.readout import LazyLogits, class_logits, model_inputs, readout_after, unwrap
from ambemo.model.rollout import StopAfterSlot, engine_for, explicit_sampling, sampling_rules, supports


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
