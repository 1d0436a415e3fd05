"""What the settings classes of the typed config sections share, below the layers that declare them.

A section whose keys depend on the registered entry its ``name`` chooses (``strategy``, ``data``;
``ambemo.config.TYPED_SECTIONS``) is typed by that entry's settings class: a subclass of the
section's base (``ambemo.config.StrategyConfig``, ``ambemo.data.settings.DataConfig``), itself a
``SectionSettings``. The corpus readers (layer 1) declare theirs beside them, so this base and the
checks it applies live here, at layer 0, beside the error they raise (``ambemo.errors.ConfigError``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from omegaconf import DictConfig, OmegaConf

from ambemo.errors import ConfigError


class SectionSettings:
    """Base of the settings classes of a section whose keys depend on the entry its ``name``
    chooses (``StrategyConfig`` for ``strategy``, ``DataConfig`` for ``data``).

    Each registered entry names its settings class (a strategy module's ``settings``, a corpus
    reader's ``settings``), a subclass of the section's base. Once the groups are merged, the
    section is typed by the chosen entry's class (``ambemo.config.section_settings``): a key of
    another entry is an error that names it, ``--help`` lists only the chosen entry's keys, and
    each class checks its own fields (``check``)."""

    #: The run config's section the class types, and what an entry of it is called in messages.
    SECTION: ClassVar[str] = ""
    NOUN: ClassVar[str] = ""
    #: Settings with a fixed set of values, by field name. These tables are per class: a subclass
    #: lists its own fields, and ``check`` applies those of every class it derives from (``inherited``).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Lowest value of numeric settings, and whether it is allowed.
    AT_LEAST: ClassVar[dict[str, tuple[float, bool]]] = {}
    #: Highest value, and whether it is allowed.
    AT_MOST: ClassVar[dict[str, tuple[float, bool]]] = {}
    #: Old field names still read, for one release, with a warning: old name -> new name.
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """Raise ``ConfigError`` for a bad value of these settings. ``cfg`` is the whole run config,
        for checks that span groups; a subclass checks its own fields after ``super().check(cfg)``."""
        for key, valid in inherited(cls, "CHOICES").items():
            check_choice(cfg, f"{cls.SECTION}.{key}", valid)
        for key, (low, inclusive) in inherited(cls, "AT_LEAST").items():
            check_at_least(cfg, f"{cls.SECTION}.{key}", low, inclusive)
        for key, (high, inclusive) in inherited(cls, "AT_MOST").items():
            check_at_most(cfg, f"{cls.SECTION}.{key}", high, inclusive)


def inherited(cls: type, table: str) -> dict[str, Any]:
    """A per-class table of a settings class (``CHOICES``, ``AT_LEAST``, ``AT_MOST``, ``RENAMED``),
    merged with those of every class it derives from."""
    return {k: v for klass in reversed(cls.__mro__) for k, v in vars(klass).get(table, {}).items()}


def check_choice(cfg: DictConfig, key: str, valid: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` unless the setting ``key`` is one of ``valid``."""
    value = OmegaConf.select(cfg, key)
    if value not in valid:
        raise ConfigError(f"bad value for '{key}': {value!r}. Valid choices: {', '.join(valid)}")


def check_at_least(cfg: DictConfig, key: str, low: float, inclusive: bool = True) -> None:
    """Raise ``ConfigError`` if the number at ``key`` is below ``low`` (or equal, when not ``inclusive``);
    a key the config lacks is passed over."""
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, int | float) and (value < low or (value == low and not inclusive)):
        raise ConfigError(f"bad value for '{key}': {value}. It must be {'>=' if inclusive else '>'} {low}")


def check_at_most(cfg: DictConfig, key: str, high: float, inclusive: bool = True) -> None:
    """Raise ``ConfigError`` if the number at ``key`` is above ``high`` (or equal, when not ``inclusive``)."""
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, int | float) and (value > high or (value == high and not inclusive)):
        raise ConfigError(f"bad value for '{key}': {value}. It must be {'<=' if inclusive else '<'} {high}")
