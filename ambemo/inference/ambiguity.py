"""The ``ambiguous`` flag: would a crowd of listeners disagree about this clip?

Criterion (chosen on the validation split, stored with the run as ``ambiguity.json``):

- A clip's human votes are **split** when no class has more than half of them
  (max_i p_i <= 0.5: 4 of 8 votes for neutral is split, 5 of 8 is a clear majority).
- The model's spread is its **normalised entropy** H(p_hat) / log C, in [0, 1]
  (0: all mass on one class; 1: uniform).
- ``ambiguous = normalised entropy > threshold``. The threshold maximises Youden's
  J = recall - false-positive rate over the validation clips, i.e. it best separates split from
  clear-majority clips whatever their proportion (maximising F1 instead drifts to "flag
  everything" when most clips are split). Ties go to the higher F1, then the lower threshold.
  Candidates are the midpoints between consecutive distinct entropies, plus 0 and 1.

The validation precision and recall of the flag at that threshold are stored next to it, so a
router knows what it buys. Without split clips, or with only split clips, in the validation set
there is nothing to separate: the threshold is 1 (never flag) or 0 (always flag) and precision and
recall are null, with a note saying why.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ambemo.inference.device import autocast, to_device
from ambemo.metrics.functional import entropy
from ambemo.model.generation import Reading

AMBIGUITY_FILE = "ambiguity.json"
#: Votes are split when the most-voted class has at most this share.
SPLIT_SHARE = 0.5
CRITERION = (
    "ambiguous = H(p_hat)/log(C) > threshold; threshold maximises Youden's J (recall - false-positive rate) on "
    f"the validation split for separating clips whose human votes are split (top vote share <= {SPLIT_SHARE}) "
    "from clips with a clear majority"
)


def normalised_entropy(dist: torch.Tensor) -> torch.Tensor:
    """H(p) / log C per row, in [0, 1]."""
    return entropy(dist.double(), base=dist.shape[-1]).clamp(0.0, 1.0)


def split_votes(target: torch.Tensor) -> torch.Tensor:
    """Per row: no class holds more than ``SPLIT_SHARE`` of the human votes."""
    return target.max(-1).values <= SPLIT_SHARE + 1e-9


def _flag_scores(flagged: torch.Tensor, split: torch.Tensor) -> dict[str, float | None]:
    tp = int((flagged & split).sum())
    fp = int((flagged & ~split).sum())
    positives, negatives = int(split.sum()), int((~split).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / positives if positives else None
    fpr = fp / negatives if negatives else None
    f1 = 2 * tp / (2 * tp + fp + (positives - tp)) if positives else None
    youden = recall - fpr if recall is not None and fpr is not None else None
    return {"precision": precision, "recall": recall, "false_positive_rate": fpr, "f1": f1, "youden_j": youden}


def choose_threshold(model_entropy: torch.Tensor, split: torch.Tensor) -> dict:
    """The threshold on normalised entropy that best separates ``split`` clips (see the module doc),
    with its precision, recall, F1, false-positive rate and Youden's J on these clips."""
    n, n_split = len(split), int(split.sum())
    base = {"criterion": CRITERION, "split_share": SPLIT_SHARE, "n": n, "n_split": n_split}
    if n_split in (0, n):
        threshold = 1.0 if n_split == 0 else 0.0
        note = "no validation clip has split votes" if n_split == 0 else "every validation clip has split votes"
        return {**base, "threshold": threshold, **_flag_scores(model_entropy > threshold, split), "note": note}
    values = sorted(set(model_entropy.tolist()))
    candidates = [0.0] + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [1.0]
    best: tuple | None = None
    for threshold in candidates:
        scores = _flag_scores(model_entropy > threshold, split)
        key = (scores["youden_j"], scores["f1"] or 0.0, -threshold)
        if best is None or key > best[0]:
            best = (key, threshold, scores)
    _, threshold, scores = best  # type: ignore[misc]
    return {**base, "threshold": threshold, **scores}


@torch.no_grad()
def calibrate(
    read: Callable[[dict], Reading],
    batches: Iterable[dict],
    device: torch.device,
    precision: str,
    out_dir: Path,
) -> dict:
    """Read every validation batch with ``read`` (the evaluation read-out), choose the threshold and
    write ``out_dir/ambiguity.json``. Returns what was written."""
    entropies, splits = [], []
    for batch in batches:
        moved = to_device(batch, device)
        with autocast(precision, device):
            reading = read(moved)
        entropies.append(normalised_entropy(reading.distribution.float().cpu()))
        splits.append(split_votes(batch["target"].cpu()))
    chosen = choose_threshold(torch.cat(entropies), torch.cat(splits))
    (Path(out_dir) / AMBIGUITY_FILE).write_text(json.dumps(chosen, indent=2) + "\n")
    print(f"[ambemo] ambiguity threshold {chosen['threshold']:.3f} on validation: {describe(chosen)}")
    return chosen


def describe(chosen: dict) -> str:
    """One line: the threshold's validation precision and recall (or why there are none)."""
    if chosen.get("note"):
        return f"{chosen['note']} ({chosen['n']} clips), so the flag is constant"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.0f} %"

    return (
        f"precision {pct(chosen['precision'])}, recall {pct(chosen['recall'])} for the {chosen['n_split']} of "
        f"{chosen['n']} clips with split votes"
    )


def read_ambiguity(folder: Path) -> dict | None:
    """``folder/ambiguity.json``, or None if the run has none (runs made before the flag existed)."""
    path = Path(folder) / AMBIGUITY_FILE
    return json.loads(path.read_text()) if path.is_file() else None
