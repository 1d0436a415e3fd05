"""The 7B path without a download: the released geometry on the meta device, dtype, attention,
checkpointing, LoRA scope, and the memory-fitting batch defaults of the 7B model blocks."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ambemo.config import ConfigError, compose
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.model.backbone import BackboneError, count_parameters, load_backbone, random_model, resolve_dtype


def _meta_7b(block: str) -> torch.nn.Module:
    cfg = compose("sft_cot", [f"model={block}", "model.path=/unused", "model.dtype=bfloat16"])
    with torch.device("meta"):  # the real geometry, no memory, no weights read
        return random_model(cfg.model)


def _lora_owners(model: torch.nn.Module) -> list[str]:
    return [name.removesuffix(".lora_A") for name, _ in model.named_modules() if name.endswith(".lora_A")]


def test_qwen2_audio_7b_lora_targets_and_settings() -> None:
    model = _meta_7b("qwen2_audio_7b")
    trainable, total = count_parameters(model)
    # per layer r * (in + out): q, k, v, o 4096 -> 4096 (32 key/value heads): 4 * 8 * 8192 = 262,144;
    # gate, up 4096 -> 11008 and down 11008 -> 4096: 3 * 8 * 15104 = 362,496; 32 layers
    assert trainable == 32 * (262_144 + 362_496) == 19_988_480
    assert 8.39e9 < total - trainable < 8.41e9  # Qwen2-Audio-7B-Instruct: 8.40e9 weights
    owners = _lora_owners(model)
    assert len(owners) == 32 * 7
    assert all(".model.language_model.layers." in n for n in owners)  # none in the audio tower
    base = model.get_base_model()
    assert base.dtype == torch.bfloat16 and base.config._attn_implementation == "sdpa"
    assert base.is_gradient_checkpointing
    # adapters (what the optimizer updates) stay float32 on bf16 weights
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}


def test_qwen2_5_omni_7b_lora_targets() -> None:
    model = _meta_7b("qwen2_5_omni_7b")
    trainable, _ = count_parameters(model)
    # per layer: q, o 3584 -> 3584: 2 * 8 * 7168; k, v 3584 -> 512 (4 key/value heads): 2 * 8 * 4096;
    # gate, up, down 3584 <-> 18944: 3 * 8 * 22528; 28 layers
    assert trainable == 28 * (114_688 + 65_536 + 540_672) == 20_185_088
    owners = _lora_owners(model)
    assert len(owners) == 28 * 7 and all(n.startswith("base_model.model.model.layers.") for n in owners)


def test_dtype_and_attention_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dtype("auto") == torch.float32  # this machine has no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_dtype("auto") == torch.bfloat16
    monkeypatch.undo()
    cfg = compose("sft", ["model.dtype=bfloat16", "model.attn_implementation=eager"])
    model = load_backbone(cfg.model, CREMA_D_CLASSES).model
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_the_package_is_a_clear_error() -> None:
    cfg = compose("sft", ["model.attn_implementation=flash_attention_2"])
    with pytest.raises(BackboneError, match="flash-attn"):
        load_backbone(cfg.model, CREMA_D_CLASSES)


@pytest.mark.parametrize("block", ["qwen2_audio_7b", "qwen2_5_omni_7b"])
def test_7b_blocks_set_memory_fitting_batches(block: str) -> None:
    cfg = compose("grpoz_cot", [f"model={block}", "model.path=/m"])
    assert (cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.accumulate_grad_batches) == (1, 16, 16)
    assert cfg.model.dtype == "auto" and cfg.model.gradient_checkpointing
    # the command line still wins; the tiny setup keeps its own batches
    assert compose("sft_cot", [f"model={block}", "model.path=/m", "data.batch_size=16"]).data.batch_size == 16
    assert compose("sft_cot", []).data.batch_size == 32


def test_bad_key_in_a_blocks_run_mapping_names_the_block(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import ambemo.config as config

    shutil.copytree(config.CONF_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "model" / "odd.yaml").write_text("name: tiny\n_run:\n  data:\n    batch_sise: 2\n")
    monkeypatch.setattr(config, "CONF_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"odd\.yaml \(_run\): unknown key 'data\.batch_sise'"):
        compose("sft_cot", ["model=odd"])


def test_qwen2_audio_checkpoint_path_applies_dtype_and_attention(tmp_path) -> None:
    # The checkpoint loader (model=qwen2_audio_7b) on a saved tiny Qwen2-Audio: same weights,
    # and the block's settings (dtype, attention kernel, LoRA on the language model) applied.
    from test_readout import _clips

    from ambemo.model.inputs import PromptEncoder
    from ambemo.model.readout import forward_logits

    torch.manual_seed(0)
    tiny = load_backbone(compose("sft", []).model, CREMA_D_CLASSES)
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    block = ["model=qwen2_audio_7b", f"model.path={tmp_path}", "model.chunk_seconds=3"]
    same = load_backbone(compose("sft", [*block, "model.dtype=float32", "model.finetune=full"]).model, CREMA_D_CLASSES)
    batch = PromptEncoder(same, CREMA_D_CLASSES, use_cot=False).prompt_batch(_clips(2))
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(same.model, batch), forward_logits(tiny.model, batch))
    lora = load_backbone(compose("sft", [*block, "model.dtype=bfloat16"]).model, CREMA_D_CLASSES).model
    assert lora.get_base_model().dtype == torch.bfloat16 and lora.get_base_model().is_gradient_checkpointing
    assert lora.get_base_model().config._attn_implementation == "sdpa"
    assert all(".language_model." in n for n in _lora_owners(lora))
