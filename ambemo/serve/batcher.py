"""Dynamic batching: requests that arrive together are read by the model as one batch.

One worker task takes the first waiting request, then keeps taking more until the batch holds
``max_batch_size`` or ``max_wait_s`` has passed since the first, and runs the batch on a single
model thread (so the event loop keeps accepting, decoding and rejecting requests meanwhile). While
a batch runs, new requests wait in a bounded queue: when it is full, ``submit`` refuses at once
(the caller answers 503) rather than letting a backlog grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ambemo.serve")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already."""


class Closed(Exception):
    """The batcher is shutting down and takes no new requests."""


@dataclass
class Job:
    """One request's input, and where its result goes."""

    item: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    """When its batch started (perf_counter)."""
    batch_size: int = 0
    batch_seconds: float = 0.0


class Batcher:
    """Runs ``run_batch(items) -> results`` (one result per item, in order) on batches of queued items."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        """Called with (batch size, seconds) after each batch (metrics)."""
        self.closing = False
        self.batch_seconds = 0.0
        """Moving average of a batch's duration (for Retry-After)."""
        # One model thread: batches run one after another, never two at once on the same weights.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ambemo-model")
        self._worker: asyncio.Task | None = None
        self._forming: list[Job] = []
        """The batch being collected (taken from the queue, still waiting for its batch to start)."""

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="ambemo-batcher")

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (queued, or in the batch being collected)."""
        return self.queue.qsize() + len(self._forming)

    def submit(self, item: Any) -> Job:
        """Queue ``item``; its ``Job.future`` resolves to its result. Raises ``QueueFull`` or ``Closed``."""
        if self.closing:
            raise Closed("the server is shutting down")
        job = Job(item, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue.maxsize} requests are already waiting") from None
        return job

    def retry_after(self) -> int:
        """Seconds after which the queue has likely drained (at least 1)."""
        batches = self.depth / self.max_batch_size + 1
        return max(1, round(batches * self.batch_seconds))

    async def run_now(self, items: list[Any]) -> Sequence[Any]:
        """Run one batch on the model thread outside the queue (the warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run_batch, items)

    async def _collect(self) -> list[Job]:
        self._forming = batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.perf_counter()
            try:
                batch.append(self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.QueueEmpty, TimeoutError):
                break
        self._forming = []
        return batch

    async def _work(self) -> None:
        while True:
            collected = await self._collect()
            # Requests that timed out or whose client left while waiting are not run.
            jobs = [job for job in collected if not job.future.done()]
            if jobs:
                await self._run(jobs)
            for _ in collected:
                self.queue.task_done()

    async def _run(self, jobs: list[Job]) -> None:
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        try:
            results = await self.run_now([job.item for job in jobs])
        except Exception as err:  # one bad batch must not stop the server: its requests get the error
            log.exception("batch of %d failed", len(jobs))
            results = [err] * len(jobs)
        seconds = time.perf_counter() - started
        self.batch_seconds = seconds if self.batch_seconds == 0 else 0.8 * self.batch_seconds + 0.2 * seconds
        if self.on_batch is not None:
            self.on_batch(len(jobs), seconds)
        for job, result in zip(jobs, results, strict=True):
            job.batch_size, job.batch_seconds = len(jobs), seconds
            if job.future.done():
                continue
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def close(self) -> None:
        """Refuse new requests, finish every accepted one, then stop the worker and the model thread."""
        self.closing = True
        if self._worker is not None:
            await self.queue.join()
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)
