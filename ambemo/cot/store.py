"""The curated CoT store: append-only JSONL, one record per finished (or failed) clip.

Why append-only with an fsync per record: a run that is killed at any moment loses at most the
record being written, and a rerun knows exactly which clips are done, so no clip is paid for
twice. A record is keyed by ``(id, audio_sha256, prompt_version, model)``: new audio, a new
prompt wording or another model make a clip due again; old records stay as history.

Record (one JSON object per line)::

    {"store_version": 1, "id": str, "audio_sha256": hex, "prompt_version": str, "model": str,
     "status": "accepted" | "rejected" | "failed",
     "cot": formatted CoT (``ambemo.model.prompts.format_cot``) | null,   # accepted only
     "js": JS(reader, votes) in bits | null, "verified": [p...] | null,   # of the kept attempt
     "reason": why rejected/failed | null, "classes": [...], "target": [p...],
     "threshold": float, "attempts": [{"cot", "verified", "js", "outcome", "reason"}],
     "usage": {"requests", "input_tokens", "audio_tokens", "output_tokens"}, "cost_usd": float,
     "mode": "audio" | "text", "created": ISO-8601 UTC}

``accepted`` and ``rejected`` (every attempt failed verification or validation) are final;
``failed`` (an API error, the spending ceiling, an unreadable clip) is tried again by the next
run unless it is told to skip failures. A killed run can leave a truncated last line: readers
skip and count it, and ``CotStore`` cuts it off before appending.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambemo.data.jsonl import where
from ambemo.errors import AmbemoError
from ambemo.model.prompts import PROMPT_VERSION, parse_cot

log = logging.getLogger(__name__)

STORE_VERSION = 1
STATUSES = ("accepted", "rejected", "failed")
FINAL = ("accepted", "rejected")
_KEY_FIELDS = ("id", "audio_sha256", "prompt_version", "model")

Key = tuple[str, str, str, str]


class StoreError(AmbemoError, ValueError):
    """A store line is unusable; the message names the file and line."""


def record_key(record: dict[str, Any]) -> Key:
    """The resume key of a record."""
    return tuple(str(record[k]) for k in _KEY_FIELDS)  # type: ignore[return-value]


@dataclass
class StoreContents:
    """What a store file holds: its records in file order (with line numbers) and the truncated tail."""

    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    truncated_tail: bool = False
    """The last line was cut off mid-write (a killed run); it was skipped."""
    tail_offset: int | None = None
    """Byte offset where the truncated last line starts (to cut it off before appending)."""

    def latest(self) -> dict[Key, dict[str, Any]]:
        """The last record of each key."""
        return {record_key(r): r for _, r in self.records}

    def total_cost(self) -> float:
        """USD recorded over every record (each run's spend is in its records)."""
        return sum(float(r.get("cost_usd") or 0.0) for _, r in self.records)

    def counts(self) -> dict[str, int]:
        """How many keys end in each status."""
        out = dict.fromkeys(STATUSES, 0)
        for record in self.latest().values():
            out[record["status"]] += 1
        return out


def read_store(path: str | Path) -> StoreContents:
    """Read a store; a missing file is an empty store. Raises ``StoreError`` for a corrupt line
    (anything but a truncated *last* line, which is skipped and reported in ``truncated_tail``)."""
    path = Path(path)
    contents = StoreContents()
    if not path.exists():
        return contents
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StoreError(f"{path}: cannot read: {err}") from None
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        last = number == len(lines)  # no newline after it: the writer was killed mid-line
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if last:
                contents.truncated_tail, contents.tail_offset = True, start
                break
            raise StoreError(f"{where(path, number)}: not a JSON line ({err}); the store is corrupt") from None
        _check_record(record, path, number)
        contents.records.append((number, record))
    return contents


def _check_record(record: Any, path: Path, number: int) -> None:
    if not isinstance(record, dict):
        raise StoreError(f"{where(path, number)}: expected a JSON object")
    missing = [k for k in (*_KEY_FIELDS, "status") if not isinstance(record.get(k), str)]
    if missing:
        raise StoreError(f"{where(path, number)}: missing or non-string field(s) {missing}")
    if record["status"] not in STATUSES:
        raise StoreError(f"{where(path, number)}: status {record['status']!r} is not one of {STATUSES}")
    if record["status"] == "accepted" and not isinstance(record.get("cot"), str):
        raise StoreError(f"{where(path, number)}: an accepted record needs its 'cot' text")


def load_accepted(path: str | Path) -> dict[str, str]:
    """Utterance id -> formatted CoT text of the accepted records (the latest accepted one per id).

    What training reads (``data.cot_store``). Raises ``ValueError`` naming the file and line for a
    missing file, a corrupt line, or an accepted CoT that is not well formed in the current format
    (``PROMPT_VERSION`` changed: curate again). A truncated last line is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such CoT store (make one with `ambemo curate`)")
    out: dict[str, str] = {}
    contents = read_store(path)
    if contents.truncated_tail:
        log.warning("%s: skipped 1 truncated last line (a killed run); the next curate run removes it", path)
    for number, record in contents.records:
        if record["status"] != "accepted":
            continue
        if parse_cot(record["cot"]) is None:
            raise StoreError(
                f"{where(path, number)}: the accepted CoT of {record['id']!r} (prompt version "
                f"{record['prompt_version']!r}) is not well formed in the current format {PROMPT_VERSION!r}"
            )
        out[record["id"]] = record["cot"]
    return out


class CotStore:
    """Appends records to a store file, one flushed and fsynced line each; safe across threads.

    Opening it takes an exclusive lock on the file (POSIX ``flock``), so two runs cannot write
    the same store, and cuts off a truncated last line left by a killed run.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")  # noqa: SIM115 (held open for the run; closed in close())
        try:
            _lock(self._file)
            contents = read_store(self.path)
        except BaseException:
            self._file.close()
            raise
        self.contents = contents
        self.repaired_tail = contents.truncated_tail
        if contents.truncated_tail and contents.tail_offset is not None:
            self._file.truncate(contents.tail_offset)
            os.fsync(self._file.fileno())
        size = self._file.seek(0, os.SEEK_END)
        if size:
            self._file.seek(size - 1)
            if self._file.read(1) != b"\n":  # a complete last record without its newline
                self._file.write(b"\n")
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably (flush + fsync) before returning."""
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.append(record)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(handle: Any) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the store still works
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StoreError(f"{handle.name}: another `ambemo curate` run is writing this store") from None
