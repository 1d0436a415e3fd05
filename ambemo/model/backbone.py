"""Loading the audio-language backbone: a small registry of LALM families, one loading path.

Each family is one ``BackboneFamily`` registered in ``FAMILIES`` (``ambemo.registry.BACKBONES``):
its transformers class, how to build its tiny offline config and its processor, how its chat
template frames the audio, which modules are its language model (LoRA goes there only) and which
special tokens must never be generated. ``model.name`` picks a family and a source: the family's
``tiny_name`` (``tiny`` for Qwen2-Audio, ``tiny_omni`` for Qwen2.5-Omni's thinker) builds the real
class from a small config with random weights and the shipped offline tokenizer; its key
(``qwen2_audio``, ``qwen2_5_omni``) loads the same class from a local directory (``model.path``).
Everything downstream (prompting, read-out, training, generation) sees only a ``Backbone``, so the
tiny models exercise the real code path. README "Adding a new LALM" lists what an entry needs.

Also here: weight dtype and attention kernel, LoRA through peft on the language model only,
gradient checkpointing that still trains adapters, and the start-up check that every class name
has its own first token (the read-out depends on it).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5OmniConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

from ambemo.data.class_map import map_classes
from ambemo.errors import AmbemoError
from ambemo.model.prompts import ANSWER_SLOT, QWEN2_AUDIO_STYLE, ChatStyle
from ambemo.model.tokenizer import load_tiny_tokenizer
from ambemo.registry import BACKBONES, Registry

SAMPLE_RATE = 16_000
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The audio placeholder and its delimiters, named alike by Qwen2-Audio and Qwen2.5-Omni.
AUDIO_TOKENS = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
#: Qwen2.5-Omni's image/video placeholders and their delimiters (its config names their ids).
OMNI_VISION_TOKENS = ("<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>")


class BackboneError(AmbemoError, ValueError):
    """The backbone cannot be used as configured (missing checkpoint, ambiguous class tokens...)."""


@dataclass
class Backbone:
    """A loaded model with everything needed to prompt it and read its distribution."""

    model: torch.nn.Module
    """The (possibly peft-wrapped) model of the family's class."""
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
    """The placeholders (audio; image and video for omni-modal families) and their delimiters:
    never generated (an extra placeholder in the reasoning would no longer match the features
    when the read-out re-reads it)."""
    chat_style: ChatStyle = QWEN2_AUDIO_STYLE
    """How the family's chat template frames the system turn and the audio."""
    sample_rate: int = SAMPLE_RATE

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.tokenizer  # type: ignore[attr-defined]


@dataclass(frozen=True)
class BackboneFamily:
    """What is specific to one LALM family. The model class must take ``input_ids,
    attention_mask, input_features, feature_attention_mask`` (forward and ``generate``) and
    return ``.logits``; its processor must turn ``text=[...], audio=[...]`` into those keys."""

    tiny_name: str
    """``model.name`` of the tiny random-initialised model of this family (tests, CPU demo)."""
    model_class: type[PreTrainedModel]
    """The transformers class, for the tiny model and for checkpoints alike."""
    tiny_config: Callable[[DictConfig, PreTrainedTokenizerBase], PretrainedConfig]
    """A small config of ``model_class`` for the tiny tokenizer, sized by ``model.tiny``."""
    processor: Callable[[WhisperFeatureExtractor, PreTrainedTokenizerBase], ProcessorMixin]
    """The processor from a feature extractor and a tokenizer (the tiny model's)."""
    load_processor: Callable[[Path, int], ProcessorMixin]
    """The processor of a local checkpoint (its directory, ``model.chunk_seconds``)."""
    language_model: str
    """Regex of the language model's module-name prefix: LoRA targets only modules under it
    (the audio and vision towers have q/k/v and MLP projections too)."""
    release_config: Callable[[], PretrainedConfig]
    """The released (7B) model's geometry, to build it with random weights without a download
    (``random_model``: memory arithmetic, benchmarks)."""
    chat_style: ChatStyle = QWEN2_AUDIO_STYLE
    """How the family's chat template frames the system turn and the audio."""
    never_generate: tuple[str, ...] = AUDIO_TOKENS
    """Placeholder tokens and their delimiters, suppressed in generation."""
    tiny_extra_tokens: tuple[str, ...] = ()
    """Special tokens the family's config names that the shipped tiny tokenizer lacks (appended)."""
    load_config: Callable[[Path], PretrainedConfig] | None = None
    """The model config of a local checkpoint; None = ``model_class``'s own reading of config.json."""
    unused_modules: tuple[str, ...] = ()
    """Submodules an audio-and-text task never runs: always frozen, so that full fine-tuning
    keeps no optimizer state for them and DDP finds no parameter without a gradient."""


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


def _checkpoint_dir(model_cfg: DictConfig) -> Path:
    path = Path(model_cfg.path).expanduser()
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"model.path={path}: no config.json there. Point model.path at a local copy of the checkpoint "
            "(e.g. a directory holding Qwen2-Audio-7B-Instruct's or Qwen2.5-Omni-7B's config.json, tokenizer "
            "and *.safetensors); nothing is downloaded."
        )
    return path


# --------------------------------------------------------------------------------------------
# Qwen2-Audio


def _tiny_sizes(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[dict, dict]:
    """Audio-encoder and language-model sizes of a tiny config (``model.tiny``), shared by the families.
    The audio encoder reads 100 mel frames per second: 2 * max_source_positions per window."""
    tiny = model_cfg.tiny
    audio = {
        "d_model": tiny.audio_d_model,
        "encoder_layers": tiny.audio_layers,
        "encoder_attention_heads": tiny.audio_heads,
        "encoder_ffn_dim": 2 * tiny.audio_d_model,
        "num_mel_bins": tiny.num_mel_bins,
        "max_source_positions": 50 * model_cfg.chunk_seconds,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": tiny.text_hidden,
        "num_hidden_layers": tiny.text_layers,
        "num_attention_heads": tiny.text_heads,
        "num_key_value_heads": tiny.text_kv_heads,
        "intermediate_size": tiny.text_ffn,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return audio, text


def tiny_model_config(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2AudioConfig:
    """A small Qwen2-Audio config."""
    audio, text = _tiny_sizes(model_cfg, tokenizer)
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


# --------------------------------------------------------------------------------------------
# Qwen2.5-Omni (the thinker: audio/vision encoders + language model; no talker, no speech output)

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
    audio, text = _tiny_sizes(model_cfg, tokenizer)
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


# --------------------------------------------------------------------------------------------
# The registry: ``model.name`` is a key (a local checkpoint) or an entry's ``tiny_name``.

FAMILIES: Registry[BackboneFamily] = BACKBONES
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


def model_names() -> dict[str, tuple[str, bool]]:
    """Every valid ``model.name``: ``{name: (family key, is the tiny offline model)}``."""
    return {choice: (FAMILIES.lookup(choice)[0], choice not in FAMILIES.names()) for choice in FAMILIES.choices()}


def resolve_dtype(name: str) -> torch.dtype:
    """``model.dtype``: ``auto`` is bfloat16 where CUDA is available, float32 otherwise."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return _DTYPES[name]


def _attention(model_cfg: DictConfig) -> str:
    kernel = model_cfg.attn_implementation
    if kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise BackboneError(
            "model.attn_implementation=flash_attention_2 needs the flash-attn package (pip install flash-attn); "
            "model.attn_implementation=sdpa needs nothing extra"
        )
    return kernel


def family_of(model_cfg: DictConfig) -> tuple[BackboneFamily, bool]:
    """The family ``model.name`` belongs to, and whether it names the family's tiny model."""
    key, family = FAMILIES.lookup(model_cfg.name)
    return family, model_cfg.name != key


def _instantiate(family: BackboneFamily, config: PretrainedConfig, model_cfg: DictConfig) -> torch.nn.Module:
    return family.model_class._from_config(
        config, dtype=resolve_dtype(model_cfg.dtype), attn_implementation=_attention(model_cfg)
    )


def random_model(model_cfg: DictConfig, config: PretrainedConfig | None = None) -> torch.nn.Module:
    """The family's model with random weights, ``model_cfg``'s dtype, attention kernel and
    fine-tuning (LoRA, checkpointing) applied; ``config`` defaults to the released geometry.

    Built under ``with torch.device("meta"):`` it takes no memory, which is enough to count
    parameters and check what LoRA wraps; on a GPU it is the 7B for benchmarks without a download.
    """
    family, _ = family_of(model_cfg)
    model = _instantiate(family, config if config is not None else family.release_config(), model_cfg)
    return _apply_finetuning(model, model_cfg, family)


def _load_tiny(model_cfg: DictConfig, family: BackboneFamily) -> tuple[torch.nn.Module, ProcessorMixin]:
    tokenizer = load_tiny_tokenizer(extra_special_tokens=family.tiny_extra_tokens)
    features = WhisperFeatureExtractor(
        feature_size=model_cfg.tiny.num_mel_bins, chunk_length=model_cfg.chunk_seconds, sampling_rate=SAMPLE_RATE
    )
    model = _instantiate(family, family.tiny_config(model_cfg, tokenizer), model_cfg)
    return model, family.processor(features, tokenizer)


def _load_pretrained(model_cfg: DictConfig, family: BackboneFamily) -> tuple[torch.nn.Module, ProcessorMixin]:
    path = _checkpoint_dir(model_cfg)
    return load_pretrained_dir(family, path, path, model_cfg.dtype, _attention(model_cfg), model_cfg.chunk_seconds)


def load_pretrained_dir(
    family: BackboneFamily, weights: Path, processor_dir: Path, dtype: str, attention: str, chunk_seconds: int
) -> tuple[torch.nn.Module, ProcessorMixin]:
    """A family's model from a local folder of weights, and its processor from ``processor_dir``
    (a release has both in one folder; an ``ambemo export`` keeps them apart)."""
    processor = family.load_processor(processor_dir, chunk_seconds)
    config = {"config": family.load_config(weights)} if family.load_config else {}
    model = family.model_class.from_pretrained(
        weights, local_files_only=True, dtype=resolve_dtype(dtype), attn_implementation=attention, **config
    )
    return model, processor


def _outputs_require_grad(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
    # Only where gradients are recorded: under inference_mode (rollouts) the call is pointless, and
    # torch.compile cannot trace requires_grad_, so it broke the compiled decode step into eager
    # pieces (seen on an H200: no CUDA graph for the embedding and what follows it).
    if torch.is_grad_enabled():
        output.requires_grad_(True)


def lora_target_regex(family: BackboneFamily, targets: Sequence[str]) -> str:
    """peft ``target_modules`` (matched against whole module names): ``targets`` under the language model."""
    return rf"{family.language_model}.*\.({'|'.join(targets)})"


def _apply_finetuning(model: torch.nn.Module, model_cfg: DictConfig, family: BackboneFamily) -> torch.nn.Module:
    for name in family.unused_modules:
        model.get_submodule(name).requires_grad_(False)
    if model_cfg.gradient_checkpointing:
        # Non-reentrant: LoRA weights inside checkpointed blocks get their gradients whatever the
        # blocks' inputs (reentrant checkpointing would silently give them none).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.disable_input_require_grads()  # hooks every sub-model's input layer; see below
    if model_cfg.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=model_cfg.lora_r,
            lora_alpha=model_cfg.lora_alpha,
            lora_dropout=model_cfg.lora_dropout,
            target_modules=lora_target_regex(family, model_cfg.lora_targets),
            bias="none",
        )
        model = get_peft_model(model, lora)
    if model_cfg.gradient_checkpointing:
        # Input grads on the text embeddings, so that a reentrant checkpoint (some libraries
        # switch to it) still trains the adapters. Only there: enable_input_require_grads, which
        # transformers' gradient_checkpointing_enable and peft each call, also hooks the audio
        # tower's first layer, which makes the frozen audio encoder keep its activations and run
        # a backward pass for nothing.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.disable_input_require_grads()
        base.get_input_embeddings().register_forward_hook(_outputs_require_grad)
    return model


def load_base(model_cfg: DictConfig) -> tuple[torch.nn.Module, ProcessorMixin]:
    """The base model (no adapters) and its processor: built (tiny models) or loaded from ``model.path``."""
    family, tiny = family_of(model_cfg)
    return _load_tiny(model_cfg, family) if tiny else _load_pretrained(model_cfg, family)


def load_backbone(model_cfg: DictConfig, classes: Sequence[str]) -> Backbone:
    """Build or load the model named by ``model_cfg`` and check it can read out ``classes``."""
    family, _ = family_of(model_cfg)
    model, processor = load_base(model_cfg)
    model_classes = list(model_cfg.classes) or list(classes)
    class_token_ids(processor.tokenizer, model_classes)  # type: ignore[attr-defined]  # fail before LoRA
    return make_backbone(_apply_finetuning(model, model_cfg, family), processor, classes, model_classes, family)


def make_backbone(
    model: torch.nn.Module,
    processor: ProcessorMixin,
    classes: Sequence[str],
    model_classes: Sequence[str],
    family: BackboneFamily,
) -> Backbone:
    """A ready model (adapters applied or loaded) as a ``Backbone`` reading out ``classes``, each
    mapped to one of ``model_classes`` (the classes its prompt lists). Also used by exported models."""
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    model_ids = class_token_ids(tokenizer, model_classes)
    ids = [model_ids[i] for i in map_classes(classes, model_classes)]
    slot = tokenizer.encode(ANSWER_SLOT, add_special_tokens=False)
    never = tokenizer.convert_tokens_to_ids(list(family.never_generate))
    lacking = [t for t, i in zip(family.never_generate, never, strict=True) if i in (None, tokenizer.unk_token_id)]
    if lacking:
        raise BackboneError(f"the tokenizer has no token {lacking[0]!r}, a placeholder of this model family")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return Backbone(
        model=model,
        processor=processor,
        class_token_ids=ids,
        prompt_classes=list(model_classes),
        answer_slot_ids=slot,
        audio_token_ids=never,
        chat_style=family.chat_style,
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
