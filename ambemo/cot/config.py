"""Typed settings of ``ambemo curate`` (OmegaConf over dataclasses, like ``ambemo.config``).

Composition, later wins: the dataclass defaults below; ``conf/curate/default.yaml`` (the lab's
defaults, e.g. current prices); an optional ``--config FILE.yaml``; ``key=value`` overrides;
then the command's flags (``--model``, ``--threshold`` ...). The API key and endpoint are never
settings: the ``openai`` client reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` from the
environment, so no config file or report can contain them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ambemo.config import CONF_DIR
from ambemo.data.labels import CREMA_D_CLASSES
from ambemo.errors import AmbemoError

DEFAULT_FILE = CONF_DIR / "curate" / "default.yaml"
RESPONSE_FORMATS = ("json_schema", "json_object", "none")


class CurateConfigError(AmbemoError, ValueError):
    """A curation setting is unusable; the message names the key."""


@dataclass
class Price:
    """Prices in USD per 1M tokens, as the API's ``usage`` reports tokens."""

    input: float = 0.0
    """Text (and, without an ``audio_input`` price, audio) prompt tokens."""
    output: float = 0.0
    """Completion tokens."""
    audio_input: float | None = None
    """Audio prompt tokens (``usage.prompt_tokens_details.audio_tokens``); None = billed as ``input``."""


def _default_prices() -> dict[str, Price]:
    # OpenAI list prices (USD / 1M tokens) when this was written; check yours and override.
    return {
        "gpt-4o-audio-preview": Price(input=2.5, output=10.0, audio_input=40.0),
        "gpt-4o-mini-audio-preview": Price(input=0.15, output=0.6, audio_input=10.0),
        "gpt-4o": Price(input=2.5, output=10.0),
        "gpt-4o-mini": Price(input=0.15, output=0.6),
    }


@dataclass
class CurateConfig:
    """Everything ``ambemo curate`` can be told, except secrets."""

    model: str = "gpt-4o-audio-preview"
    """Model name sent to the endpoint (GPT-4o-class with audio input; any name the server knows)."""
    text_only: bool = False
    """Send acoustic descriptors measured locally (pitch, loudness, rate, pauses) instead of the audio,
    for endpoints without audio input."""
    classes: list[str] = field(default_factory=lambda: list(CREMA_D_CLASSES))
    """Emotion classes in label order (the manifest's votes are read in this order)."""
    response_format: str = "json_schema"
    """``json_schema`` (structured outputs, strict), ``json_object`` or ``none`` for servers without
    them; every answer is validated locally in all three modes."""
    temperature: float = 0.7
    """Sampling temperature of the rationale (a regenerated attempt should differ)."""
    verify_temperature: float = 0.0
    """Sampling temperature of the verification reader."""
    max_output_tokens: int = 900
    """``max_completion_tokens`` of a rationale request."""
    verify_max_output_tokens: int = 200
    """``max_completion_tokens`` of a verification request."""
    threshold: float = 0.2
    """Accept a rationale when JS(reader's distribution, votes) in bits is at most this."""
    max_attempts: int = 3
    """Rationales generated per clip at most (invalid answers count) before the clip is rejected."""
    feedback: bool = True
    """A regenerated attempt is told how the previous rationale was read, so it can do better."""
    allow_numbers_in_synthesis: bool = False
    """Allow percentages / probabilities in the synthesis. Off: such a rationale is invalid, because a
    synthesis that quotes the votes passes verification without explaining anything."""
    max_cot_chars: int = 2400
    """Longest accepted rationale (characters of the formatted CoT)."""
    concurrency: int = 4
    """Clips processed at the same time (threads sharing one client)."""
    timeout: float = 120.0
    """Seconds per HTTP request before the client gives up on it (then retries)."""
    max_retries: int = 4
    """Client retries with exponential backoff on 408/409/429/5xx, timeouts and connection errors."""
    max_consecutive_failures: int = 20
    """Stop starting clips after this many failed clips in a row (a dead endpoint or a wrong key);
    0 = never."""
    max_cost: float | None = None
    """Stop starting requests once this run has spent this many USD (in-flight ones finish and are
    recorded); None = no ceiling."""
    limit: int = 0
    """Curate only the first N training clips of the manifest (0 = all)."""
    prices: dict[str, Price] = field(default_factory=_default_prices)
    """Price table by model name; a model matches its exact name, else the longest name it starts with."""
    audio_tokens_per_second: float = 10.0
    """Dry-run estimate of audio prompt tokens per second of audio."""
    chars_per_token: float = 4.0
    """Dry-run estimate of text tokens: characters divided by this."""
    est_output_tokens: int = 350
    """Dry-run estimate of a rationale's completion tokens."""
    est_verify_output_tokens: int = 60
    """Dry-run estimate of a verification's completion tokens."""


_CHECKS = (
    ("threshold", lambda c: 0.0 <= c.threshold <= 1.0, "in [0, 1] (JS in bits)"),
    ("max_attempts", lambda c: c.max_attempts >= 1, ">= 1"),
    ("concurrency", lambda c: c.concurrency >= 1, ">= 1"),
    ("timeout", lambda c: c.timeout > 0, "> 0"),
    ("max_retries", lambda c: c.max_retries >= 0, ">= 0"),
    ("max_consecutive_failures", lambda c: c.max_consecutive_failures >= 0, ">= 0"),
    ("max_cost", lambda c: c.max_cost is None or c.max_cost > 0, "> 0 (or null for none)"),
    ("limit", lambda c: c.limit >= 0, ">= 0"),
    ("classes", lambda c: len(c.classes) >= 2 and len(set(c.classes)) == len(c.classes), "2+ distinct names"),
    ("response_format", lambda c: c.response_format in RESPONSE_FORMATS, f"one of {', '.join(RESPONSE_FORMATS)}"),
)


def load_config(
    overrides: list[str] | None = None, config_file: str | Path | None = None, defaults_file: Path | None = DEFAULT_FILE
) -> CurateConfig:
    """Compose the settings (see the module docstring) and check them; errors name the key."""
    cfg: DictConfig = OmegaConf.structured(CurateConfig)
    sources: list[tuple[str, object]] = []
    if defaults_file is not None and defaults_file.is_file():
        sources.append((str(defaults_file), OmegaConf.load(defaults_file)))
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise CurateConfigError(f"{path}: no such config file")
        sources.append((str(path), OmegaConf.load(path)))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise CurateConfigError(f"cannot read {bad[0]!r}: overrides are key=value (e.g. temperature=0.5)")
        sources.append(("command line", OmegaConf.from_dotlist([o.removeprefix("--") for o in overrides])))
    for source, update in sources:
        try:
            cfg = OmegaConf.merge(cfg, update)  # type: ignore[assignment]
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", "") or ""
            msg = f"{source}: bad key or value {key!r}: {str(err).splitlines()[0]}"
            if "." not in key and key not in CurateConfig.__dataclass_fields__:
                msg += f". Valid keys: {', '.join(CurateConfig.__dataclass_fields__)}"
            raise CurateConfigError(msg) from None
    result: CurateConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    for key, ok, want in _CHECKS:
        if not ok(result):
            raise CurateConfigError(f"'{key}' is {getattr(result, key)!r}; it must be {want}")
    return result


def price_for(cfg: CurateConfig) -> Price:
    """The price of ``cfg.model``: exact name, else the longest table name it starts with (dated snapshots)."""
    if cfg.model in cfg.prices:
        return cfg.prices[cfg.model]
    prefixes = [name for name in cfg.prices if cfg.model.startswith(name)]
    if prefixes:
        return cfg.prices[max(prefixes, key=len)]
    raise CurateConfigError(
        f"no price for model {cfg.model!r} in 'prices' (known: {', '.join(cfg.prices)}). Add one, e.g. "
        f"prices.{cfg.model}.input=2.5 prices.{cfg.model}.output=10 (USD per 1M tokens; 0 for a free local "
        "server), or in a --config YAML when the name has dots"
    )
