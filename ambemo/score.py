"""``ambemo score``: score a predictions file against gold distributions.

    ambemo score PRED [GOLD] [--out FILE] [--classes a,b,c] [--js-base 2|e] [--js-distance]

PRED is JSONL, one object per line: ``{"id": ..., "distribution": {class: prob}}``; other
fields are allowed (our runs add "target", "reasoning", "format_ok"). GOLD is JSONL with
``{"id": ..., "votes": {class: count}}`` or ``{"id": ..., "distribution": {class: prob}}``.
Without GOLD, each PRED line's "target" distribution is the gold (the predictions.jsonl
that ``ambemo eval`` writes carries the human target).

Class list: ``--classes`` if given, else the keys of the first gold line (GOLD's first line,
or the first PRED line's "target"), in their order. Every "distribution" must have exactly
those classes; a "votes" object may leave out classes with zero votes (so give ``--classes``
if GOLD's first line does). Ids are matched as strings (``1`` and ``"1"`` are the same id).

Prediction rows that do not sum to 1 within 1e-4 are renormalised and counted
(``renormalised``) rather than rejected, so a sloppy writer is visible but still scored;
gold "distribution" rows are renormalised likewise (``gold_renormalised``). Anything that
cannot be scored without guessing (bad JSON, missing or duplicate ids, mismatched classes,
negative / NaN / infinite values, all-zero rows) is an error: exit code 2 and one message
naming the file and line.

Prints one JSON object with every metric of ``DistributionMetrics`` plus ``renormalised``,
``gold_renormalised``, ``js_variant`` and ``classes``; NaN (e.g. an undefined correlation) is
written as null.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ambemo.data.jsonl import iter_json_objects
from ambemo.data.jsonl import where as line_where
from ambemo.errors import AmbemoError
from ambemo.metrics.functional import normalise_rows
from ambemo.metrics.metrics import js_variant_description, score_distributions

_SHOW = 5  # how many ids an id-mismatch message lists
#: The formats and rules of the module docstring, shown by --help (absent under python -OO).
_HELP_RULES = __doc__.split("\n\n", 2)[2].replace("``", "") if __doc__ else None


class ScoreInputError(AmbemoError, ValueError):
    """An input file cannot be scored; the message names the file and line."""


@dataclass(frozen=True)
class DistributionRow:
    """One JSONL line: its id (as a string), 1-based line number, which field held the
    mapping ("distribution", "votes" or "target"), the mapping, and the whole object."""

    id: str
    line: int
    field: str
    values: Mapping[str, Any]
    record: Mapping[str, Any]


def read_distribution_jsonl(
    path: str | Path, fields: Sequence[str] = ("distribution",), missing_hint: str = ""
) -> list[DistributionRow]:
    """Read a JSONL file whose lines each carry an id and exactly one of ``fields`` (a JSON object).

    Blank lines are skipped (but counted for line numbers). Raises ``ScoreInputError`` for
    unreadable files, invalid JSON, a missing/ill-typed id or field, duplicate ids, no rows.
    """
    path = Path(path)
    rows: list[DistributionRow] = []
    first_line: dict[str, int] = {}
    for number, record in iter_json_objects(path, ScoreInputError):
        where = line_where(path, number)
        if "id" not in record:
            raise ScoreInputError(f"{where}: missing 'id' field")
        raw_id = record["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise ScoreInputError(f"{where}: 'id' must be a string or integer, got {raw_id!r}")
        key = str(raw_id)
        if key in first_line:
            raise ScoreInputError(f"{where}: duplicate id {key!r} (first on line {first_line[key]})")
        first_line[key] = number
        present = [f for f in fields if f in record]
        if not present:
            wanted = " or ".join(repr(f) for f in fields)
            raise ScoreInputError(f"{where}: missing {wanted} field{missing_hint}")
        if len(present) > 1:
            raise ScoreInputError(f"{where}: has both {present[0]!r} and {present[1]!r}; give exactly one")
        field = present[0]
        if not isinstance(record[field], dict):
            raise ScoreInputError(
                f"{where}: {field!r} must be a JSON object {{class: value}}, got {type(record[field]).__name__}"
            )
        rows.append(DistributionRow(key, number, field, record[field], record))
    if not rows:
        raise ScoreInputError(f"{path}: no rows")
    return rows


def _vector(row: DistributionRow, classes: Sequence[str], path: Path, class_source: str) -> list[float]:
    """Validate one row's mapping against the class list and return its raw values in class order."""
    where = line_where(path, row.line)
    unknown = [c for c in row.values if c not in classes]
    missing = [c for c in classes if c not in row.values]
    if unknown or (missing and row.field != "votes"):
        detail = "; ".join(
            part
            for part in (f"unexpected {unknown}" if unknown else "", f"missing {missing}" if missing else "")
            if part
        )
        raise ScoreInputError(
            f"{where}: classes in {row.field!r} do not match the class list {list(classes)} ({class_source}): {detail}"
        )
    values = []
    for name in classes:
        value = row.values.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScoreInputError(f"{where}: {row.field!r} value for {name!r} is {value!r}; expected a number")
        if not math.isfinite(value) or value < 0:
            raise ScoreInputError(
                f"{where}: {row.field!r} value for {name!r} is {value}; values must be finite and >= 0"
            )
        values.append(float(value))
    if sum(values) <= 0:
        raise ScoreInputError(f"{where}: all {row.field!r} values are zero; a row needs some probability mass")
    return values


def _parse_classes(classes: str | Sequence[str]) -> list[str]:
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    if not names or any(not n for n in names):
        raise ScoreInputError(f"--classes: empty class name in {classes!r}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ScoreInputError(f"--classes: duplicate class name(s) {duplicated}")
    return names


def _id_mismatch(gold: list[DistributionRow], pred: list[DistributionRow], gold_path: Path, pred_path: Path) -> str:
    """'' if both files hold the same ids, else a message listing a few of each difference with lines."""
    pred_ids = {r.id for r in pred}
    gold_ids = {r.id for r in gold}
    parts = []
    for rows, other, path, what in (
        (gold, pred_ids, gold_path, f"have no prediction in {pred_path}"),
        (pred, gold_ids, pred_path, f"are not in {gold_path}"),
    ):
        odd = [r for r in rows if r.id not in other]
        if odd:
            shown = ", ".join(f"{r.id!r} (line {r.line})" for r in odd[:_SHOW])
            more = f" and {len(odd) - _SHOW} more" if len(odd) > _SHOW else ""
            parts.append(f"{len(odd)} id(s) in {path} {what}: {shown}{more}")
    return "; ".join(parts)


def _format_flags(pred: list[DistributionRow], pred_path: Path) -> torch.Tensor | None:
    """The rows' "format_ok" as a bool tensor, None if the file does not track it.

    A file that has the flag on some rows only is an error: scoring the rest would hide failures.
    """
    flagged = ["format_ok" in r.record for r in pred]
    if not any(flagged):
        return None
    for row in pred:
        value = row.record.get("format_ok")
        if not isinstance(value, bool):
            problem = "missing 'format_ok' (other lines have it)" if value is None else f"'format_ok' is {value!r}"
            raise ScoreInputError(f"{pred_path} line {row.line}: {problem}; expected true or false")
    return torch.tensor([bool(r.record["format_ok"]) for r in pred])


def score_files(
    pred_path: str | Path,
    gold_path: str | Path | None = None,
    classes: str | Sequence[str] | None = None,
    js_base: float = 2.0,
    js_distance: bool = False,
) -> dict[str, Any]:
    """Score PRED against GOLD (or PRED's own "target" field); see the module docstring for formats and rules.

    Returns the metrics of ``score_distributions`` plus ``renormalised``, ``gold_renormalised``,
    ``js_variant`` and ``classes``. Raises ``ScoreInputError`` for anything unscorable.
    """
    pred_path = Path(pred_path)
    pred = read_distribution_jsonl(pred_path, ("distribution",))
    if gold_path is None:
        gold_file = pred_path
        gold = read_distribution_jsonl(pred_path, ("target",), missing_hint=" (needed when GOLD is not given)")
    else:
        gold_file = Path(gold_path)
        gold = read_distribution_jsonl(gold_file, ("votes", "distribution"))
        mismatch = _id_mismatch(gold, pred, gold_file, pred_path)
        if mismatch:
            raise ScoreInputError(mismatch)

    if classes is not None:
        names, source = _parse_classes(classes), "from --classes"
    else:
        names, source = list(gold[0].values), f"from {gold_file} line {gold[0].line}; set it with --classes"
        if not names:
            raise ScoreInputError(f"{gold_file} line {gold[0].line}: empty {gold[0].field!r}; cannot infer classes")

    pred_by_id = {r.id: r for r in pred}
    ordered_pred = [pred_by_id[r.id] for r in gold]
    target = torch.tensor([_vector(r, names, gold_file, source) for r in gold], dtype=torch.float64)
    probs = torch.tensor([_vector(r, names, pred_path, source) for r in ordered_pred], dtype=torch.float64)
    probs, pred_off = normalise_rows(probs)
    target, gold_off = normalise_rows(target)
    gold_is_dist = torch.tensor([r.field != "votes" for r in gold])

    result: dict[str, Any] = score_distributions(
        probs, target, _format_flags(ordered_pred, pred_path), js_base=js_base, js_distance=js_distance
    )
    result["renormalised"] = int(pred_off.sum())
    result["gold_renormalised"] = int((gold_off & gold_is_dist).sum())
    result["js_variant"] = js_variant_description(js_base, js_distance)
    result["classes"] = names
    return result


def build_parser() -> argparse.ArgumentParser:
    """The ``ambemo score`` argument parser (kept separate so the top-level CLI can reuse it)."""
    parser = argparse.ArgumentParser(
        prog="ambemo score",
        description="Score predicted emotion distributions against human ones (JS, BC, R2, Brier, ...).",
        epilog=_HELP_RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred", metavar="PRED", help="predictions JSONL: {id, distribution: {class: prob}}")
    parser.add_argument(
        "gold",
        metavar="GOLD",
        nargs="?",
        default=None,
        help="gold JSONL: {id, votes: {class: count}} or {id, distribution: {...}}; default: each PRED line's 'target'",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    parser.add_argument(
        "--classes", default=None, help="comma-separated class order (default: keys of the first gold line, in order)"
    )
    parser.add_argument(
        "--js-base", choices=["2", "e"], default="2", help="log base of JS: 2 = bits (default, range [0, 1]), e = nats"
    )
    parser.add_argument(
        "--js-distance",
        action="store_true",
        help="report JS distance (per-utterance square root) instead of the divergence",
    )
    return parser


def _jsonable(value: Any) -> Any:
    """NaN/inf are not JSON; write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ambemo score``; returns 0, or 2 with a one-line message on stderr for bad input."""
    args = build_parser().parse_args(argv)
    js_base = 2.0 if args.js_base == "2" else math.e
    try:
        result = score_files(args.pred, args.gold, args.classes, js_base=js_base, js_distance=args.js_distance)
    except ScoreInputError as exc:
        print(f"ambemo score: error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps({k: _jsonable(v) for k, v in result.items()}, indent=2)
    print(text)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"ambemo score: error: cannot write {args.out}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
