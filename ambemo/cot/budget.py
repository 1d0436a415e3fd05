"""Budgets: the curation's token usage, cost and spending ceiling shared by the worker threads,
and the generation budget that curated reasonings must fit (``generation_budget_report``).

Cost comes from what the API reports (``usage``), never from guesses, except in ``--dry-run``.
Audio prompt tokens are priced separately when the endpoint reports them
(``prompt_tokens_details.audio_tokens``) and the price table has an audio price; cached-token
discounts are ignored, so the reported cost is an upper bound.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from ambemo.cot.config import Price


@dataclass
class Usage:
    """Tokens of one or more requests, as the API reported them."""

    requests: int = 0
    input_tokens: int = 0
    """All prompt tokens (text and audio)."""
    audio_tokens: int = 0
    """The audio part of ``input_tokens``, when reported."""
    output_tokens: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """From a ``CompletionUsage`` (or None when a server reports nothing: one request, no tokens)."""
        if usage is None:
            return cls(requests=1)
        details = getattr(usage, "prompt_tokens_details", None)
        audio = getattr(details, "audio_tokens", None) or 0
        return cls(1, int(usage.prompt_tokens or 0), int(audio), int(usage.completion_tokens or 0))

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.audio_tokens + other.audio_tokens,
            self.output_tokens + other.output_tokens,
        )

    def cost(self, price: Price) -> float:
        """USD for these tokens at ``price`` (per 1M tokens)."""
        audio = self.audio_tokens if price.audio_input is not None else 0
        text = self.input_tokens - audio
        audio_price = price.audio_input if price.audio_input is not None else price.input
        return (text * price.input + audio * audio_price + self.output_tokens * price.output) / 1e6

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Budget:
    """This run's spend and its ceiling: ``may_request`` is asked before every API call.

    Requests already in flight when the ceiling is reached still complete and are paid for and
    recorded, so the overshoot is at most the cost of ``concurrency`` requests.
    """

    def __init__(self, price: Price, max_cost: float | None) -> None:
        self.price = price
        self.max_cost = max_cost
        self.usage = Usage()
        self._lock = threading.RLock()  # add() calls halt() while holding it
        self.stop = threading.Event()
        self.stop_reason: str | None = None

    @property
    def spent(self) -> float:
        return self.usage.cost(self.price)

    def add(self, usage: Usage) -> None:
        with self._lock:
            self.usage = self.usage + usage
            if self.max_cost is not None and self.spent >= self.max_cost:
                self.halt(f"max cost ${self.max_cost:.4f} reached (spent ${self.spent:.4f})")

    def halt(self, reason: str) -> None:
        """Start no new request from now on (the first reason is kept)."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
        self.stop.set()

    def may_request(self) -> bool:
        return not self.stop.is_set()


def generation_budget_report(lengths: list[int], budgets: dict[str, int]) -> list[str]:
    """Lines reporting the curated reasonings longer than each generation budget.

    ``lengths``: tokens of each curated reasoning (the answer slot included); ``budgets``: config
    key -> most tokens generated there. A model trained on reasonings longer than its budget is cut
    off before it reaches the slot: its distribution is then read after a forced slot, which counts
    against ``format_ok_rate`` and earns no GRPO format reward. Nothing when all fit.
    """
    lines = []
    for key, budget in budgets.items():
        over = [n for n in lengths if n > budget]
        if over:
            lines.append(
                f"{len(over)} of {len(lengths)} curated reasonings are longer than {key}={budget} "
                f"(longest {max(over)} tokens): a reasoning cut off there is read after a forced answer slot"
            )
    return lines
