"""Skip accounting: every utterance a corpus reader leaves out is recorded with where and why.

Input goes wrong in two ways that a switch decides (``error`` stops the run, ``skip`` leaves the
utterance out and counts it):

- ``labels`` (``data.on_bad_labels``): a line that is not JSON, an unknown class, negative/NaN or
  zero votes, a duplicate id, an unparsable evaluation line;
- ``audio`` (``data.on_bad_audio``): a missing, unreadable, corrupt, empty, too short or silent
  file, or a sample rate too low for speech.

A third kind, ``policy``, is a documented choice rather than a defect (an IEMOCAP utterance with
no vote in the class set, a clip over ``data.max_seconds`` with ``max_duration_policy=skip``): it
is always a counted skip, never an error.

Problems are collected over the whole corpus before the switch is applied, so one error lists
every bad file at once instead of one file per attempt. Nothing is ever dropped silently: the
DataModule prints the counts and ``ambemo data summary`` lists every skip.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from ambemo.errors import AmbemoError

KINDS = ("labels", "audio", "policy")
SWITCHES = {"labels": "data.on_bad_labels", "audio": "data.on_bad_audio"}
POLICIES = ("error", "skip")
#: How many problems an error message lists before "... and N more".
SHOWN = 20


class CorpusError(AmbemoError, ValueError):
    """Corpus input that cannot be used; the message names the file (and line) and what to change."""

    kind = "data error"


@dataclass(frozen=True)
class Skip:
    """One utterance (or input line) left out."""

    kind: str
    """``labels``, ``audio`` or ``policy``."""
    where: str
    """The file, and the line when there is one (``manifest.jsonl line 7``)."""
    reason: str
    """Short and stable, for counting (``missing audio file``)."""
    detail: str = ""
    """Specifics (the decoder's message, the offending value)."""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class SkipReport:
    """Skips and counted events (truncations, resampling, dropped votes) of one corpus build."""

    on_bad_labels: str = "error"
    on_bad_audio: str = "error"
    skips: list[Skip] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    """Events that do not remove an utterance, e.g. ``truncated to max_seconds``, ``resampled``."""

    def __post_init__(self) -> None:
        for name in ("on_bad_labels", "on_bad_audio"):
            if getattr(self, name) not in POLICIES:
                raise ValueError(f"data.{name} must be one of {', '.join(POLICIES)}, got {getattr(self, name)!r}")

    def skip(self, kind: str, where: str, reason: str, detail: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown skip kind {kind!r}")
        self.skips.append(Skip(kind, where, reason, detail))

    def count(self, event: str, n: float = 1) -> None:
        """Record ``n`` of an event (fractional for votes under ``multi_label_votes=split``)."""
        self.counts[event] += n

    def enforce(self, kind: str, error: type[ValueError] = CorpusError) -> None:
        """Raise ``error`` listing every ``kind`` problem if its switch says ``error``."""
        policy = self.on_bad_labels if kind == "labels" else self.on_bad_audio
        bad = [s for s in self.skips if s.kind == kind]
        if policy != "error" or not bad:
            return
        switch = SWITCHES[kind]
        lines = [f"{len(bad)} bad {kind} input(s) ({switch}=error):"]
        lines += [f"  {s}" for s in bad[:SHOWN]]
        if len(bad) > SHOWN:
            lines.append(f"  ... and {len(bad) - SHOWN} more")
        lines.append(f"Fix them, or set {switch}=skip to leave them out (counted; `ambemo data summary` lists them).")
        raise error("\n".join(lines))

    def by_reason(self) -> dict[str, int]:
        """``{"<kind>: <reason>": count}``, most frequent first."""
        return dict(Counter(f"{s.kind}: {s.reason}" for s in self.skips).most_common())

    def headline(self) -> str:
        """One line for logs: how many were skipped and why."""
        if not self.skips:
            return "no utterance skipped"
        reasons = ", ".join(f"{n} {r}" for r, n in self.by_reason().items())
        return f"skipped {len(self.skips)}: {reasons}"

    def to_dict(self) -> dict:
        return {
            "skipped": len(self.skips),
            "by_reason": self.by_reason(),
            "counts": dict(sorted(self.counts.items())),
            "skips": [asdict(s) for s in self.skips],
        }
