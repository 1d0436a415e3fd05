"""The read-out: class-name tokens, p_hat at the answer slot, generation cut at the slot, and LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ambemo.config import compose
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.model.backbone import BackboneError, class_token_ids, count_parameters, load_backbone
from ambemo.model.generation import cut_at_slot, read_distribution
from ambemo.model.inputs import Clip, PromptEncoder
from ambemo.model.prompts import ANSWER_SLOT, CoT, format_cot, parse_cot
from ambemo.model.readout import forward_logits
from ambemo.model.rollout import StopAfterSlot
from ambemo.objectives.distribution import readout_kl

COT = format_cot(CoT("loud, fast", "A plain statement about time.", "The voice is loud and fast.", "Mostly anger."))


def _clips(n: int = 3) -> list[Clip]:
    rng = np.random.default_rng(0)
    return [
        Clip(
            id=f"c{i}",
            audio=(0.1 * rng.standard_normal(16000 * (1 + i % 3))).astype(np.float32),
            transcript="It's eleven o'clock" if i % 2 else None,
            target=torch.softmax(torch.randn(6, generator=torch.Generator().manual_seed(i)), -1),
            cot=COT,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone(compose("sft_cot", []).model, CREMA_D_CLASSES)


def test_class_tokens_are_distinct_single_tokens(backbone) -> None:
    ids = backbone.class_token_ids
    assert len(set(ids)) == 6
    for name, tid in zip(CREMA_D_CLASSES, ids, strict=True):
        assert backbone.tokenizer.encode(" " + name, add_special_tokens=False) == [tid]


def test_shared_first_token_is_a_clear_error(backbone) -> None:
    # " neutral!" starts with the token of " neutral": the read-out could not tell them apart.
    with pytest.raises(BackboneError, match="same token"):
        class_token_ids(backbone.tokenizer, ["neutral", "neutral!"])


def test_training_batch_slot_and_labels(backbone) -> None:
    enc = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True)
    batch = enc.training_batch(_clips())
    slot = backbone.answer_slot_ids
    for row, idx, labels in zip(batch["input_ids"], batch["slot_index"], batch["labels"], strict=True):
        # the read-out position is the last token of the answer slot ...
        assert row[idx - len(slot) + 1 : idx + 1].tolist() == slot
        # ... and CE covers exactly the reasoning tokens, which decode back to the curated CoT
        target = labels[labels != -100].tolist()
        assert backbone.tokenizer.decode(target) == COT
    assert batch["input_features"].shape[0] == 3


def test_readout_is_softmax_of_class_logits_at_the_slot(backbone) -> None:
    enc = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=False)
    clips = _clips()
    batch = enc.prompt_batch(clips)  # left-padded: the slot ends every row
    reading = read_distribution(backbone, batch, use_cot=False, max_new_tokens=1)
    # by hand, one clip at a time (no padding at all)
    for i, clip in enumerate(clips):
        single = enc.prompt_batch([clip])
        assert backbone.tokenizer.decode(single["input_ids"][0]).endswith(ANSWER_SLOT)
        with torch.no_grad():
            logits = forward_logits(backbone.model, single)[0, -1]
        expected = torch.softmax(logits[backbone.class_token_ids], -1)
        torch.testing.assert_close(reading.distribution[i], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reading.distribution.sum(-1), torch.ones(3))
    assert reading.format_ok is None


def test_generation_reports_format_and_forces_the_slot(backbone) -> None:
    enc = PromptEncoder(backbone, CREMA_D_CLASSES, use_cot=True)
    reading = read_distribution(backbone, enc.prompt_batch(_clips()), use_cot=True, max_new_tokens=8)
    # an untrained model does not write a well-formed reasoning in 8 tokens; it is counted, not hidden
    assert reading.format_ok is not None and not reading.format_ok.any()
    assert len(reading.reasoning) == 3
    torch.testing.assert_close(reading.distribution.sum(-1), torch.ones(3))


def test_cut_at_slot_and_stop_criterion() -> None:
    assert cut_at_slot([5, 6, 1, 2, 9, 1, 2], [1, 2], [8, 1, 2]) == ([5, 6, 1, 2], 0)
    # forced: a line break (8) and the slot; just the slot when the model ended on the line break
    assert cut_at_slot([5, 6], [1, 2], [8, 1, 2]) == ([5, 6, 8, 1, 2], 3)
    assert cut_at_slot([5, 8], [1, 2], [8, 1, 2]) == ([5, 8, 1, 2], 2)
    stop = StopAfterSlot([1, 2], prompt_length=2)
    ids = torch.tensor([[7, 7, 3, 1, 2], [7, 7, 1, 2, 4], [7, 7, 0, 0, 1]])
    assert stop(ids, None).tolist() == [True, False, False]


def test_parse_cot_rejects_malformed() -> None:
    assert parse_cot(COT) is not None
    assert parse_cot(COT.replace("Mostly anger.", "")) is None  # empty synthesis
    assert parse_cot(COT + " " + COT) is None  # duplicated blocks
    assert parse_cot(COT.replace(ANSWER_SLOT, "")) is None  # no answer slot


def test_readout_kl_gradient_is_softmax_minus_target() -> None:
    logits = torch.tensor([[1.0, 0.0, -1.0]], requires_grad=True)
    target = torch.tensor([[0.5, 0.5, 0.0]])
    loss = readout_kl(logits, target)
    # softmax([1, 0, -1]) = e^[1,0,-1] / (e + 1 + 1/e) = [0.66524, 0.24473, 0.09003]
    q = torch.tensor([0.665241, 0.244728, 0.090031])
    # KL = 0.5 ln(0.5/0.66524) + 0.5 ln(0.5/0.24473) = -0.14277 + 0.35719 = 0.21442
    assert loss.item() == pytest.approx(0.21442, abs=1e-4)
    loss.backward()
    torch.testing.assert_close(logits.grad[0], q - target[0], atol=1e-5, rtol=0)


def test_lora_trains_only_language_model_adapters() -> None:
    cfg = compose("sft_cot", ["model.finetune=lora"])
    bb = load_backbone(cfg.model, CREMA_D_CLASSES)
    trainable, _ = count_parameters(bb.model)
    # per layer, r * (in + out) for q(128->128), k(128->64), v(128->64), o(128->128),
    # gate(128->256), up(128->256), down(256->128): 8 * (256 + 192 + 192 + 256 + 384 * 3) = 16384; 2 layers
    assert trainable == 2 * 16384
    names = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n and "language_model" in n for n in names)


def test_gradient_checkpointing_still_trains_lora() -> None:
    cfg = compose("sft_cot", ["model.finetune=lora", "model.gradient_checkpointing=true"])
    bb = load_backbone(cfg.model, CREMA_D_CLASSES)
    bb.model.train()
    batch = PromptEncoder(bb, CREMA_D_CLASSES, use_cot=True).training_batch(_clips(2))
    logits = forward_logits(bb.model, batch)
    logits.float().pow(2).mean().backward()
    grads = [p.grad for n, p in bb.model.named_parameters() if "lora_B" in n]
    # lora_B starts at zero, so its gradient is the first to be non-zero if adapters train at all
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_missing_checkpoint_path_is_a_clear_error(tmp_path) -> None:
    cfg = compose("sft_cot", ["model=qwen2_audio_7b", f"model.path={tmp_path}"])
    with pytest.raises(BackboneError, match=r"no config\.json"):
        load_backbone(cfg.model, CREMA_D_CLASSES)


def test_generation_never_emits_audio_placeholders() -> None:
    # An extra <|AUDIO|> in the reasoning would no longer match the audio features when the
    # read-out re-reads prompt + reasoning; generation must never produce one.
    torch.manual_seed(0)
    bb = load_backbone(compose("sft_cot", []).model, CREMA_D_CLASSES)
    with torch.no_grad():
        bb.model.lm_head.weight[bb.audio_token_ids[0]] += 5.0  # make the placeholder the likeliest token
    enc = PromptEncoder(bb, CREMA_D_CLASSES, use_cot=True)
    reading = read_distribution(bb, enc.prompt_batch(_clips()), use_cot=True, max_new_tokens=16)
    assert not any("<|AUDIO|>" in text for text in reading.reasoning)
    torch.testing.assert_close(reading.distribution.sum(-1), torch.ones(3))


def test_cross_corpus_readout_scores_only_the_shared_classes() -> None:
    # A model trained on CREMA-D's six classes, tested on IEMOCAP's four: its prompt still lists
    # the six, and p_hat is the softmax over the four mapped class logits only.
    iemocap = ["anger", "happiness", "sadness", "neutral"]
    torch.manual_seed(0)
    six = load_backbone(compose("sft", []).model, CREMA_D_CLASSES)
    torch.manual_seed(0)
    cross = load_backbone(compose("sft", [f"model.classes={list(CREMA_D_CLASSES)}"]).model, iemocap)
    assert cross.prompt_classes == list(CREMA_D_CLASSES)
    assert cross.class_token_ids == [six.class_token_ids[CREMA_D_CLASSES.index(c)] for c in iemocap]
    clips = _clips(2)
    full = read_distribution(six, PromptEncoder(six, CREMA_D_CLASSES, False).prompt_batch(clips), False, 1)
    part = read_distribution(cross, PromptEncoder(cross, cross.prompt_classes, False).prompt_batch(clips), False, 1)
    index = [CREMA_D_CLASSES.index(c) for c in iemocap]
    expected = full.distribution[:, index] / full.distribution[:, index].sum(-1, keepdim=True)
    torch.testing.assert_close(part.distribution, expected, atol=1e-5, rtol=1e-4)


def test_unmappable_test_class_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no counterpart"):
        load_backbone(compose("sft", [f"model.classes={list(CREMA_D_CLASSES)}"]).model, ["anger", "boredom"])
