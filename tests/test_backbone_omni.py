"""The second backbone family, Qwen2.5-Omni's thinker, through the same Backbone interface.

The tiny model is the real ``Qwen2_5OmniThinkerForConditionalGeneration`` class with random
weights; it must prompt, read out, generate, train and load from a checkpoint like Qwen2-Audio.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_readout import _clips

from ambemo.config import compose, valid_choices
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.model.backbone import FAMILIES, count_parameters, load_backbone, model_names
from ambemo.model.families.qwen2_5_omni import QWEN2_5_OMNI_STYLE
from ambemo.model.generation import generate_reasoning, read_distribution
from ambemo.model.inputs import PromptEncoder
from ambemo.model.readout import forward_logits, readout_after


@pytest.fixture(scope="module")
def omni():
    torch.manual_seed(0)
    return load_backbone(compose("sft_cot", ["model=tiny_omni"]).model, CREMA_D_CLASSES)


def test_config_names_match_the_registry() -> None:
    names = model_names()
    assert valid_choices()["model.name"] == tuple(names)
    assert {name for name, (_, tiny) in names.items() if tiny} == {"tiny", "tiny_omni"}
    assert names["tiny_omni"] == ("qwen2_5_omni", True) and names["qwen2_audio"] == ("qwen2_audio", False)


def test_tiny_omni_prompt_and_audio_tokens_line_up(omni) -> None:
    assert type(omni.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    batch = PromptEncoder(omni, CREMA_D_CLASSES, use_cot=True).prompt_batch(_clips())
    text = omni.tokenizer.decode(batch["input_ids"][-1], skip_special_tokens=False)
    # Omni's framing: its system prompt, the audio segment directly followed by the instruction
    system = f"<|im_start|>system\n{QWEN2_5_OMNI_STYLE.system}<|im_end|>\n"
    assert text.startswith(system + "<|im_start|>user\n<|audio_bos|>")
    assert "<|audio_eos|>How would listeners" in text and "Audio 1:" not in text
    # one placeholder per audio-encoder output frame, from each clip's true length (1, 2, 3 s)
    audio_id = omni.model.config.audio_token_id
    placeholders = (batch["input_ids"] == audio_id).sum(-1)
    _, encoded = omni.model.audio_tower._get_feat_extract_output_lengths(batch["feature_attention_mask"].sum(-1))
    assert placeholders.tolist() == encoded.tolist() == [25, 50, 75]


def test_readout_is_softmax_of_class_logits_at_the_slot(omni) -> None:
    enc = PromptEncoder(omni, CREMA_D_CLASSES, use_cot=False)
    clips = _clips()
    reading = read_distribution(omni, enc.prompt_batch(clips), use_cot=False, max_new_tokens=1)
    torch.testing.assert_close(reading.distribution.sum(-1), torch.ones(3))
    for i, clip in enumerate(clips):  # by hand, one clip at a time, no padding
        single = enc.prompt_batch([clip])
        with torch.no_grad():
            logits = forward_logits(omni.model, single)[0, -1]
        expected = torch.softmax(logits[omni.class_token_ids], -1)
        torch.testing.assert_close(reading.distribution[i], expected, atol=1e-5, rtol=1e-4)


def test_readout_after_generated_reasoning_matches_a_manual_forward(omni) -> None:
    # Left-padded rows of different lengths: positions must ignore the padding (Omni computes
    # its rotary positions from the attention mask) for the batched read-out to equal each row's.
    enc = PromptEncoder(omni, CREMA_D_CLASSES, use_cot=True)
    clips = _clips()
    batch = enc.prompt_batch(clips)
    reasoning = generate_reasoning(omni, batch, max_new_tokens=6)
    with torch.no_grad():
        batched = readout_after(omni, batch, reasoning.ids)
    torch.testing.assert_close(batched.sum(-1), torch.ones(3))
    for i, clip in enumerate(clips):
        single = enc.prompt_batch([clip])
        single["input_ids"] = torch.cat([single["input_ids"], torch.tensor([reasoning.ids[i]])], 1)
        single["attention_mask"] = torch.ones_like(single["input_ids"])
        with torch.no_grad():
            logits = forward_logits(omni.model, single)[0, -1]
        expected = torch.softmax(logits[omni.class_token_ids], -1)
        torch.testing.assert_close(batched[i], expected, atol=1e-5, rtol=1e-4)


def test_generation_never_emits_placeholders() -> None:
    torch.manual_seed(0)
    bb = load_backbone(compose("sft_cot", ["model=tiny_omni"]).model, CREMA_D_CLASSES)
    with torch.no_grad():  # make every placeholder (audio, image, video and delimiters) the likeliest token
        bb.model.lm_head.weight[bb.audio_token_ids] += 5.0
    reading = read_distribution(bb, PromptEncoder(bb, CREMA_D_CLASSES, True).prompt_batch(_clips()), True, 16)
    names = FAMILIES["qwen2_5_omni"].never_generate
    assert len(bb.audio_token_ids) == len(names) == 7
    assert not any(name in text for text in reading.reasoning for name in names)
    torch.testing.assert_close(reading.distribution.sum(-1), torch.ones(3))


def test_lora_only_on_the_language_model_and_checkpointing_trains_it() -> None:
    cfg = compose("sft_cot", ["model=tiny_omni", "model.finetune=lora", "model.gradient_checkpointing=true"])
    bb = load_backbone(cfg.model, CREMA_D_CLASSES)
    trainable, _ = count_parameters(bb.model)
    assert trainable == 2 * 16384  # the same geometry as tiny Qwen2-Audio (see test_readout)
    names = [n for n, p in bb.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n and ".model.layers." in n for n in names)
    bb.model.train()
    batch = PromptEncoder(bb, CREMA_D_CLASSES, use_cot=True).training_batch(_clips(2))
    seen = {}
    hook = bb.model.base_model.model.audio_tower.register_forward_hook(
        lambda m, i, out: seen.update(audio=out.last_hidden_state.requires_grad)
    )
    forward_logits(bb.model, batch).float().pow(2).mean().backward()
    hook.remove()
    assert seen == {"audio": False}  # the frozen audio encoder builds no graph
    grads = [p.grad for n, p in bb.model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_full_finetuning_freezes_the_unused_vision_tower(omni) -> None:
    frozen = {n for n, p in omni.model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("visual.", "audio_tower.audio_bos_eos_token")) for n in frozen)


def test_loads_the_release_layout_from_a_local_directory(omni, tmp_path: Path) -> None:
    # Qwen2.5-Omni-7B ships the whole model (config model_type qwen2_5_omni, thinker.* and
    # talker.* weights): model.name=qwen2_5_omni takes the thinker from it.
    from safetensors.torch import save_file
    from transformers import Qwen2_5OmniConfig

    Qwen2_5OmniConfig(thinker_config=omni.model.config.to_dict()).save_pretrained(tmp_path)
    weights = {f"thinker.{k}": v.contiguous() for k, v in omni.model.state_dict().items()}
    save_file({**weights, "talker.unused": torch.zeros(1)}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    omni.tokenizer.save_pretrained(tmp_path)
    omni.processor.feature_extractor.save_pretrained(tmp_path)
    overrides = ["model=qwen2_5_omni_7b", f"model.path={tmp_path}", "model.dtype=float32", "model.chunk_seconds=3"]
    loaded = load_backbone(compose("sft_cot", [*overrides, "model.finetune=full"]).model, CREMA_D_CLASSES)
    assert loaded.class_token_ids == omni.class_token_ids and loaded.audio_token_ids == omni.audio_token_ids
    batch = PromptEncoder(loaded, CREMA_D_CLASSES, use_cot=False).prompt_batch(_clips(2))
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(loaded.model, batch), forward_logits(omni.model, batch))


def test_tiny_omni_sft_run_writes_checkpoint_and_summary(fast_overrides: list[str]) -> None:
    from ambemo.train import train

    extra = ["model=tiny_omni", "data.limit_train=16", "data.limit_eval=4", "strategy.max_new_tokens=8"]
    extra += ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1"]
    cfg = compose("sft_cot", [*fast_overrides, *extra, "logger=csv"])
    run_dir = train(cfg)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2  # 16 clips / batch 8
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["n"] == 4 and 0 <= summary["test"]["js"] <= 1
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert all(abs(sum(r["distribution"].values()) - 1) < 1e-5 for r in rows)


def test_grpo_step_samples_rollouts_and_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    from ambemo.strategies import build_strategy

    overrides = [
        "model=tiny_omni",
        "model.init_from=null",
        "strategy.group_size=2",
        "strategy.rollout_max_new_tokens=6",
    ]
    cfg = compose("grpoz_cot", overrides)
    torch.manual_seed(0)
    module = build_strategy(cfg, load_backbone(cfg.model, cfg.data.classes))
    module.on_fit_start()  # full fine-tuning: the frozen reference copy
    logged: dict = {}
    monkeypatch.setattr(module, "log_dict", lambda logs, **kwargs: logged.update(logs))
    # GRPO steps its optimizer itself: drive one pass with plain torch (as ambemo bench does)
    rollouts = module.rollouts(module.encoder.training_batch(_clips(1)))
    loss = module.optimise(rollouts, backward=torch.Tensor.backward, step=None)
    # reward = -KL(p_human || p_hat) + 0.1 * format (0 for an untrained model): negative and finite
    assert torch.isfinite(loss) and -10 < logged["train/reward"] < 0
    grads = [p.grad for p in module.model.model.layers.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
