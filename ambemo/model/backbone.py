"""Loading the audio-language backbone: one path for the tiny offline model and real checkpoints.

``model.name=tiny`` builds ``Qwen2AudioForConditionalGeneration`` from a small config with random
weights and the shipped offline tokenizer; ``model.name=qwen2_audio`` loads the same class from a
local directory (``model.path``). Everything downstream (prompting, read-out, training,
generation) sees only a ``Backbone``, so the tiny model exercises the real code path.

Also here: LoRA through peft, gradient checkpointing that still trains adapters, and the
start-up check that every class name has its own first token (the read-out depends on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    AutoProcessor,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from ambemo.data.class_map import map_classes
from ambemo.model.prompts import ANSWER_SLOT
from ambemo.model.tokenizer import load_tiny_tokenizer

SAMPLE_RATE = 16_000
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class BackboneError(ValueError):
    """The backbone cannot be used as configured (missing checkpoint, ambiguous class tokens...)."""


@dataclass
class Backbone:
    """A loaded model with everything needed to prompt it and read its distribution."""

    model: torch.nn.Module
    """The (possibly peft-wrapped) Qwen2AudioForConditionalGeneration."""
    processor: ProcessorMixin
    """Turns (text with the audio placeholder, waveform) into model inputs."""
    class_token_ids: list[int]
    """First token of " <class name>" for each scored class, in the data's label order: the
    read-out scores these (the model class each data class maps to, see ``model.classes``)."""
    prompt_classes: list[str]
    """The classes the prompt lists: the model's (its training corpus's) classes."""
    answer_slot_ids: list[int]
    """Token ids of the answer slot; generation stops once a row has produced them."""
    audio_token_ids: list[int]
    """The audio placeholder and its delimiters: never generated (an extra placeholder in the
    reasoning would no longer match the audio features when the read-out re-reads it)."""
    sample_rate: int = SAMPLE_RATE

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.tokenizer  # type: ignore[attr-defined]


def class_token_ids(tokenizer: PreTrainedTokenizerBase, classes: Sequence[str]) -> list[int]:
    """First token id of ``" " + name`` per class; raises ``BackboneError`` if two classes share one.

    The answer slot is followed by a space and the class name, so the first token of that
    continuation is where the LM head puts each class's score. Two classes with the same first
    token would get the same probability mass: a silent wrong read-out, hence the hard error.
    """
    ids: list[int] = []
    for name in classes:
        tokens = tokenizer.encode(" " + name, add_special_tokens=False)
        if not tokens:
            raise BackboneError(f"class name {name!r} encodes to no tokens")
        ids.append(tokens[0])
    seen: dict[int, str] = {}
    for name, tid in zip(classes, ids, strict=True):
        if tid in seen:
            piece = tokenizer.convert_ids_to_tokens(tid)
            raise BackboneError(
                f"classes {seen[tid]!r} and {name!r} start with the same token {piece!r} (id {tid}) in this "
                "tokenizer, so the read-out could not tell them apart. Rename one (data.classes=[...]) so "
                "each class name has a distinct first token."
            )
        seen[tid] = name
    return ids


def tiny_model_config(model_cfg: DictConfig, vocab_size: int, audio_token_id: int, pad_id: int) -> Qwen2AudioConfig:
    """A small Qwen2-Audio config. The audio encoder needs exactly 2 * max_source_positions mel
    frames, i.e. 100 frames per second of the feature extractor's window."""
    tiny = model_cfg.tiny
    return Qwen2AudioConfig(
        audio_config={
            "d_model": tiny.audio_d_model,
            "encoder_layers": tiny.audio_layers,
            "encoder_attention_heads": tiny.audio_heads,
            "encoder_ffn_dim": 2 * tiny.audio_d_model,
            "num_mel_bins": tiny.num_mel_bins,
            "max_source_positions": 50 * model_cfg.chunk_seconds,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": tiny.text_hidden,
            "num_hidden_layers": tiny.text_layers,
            "num_attention_heads": tiny.text_heads,
            "num_key_value_heads": tiny.text_kv_heads,
            "intermediate_size": tiny.text_ffn,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
            "pad_token_id": pad_id,
        },
        audio_token_index=audio_token_id,
    )


def _load_tiny(model_cfg: DictConfig) -> tuple[torch.nn.Module, ProcessorMixin]:
    tokenizer = load_tiny_tokenizer()
    features = WhisperFeatureExtractor(
        feature_size=model_cfg.tiny.num_mel_bins, chunk_length=model_cfg.chunk_seconds, sampling_rate=SAMPLE_RATE
    )
    processor = Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)
    config = tiny_model_config(
        model_cfg, len(tokenizer), tokenizer.convert_tokens_to_ids("<|AUDIO|>"), tokenizer.pad_token_id
    )
    model = Qwen2AudioForConditionalGeneration(config)
    return model, processor


def _load_pretrained(model_cfg: DictConfig) -> tuple[torch.nn.Module, ProcessorMixin]:
    path = Path(model_cfg.path).expanduser()
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"model.path={path}: no config.json there. Point model.path at a local copy of the checkpoint "
            "(e.g. a directory holding Qwen2-Audio-7B-Instruct's config.json, tokenizer and *.safetensors); "
            "nothing is downloaded."
        )
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(
        path,
        local_files_only=True,
        dtype=_DTYPES[model_cfg.dtype],
        attn_implementation=model_cfg.attn_implementation,
    )
    return model, processor


def _apply_finetuning(model: torch.nn.Module, model_cfg: DictConfig) -> torch.nn.Module:
    if model_cfg.gradient_checkpointing:
        # Non-reentrant checkpointing, and input grads on: with frozen embeddings and reentrant
        # checkpointing, LoRA layers inside checkpointed blocks would get no gradient at all.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if model_cfg.finetune == "full":
        return model
    from peft import LoraConfig, get_peft_model

    targets = "|".join(model_cfg.lora_targets)
    lora = LoraConfig(
        r=model_cfg.lora_r,
        lora_alpha=model_cfg.lora_alpha,
        lora_dropout=model_cfg.lora_dropout,
        # Only the language model's projections: the audio tower has q/k/v projections too.
        target_modules=rf".*language_model.*\.({targets})$",
        bias="none",
    )
    return get_peft_model(model, lora)


def load_base(model_cfg: DictConfig) -> tuple[torch.nn.Module, ProcessorMixin]:
    """The base model (no adapters) and its processor: built (``tiny``) or loaded from ``model.path``."""
    return _load_tiny(model_cfg) if model_cfg.name == "tiny" else _load_pretrained(model_cfg)


def load_backbone(model_cfg: DictConfig, classes: Sequence[str]) -> Backbone:
    """Build or load the model named by ``model_cfg`` and check it can read out ``classes``."""
    model, processor = load_base(model_cfg)
    model_classes = list(model_cfg.classes) or list(classes)
    class_token_ids(processor.tokenizer, model_classes)  # type: ignore[attr-defined]  # fail before LoRA
    return make_backbone(_apply_finetuning(model, model_cfg), processor, classes, model_classes)


def make_backbone(
    model: torch.nn.Module, processor: ProcessorMixin, classes: Sequence[str], model_classes: Sequence[str]
) -> Backbone:
    """A ready model (adapters applied or loaded) as a ``Backbone`` reading out ``classes``, each
    mapped to one of ``model_classes`` (the classes its prompt lists). Also used by exported models."""
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    model_ids = class_token_ids(tokenizer, model_classes)
    ids = [model_ids[i] for i in map_classes(classes, model_classes)]
    slot = tokenizer.encode(ANSWER_SLOT, add_special_tokens=False)
    audio_tokens = [processor.audio_token, processor.audio_bos_token, processor.audio_eos_token]  # type: ignore[attr-defined]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone(
        model=model,
        processor=processor,
        class_token_ids=ids,
        prompt_classes=list(model_classes),
        answer_slot_ids=slot,
        audio_token_ids=tokenizer.convert_tokens_to_ids(audio_tokens),
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
