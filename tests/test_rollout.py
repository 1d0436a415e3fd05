"""The fast rollout engine against plain ``generate``: same tokens, adapters included, weights untouched."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_readout import _clips

from ambemo.config import compose
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.model.backbone import Backbone, load_backbone
from ambemo.model.generation import generate_reasoning
from ambemo.model.inputs import PromptEncoder
from ambemo.model.readout import forward_logits
from ambemo.model.rollout import engine_for
from ambemo.objectives.distribution import token_cross_entropy


def _lora_backbone(*overrides: str) -> Backbone:
    """Tiny model with LoRA whose lora_B is non-zero, so the adapters change every output."""
    torch.manual_seed(0)
    cfg = compose("sft_cot", ["model.finetune=lora", *overrides])
    backbone = load_backbone(cfg.model, CREMA_D_CLASSES)
    with torch.no_grad():
        for name, param in backbone.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return backbone


def _both(backbone: Backbone, batch: dict, group: int, new: int = 16):
    plain = generate_reasoning(backbone, batch, new, group=group, engine="generate")
    fast = generate_reasoning(backbone, batch, new, group=group, engine="fast")
    return plain, fast


def _stop_on_generated_token(backbone: Backbone, reasoning_ids: list[list[int]]) -> Backbone:
    """The same backbone with a one-token "answer slot" that the first row produces greedily
    after a few tokens, so rows stop at different steps (the random model never writes the real slot)."""
    return dataclasses.replace(backbone, answer_slot_ids=[reasoning_ids[0][4]])


def test_fast_greedy_equals_generate_with_lora_and_left_padding() -> None:
    backbone = _lora_backbone()
    backbone.model.eval()
    batch = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True).prompt_batch(_clips(3))
    lengths = batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 1  # different prompt lengths: left padding is exercised

    plain, fast = _both(backbone, batch, group=2)
    assert fast.ids == plain.ids and fast.texts == plain.texts
    assert torch.equal(fast.format_ok, plain.format_ok)
    assert len(fast.ids) == 6 and fast.ids[0] == fast.ids[1]  # greedy: a group is K equal copies

    with backbone.model.disable_adapter():  # the adapters matter, so the comparison above means something
        base = generate_reasoning(backbone, batch, 16, engine="generate")
    assert base.ids != plain.ids[::2]

    stopping = _stop_on_generated_token(backbone, plain.ids)
    stop_at = plain.ids[0].index(stopping.answer_slot_ids[0]) + 1
    plain, fast = _both(stopping, batch, group=2)
    assert fast.ids == plain.ids
    assert len(fast.ids[0]) == stop_at <= 5  # stopped right after its slot token; others went on
    assert any(len(ids) > stop_at for ids in fast.ids)


def test_fast_equals_generate_after_training_steps_and_leaves_weights_bit_identical() -> None:
    backbone = _lora_backbone("model.gradient_checkpointing=true")
    model = backbone.model
    encoder = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True)
    train_batch = encoder.training_batch(_clips(2))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):  # checkpointed training steps, as between rollouts
        loss = token_cross_entropy(forward_logits(model, train_batch), train_batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model.training

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    prompts = encoder.prompt_batch(_clips(2))
    model.eval()  # plain generate in training mode would apply dropout and drop the KV cache
    plain = generate_reasoning(backbone, prompts, 16, group=2, engine="generate")
    model.train()  # the fast engine switches to eval itself, as it must after a training step ...
    fast = generate_reasoning(backbone, prompts, 16, group=2, engine="fast")
    assert fast.ids == plain.ids
    assert model.training  # ... and restores the training mode
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name  # merge and restore leave every weight bit-identical
    # a training step right after a rollout still has gradients on the adapters
    loss = token_cross_entropy(forward_logits(model, train_batch), train_batch["labels"])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_merged_adapters_compute_what_the_adapters_compute() -> None:
    backbone = _lora_backbone()
    model = backbone.model.eval()
    batch = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True).prompt_batch(_clips(2))
    with torch.no_grad():
        unmerged = forward_logits(model, batch)
        with engine_for(model).merged_adapters():
            merged = forward_logits(model, batch)
        with model.disable_adapter():
            base = forward_logits(model, batch)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    assert (base - unmerged).abs().max() > 1e-2


def test_sampled_rollouts_shapes_stop_and_seed() -> None:
    backbone = _lora_backbone()
    batch = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True).prompt_batch(_clips(2))
    with torch.no_grad():  # make the placeholder likely: sampling must still never produce it
        backbone.model.lm_head.weight[backbone.audio_token_ids[0]] += 3.0
    engine = engine_for(backbone.model)
    kwargs = {"temperature": 0.7, "top_p": 0.9, "do_sample": True}
    pad = backbone.tokenizer.pad_token_id

    def sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return engine.sequences(batch, 4, 12, backbone.answer_slot_ids, backbone.audio_token_ids, pad, **kwargs)

    first = sample(0)
    prompt_length = batch["input_ids"].shape[1]
    assert first.shape == (8, prompt_length + 12)
    assert torch.equal(first[:, :prompt_length], batch["input_ids"].repeat_interleave(4, 0))
    assert torch.equal(sample(0), first)  # a fixed seed reproduces the rollouts
    assert not torch.isin(first[:, prompt_length:], torch.tensor(backbone.audio_token_ids)).any()
    assert len({tuple(row) for row in first[:, prompt_length:].tolist()}) > 2  # sampled, not K copies

    # the most frequent sampled token as a one-token "slot": with the same seed the same tokens are
    # drawn, and each row stops right after its first slot (padding follows); the others run on
    slot = int(first[:, prompt_length:].flatten().mode().values)
    torch.manual_seed(0)
    stopped = engine.sequences(batch, 4, 12, [slot], backbone.audio_token_ids, pad, **kwargs)[:, prompt_length:]
    assert stopped.shape[1] == 12
    ended = 0
    for row, free in zip(stopped.tolist(), first[:, prompt_length:].tolist(), strict=True):
        cut = free.index(slot) + 1 if slot in free else 12
        ended += cut < 12
        assert row == free[:cut] + [pad] * (12 - cut)
    assert 0 < ended < 8


def test_unknown_engine_is_a_clear_error() -> None:
    backbone = _lora_backbone()
    batch = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True).prompt_batch(_clips(1))
    with pytest.raises(ValueError, match="rollout engine"):
        generate_reasoning(backbone, batch, 4, engine="vllm")


def test_gradient_checkpointing_hook_leaves_the_decode_step_one_graph() -> None:
    """With gradient checkpointing a forward hook makes the (frozen) embeddings' output require
    grad. Called under inference_mode it broke the compiled decode step into eager pieces (seen on
    an H200 with TORCH_LOGS=graph_breaks); it must act only where gradients are recorded."""
    backbone = _lora_backbone("model.gradient_checkpointing=true")
    embed = backbone.model.get_input_embeddings()
    ids = torch.tensor([[1, 2, 3]])
    assert embed(ids).requires_grad  # training: checkpointed layers get an input that needs grad
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(embed)(ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
