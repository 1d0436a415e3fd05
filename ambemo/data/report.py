"""Former name of ``ambemo.data.skips`` (renamed so that "report" means only the results table,
``ambemo.report``). Kept for one release because corpus-reader plugins outside the package import
``DataReport`` from here; import ``SkipReport`` and ``CorpusError`` from ``ambemo.data.skips``."""

from __future__ import annotations

import warnings

from ambemo.data.skips import CorpusError, Skip, SkipReport

DataReport = SkipReport

warnings.warn(
    "ambemo.data.report is renamed ambemo.data.skips (DataReport is SkipReport); the old name goes in the next release",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["CorpusError", "DataReport", "Skip", "SkipReport"]
