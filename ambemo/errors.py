"""The project's error types: problems a user can fix, as opposed to bugs.

Every error raised for bad input (a setting, a corpus file, a run folder, a checkpoint, an output
path) derives from ``AmbemoError``. The ``ambemo`` command prints these as one line,
``ambemo: <what>: <why>. <what to do>``, and exits with ``exit_code``; anything else is a bug and
keeps its traceback (``ambemo --debug ...`` shows the traceback of user errors too). The library
raises the same types, so a notebook sees the same message.

They also derive from ``ValueError`` where they did before, so code that caught ``ValueError``
keeps working.
"""

from __future__ import annotations


class AmbemoError(Exception):
    """A problem with what the user gave or asked for; the message says what, why and what to do."""

    exit_code = 2
    kind = ""
    """A prefix naming the area (``config error``), for messages that do not start with a file."""

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.kind}: {message}" if self.kind else message


class ConfigError(AmbemoError, ValueError):
    """A configuration problem, with a message that says what to change."""

    kind = "config error"


class RunFolderError(AmbemoError, ValueError):
    """A run folder is missing, unusable for what was asked (fast-dev, failed, no weights) or malformed."""


class CheckpointError(AmbemoError, ValueError):
    """A checkpoint file is missing, truncated or not a checkpoint of this project."""


class OutputPathError(AmbemoError, OSError):
    """An output file or folder cannot be written (a file where a folder is needed, no permission)."""


class TrainingError(AmbemoError, RuntimeError):
    """Training cannot go on with these settings (a non-finite loss)."""
