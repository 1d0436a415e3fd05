"""Log-probs only where labels are: the LM head applied at the labelled positions gives today's
full-logits values (1e-5 in float32), for the policy, the reference and both model families."""

from __future__ import annotations

import pytest
import torch
from test_readout import _clips

import ambemo.objectives.policy as policy
from ambemo.config import compose
from ambemo.model.backbone import load_backbone
from ambemo.model.readout import LazyLogits, forward_hidden, forward_logits, gather_rows
from ambemo.objectives.policy import label_logprobs, token_logprobs
from ambemo.strategies import build_strategy
from ambemo.strategies.base import labelled_logprobs


def _labels(batch: int, length: int, vocab: int) -> torch.Tensor:
    labels = torch.randint(0, vocab, (batch, length))
    labels[:, :5] = -100  # prompt
    labels[1, 9:] = -100  # padding
    return labels


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_label_logprobs_equal_full_logits_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch, temperature: float
) -> None:
    monkeypatch.setattr(policy, "CHUNK_ELEMENTS", 3 * 40)  # 3 rows per chunk: several recomputed chunks
    torch.manual_seed(0)
    hidden = torch.randn(3, 12, 16, requires_grad=True)
    head = torch.nn.Linear(16, 40, bias=False)
    labels = _labels(3, 12, 40)
    logp, mask = label_logprobs(hidden, head, labels, temperature)
    plain, plain_mask = token_logprobs(head(hidden) / temperature, labels)
    assert torch.equal(mask, plain_mask) and logp.dtype == torch.float32
    torch.testing.assert_close(logp, plain, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(logp)  # a loss that weighs every token differently
    grads = torch.autograd.grad((logp * weights).sum(), (hidden, head.weight))
    plain_grads = torch.autograd.grad((plain * weights).sum(), (hidden, head.weight))
    for got, want in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the reference and pi_old: no graph, same values
        torch.testing.assert_close(label_logprobs(hidden, head, labels, temperature)[0], plain)
    empty, _ = label_logprobs(hidden, head, torch.full_like(labels, -100))
    assert not empty.any()


@pytest.mark.parametrize("model", ["tiny", "tiny_omni"])
def test_policy_and_reference_logprobs_equal_the_full_logits_ones(model: str) -> None:
    torch.manual_seed(0)
    cfg = compose("dpo_cot", [f"model={model}", "model.finetune=lora", "model.init_from=null"])
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # the adapters change the policy: it differs from the reference
    module.model.eval()
    batch = module.encoder.training_batch(_clips(3))
    labels = batch["labels"]
    assert (forward_hidden(module.model, batch) is None) == (model == "tiny_omni")  # omni: full-logits fallback

    outputs = LazyLogits(module.model, batch)
    logits = forward_logits(module.model, batch)
    policy_logp = token_logprobs(logits, labels)[0]
    torch.testing.assert_close(labelled_logprobs(outputs, labels)[0], policy_logp, rtol=1e-5, atol=1e-5)
    slot = batch["slot_index"]
    torch.testing.assert_close(outputs.at(slot), gather_rows(logits, slot), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.last(), logits[:, -1], rtol=1e-5, atol=1e-5)

    reference = module.reference(batch, lambda out: labelled_logprobs(out, labels)[0])
    with module.model.disable_adapter(), torch.no_grad():
        plain_reference = token_logprobs(forward_logits(module.model, batch), labels)[0]
    torch.testing.assert_close(reference, plain_reference, rtol=1e-5, atol=1e-5)
    assert (reference - policy_logp).abs().max() > 1e-3  # the reference is not the policy
