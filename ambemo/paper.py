"""The paper's settings, and the values chosen where it is silent: the one source of truth.

Yu et al., "Disentangling Reasoning in Large Audio-Language Models for Ambiguous Emotion
Prediction" (Interspeech 2026, arXiv 2603.08230). ``SETTINGS`` lists, for each config key and
each Table 2 row it applies to, the value the paper recipes (``experiments/paper/*.yaml``) use,
what the paper states (with its section) or that it is silent, and the source of every chosen
value. ``DEPARTURES`` lists where the CPU demo experiments (``experiments/*.yaml``, the tiny
random model) depart from those values, and why. Tests compose every paper experiment and every
demo experiment and check them against these tables, so nothing drifts; the README's
"Reproducing the paper" tables are ``markdown_settings()`` and ``markdown_departures()``;
``ambemo train experiment=paper/... --print-config`` ends with ``provenance(cfg)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: Table 2's trained and zero-shot rows, as the recipes name them.
ROWS = ("base", "sft", "dpo", "grpo", "grpoz")
TRAINED = ("sft", "dpo", "grpo", "grpoz")
ON_POLICY = ("dpo", "grpo", "grpoz")
GRPO_ROWS = ("grpo", "grpoz")
CORPORA = ("iemocap", "crema_d")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Setting:
    """One config value of the paper recipes, with its provenance."""

    key: str
    """Dotted config key."""
    rows: tuple[str, ...]
    """The Table 2 rows (``ROWS``) it applies to."""
    value: Any
    """The value the recipes use."""
    paper: str
    """What the paper states, with its section; empty when it is silent."""
    source: str
    """Where the value comes from when the paper is silent or loose (or how its words map to a key)."""
    corpora: tuple[str, ...] | None = None
    """The corpora (``data.name``) whose settings have the key; None: every corpus."""


SETTINGS: tuple[Setting, ...] = (
    # ---- stated by the paper ----------------------------------------------------------------
    Setting("model.name", ROWS, "qwen2_audio", "Qwen2-Audio-7B-Instruct (§4)", "local checkpoint, no hub"),
    Setting("model.finetune", TRAINED, "lora", "LoRA for every paradigm (§4)", ""),
    Setting("model.lora_r", TRAINED, 8, "r = 8 (§4)", ""),
    Setting("model.lora_alpha", TRAINED, 16, "alpha = 16 (§4)", ""),
    Setting("model.lora_targets", TRAINED, LORA_TARGETS, "attention and feed-forward modules (§4)", ""),
    Setting("strategy.lr", ("sft",), 1e-4, "1e-4 for SFT (§4)", "AdamW (the only optimizer here)"),
    Setting("strategy.lr", ("dpo",), 5e-6, "5e-6 for DPO (§4)", "AdamW"),
    Setting("strategy.lr", GRPO_ROWS, 2e-5, "2e-5 for GRPO (§4)", "AdamW"),
    Setting("strategy.warmup_ratio", TRAINED, 0.03, "3 % linear warm-up, then cosine decay (§4)", ""),
    Setting("strategy.kl_weight", ("sft",), 1.0, "lambda = 1 (Eq. 3, §4)", ""),
    Setting("strategy.ce_weight", ("sft",), 1.0, "L_CE + lambda L_dist (Eq. 3)", ""),
    Setting("strategy.kl_weight", ("dpo",), 0.1, "lambda_1 = 0.1 (Eq. 5, §4)", ""),
    Setting("strategy.ce_weight", ("dpo",), 0.1, "lambda_2 = 0.1 (Eq. 5, §4)", ""),
    Setting("strategy.format_weight", GRPO_ROWS, 0.1, "lambda_3 = 0.1 (Eq. 6, §4)", ""),
    Setting("strategy.own_readout_weight", ("sft",), 0.0, "no such term (Eq. 3)", ""),
    Setting("strategy.use_cot", ROWS, True, "structured CoT, then the read-out (§3.2, §3.3.1)", ""),
    Setting("strategy.include_curated", ("grpo",), False, "plain GRPO: K sampled trajectories (§3.3.3)", ""),
    Setting("strategy.include_curated", ("grpoz",), True, "curated CoT as member K+1 (§3.3.3, Fig. 1)", ""),
    Setting(
        "strategy.curated_reward",
        ("grpoz",),
        "group_max",
        'it "consistently receives the highest reward" (§3.3.3), how is not said',
        "its reward raised to the group's maximum (the simplest rule that guarantees it)",
    ),
    Setting(
        "model.init_from",
        ON_POLICY,
        None,
        'pi_ref is "the original LALM without any update" (Eq. 5); start not stated',
        "inferred: start from the base model, the reference being the same weights without adapters",
    ),
    Setting(
        "data.fold",
        ROWS,
        1,
        "IEMOCAP: 5-fold leave-one-session-out (§4)",
        "`ambemo folds` runs folds 1-5",
        ("iemocap",),
    ),
    # ---- the paper is silent: chosen ----------------------------------------------------------
    Setting("strategy.weight_decay", TRAINED, 0.0, "", "transformers / TRL default (0.0)"),
    Setting("strategy.betas", TRAINED, [0.9, 0.999], "", "AdamW default (torch, TRL)"),
    Setting("strategy.min_lr_ratio", TRAINED, 0.0, "", "cosine to 0, as transformers' cosine schedule"),
    Setting("trainer.gradient_clip_val", TRAINED, 1.0, "", "TRL default max_grad_norm (1.0)"),
    Setting("model.lora_dropout", TRAINED, 0.05, "", "ms-swift's LoRA default (0.05)"),
    Setting("trainer.max_epochs", ("sft",), 3, "", "TRL / transformers default num_train_epochs (3)"),
    Setting("trainer.max_epochs", ON_POLICY, 1, "", "one rollout pass per utterance (cost: rollouts dominate)"),
    Setting("trainer.max_epochs", ("base",), 0, "zero-shot (Table 2)", "no training"),
    Setting("data.batch_size", TRAINED, 1, "", "one utterance per step fits 80 GB (conf/model/qwen2_audio_7b.yaml)"),
    Setting("trainer.accumulate_grad_batches", TRAINED, 16, "", "16 utterances per optimizer step (same block)"),
    Setting("strategy.beta", ("dpo",), 0.1, "", "TRL DPOConfig default beta (0.1)"),
    Setting(
        "strategy.ref_kl_weight",
        GRPO_ROWS,
        0.04,
        "objective has - beta KL(pi || pi_ref) (Eq. 7); beta not given",
        "DeepSeekMath's GRPO value (0.04; TRL's default before it moved to 0)",
    ),
    Setting("strategy.group_size", GRPO_ROWS, 8, "K not given (§3.3.3)", "TRL GRPOConfig default num_generations (8)"),
    Setting("strategy.clip_epsilon", GRPO_ROWS, 0.2, "clip(rho, 1 +- eps) (Eq. 7); eps not given", "TRL default (0.2)"),
    Setting("strategy.num_iterations", GRPO_ROWS, 1, "", "TRL default num_iterations (1)"),
    Setting("strategy.rollout_temperature", ON_POLICY, 1.0, "", "TRL default (1.0): rollouts from pi itself"),
    Setting("strategy.rollout_top_p", ON_POLICY, 1.0, "", "TRL default (1.0); GRPO refuses < 1"),
    Setting("strategy.rollout_top_k", ON_POLICY, 0, "", "TRL default (0 = off); GRPO refuses > 0"),
    Setting("strategy.rollout_max_new_tokens", ON_POLICY, 256, "", "choice (TRL: 512); longer curated CoTs counted"),
    Setting("strategy.max_new_tokens", ROWS, 256, "", "as the rollouts (evaluation reasoning budget)"),
    Setting("strategy.num_rollouts", ("dpo",), 4, "number of rollouts not given (§3.3.2)", "choice: the worst of 4"),
    Setting("strategy.rejected_min_js", ("dpo",), 0.05, "JS threshold not given (§3.3.2)", "choice (bits)"),
    Setting("data.max_seconds", ROWS, 30.0, "", "Qwen2-Audio's 30 s audio window"),
    Setting(
        "data.max_duration_policy",
        ROWS,
        "truncate",
        "",
        "longer clips keep their first 30 s (what Qwen2-Audio's processor reads), counted by `ambemo data summary`",
    ),
    Setting("model.chunk_seconds", ROWS, 30, "", "Qwen2-Audio's feature extractor window"),
    Setting("trainer.precision", ROWS, "bf16-mixed", "", "bf16 on GPU"),
    Setting("trainer.check_val_every_n_epoch", TRAINED, 1, "", "validate each epoch (early stopping by val JS)"),
)


@dataclass(frozen=True)
class Departure:
    """Where a CPU demo experiment departs from the paper recipe of its row."""

    key: str
    experiments: tuple[str, ...]
    """Demo experiments (``experiments/<name>.yaml``) with this value."""
    value: Any
    reason: str


# the headroom protocol's experiments (experiments/headroom/) extend the demo experiments of the
# same name: they share their departures, except the start point and the SFT start's epochs
HEADROOM_SFT = ("headroom/sft_cot_1ep",)
HEADROOM_ONPOLICY = ("headroom/dpo_cot", "headroom/grpo_cot", "headroom/grpoz_cot")
SFT_DEMOS = ("sft", "sft_cot", "sft_cot_own", "sft_cot_nokl", *HEADROOM_SFT)
DPO_DEMOS = ("dpo", "dpo_cot", "dpo_cot_nokl", "headroom/dpo_cot")
GRPO_COT_DEMOS = ("grpo_cot", "grpoz_cot", "headroom/grpo_cot", "headroom/grpoz_cot")
GRPO_DEMOS = ("grpo", *GRPO_COT_DEMOS)
TRAINED_DEMOS = (*SFT_DEMOS, *DPO_DEMOS, *GRPO_DEMOS)
ALL_DEMOS = ("base", "cross_domain_iemocap", *TRAINED_DEMOS)
COT_ONPOLICY_DEMOS = ("dpo_cot", "dpo_cot_nokl", "grpo_cot", "grpoz_cot", *HEADROOM_ONPOLICY)

DEPARTURES: tuple[Departure, ...] = (
    # the model and the hardware
    Departure("model.name", ALL_DEMOS, "tiny", "a random-initialised tiny Qwen2-Audio, on CPU"),
    Departure("model.finetune", TRAINED_DEMOS, "full", "LoRA on random weights learns little"),
    Departure("trainer.precision", ALL_DEMOS, "32-true", "CPU"),
    Departure("data.batch_size", TRAINED_DEMOS, 32, "the tiny model fits whole batches"),
    Departure("trainer.accumulate_grad_batches", TRAINED_DEMOS, 1, "(batch 32 per step instead of 1 x 16)"),
    # the data: the built-in corpus's clips and reasonings are short
    Departure("data.max_seconds", ALL_DEMOS, 3.0, "the built-in clips are at most 3 s (real corpora: 30 s)"),
    Departure("model.chunk_seconds", ALL_DEMOS, 3, "the tiny model's 3 s audio window"),
    Departure("strategy.max_new_tokens", ALL_DEMOS, 160, "the built-in corpus's reasonings are shorter"),
    Departure("strategy.rollout_max_new_tokens", COT_ONPOLICY_DEMOS, 140, "the same"),
    Departure("strategy.rollout_max_new_tokens", ("dpo", "grpo"), 160, "unused without CoT"),
    # optimisation of a small model trained from scratch
    Departure("strategy.lr", SFT_DEMOS, 2e-3, "a tiny model trained from scratch"),
    Departure("strategy.lr", (*DPO_DEMOS, "grpo"), 2e-4, "a fully fine-tuned tiny model"),
    Departure("strategy.lr", GRPO_COT_DEMOS, 1e-4, "a fully fine-tuned tiny model"),
    Departure(
        "strategy.weight_decay",
        ("sft_cot", "sft_cot_own", *HEADROOM_SFT),
        0.05,
        "measured: the tiny model overfits less",
    ),
    Departure("strategy.weight_decay", ("sft", "sft_cot_nokl", *DPO_DEMOS, *GRPO_DEMOS), 0.01, "ambemo's default"),
    Departure("strategy.min_lr_ratio", TRAINED_DEMOS, 0.1, "ambemo's default (cosine to 10 % of lr)"),
    Departure("trainer.max_epochs", ("sft_cot", "sft_cot_own", "sft_cot_nokl"), 5, "minutes on CPU"),
    Departure("trainer.max_epochs", ("sft",), 16, "minutes on CPU"),
    Departure("trainer.max_epochs", HEADROOM_SFT, 1, "the headroom protocol's unconverged SFT start"),
    Departure("trainer.max_epochs", ("dpo", "grpo"), 4, "minutes on CPU"),
    Departure("trainer.check_val_every_n_epoch", ("sft",), 4, "validation generates: CPU time"),
    Departure("strategy.group_size", GRPO_COT_DEMOS, 4, "CPU time"),
    Departure("strategy.num_iterations", ("grpo",), 2, "reuses the cheap answer rollouts"),
    Departure(
        "strategy.rollout_temperature",
        ("dpo", *COT_ONPOLICY_DEMOS),
        0.7,
        "measured: at 1.0 only 2-5 % of the tiny model's sampled reasonings were well-formed",
    ),
    # where training starts
    Departure(
        "model.init_from",
        tuple(e for e in COT_ONPOLICY_DEMOS if e not in HEADROOM_ONPOLICY),
        "latest:sft_cot",
        "a random model must first learn to write reasoning: the demo's SFT run",
    ),
    Departure(
        "model.init_from",
        HEADROOM_ONPOLICY,
        "latest:headroom/sft_cot_1ep",
        "the headroom protocol: an SFT start that has not converged, so there is room to improve",
    ),
    Departure("model.init_from", ("dpo", "grpo"), "latest:sft", "a random model must first learn the read-out"),
    # the ablations and the variant (their own experiments)
    Departure("strategy.use_cot", ("sft", "dpo", "grpo"), False, "the CoT ablation (Table 3)"),
    Departure("strategy.kl_weight", ("sft_cot_nokl", "dpo_cot_nokl"), 0.0, "the KL ablation (Fig. 2)"),
    Departure(
        "strategy.own_readout_weight",
        ("sft_cot_own",),
        1.0,
        "the variant beyond the paper: KL also after the model's own greedy reasoning",
    ),
)


def paper_row(cfg: DictConfig) -> str:
    """The Table 2 row a config trains (``base`` when it does not train)."""
    if cfg.trainer.max_epochs == 0:
        return "base"
    if cfg.strategy.name == "grpo":
        return "grpoz" if cfg.strategy.include_curated else "grpo"
    return str(cfg.strategy.name)


def settings_for(row: str, corpus: str) -> list[Setting]:
    """The settings that apply to one Table 2 row on one corpus (``data.name``)."""
    return [s for s in SETTINGS if row in s.rows and (s.corpora is None or corpus in s.corpora)]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def mismatches(cfg: DictConfig, row: str | None = None) -> list[str]:
    """Keys of ``cfg`` whose value differs from the table for its row: ``key: has X, table Y``."""
    row = row or paper_row(cfg)
    out = []
    for setting in settings_for(row, cfg.data.name):
        value = _plain(OmegaConf.select(cfg, setting.key))
        if value != setting.value:
            out.append(f"{setting.key}: has {value!r}, the table says {setting.value!r}")
    return out


def provenance(cfg: DictConfig) -> str:
    """Comment lines: each tabled key of this config's row, its value, the paper's word and the source."""
    row = paper_row(cfg)
    lines = [f"# Paper settings for Table 2 row '{row}' (ambemo/paper.py):"]
    for setting in settings_for(row, cfg.data.name):
        value = _plain(OmegaConf.select(cfg, setting.key))
        mark = "" if value == setting.value else f"  <- differs from the table ({setting.value!r})"
        said = setting.paper or "paper silent"
        chosen = f"; {setting.source}" if setting.source else ""
        lines.append(f"#   {setting.key} = {value!r}  [{said}{chosen}]{mark}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "null" if value is None else str(value)


def markdown_settings() -> str:
    """The README's hyperparameter table: key, rows, value, the paper's words, the source."""
    lines = ["| key | rows | value | paper | source of the value |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        rows = "all" if s.rows == ROWS else ("trained" if s.rows == TRAINED else ", ".join(s.rows))
        lines.append(f"| `{s.key}` | {rows} | {_cell(s.value)} | {s.paper or 'silent'} | {s.source or 'the paper'} |")
    return "\n".join(lines)


def markdown_departures() -> str:
    """The README's table of the CPU demo's departures from the paper recipes."""
    paper = {}
    for s in SETTINGS:
        paper.setdefault(s.key, []).append(f"{_cell(s.value)} ({', '.join(s.rows) if s.rows != ROWS else 'all'})")
    lines = ["| key | demo experiments | demo value | paper recipe | why |", "|---|---|---|---|---|"]
    for d in DEPARTURES:
        names = ", ".join(f"`{e}`" for e in d.experiments)
        lines.append(f"| `{d.key}` | {names} | {_cell(d.value)} | {'; '.join(paper.get(d.key, ['-']))} | {d.reason} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Recipe:
    """A paper experiment, ``experiments/paper/<name>_<corpus>.yaml``: a Table 2 row's settings,
    plus the changes that make it an ablation."""

    name: str
    row: str
    corpora: tuple[str, ...]
    reproduces: str
    """The paper's table or figure cell."""
    changes: tuple[tuple[str, Any], ...] = ()
    """Keys that differ from the row's ``SETTINGS`` on purpose (the ablation itself)."""


CREMA_D_SIX = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]

RECIPES: tuple[Recipe, ...] = (
    Recipe("base", "base", CORPORA, "Table 2, Base (zero-shot)"),
    Recipe("sft_cot", "sft", CORPORA, "Table 2, SFT"),
    Recipe("dpo_cot", "dpo", CORPORA, "Table 2, DPO"),
    Recipe("grpo_cot", "grpo", CORPORA, "Table 2, GRPO"),
    Recipe("grpoz_cot", "grpoz", CORPORA, "Table 2, GRPO_z"),
    Recipe(
        "sft_cot_nokl",
        "sft",
        CORPORA,
        "Fig. 2, SFT with CE only",
        (("strategy.kl_weight", 0.0), ("strategy.answer_ce_weight", 1.0)),
    ),
    Recipe("dpo_cot_nokl", "dpo", CORPORA, "Fig. 2, DPO with CE only", (("strategy.kl_weight", 0.0),)),
    Recipe("sft", "sft", ("crema_d",), "Table 3, in-domain without CoT", (("strategy.use_cot", False),)),
    Recipe(
        "cross_domain_sft_cot",
        "base",
        ("iemocap",),
        "Table 3, cross-domain (CREMA-D -> IEMOCAP) with CoT",
        (("model.init_from", "latest:paper/sft_cot_crema_d"), ("model.classes", CREMA_D_SIX)),
    ),
    Recipe(
        "cross_domain_sft",
        "base",
        ("iemocap",),
        "Table 3, cross-domain (CREMA-D -> IEMOCAP) without CoT",
        (("model.init_from", "latest:paper/sft_crema_d"), ("model.classes", CREMA_D_SIX), ("strategy.use_cot", False)),
    ),
)


def recipe_names() -> list[str]:
    """Every paper experiment, as ``experiment=`` takes it: ``paper/<name>_<corpus>``."""
    return [f"paper/{r.name}_{c}" for r in RECIPES for c in r.corpora]


def recipe_of(experiment: str) -> Recipe:
    """The recipe of a paper experiment name (``paper/<name>_<corpus>``)."""
    for recipe in RECIPES:
        for corpus in recipe.corpora:
            if experiment == f"paper/{recipe.name}_{corpus}":
                return recipe
    raise KeyError(f"{experiment!r} is not a paper experiment; they are: {', '.join(recipe_names())}")
