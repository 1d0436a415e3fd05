"""Reading JSONL files line by line with errors that name the file and the line.

Shared by every reader of user-supplied JSONL (corpus manifests, ``ambemo score`` inputs): a
bad line must be reported where it is, never skipped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def where(path: str | Path, line: int) -> str:
    """How errors name a line: ``"<path> line <n>"``."""
    return f"{path} line {line}"


def json_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at ``\\n`` only. ``str.splitlines`` would also split at
    characters that JSON strings may hold unescaped (U+2028, form feed, ...), breaking valid lines."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def read_json_lines(path: str | Path, error: type[ValueError] = ValueError) -> Iterator[tuple[int, dict | None, str]]:
    """Yield ``(line number, object, "")`` per non-blank line, or ``(number, None, why)`` for a
    line that is not a JSON object (numbers count blank lines too), for readers that skip bad
    lines. Raises ``error`` only for a file that cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    for number, raw in enumerate(json_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(record, dict):
            yield number, None, f"expected a JSON object, got {type(record).__name__}"
            continue
        yield number, record, ""


def iter_json_objects(path: str | Path, error: type[ValueError] = ValueError) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` per non-blank line (numbers count blank lines too).

    Raises ``error`` for an unreadable file, invalid JSON, or a line that is not a JSON object.
    """
    for number, record, problem in read_json_lines(path, error):
        if record is None:
            raise error(f"{where(path, number)}: {problem}")
        yield number, record
