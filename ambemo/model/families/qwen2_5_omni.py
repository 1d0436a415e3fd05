"""Qwen2.5-Omni's thinker (Qwen2.5-Omni-7B): audio and vision encoders and a Qwen2.5 language
model; no talker, no speech output. Audio and text only: the vision tower is built but never run.

``model.name=tiny_omni`` builds the thinker from a small config with random weights and the
shipped offline tokenizer; ``model.name=qwen2_5_omni`` loads a local checkpoint (``model.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5OmniConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    WhisperFeatureExtractor,
)

from ambemo.model.backbone import AUDIO_TOKENS, FAMILIES, BackboneError, BackboneFamily, tiny_sizes
from ambemo.model.prompts import ChatStyle

#: Qwen2.5-Omni's image/video placeholders and their delimiters (its config names their ids).
OMNI_VISION_TOKENS = ("<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>")
#: Qwen2.5-Omni's default system prompt (its chat template's), and its audio framing: the audio
#: segment directly followed by the text, without Qwen2-Audio's "Audio 1: " line.
QWEN2_5_OMNI_STYLE = ChatStyle(
    system=(
        "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
        "auditory and visual inputs, as well as generating text and speech."
    ),
    audio_prefix="",
    audio_suffix="",
)


class OmniAudioProcessor(Qwen2_5OmniProcessor):
    """Qwen2.5-Omni's processor for audio and text only.

    The full processor also needs an image and a video processor, and the video one requires
    torchvision, which audio and text do not. ``__call__`` is Qwen2_5OmniProcessor's own
    (feature extraction, ``feature_attention_mask``, the number of audio tokens per clip from
    its true length); only the placeholder expansion is restricted to audio.
    """

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
    ) -> None:
        ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
        self.audio_token, self.audio_bos_token, self.audio_eos_token = AUDIO_TOKENS

    def replace_multimodal_special_tokens(self, text: list[str], audio_lengths, *args, **kwargs) -> list[str]:  # type: ignore[override]
        """Each audio placeholder becomes as many placeholders as its clip has audio tokens."""
        out = []
        for sample in text:
            parts = sample.split(self.audio_token)
            expanded = parts[0]
            for part in parts[1:]:
                expanded += self.audio_token * int(next(audio_lengths)) + part
            out.append(expanded)
        return out

    @property
    def model_input_names(self) -> list[str]:
        return [*self.tokenizer.model_input_names, "input_features", "feature_attention_mask"]


def tiny_omni_config(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5OmniThinkerConfig:
    """A small Qwen2.5-Omni thinker config (a one-block vision tower, built but never run).

    Multimodal rotary embedding: each head's rotary half is split into temporal/height/width
    sections in the 7B's proportions (16/24/24 of 64); for audio and text the three position
    streams are equal, so it acts as plain RoPE.
    """
    audio, text = tiny_sizes(model_cfg, tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    half = text["hidden_size"] // text["num_attention_heads"] // 2
    temporal = half // 4
    height = (half - temporal) // 2
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [temporal, height, half - temporal - height]}
    return Qwen2_5OmniThinkerConfig(
        audio_config={**audio, "output_dim": text["hidden_size"]},
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": text["hidden_size"],
            "fullatt_block_indexes": [0],
        },
        text_config={**text, "rope_parameters": rope},
        audio_token_index=ids("<|AUDIO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
    )


def qwen2_5_omni_7b_config() -> Qwen2_5OmniThinkerConfig:
    """Qwen2.5-Omni-7B's thinker geometry (its config.json): audio encoder as Qwen2-Audio's, a
    Qwen2.5-VL vision tower, Qwen2.5-7B language model (28 layers, width 3584, 4 key/value heads,
    MLP 18944, 152,064 tokens)."""
    return Qwen2_5OmniThinkerConfig(
        audio_config={"output_dim": 3584},
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
        },
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            "tie_word_embeddings": False,
        },
    )


def _omni_processor(features: WhisperFeatureExtractor, tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    return OmniAudioProcessor(feature_extractor=features, tokenizer=tokenizer)


def _load_omni_processor(path: Path, chunk_seconds: int) -> ProcessorMixin:
    shipped = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
    # The release pads every clip to a 300 s window. The thinker reads only the frames under
    # feature_attention_mask, so a window of model.chunk_seconds gives the same features for
    # clips up to that length, at a tenth of the memory per cached clip.
    features = WhisperFeatureExtractor(
        feature_size=shipped.feature_size,
        sampling_rate=shipped.sampling_rate,
        hop_length=shipped.hop_length,
        n_fft=shipped.n_fft,
        chunk_length=chunk_seconds,
    )
    return OmniAudioProcessor(features, AutoTokenizer.from_pretrained(path, local_files_only=True))


def _load_omni_config(path: Path) -> Qwen2_5OmniThinkerConfig:
    """The thinker's config, from the full Qwen2.5-Omni release or from a thinker-only save."""
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type == "qwen2_5_omni":
        return Qwen2_5OmniConfig.from_pretrained(path, local_files_only=True).thinker_config
    if model_type == "qwen2_5_omni_thinker":
        return Qwen2_5OmniThinkerConfig.from_pretrained(path, local_files_only=True)
    raise BackboneError(
        f"{path / 'config.json'}: model_type {model_type!r} is not a Qwen2.5-Omni checkpoint "
        "(expected 'qwen2_5_omni' or 'qwen2_5_omni_thinker'); model.name=qwen2_5_omni needs one"
    )


FAMILIES.register("qwen2_5_omni")(
    BackboneFamily(
        tiny_name="tiny_omni",
        model_class=Qwen2_5OmniThinkerForConditionalGeneration,
        tiny_config=tiny_omni_config,
        processor=_omni_processor,
        load_processor=_load_omni_processor,
        language_model=r"model\.layers\.",
        release_config=qwen2_5_omni_7b_config,
        chat_style=QWEN2_5_OMNI_STYLE,
        never_generate=AUDIO_TOKENS + OMNI_VISION_TOKENS,
        tiny_extra_tokens=OMNI_VISION_TOKENS,
        load_config=_load_omni_config,
        # the vision tower, and an audio-delimiter embedding the thinker's forward never reads
        unused_modules=("visual", "audio_tower.audio_bos_eos_token"),
    )
)
