"""Dynamic batching of concurrent requests for a synchronous batch function.

Requests arriving while the server is idle are collected for a short *window* (each arrival
re-arms it, bounded by ``max_wait_s`` after the first) or until ``max_batch_size``; the batch
then runs in a worker thread, so the event loop keeps accepting requests, which form the next
batch. Only one batch runs at a time, and :attr:`DynamicBatcher.lock` lets other work (weight
updates) exclude batches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, Sequence, TypeVar

__all__ = ["BatchingOptions", "DynamicBatcher"]

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(frozen=True)
class BatchingOptions:
    """max_batch_size: most requests per batch (≥ 1). window_s: quiet time that closes a batch
    (seconds, ≥ 0). max_wait_s: longest a batch waits for more requests after its first (≥ window_s)."""

    max_batch_size: int = 64
    window_s: float = 0.01
    max_wait_s: float = 0.05

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size={self.max_batch_size}: must be >= 1")
        if self.window_s < 0 or self.max_wait_s < self.window_s:
            raise ValueError(
                f"window_s={self.window_s}, max_wait_s={self.max_wait_s}: need 0 <= window_s <= max_wait_s")


@dataclass
class _Pending(Generic[Req]):
    request: Req
    future: asyncio.Future = field(repr=False)


class DynamicBatcher(Generic[Req, Res]):
    """``await submit(request)`` returns ``run_batch([... request ...])[i]`` for that request.

    ``run_batch(list[Req]) -> list[Res]`` is synchronous (it runs in a thread) and must return one
    result per request, in order; an exception fails every request of its batch.
    ``batch_sizes`` records the size of every batch run (for tests and metrics).
    """

    def __init__(self, run_batch: Callable[[list[Req]], Sequence[Res]], options: BatchingOptions = BatchingOptions()):
        self.run_batch = run_batch
        self.options = options
        self.lock = asyncio.Lock()
        self.batch_sizes: list[int] = []
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, request: Req) -> Res:
        if self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._queue.put(_Pending(request, future))
            return await future
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self) -> None:
        """Wait until no request is queued or running."""
        await self._idle.wait()

    def cancel_queued(self, make_result: Callable[[Req], Res]) -> int:
        """Answer every request that has not started with ``make_result(request)``; returns how many."""
        cancelled = 0
        while self._queue is not None and not self._queue.empty():
            pending: _Pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_result(make_result(pending.request))
                cancelled += 1
        return cancelled

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.options.max_wait_s
        while len(batch) < self.options.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            timeout = min(self.options.window_s, deadline - loop.time())
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except asyncio.TimeoutError:
                break
        return batch

    async def _serve(self) -> None:
        while True:
            batch = [p for p in await self._collect() if not p.future.done()]
            if not batch:
                continue
            async with self.lock:
                try:
                    results = await asyncio.to_thread(self.run_batch, [p.request for p in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
                except BaseException as err:  # noqa: BLE001 - every waiter must be answered
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(err)
                    if isinstance(err, asyncio.CancelledError):
                        raise
                    continue
            self.batch_sizes.append(len(batch))
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
