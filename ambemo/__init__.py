"""ambemo: ambiguity-aware emotion reasoning for large audio-language models.

For applications: ``ambemo.load(path)`` returns a ``Predictor`` whose ``.predict(audio)`` gives,
per clip, the listeners' emotion distribution, its top class, normalised entropy, an
``ambiguous`` flag and the model's reasoning (``ambemo.inference``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ambemo.inference.predictor import Predictor


def load(path: str | Path, **options: Any) -> Predictor:
    """A trained model ready to predict: an ``ambemo export`` folder, a run folder, or ``latest:<experiment>``.

        model = ambemo.load("exports/sft_cot")          # device="auto", base_model=..., runs_dir="runs"
        records = model.predict("clip.wav", transcript="I wonder what this is about")

    See ``ambemo.inference.loading.load`` for the options and ``Predictor.predict`` for the inputs
    and the records. (Imported lazily: ``import ambemo`` stays light for the command line.)
    """
    from ambemo.inference.loading import load as load_model

    return load_model(path, **options)


__all__ = ["load"]
