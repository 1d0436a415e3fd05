"""Loading the audio-language backbone: what every LALM family shares, one loading path.

Each family is one ``BackboneFamily`` registered in ``FAMILIES`` (``ambemo.registry.BACKBONES``)
by its own module in ``ambemo.model.families`` (``qwen2_audio``, ``qwen2_5_omni``): its
transformers class, how to build its tiny offline config and its processor, how its chat
template frames the audio, which modules are its language model (LoRA goes there only) and which
special tokens must never be generated. ``model.name`` picks a family and a source: the family's
``tiny_name`` (``tiny`` for Qwen2-Audio, ``tiny_omni`` for Qwen2.5-Omni's thinker) builds the real
class from a small config with random weights and the shipped offline tokenizer; its key
(``qwen2_audio``, ``qwen2_5_omni``) loads the same class from a local directory (``model.path``).
Everything downstream (prompting, read-out, training, generation) sees only a ``Backbone``, so the
tiny models exercise the real code path. README "Adding a new LALM" lists what an entry needs.

Here: the ``Backbone`` and ``BackboneFamily`` types, the tiny models' shared sizes, weight dtype
and attention kernel, LoRA through peft on the language model only, gradient checkpointing that
still trains adapters, and the start-up check that every class name has its own first token (the
read-out depends on it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
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


def tiny_sizes(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[dict, dict]:
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


# ``model.name`` is a family's key (a local checkpoint) or its ``tiny_name``; the families
# register themselves in ``ambemo.model.families``, the registry's home (one module each).
FAMILIES: Registry[BackboneFamily] = BACKBONES


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
