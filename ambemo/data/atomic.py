"""Folders built beside their final place and renamed into it, so a killed build never looks done.

A build of ``X`` happens in ``.X.building-<pid>`` (and a replaced ``X`` moves to ``.X.old-<pid>``);
``remove_stale_builds`` deletes such folders whose process no longer runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def build_folder(target: Path) -> Path:
    """This process's temporary build folder for ``target``."""
    return target.parent / f".{target.name}.building-{os.getpid()}"


def remove_stale_builds(target: Path) -> None:
    """Delete build and replaced folders of ``target`` left behind by processes that no longer run."""
    for pattern in (f".{target.name}.building-*", f".{target.name}.old-*"):
        for stale in target.parent.glob(pattern):
            try:
                os.kill(int(stale.name.rsplit("-", 1)[-1]), 0)
            except (ValueError, ProcessLookupError):
                shutil.rmtree(stale, ignore_errors=True)
            except PermissionError:  # alive, someone else's
                continue
