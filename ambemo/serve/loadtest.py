"""Concurrent clients against a running ``ambemo serve``: throughput, latency percentiles, batch sizes.

    python -m ambemo.serve.loadtest http://127.0.0.1:8000 clip1.wav clip2.wav --clients 32 --seconds 30

Each client posts the clips round-robin, one request at a time, until ``seconds`` have passed
(requests in flight then are awaited). A response is *wrong* when ``check`` rejects it; by default,
when its distribution differs (beyond float rounding of padded batches) from the first answer for
the same clip, or its top class does. A request with no HTTP answer at all is *lost*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Largest difference in a probability between two answers for one clip that is float rounding
#: (the same clip padded differently in a batch), not a different answer.
ROUNDING = 1e-4


@dataclass
class LoadReport:
    clients: int
    wall_seconds: float
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    refused: Counter = field(default_factory=Counter)
    """Non-200 answers by status."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per successful request, as the client saw it."""
    batch_sizes: Counter = field(default_factory=Counter)
    """How many answered requests were read in a batch of each size."""

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")

    def as_dict(self) -> dict:
        return {
            "clients": self.clients,
            "wall_seconds": round(self.wall_seconds, 2),
            "ok": self.ok,
            "wrong": self.wrong,
            "lost": self.lost,
            "refused": dict(self.refused),
            "throughput_per_s": round(self.throughput, 3),
            "p50_s": round(self.percentile(50), 3),
            "p99_s": round(self.percentile(99), 3),
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
        }

    def summary(self) -> str:
        sizes = ", ".join(f"{size}x{count}" for size, count in sorted(self.batch_sizes.items()))
        return (
            f"{self.clients} clients, {self.wall_seconds:.1f} s: {self.ok} answered ({self.throughput:.2f}/s), "
            f"p50 {self.percentile(50):.2f} s, p99 {self.percentile(99):.2f} s; {self.wrong} wrong, {self.lost} lost, "
            f"refused {dict(self.refused) or 0}; requests by batch size: {sizes}"
        )


class SameAnswer:
    """The default check: every answer for a clip agrees with the first one for it."""

    def __init__(self) -> None:
        self.first: dict[str, dict] = {}

    def __call__(self, name: str, record: dict) -> bool:
        reference = self.first.setdefault(name, record)
        return agrees(record, reference)


def agrees(record: dict, reference: dict) -> bool:
    """The same prediction up to float rounding: class list, probabilities, top class, flags, reasoning."""
    got, want = record["distribution"], reference["distribution"]
    return (
        list(got) == list(want)
        and all(abs(got[k] - want[k]) <= ROUNDING for k in want)
        and record["top"] == reference["top"]
        and record.get("reasoning") == reference.get("reasoning")
        and record["format_ok"] == reference["format_ok"]
    )


async def run_load(
    url: str,
    clips: Sequence[tuple[str, bytes]],
    clients: int = 32,
    seconds: float = 10.0,
    check: Callable[[str, dict], bool] | None = None,
    api_key: str | None = None,
    timeout: float = 300.0,
) -> LoadReport:
    """Run ``clients`` concurrent clients posting ``clips`` (name, file bytes) to ``url`` for ``seconds``."""
    check = check or SameAnswer()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.perf_counter()
    deadline = started + seconds
    report = LoadReport(clients, 0.0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        turn = index
        while time.perf_counter() < deadline:
            name, data = clips[turn % len(clips)]
            turn += clients
            sent = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/predict", files={"audio": (name, data)}, headers=headers)
            except httpx.HTTPError:
                report.lost += 1
                continue
            if response.status_code != 200:
                report.refused[response.status_code] += 1
                continue
            record = response.json()
            report.ok += 1
            report.latencies.append(time.perf_counter() - sent)
            report.batch_sizes[record["timings"]["batch_size"]] += 1
            if record["id"] != name or not check(name, record):
                report.wrong += 1

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    report.wall_seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ambemo.serve.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("audio", nargs="+", type=Path, help="clips to post (round-robin)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--api-key", help="if the server requires one")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    clips = [(path.name, path.read_bytes()) for path in args.audio]
    report = asyncio.run(run_load(args.url.rstrip("/"), clips, args.clients, args.seconds, api_key=args.api_key))
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.ok and not (report.wrong or report.lost) else 1


if __name__ == "__main__":
    sys.exit(main())
