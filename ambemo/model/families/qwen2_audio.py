"""Qwen2-Audio (Qwen2-Audio-7B-Instruct): a Whisper audio encoder and a Qwen language model.

``model.name=tiny`` builds its class from a small config with random weights and the shipped
offline tokenizer; ``model.name=qwen2_audio`` loads a local checkpoint (``model.path``).
"""

from __future__ import annotations

from pathlib import Path

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

from ambemo.model.backbone import FAMILIES, BackboneFamily, tiny_sizes


def tiny_model_config(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2AudioConfig:
    """A small Qwen2-Audio config."""
    audio, text = tiny_sizes(model_cfg, tokenizer)
    return Qwen2AudioConfig(
        audio_config=audio,
        text_config={"model_type": "qwen2", **text},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


def qwen2_audio_7b_config() -> Qwen2AudioConfig:
    """Qwen2-Audio-7B-Instruct's geometry (its config.json): Whisper-large-v3-size audio encoder,
    Qwen-7B language model (32 layers, width 4096, 32 key/value heads, MLP 11008, 156,032 tokens)."""
    return Qwen2AudioConfig(
        audio_config={
            "d_model": 1280,
            "encoder_layers": 32,
            "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120,
            "num_mel_bins": 128,
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 156032,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 8192,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        audio_token_index=151646,
    )


def _qwen2_audio_processor(features: WhisperFeatureExtractor, tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)


def _load_qwen2_audio_processor(path: Path, chunk_seconds: int) -> ProcessorMixin:
    return AutoProcessor.from_pretrained(path, local_files_only=True)


FAMILIES.register("qwen2_audio")(
    BackboneFamily(
        tiny_name="tiny",
        model_class=Qwen2AudioForConditionalGeneration,
        tiny_config=tiny_model_config,
        processor=_qwen2_audio_processor,
        load_processor=_load_qwen2_audio_processor,
        language_model=r"model\.language_model\.",
        release_config=qwen2_audio_7b_config,
    )
)
