"""Emotion label sets and the vote -> distribution rule shared by every corpus.

A clip's human perceptual distribution is its annotator vote counts normalised to sum to 1
(the paper's section 3.1; docs/method.md, "Task"). Class order matters everywhere (metrics,
read-out, predictions files), so each label set is a fixed tuple and every tensor of probabilities uses that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: CREMA-D audio-only rating classes, in the order of the vote table's columns A, D, F, H, N, S.
CREMA_D_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness")
#: IEMOCAP's 4-class protocol (excited is merged into happiness by the reader).
IEMOCAP_CLASSES: tuple[str, ...] = ("anger", "happiness", "sadness", "neutral")

LABEL_SETS: dict[str, tuple[str, ...]] = {"crema_d": CREMA_D_CLASSES, "iemocap": IEMOCAP_CLASSES}


def votes_to_distribution(votes: Mapping[str, float], classes: Sequence[str], where: str = "") -> list[float]:
    """Normalise vote counts ``{class: count}`` to a probability list in ``classes`` order.

    Raises ``ValueError`` (prefixed with ``where``, e.g. ``"gold.jsonl line 3"``) for unknown
    classes, negative or NaN counts, or a row with no votes at all: such a row has no
    distribution, and silently inventing one would corrupt every metric.
    """
    prefix = f"{where}: " if where else ""
    unknown = sorted(set(votes) - set(classes))
    if unknown:
        raise ValueError(f"{prefix}unknown class(es) {unknown}; expected a subset of {list(classes)}")
    counts = []
    for name in classes:
        raw = votes.get(name, 0.0)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ValueError(f"{prefix}count for {name!r} is {raw!r}; expected a number")
        value = float(raw)
        if value != value or value < 0 or value == float("inf"):
            raise ValueError(f"{prefix}count for {name!r} is {value}; counts must be finite and >= 0")
        counts.append(value)
    total = sum(counts)
    if total <= 0:
        raise ValueError(f"{prefix}all counts are zero; a row needs at least one vote")
    return [c / total for c in counts]
