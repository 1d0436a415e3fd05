"""Typed run configuration: dataclasses (the schema), YAML building blocks, command-line overrides.

One config system (OmegaConf). A run's config is composed in this order, later wins:

1. the dataclass defaults below (``RunConfig``);
2. one YAML building block per group, ``conf/<group>/<option>.yaml``, chosen by the
   experiment's ``defaults:`` mapping or on the command line as ``group=option``; a block's
   optional ``_run:`` mapping sets keys outside its group (``conf/model/qwen2_audio_7b.yaml``
   sets the batch sizes that fit one 80 GB GPU);
3. the experiment file ``experiments/<name>.yaml`` (everything except ``defaults:``);
4. command-line overrides ``key=value`` or ``--key=value`` (the form a W&B sweep agent passes).

Building blocks and experiments are looked up in the repository's ``conf/`` and ``experiments/``,
then in each folder of ``AMBEMO_CONFIG_PATH`` (``os.pathsep``-separated) laid out the same way, so
a plugin adds its own without editing the package (``config_roots``).

The ``strategy`` and ``data`` sections are typed by the chosen strategy's or corpus's settings
class (``TYPED_SECTIONS``: ``StrategyConfig`` and ``DataConfig``, the shared bases, or the subclass
the strategy's module or the corpus's reader names as ``settings``), retyped whenever a layer sets
``strategy.name`` or ``data.name``; each class checks its own fields.

Every field carries a docstring (the string under it); ``ambemo train --help`` prints them.
Unknown keys, wrong types and unknown group options raise ``ConfigError`` naming the key and
the valid choices. The choices of ``strategy.name``, ``data.name`` and ``model.name`` are the
names registered in ``ambemo.registry`` (``valid_choices``).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import os
import textwrap
import warnings
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ambemo.data.settings import DataConfig
from ambemo.errors import ConfigError
from ambemo.registry import BACKBONES, REGISTRIES
from ambemo.schema import SectionSettings, check_at_least, check_at_most, check_choice, inherited

#: Repository root (holds conf/ and experiments/).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PACKAGE_ROOT / "conf"
EXPERIMENTS_DIR = PACKAGE_ROOT / "experiments"
#: Further folders (``os.pathsep``-separated), each with ``conf/<group>/*.yaml`` and/or ``experiments/*.yaml``.
CONFIG_PATH_ENV = "AMBEMO_CONFIG_PATH"

GROUPS = ("data", "model", "strategy", "trainer", "logger")


@dataclass
class TinyBackboneConfig:
    """Size of the random-initialised models ``model=tiny`` (Qwen2-Audio) and ``model=tiny_omni``
    (Qwen2.5-Omni thinker) used by tests and the CPU demo."""

    audio_d_model: int = 64
    """Audio encoder width."""
    audio_layers: int = 2
    """Audio encoder layers."""
    audio_heads: int = 4
    """Audio encoder attention heads."""
    text_hidden: int = 128
    """Language model width."""
    text_layers: int = 2
    """Language model layers."""
    text_heads: int = 4
    """Language model attention heads."""
    text_kv_heads: int = 2
    """Language model key/value heads (grouped-query attention, as in Qwen2)."""
    text_ffn: int = 256
    """Language model MLP width."""
    num_mel_bins: int = 128
    """Log-mel bins of the feature extractor (Qwen2-Audio uses 128)."""


@dataclass
class ModelConfig:
    """The audio-language backbone and what is trained."""

    name: str = "tiny"
    """Backbone (a family registered in ``ambemo.registry.BACKBONES``): ``tiny`` / ``tiny_omni``
    (random-initialised Qwen2-Audio / Qwen2.5-Omni thinker built offline) or ``qwen2_audio`` /
    ``qwen2_5_omni`` (a local checkpoint, ``path``)."""
    path: str | None = None
    """Local directory of a real checkpoint (e.g. Qwen2-Audio-7B-Instruct); required unless a tiny model."""
    finetune: str = "lora"
    """``lora`` (peft adapters on the language model) or ``full`` (every weight)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters: the language model's attention and MLP projections."""
    dtype: str = "float32"
    """Weight dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bfloat16 with CUDA, else float32)."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers (``sdpa``, ``eager``, ``flash_attention_2``)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (non-reentrant, with input grads enabled so LoRA still trains)."""
    rollout_engine: str = "fast"
    """Reasoning generation (rollouts, validation, test): ``fast`` runs the audio and the prompt once
    per group, decodes from a static KV cache (CUDA-graph-compiled on GPU) with LoRA merged; ``generate``
    is plain ``model.generate`` on K copies of each prompt (the baseline; same sampling semantics)."""
    classes: list[str] = field(default_factory=list)
    """Classes the model reads out and its prompt lists; empty = ``data.classes``. For cross-corpus
    evaluation give the training corpus's classes (e.g. CREMA-D's six to test on IEMOCAP's four):
    p_hat is then the softmax over the test corpus's classes only (each mapped to a model class)."""
    init_from: str | None = None
    """Start from trained weights: a checkpoint file, a run folder (its best checkpoint, else its
    last), or ``latest:<experiment>`` (the newest finished run of that experiment under
    ``out_dir`` trained with this run's ``seed``: seed for seed; if there is none, it is trained
    first with this run's data, seed and logger)."""
    chunk_seconds: int = 3
    """Audio window of the feature extractor in seconds (30 for the real Qwen2-Audio; ``tiny`` uses 3)."""
    tiny: TinyBackboneConfig = field(default_factory=TinyBackboneConfig)
    """Sizes for the tiny models (``name=tiny``, ``name=tiny_omni``)."""


@dataclass
class StrategyConfig(SectionSettings):
    """Settings every training strategy has: its name, the optimiser and evaluation generation.

    Each strategy's own settings are a subclass, defined beside its LightningModule and named by
    the module's ``settings`` attribute (``ambemo.strategies.grpo.GRPOConfig``...). Once the
    groups are merged, ``cfg.strategy`` is typed by the chosen strategy's class
    (``strategy_settings``): a key of another strategy is an error that names it, and ``--help``
    lists only the chosen strategy's keys. Each class checks its own fields (``check``)."""

    SECTION: ClassVar[str] = "strategy"
    NOUN: ClassVar[str] = "strategy"
    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {
        "lr": (0, False),
        "weight_decay": (0, True),
        "warmup_ratio": (0, True),
        "min_lr_ratio": (0, True),
    }
    AT_MOST: ClassVar[dict[str, tuple[float, bool]]] = {"warmup_ratio": (1, True), "min_lr_ratio": (1, True)}

    name: str = "sft"
    """Strategy (registered in ``ambemo.registry.STRATEGIES``): ``sft`` (supervised CoT + KL
    read-out), ``dpo`` (on-policy DPO), ``grpo`` (GRPO, GRPO_z), or a plugin's."""
    use_cot: bool = True
    """Train on and generate the structured reasoning before the answer slot; False answers directly."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_ratio: float = 0.03
    """Fraction of optimizer steps of linear warm-up before cosine decay."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of ``lr``."""
    max_new_tokens: int = 160
    """Evaluation: most reasoning tokens generated before the answer slot is forced."""

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.strategy.max_new_tokens < 1:
            raise ConfigError("'strategy.max_new_tokens' must be >= 1")


@dataclass
class TrainerConfig:
    """Lightning Trainer settings."""

    accelerator: str = "auto"
    """``cpu``, ``gpu`` or ``auto``."""
    devices: Any = 1
    """Devices per node (or ``auto``); with several, ``distributed=ddp`` runs one process each."""
    num_nodes: int = 1
    """Number of nodes (multi-node DDP: launch one ``ambemo train`` per node with torchrun or srun,
    see conf/trainer/ddp.yaml)."""
    distributed: str = "auto"
    """Lightning's ``strategy`` argument, how processes share the work: ``auto`` or ``ddp``
    (``ddp_spawn`` is refused: its processes cannot hand the test predictions back to the one that
    writes the run folder). Formerly ``trainer.strategy``, a name that read as the training method."""
    precision: str = "32-true"
    """Lightning precision: ``32-true``, ``bf16-mixed``, ``bf16-true`` ..."""
    max_epochs: int = 20
    """Training epochs."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1 = no limit)."""
    check_val_every_n_epoch: int = 5
    """Run validation (which generates reasoning) every N epochs."""
    log_every_n_steps: int = 10
    """Log training metrics every N steps."""
    gradient_clip_val: float = 1.0
    """Clip the global gradient norm (0 = off)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation."""
    fast_dev_run: bool = False
    """One batch of train, val and test: checks that a config runs end to end."""
    limit_val_batches: float = 1.0
    """Fraction (or count, if > 1) of validation batches."""
    test_weights: str = "best"
    """Weights that score the test split: ``best`` (lowest val JS seen; early stopping) or ``last``."""
    torch_threads: int = 0
    """CPU threads for torch (0 = leave torch's default)."""
    checkpoint_every_n_steps: int = 0
    """Also refresh ``checkpoints/last.ckpt`` every N optimizer steps (mid-epoch), for preemptible
    jobs (0 = only at the end of each epoch and on SIGTERM/SIGUSR1)."""
    resume: str | None = None
    """Resume training exactly where a checkpoint left it (weights, optimizer, LR schedule, random
    states, data position), in that checkpoint's run folder: a ``.ckpt`` file, a run folder (its
    ``checkpoints/last.ckpt``), or ``auto`` (the newest unfinished run of this experiment under
    ``out_dir`` with a ``last.ckpt``; none: start fresh). For requeued jobs."""


@dataclass
class LoggerConfig:
    """Where metrics go (a CSV of per-step metrics is always written)."""

    name: str = "wandb"
    """``wandb`` (offline without WANDB_API_KEY, online with it) or ``csv`` (CSV only)."""
    project: str = "ambemo"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user); None = the key's default."""
    mode: str = "auto"
    """W&B mode: ``auto`` (online iff WANDB_API_KEY is set), ``offline`` or ``online``."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class RunConfig:
    """One run: an experiment composed from the groups, plus run-level settings."""

    experiment: str = "sft_cot"
    """Name of the experiment file (``experiments/<name>.yaml``); also the run folder's name."""
    seed: int = 0
    """Seed for model initialisation, data order and sampling."""
    out_dir: str = "runs"
    """Run folders go to ``<out_dir>/<experiment>/<timestamp>/``."""
    data: DataConfig = field(default_factory=DataConfig)
    """Group ``data`` (conf/data/*.yaml): the corpus."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Group ``model`` (conf/model/*.yaml): the backbone."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """Group ``strategy`` (conf/strategy/*.yaml): the training strategy; typed by the chosen
    strategy's settings class (``strategy_settings``)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Group ``trainer`` (conf/trainer/*.yaml): devices and loop."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Group ``logger`` (conf/logger/*.yaml): W&B or CSV only."""


# --------------------------------------------------------------------------------------------
# Composition


def config_roots() -> list[Path]:
    """The folders of ``AMBEMO_CONFIG_PATH``, in order: each may hold ``conf/<group>/<option>.yaml``
    building blocks and ``experiments/<name>.yaml`` files, found after the repository's own."""
    return [Path(entry) for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if entry]


def conf_dirs() -> list[Path]:
    """Where building blocks are looked up, first match wins: ``conf/``, then each config root's."""
    return [CONF_DIR, *(root / "conf" for root in config_roots())]


def experiment_dirs() -> list[Path]:
    """Where experiment files are looked up, first match wins: ``experiments/``, then each config root's."""
    return [EXPERIMENTS_DIR, *(root / "experiments" for root in config_roots())]


def _find(folders: list[Path], relative: str) -> Path | None:
    """The first ``folder/relative`` that is a file."""
    return next((folder / relative for folder in folders if (folder / relative).is_file()), None)


def group_options(group: str) -> list[str]:
    """Names of the YAML building blocks of a group (``conf/<group>/*.yaml`` in every ``conf_dirs``)."""
    return sorted({p.stem for folder in conf_dirs() for p in (folder / group).glob("*.yaml")})


def experiment_names() -> list[str]:
    """Names of the runnable-here experiment files (``experiments/*.yaml``;
    ``experiments/<folder>/*.yaml`` as ``<folder>/<name>``, e.g. ``headroom/dpo_cot``), the
    repository's first, then those of each config root. Sweep files are not experiments, and the
    paper's full-scale recipes (``experiments/paper/``, 7B on a GPU) are listed by
    ``ambemo.paper.recipe_names``."""
    names: list[str] = []
    for folder in experiment_dirs():
        top = sorted(p.stem for p in folder.glob("*.yaml"))
        nested = sorted(
            p.relative_to(folder).with_suffix("").as_posix()
            for p in folder.glob("*/*.yaml")
            if p.parent.name not in ("sweeps", "paper")
        )
        names += [name for name in top + nested if name not in names]
    return names


def _read_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml errors come in several types; all mean the same to a user
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def _read_experiment(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """An experiment file, on top of the one its ``extends: NAME`` names (if any): a variant
    (``experiments/headroom/dpo_cot.yaml``) states only what it changes, and follows its base's edits."""
    cfg = _read_yaml(path)
    base = cfg.pop("extends", None)
    if base is None:
        return cfg
    base_path = _find(experiment_dirs(), f"{base}.yaml")
    if base_path is None:
        valid = ", ".join(experiment_names())
        raise ConfigError(f"{path}: extends unknown experiment '{base}'. Valid choices: {valid}")
    if base_path in (*seen, path):
        raise ConfigError(f"{path}: 'extends' goes round in a circle through {base_path}")
    merged = OmegaConf.merge(_read_experiment(base_path, (*seen, path)), cfg)
    return merged  # type: ignore[return-value]


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    """Merge ``update`` into the typed ``base``, turning OmegaConf's errors into ones that name the key.

    Old names of renamed keys are read as the new ones (``RENAMED_KEYS``). When ``update`` chooses
    a strategy or a corpus (``strategy.name``, ``data.name``), that section of ``base`` is retyped
    by the chosen entry's settings class first, so the update's keys are checked against it."""
    update = renamed_keys(update, source)
    update = update if isinstance(update, DictConfig) else OmegaConf.create(update)
    for section in TYPED_SECTIONS:
        chosen = OmegaConf.select(update, f"{section}.name", default=None)
        base = _typed_section(base, section, chosen if isinstance(chosen, str) else base[section].name)
        _rename_deprecated(update, section, base[section].name, source)
    try:
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise ConfigError(_explain(err, key, source, base)) from None


#: The sections typed by the entry their ``name`` chooses, and the base class of each one's settings.
TYPED_SECTIONS: dict[str, type[SectionSettings]] = {cls.SECTION: cls for cls in (StrategyConfig, DataConfig)}


def section_settings(section: str, name: str) -> type[SectionSettings]:
    """The settings class that ``<section>.name=name`` selects: the registered entry's ``settings``
    (the section's base class, e.g. ``DataConfig``, for an entry that names none)."""
    registry = REGISTRIES[f"{section}.name"]
    if name not in registry.choices():
        raise ConfigError(f"bad value for '{section}.name': {name!r}. Valid choices: {', '.join(registry.choices())}")
    base = TYPED_SECTIONS[section]
    settings: type[SectionSettings] = getattr(registry[name], "settings", base)
    return settings


def strategy_settings(name: str) -> type[StrategyConfig]:
    """The settings class of the strategy that ``strategy.name=name`` selects: its LightningModule's
    ``settings`` (``StrategyConfig`` itself for a module that declares none)."""
    return section_settings("strategy", name)  # type: ignore[return-value]


def corpus_settings(name: str) -> type[DataConfig]:
    """The settings class of the corpus that ``data.name=name`` selects: its ``CorpusReader``'s
    ``settings`` (``DataConfig`` itself for a reader that names none)."""
    return section_settings("data", name)  # type: ignore[return-value]


def _typed_section(cfg: DictConfig, section: str, name: str) -> DictConfig:
    """``cfg`` with its ``section`` typed by the settings class of entry ``name``. The values of the
    fields the new class shares with the old one are kept; the old entry's own are dropped (they
    were set for another strategy or corpus, which a later layer replaced)."""
    settings = section_settings(section, name)
    if OmegaConf.get_type(cfg[section]) is settings:
        return cfg
    shared = {f.name for f in fields(settings)}
    kept = {k: v for k, v in OmegaConf.to_container(cfg[section]).items() if k in shared}  # type: ignore[union-attr]
    out: DictConfig = OmegaConf.merge(cfg)  # type: ignore[assignment]  # a copy: the caller's stays as it was
    OmegaConf.set_readonly(out, False)
    out[section] = OmegaConf.merge(OmegaConf.structured(settings), kept, {"name": name})
    return out


def _rename_deprecated(update: DictConfig, section: str, name: str, source: str) -> None:
    """Rewrite, in ``update``, an old name of a setting of entry ``name`` (its class's ``RENAMED``)
    to the new one, with a warning."""
    node = update.get(section) if section in update else None
    if not isinstance(node, DictConfig):
        return
    noun = TYPED_SECTIONS[section].NOUN
    for old, new in inherited(section_settings(section, name), "RENAMED").items():
        if old not in node:
            continue
        was, now = f"{section}.{old}", f"{section}.{new}"
        if new in node and node[new] != node[old]:
            raise ConfigError(
                f"{source}: sets both '{was}' ({node[old]}) and '{now}' ({node[new]}); "
                f"'{was}' is the old name of '{now}' for {noun} {name}: keep only '{now}'"
            )
        warnings.warn(
            f"{source}: '{was}' is the old name of '{now}' for {noun} {name}, read as it "
            f"until the next release: write '{now}'",
            FutureWarning,
            stacklevel=2,
        )
        with open_dict(node):
            node[new] = node.pop(old)


def _explain(err: OmegaConfBaseException, key: str, source: str, base: DictConfig) -> str:
    parent, _, leaf = key.rpartition(".")
    schema = _schema_at(parent, base)
    if schema is not None and leaf and leaf not in {f.name for f in fields(schema)}:
        valid = ", ".join(f.name for f in fields(schema))
        where = f"{parent}." if parent else ""
        owners = _others_with(parent, leaf) if parent in TYPED_SECTIONS else []
        if owners:
            noun = TYPED_SECTIONS[parent].NOUN
            return (
                f"{source}: unknown key '{key}': it is a setting of {noun} {_listed(owners)}, and this run's "
                f"{noun} is {base[parent].name}. Valid keys under '{parent}.': {valid}"
            )
        return f"{source}: unknown key '{key}'. Valid keys under '{where or '(top level)'}': {valid}"
    msg = str(err).splitlines()[0]
    return f"{source}: bad value for '{key}': {msg}"


def _others_with(section: str, key: str) -> list[str]:
    """The registered entries of ``section`` whose settings have ``key`` (under its own or a deprecated name)."""
    owners = []
    for name in REGISTRIES[f"{section}.name"].names():
        settings = section_settings(section, name)
        if key in {f.name for f in fields(settings)} or key in inherited(settings, "RENAMED"):
            owners.append(name)
    return owners


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]


def _schema_at(dotted: str, cfg: DictConfig) -> type | None:
    """The settings class of the section ``dotted`` of the typed ``cfg`` (None if not a section)."""
    node = OmegaConf.select(cfg, dotted, default=None) if dotted else cfg
    schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return schema if isinstance(schema, type) and is_dataclass(schema) else None


def _field_types(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def parse_overrides(argv: list[str]) -> list[str]:
    """Normalise ``--key=value``, ``--key value`` and ``key=value`` to ``key=value`` strings."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            arg = arg[2:]
            if "=" not in arg:
                if i + 1 >= len(argv):
                    raise ConfigError(f"override '--{arg}' has no value; write --{arg}=VALUE")
                arg = f"{arg}={argv[i + 1]}"
                i += 1
        if "=" not in arg:
            raise ConfigError(f"cannot read override '{arg}': write key=value (e.g. trainer.max_epochs=3)")
        out.append(arg)
        i += 1
    return out


def compose(experiment: str | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Build the run config for an experiment with command-line overrides applied.

    ``overrides`` are ``key=value`` strings (see ``parse_overrides``); ``experiment=NAME`` and
    ``group=option`` among them choose the experiment file and building blocks.
    """
    overrides = list(overrides or [])
    group_choice: dict[str, str] = {}
    dotted: list[str] = []
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "experiment":
            experiment = value
        elif key in GROUPS:
            group_choice[key] = value
        else:
            dotted.append(item)
    experiment = experiment or RunConfig.experiment
    exp_path = _find(experiment_dirs(), f"{experiment}.yaml")
    if exp_path is None:
        raise ConfigError(f"unknown experiment '{experiment}'. Valid choices: {', '.join(experiment_names())}")
    exp_cfg = _read_experiment(exp_path)
    defaults = exp_cfg.pop("defaults", None) or {}
    if not isinstance(defaults, DictConfig):
        raise ConfigError(f"{exp_path}: 'defaults' must map group -> option, e.g. {{model: tiny}}")
    for group in defaults:
        if group not in GROUPS:
            raise ConfigError(f"{exp_path}: unknown group '{group}' in defaults. Valid groups: {', '.join(GROUPS)}")

    cfg = OmegaConf.structured(RunConfig)
    for group in GROUPS:
        option = group_choice.get(group) or defaults.get(group)
        if option is not None:
            cfg = apply_group(cfg, group, option)
    cfg = _merge(cfg, exp_cfg, str(exp_path))
    cfg.experiment = experiment
    return apply_overrides(cfg, dotted)


def apply_group(cfg: DictConfig, group: str, option: str) -> DictConfig:
    """``cfg`` with building block ``conf/<group>/<option>.yaml`` merged into its ``group`` section
    (and the block's ``_run`` keys, if any, into the rest)."""
    block = _find(conf_dirs(), f"{group}/{option}.yaml")
    if block is None:
        raise ConfigError(
            f"unknown {group} option '{option}'. Valid choices for {group}: {', '.join(group_options(group))}"
        )
    block_cfg = _read_yaml(block)
    run_keys = block_cfg.pop("_run", None)
    cfg = _merge(cfg, {group: block_cfg}, str(block))
    if run_keys is not None:  # keys outside the group, e.g. a 7B model's memory-fitting batch sizes
        cfg = _merge(cfg, run_keys, f"{block} (_run)")
    return cfg


def apply_overrides(cfg: DictConfig, dotted: list[str]) -> DictConfig:
    """``key=value`` overrides merged into a typed config, which is then checked (``compose``'s
    last step; also how a resumed run's saved config takes the command line's overrides)."""
    try:
        cli = OmegaConf.from_dotlist(dotted)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot read overrides {dotted}: {err}") from None
    cfg = _merge(cfg, cli, "command line")
    OmegaConf.set_readonly(cfg, False)
    OmegaConf.set_struct(cfg, True)
    _check(cfg)
    return cfg


#: Renamed settings, old dotted key -> new one. An old key in a building block, an experiment, an
#: override or a saved run's config.yaml is still read, for one release, as its new name, with a
#: warning; then its entry goes. ``trainer.strategy`` (Lightning's distributed setting) read as
#: the training method, which is ``strategy``.
RENAMED_KEYS: dict[str, str] = {"trainer.strategy": "trainer.distributed"}
_ABSENT = object()


def renamed_keys(update: Any, source: str, warn: bool = True) -> Any:
    """``update`` (a mapping about to be merged into a run config) with each old key of
    ``RENAMED_KEYS`` moved to its new name, with a ``FutureWarning`` naming the new key: Python's
    deprecation category meant for users of a program (``DeprecationWarning`` is hidden outside
    ``__main__``). Setting both names in one place is an error, since neither would be clearly meant."""
    if not isinstance(update, (dict, DictConfig)):
        return update
    update = OmegaConf.create(update) if isinstance(update, dict) else update
    for old, new in RENAMED_KEYS.items():
        parent_key, _, leaf = old.rpartition(".")
        parent = OmegaConf.select(update, parent_key) if parent_key else update
        if not isinstance(parent, DictConfig) or leaf not in parent:
            continue
        if OmegaConf.select(update, new, default=_ABSENT) is not _ABSENT:
            raise ConfigError(
                f"{source}: sets both '{old}' and '{new}'; '{old}' is the old name of '{new}': keep '{new}'"
            )
        if warn:  # a saved run's config.yaml is read silently: it is not the user's to edit
            warnings.warn(
                f"{source}: '{old}' is deprecated, renamed '{new}' (the old name is read until the next release)",
                FutureWarning,
                stacklevel=3,
            )
        OmegaConf.update(update, new, parent.pop(leaf), force_add=True)
    return update


#: Settings with a fixed set of values; ``valid_choices`` adds the registries' keys. Those of the
#: typed sections (``data``, ``strategy``) are their settings classes' ``CHOICES``.
_CHOICES = {
    "model.finetune": ("lora", "full"),
    "model.dtype": ("float32", "bfloat16", "float16", "auto"),
    "model.rollout_engine": ("fast", "generate"),
    "logger.name": ("wandb", "csv"),
    "logger.mode": ("auto", "offline", "online"),
    "trainer.test_weights": ("best", "last"),
}


#: Lowest value (and whether it is allowed) of numeric settings; keys a config lacks are passed over.
#: The typed sections' are checked by their settings classes (``SectionSettings.check``).
_AT_LEAST: dict[str, tuple[float, bool]] = {
    **{f"model.{k}": (1, True) for k in ("lora_r", "chunk_seconds")},
    "model.lora_alpha": (0, False),
    **{f"trainer.{k}": (1, True) for k in ("num_nodes", "check_val_every_n_epoch", "log_every_n_steps")},
    "trainer.accumulate_grad_batches": (1, True),
    **{f"trainer.{k}": (0, True) for k in ("gradient_clip_val", "limit_val_batches", "torch_threads")},
    "trainer.max_steps": (-1, True),
}
#: Highest value (and whether it is allowed).
_AT_MOST: dict[str, tuple[float, bool]] = {
    "model.lora_dropout": (1, False),
}


def valid_choices() -> dict[str, tuple[str, ...]]:
    """Every setting with a set of valid values, and those values: ``strategy.name``, ``data.name``
    and ``model.name`` are what ``ambemo.registry`` holds (importing the built-in entries and the
    ``AMBEMO_PLUGINS`` modules on first use), the others fixed here (the typed sections' own are
    their settings classes' ``CHOICES``, which depend on the chosen entry)."""
    return {**{key: tuple(registry.choices()) for key, registry in REGISTRIES.items()}, **_CHOICES}


def _check_numbers(cfg: DictConfig) -> None:
    """Every number finite, and within the range where the setting means something: a NaN loss
    weight or a negative learning rate would train without a word and give NaN or wrong results."""
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"bad value for '{key}': {value}. Give a finite number")
    for key, (low, inclusive) in _AT_LEAST.items():
        check_at_least(cfg, key, low, inclusive)
    for key, (high, inclusive) in _AT_MOST.items():
        check_at_most(cfg, key, high, inclusive)
    epochs = cfg.trainer.max_epochs
    if epochs < -1 or (epochs == -1 and cfg.trainer.max_steps < 1):
        raise ConfigError(
            f"bad value for 'trainer.max_epochs': {epochs}. It must be >= 0 (0: evaluate only), "
            "or -1 with trainer.max_steps > 0"
        )
    if cfg.trainer.max_steps == 0:
        raise ConfigError("bad value for 'trainer.max_steps': 0. Use -1 (no limit) or a positive count")


def _numbers(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float in a config, lists included."""
    if isinstance(node, DictConfig):
        return [pair for key in node for pair in _numbers(node[key], f"{prefix}{key}.")]
    if OmegaConf.is_list(node):
        return [pair for i, item in enumerate(node) for pair in _numbers(item, f"{prefix[:-1]}[{i}].")]
    return [(prefix[:-1], node)] if isinstance(node, float) else []


def _check(cfg: DictConfig) -> None:
    """Cross-field checks that the types alone cannot express."""
    for key, valid in valid_choices().items():
        check_choice(cfg, key, valid)
    _check_numbers(cfg)
    for section, base in TYPED_SECTIONS.items():
        name = cfg[section].name
        settings = section_settings(section, name)
        if OmegaConf.get_type(cfg[section]) is not settings:  # set past compose (e.g. cfg.strategy.name = ...)
            raise ConfigError(f"cfg.{section} is not typed {settings.__name__}, {base.NOUN} {name}'s settings")
        settings.check(cfg)
    # a family's own name loads its checkpoint; its alias (tiny_name) builds the random twin offline
    if cfg.model.name in BACKBONES.names() and not cfg.model.path:
        raise ConfigError(
            f"model.name={cfg.model.name} loads a local checkpoint: set model.path=/dir/of/the/checkpoint "
            "(no model hub is contacted)"
        )
    if cfg.trainer.distributed.startswith(("ddp_spawn", "ddp_notebook", "ddp_fork")):
        raise ConfigError(
            f"trainer.distributed={cfg.trainer.distributed}: use trainer.distributed=ddp (trainer=ddp). Spawned "
            "processes cannot hand the test predictions back to the process that writes the run folder"
        )
    if cfg.trainer.checkpoint_every_n_steps < 0:
        raise ConfigError("'trainer.checkpoint_every_n_steps' must be >= 0")


# --------------------------------------------------------------------------------------------
# Field documentation (for --help)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (attribute docstrings, read from source),
    the fields a settings class inherits included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    """The docstrings under the fields written in ``cls``'s own body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cfg: DictConfig, cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Lines ``key = value  # doc`` for every field, for ``ambemo train --help``."""
    lines: list[str] = []
    docs = field_docs(cls)
    hints = _field_types(cls)
    choices = valid_choices() | {f"{prefix}{key}": valid for key, valid in inherited(cls, "CHOICES").items()}
    for f in fields(cls):
        hint = hints[f.name]
        value = cfg[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            # a section typed by a subclass (the chosen strategy's settings) shows that class's keys
            lines.extend(describe(value, OmegaConf.get_type(value) or hint, f"{prefix}{f.name}."))
            continue
        shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        valid = choices.get(f"{prefix}{f.name}")
        listed = f" Choices: {', '.join(valid)}." if valid else ""
        lines.append(f"  {prefix}{f.name} = {shown!r}  # {docs.get(f.name, '')}{listed}")
    return lines


def saved_run_config(saved: DictConfig, source: str) -> DictConfig:
    """A saved run config (a run folder's ``config.yaml``) on the typed schema, so settings added
    since have their defaults. Configs saved before the settings were split by strategy and by
    corpus hold every strategy's and every corpus's keys: the other entries' are dropped, and a
    renamed key is read under its new name (silently: a run's saved file is not the user's to edit)."""
    for section, base in TYPED_SECTIONS.items():
        node = saved.get(section) if section in saved else None
        if not isinstance(node, DictConfig):
            continue
        settings = section_settings(section, node.get("name", base.name))
        own, renamed = {f.name for f in fields(settings)}, inherited(settings, "RENAMED")
        names = REGISTRIES[f"{section}.name"].names()
        every = {f.name for name in names for f in fields(section_settings(section, name))}
        with open_dict(node):
            for key in [k for k in node if k not in own]:
                if key in renamed and renamed[key] not in node:
                    node[renamed[key]] = node.pop(key)
                elif key in every:
                    node.pop(key)
    return _merge(OmegaConf.structured(RunConfig), saved, source)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (what every run saves as ``config.yaml``)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
