"""SFT throughput: the LM head only where a loss needs logits, and length-bucketed batches."""

from __future__ import annotations

from pathlib import Path

import torch
from test_readout import _clips

from ambemo.config import compose
from ambemo.data.datamodule import EmotionDataModule, ShardSampler
from ambemo.model.backbone import load_backbone
from ambemo.model.readout import class_logits, forward_logits, gather_rows
from ambemo.objectives.distribution import readout_kl, target_token_cross_entropy, token_cross_entropy
from ambemo.strategies import build_strategy


def test_target_token_cross_entropy_equals_the_full_logits_loss_and_gradient() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 9))
    labels[:, :4] = -100  # prompt
    labels[1, 7:] = -100  # padding
    fast = target_token_cross_entropy(hidden, weight, labels)
    fast_grads = torch.autograd.grad(fast, (hidden, weight))
    plain = token_cross_entropy(hidden @ weight.T, labels)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    torch.testing.assert_close(fast, plain)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_sft_step_loss_equals_the_plain_full_logits_loss() -> None:
    torch.manual_seed(0)
    # the paper's loss, CE + KL (the own-reasoning term generates, and is unchanged here)
    cfg = compose("sft_cot", ["model.finetune=lora", "strategy.own_readout_weight=0"])
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    module.model.eval()  # no dropout: both losses see the same network
    batch = module.encoder.training_batch(_clips(3))
    loss = module.training_step(batch, 0)
    logits = forward_logits(module.model, batch)
    slot = class_logits(gather_rows(logits, batch["slot_index"]), module.backbone.class_token_ids)
    plain = readout_kl(slot, batch["target"]) + token_cross_entropy(logits, batch["labels"])
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-5)


def test_length_grouped_batches_are_homogeneous_and_reshuffled() -> None:
    lengths = torch.rand(400, generator=torch.Generator().manual_seed(0)).mul(100).tolist()
    sampler = ShardSampler(400, shuffle=True, seed=0, lengths=lengths, batch_size=8)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(400)) and first != second  # each index once; a new order per epoch
    assert list(ShardSampler(400, True, 0, lengths=lengths, batch_size=8)) == first  # a function of (seed, epoch)

    def spread(order: list[int]) -> float:  # mean (max - min) length within a batch
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    shuffled = torch.randperm(400, generator=torch.Generator().manual_seed(1)).tolist()
    assert spread(first) < 0.25 * spread(shuffled)


def test_datamodule_buckets_training_batches_when_asked(small_corpus: Path, fast_overrides: list[str]) -> None:
    cfg = compose("sft_cot", [*fast_overrides, "data.bucket_by_length=true"])
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    loader = EmotionDataModule(cfg.data, module.encoder).train_dataloader()
    assert loader.sampler.lengths is not None and len(loader.sampler) == 48
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8
