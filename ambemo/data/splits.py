"""Seeded, group-disjoint train/val/test assignment.

Groups are speakers (CREMA-D actors, a manifest's ``speaker``) or dialogs (IEMOCAP validation):
utterances of one group always land in one split, so a model is never scored on a voice it was
trained on. The assignment depends only on the set of group names and the seed, not on line
order, so re-ordering a manifest does not reshuffle it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assign_splits(groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """The split of each item, given the group of each item.

    ``round(fraction * number of groups)`` groups go to val and to test (at least one each when
    the fraction is positive and enough groups exist; at least one group always stays in train);
    the rest train. Fractions are of groups, not of utterances.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1; got {val_fraction}, {test_fraction}")
    names = sorted(set(groups))
    order = [names[i] for i in np.random.default_rng([seed, 7]).permutation(len(names))]
    counts = []
    spare = max(len(names) - 1, 0)  # one group stays in train
    for fraction in (test_fraction, val_fraction):
        n = min(spare, max(round(fraction * len(names)), 1 if fraction > 0 else 0))
        counts.append(n)
        spare -= n
    n_test, n_val = counts
    split_of = {g: "test" for g in order[:n_test]}
    split_of |= {g: "val" for g in order[n_test : n_test + n_val]}
    return [split_of.get(g, "train") for g in groups]
