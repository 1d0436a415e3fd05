"""The backbone families, one module each, registered in ``ambemo.registry.BACKBONES`` on import.

This package is the registry's home: the first lookup of a ``model.name`` imports it, and so
every family below. A new family is a module here, imported below (README "Adding a new LALM").
"""

# isort: off
# Registration order is the order of ``model.name``'s choices in --help and in errors.
from ambemo.model.families import qwen2_audio
from ambemo.model.families import qwen2_5_omni

# isort: on

__all__ = ["qwen2_5_omni", "qwen2_audio"]
