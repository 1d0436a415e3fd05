"""Cross-corpus evaluation: which of a model's classes each class of a test corpus is.

A model trained on CREMA-D's six classes is scored on IEMOCAP's four by reading out only the
shared classes: the test corpus's ``data.classes`` must each correspond to one of the model's
classes. Names match after lower-casing and the aliases below (corpora name the same emotion
differently: "angry", "Neutral state"); IEMOCAP's "excited" is already merged into happiness
by its reader. A class with no counterpart is an error that names it, never a silent zero.

Restricting the read-out is exact: a softmax over a subset of the class logits equals the full
softmax restricted to that subset and renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence

from ambemo.errors import AmbemoError

#: Other spellings of the canonical class names (canonical = CREMA-D/IEMOCAP names in labels.py).
ALIASES = {
    "angry": "anger",
    "happy": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "neutral state": "neutral",
    "fearful": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
    "frustrated": "frustration",
}


class ClassMapError(AmbemoError, ValueError):
    """A test corpus's classes cannot be read out of the model's."""


def canonical(name: str) -> str:
    """The canonical form of a class name (lower case, aliases resolved)."""
    key = " ".join(name.strip().lower().split())
    return ALIASES.get(key, key)


def map_classes(corpus_classes: Sequence[str], model_classes: Sequence[str]) -> list[int]:
    """For each class of the test corpus, the index of the same class among the model's classes.

    Raises ``ClassMapError`` naming every corpus class without a counterpart, or two corpus
    classes that land on the same model class.
    """
    model = {canonical(name): i for i, name in enumerate(model_classes)}
    missing = [c for c in corpus_classes if canonical(c) not in model]
    if missing:
        raise ClassMapError(
            f"test corpus class(es) {missing} have no counterpart among the model's classes {list(model_classes)}; "
            "drop them from data.classes (and set data.out_of_set_votes) or train on them"
        )
    indices = [model[canonical(c)] for c in corpus_classes]
    if len(set(indices)) != len(indices):
        raise ClassMapError(f"test corpus classes {list(corpus_classes)} map onto the same model class twice")
    return indices
