"""The extension points: one registry each for training strategies, corpus readers and backbone families.

Each built-in entry is declared once, where it is defined, by registering itself::

    @STRATEGIES.register("sft")
    class SFTModule(EmotionModule): ...

and the config's valid choices (``strategy.name``, ``data.name``, ``model.name``), the errors that
list them and ``ambemo train --help`` all read the registries: there is no second list.

A registry fills itself on first use by importing its *home*, the module whose import registers the
built-in entries (``ambemo.strategies``, ``ambemo.data.corpus``, ``ambemo.model.families``). The
home is named by a string, not imported here, so this module stays at the bottom layer and the
config reads choices without importing torch until they are needed.

Plugins from outside the package register the same way, from a module of their own: name it in
``AMBEMO_PLUGINS`` (module names, comma-separated; the module must be importable, e.g. on
``PYTHONPATH``) and every registry imports it before answering. The variable reaches DDP ranks and
sweep agents, which start from the environment. The plugin's YAML building blocks and experiments
go in a folder named in ``AMBEMO_CONFIG_PATH`` (see ``ambemo.config.config_roots``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from ambemo.errors import AmbemoError

PLUGINS_ENV = "AMBEMO_PLUGINS"

T = TypeVar("T")


class RegistryError(AmbemoError, ValueError):
    """An unknown name, a name registered twice, or a plugin that cannot be imported."""

    kind = "config error"


def plugin_modules() -> list[str]:
    """The module names in ``AMBEMO_PLUGINS``, in order."""
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def load_plugins() -> None:
    """Import every module named in ``AMBEMO_PLUGINS`` (a module already imported is not run again)."""
    for name in plugin_modules():
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(
                f"{PLUGINS_ENV} names module '{name}', which cannot be imported ({err}). "
                "Put its folder on PYTHONPATH or remove it from the variable"
            ) from err


class Registry(Generic[T]):
    """Named entries of one extension point, selected by the config key ``key``."""

    def __init__(self, kind: str, key: str, home: str, aliases: Callable[[T], Iterable[str]] | None = None) -> None:
        self.kind = kind
        """What an entry is, for messages (``strategy``)."""
        self.key = key
        """The dotted config key whose value names an entry (``strategy.name``)."""
        self.home = home
        """The module whose import registers the built-in entries."""
        self.aliases = aliases
        """Further config values that select an entry besides its name (see ``BACKBONES``)."""
        self._entries: dict[str, T] = {}
        self._home_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function (or any object passed) under ``name``."""

        def add(entry: T) -> T:
            taken = self._entries.get(name)
            if taken is not None and taken is not entry:  # a plugin must not replace a built-in unseen
                raise RegistryError(f"{self.kind} '{name}' is registered twice: {taken!r} and {entry!r}")
            self._entries[name] = entry
            return entry

        return add

    def _load(self) -> None:
        if not self._home_loaded:
            self._home_loaded = True  # set first: the home's own modules may ask for choices while importing
            importlib.import_module(self.home)
        load_plugins()

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, built-ins first, in registration order."""
        self._load()
        return list(self._entries.items())

    def names(self) -> list[str]:
        """The registered names."""
        return [name for name, _ in self.items()]

    def choices(self) -> list[str]:
        """Every valid value of ``key``: each entry's name, followed by its aliases."""
        return [choice for name, entry in self.items() for choice in (name, *self._aliases(entry))]

    def _aliases(self, entry: T) -> list[str]:
        return list(self.aliases(entry)) if self.aliases else []

    def lookup(self, choice: str) -> tuple[str, T]:
        """The (name, entry) that a value of ``key`` selects, by name or alias; an error lists the choices."""
        for name, entry in self.items():
            if choice == name or choice in self._aliases(entry):
                return name, entry
        raise RegistryError(f"bad value for '{self.key}': {choice!r}. Valid choices: {', '.join(self.choices())}")

    def __getitem__(self, choice: str) -> T:
        return self.lookup(choice)[1]


STRATEGIES: Registry[Any] = Registry("strategy", "strategy.name", home="ambemo.strategies")
"""``strategy.name`` -> the LightningModule class (an ``ambemo.strategies.EmotionModule``)."""

CORPORA: Registry[Any] = Registry("corpus reader", "data.name", home="ambemo.data.corpus")
"""``data.name`` -> an ``ambemo.data.corpus.CorpusReader``."""

BACKBONES: Registry[Any] = Registry(
    "backbone family", "model.name", home="ambemo.model.families", aliases=lambda family: (family.tiny_name,)
)
"""Family key -> an ``ambemo.model.backbone.BackboneFamily``. ``model.name`` is a family's key (its
checkpoint, from ``model.path``) or its alias, the ``tiny_name`` of its random-initialised twin."""

#: The registries by the config key that selects from them.
REGISTRIES: dict[str, Registry[Any]] = {r.key: r for r in (STRATEGIES, CORPORA, BACKBONES)}
