"""The format reward resists the known hacks; the distribution reward is -KL."""

from __future__ import annotations

import math

import pytest
import torch

from ambemo.model.prompts import ANSWER_SLOT, CoT, format_cot
from ambemo.objectives.rewards import distribution_reward, format_reward

GOOD = format_cot(
    CoT(
        "loud volume, fast speed",
        "The speaker states the time: neutral words.",
        "Loud volume and fast speed suggest anger.",
        "Fairly clear reading: most listeners would hear anger.",
    )
)


def test_well_formed_reasoning_gets_the_reward() -> None:
    assert format_reward(GOOD, slot_written=True) == 1.0


@pytest.mark.parametrize(
    "hack",
    [
        GOOD.replace("Loud volume and fast speed suggest anger.", ""),  # empty section
        GOOD.replace("Loud volume and fast speed suggest anger.", ". ."),  # punctuation only
        format_cot(CoT("a", "b", "c", "d")),  # tags with no words
        GOOD.replace(ANSWER_SLOT, "") + GOOD,  # duplicated blocks
        GOOD.replace("loud volume", "<keywords> loud volume"),  # nested tag
        GOOD.replace("neutral words.", "neutral words. [Step2 again"),  # a marker inside a part
        GOOD.replace("[Step2: Audio Analysis]", "[Step3: Synthesis]", 1),  # wrong order / repeated
        GOOD.replace(ANSWER_SLOT, ""),  # no answer slot
        GOOD.replace("neutral words.", "neutral words. " + "very " * 300),  # unbounded length
        "anger anger anger " + ANSWER_SLOT,  # no structure at all
    ],
)
def test_known_hacks_get_nothing(hack: str) -> None:
    assert format_reward(hack, slot_written=True) == 0.0


def test_distribution_reward_is_negative_kl() -> None:
    target = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    pred = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    # row 0: identical -> 0; row 1: KL = 1 * ln(1 / 0.5) = ln 2
    torch.testing.assert_close(distribution_reward(pred, target), torch.tensor([0.0, -math.log(2)]))
