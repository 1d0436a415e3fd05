"""SFT pieces: reasoning-token dropout, the warm-up/cosine schedule."""

from __future__ import annotations

import itertools

import pytest
import torch

from ambemo.strategies.base import warmup_cosine
from ambemo.strategies.sft import corrupt_reasoning


def test_corrupt_reasoning_only_touches_reasoning_tokens() -> None:
    # row: 4 prompt tokens, 5 reasoning tokens, then a 2-token answer slot (ids 8, 9), then padding
    ids = torch.tensor([[1, 1, 1, 1, 5, 5, 5, 5, 5, 8, 9, 0, 0]] * 64)
    labels = torch.where(torch.arange(13) >= 4, ids, torch.full_like(ids, -100))
    labels[:, 11:] = -100
    batch = {"input_ids": ids, "labels": labels, "slot_index": torch.full((64,), 10)}
    torch.manual_seed(0)
    out = corrupt_reasoning(batch, 0.5, slot_length=2, ordinary_ids=torch.tensor([40, 41]))
    changed = out != ids
    assert not changed[:, :4].any()  # prompt untouched
    assert not changed[:, 9:].any()  # answer slot and padding untouched
    assert set(out[changed].tolist()) <= {40, 41}  # only ordinary tokens come in
    assert 0.4 < changed[:, 4:9].float().mean().item() < 0.6  # about the requested rate
    assert torch.equal(corrupt_reasoning(batch, 0.0, 2, torch.tensor([40])), ids)


@pytest.mark.parametrize("total", [10, 1000])
def test_warmup_then_cosine(total: int) -> None:
    values = [warmup_cosine(step, total, warmup_ratio=0.1, min_ratio=0.1) for step in range(total)]
    warmup = max(1, round(0.1 * total))
    assert values[warmup - 1] == pytest.approx(1.0)  # linear warm-up reaches the peak
    assert all(a <= b for a, b in itertools.pairwise(values[:warmup]))
    assert all(a >= b for a, b in itertools.pairwise(values[warmup:]))  # then decays
    assert values[-1] >= 0.1 and warmup_cosine(total, total, 0.1, 0.1) == pytest.approx(0.1)


def test_own_readout_kl_trains_the_readout_through_generated_reasoning() -> None:
    from test_readout import _clips

    from ambemo.config import compose
    from ambemo.model.backbone import load_backbone
    from ambemo.strategies import build_strategy

    cfg = compose("sft_cot", ["strategy.own_readout_weight=1.0", "strategy.max_new_tokens=12"])
    torch.manual_seed(0)
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    batch = module.encoder.training_batch(_clips(2))
    loss = module.own_readout_kl(batch)
    assert loss.item() > 0 and module.model.training  # back in training mode after generating
    loss.backward()
    head = module.model.lm_head.weight.grad
    # the read-out's gradient reaches exactly the class names' rows of the LM head
    assert head[module.backbone.class_token_ids].abs().sum() > 0
    others = torch.ones(head.shape[0], dtype=torch.bool)
    others[module.backbone.class_token_ids] = False
    assert head[others].abs().sum() == 0
