"""DynamicBatcher (pure asyncio; the batch function is a recording fake)."""

import asyncio
import threading
import time

import pytest

from papo_verl.cpu.batching import BatchingOptions, DynamicBatcher


class Recorder:
    """run_batch fake: records every batch, answers request x with (x, batch index)."""

    def __init__(self, delay=0.0, fail_on=None):
        self.batches, self.delay, self.fail_on = [], delay, fail_on
        self.threads = set()

    def __call__(self, requests):
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in requests:
            raise RuntimeError(f"bad request {self.fail_on}")
        self.batches.append(list(requests))
        return [(r, len(self.batches) - 1) for r in requests]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch_and_get_their_own_results():
    rec = Recorder()

    async def main():
        batcher = DynamicBatcher(rec, BatchingOptions(max_batch_size=32, window_s=0.05, max_wait_s=0.5))
        return await asyncio.gather(*[batcher.submit(i) for i in range(20)]), batcher.batch_sizes

    results, sizes = run(main())
    assert results == [(i, 0) for i in range(20)]
    assert rec.batches == [list(range(20))] and sizes == [20]
    assert threading.get_ident() not in rec.threads  # the batch ran off the event loop


def test_max_batch_size_splits_and_requests_arriving_during_a_batch_form_the_next():
    rec = Recorder(delay=0.2)

    async def main():
        batcher = DynamicBatcher(rec, BatchingOptions(max_batch_size=4, window_s=0.02, max_wait_s=0.1))
        first = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
        await asyncio.sleep(0.1)  # the first batch (0..3) is running now
        late = [asyncio.ensure_future(batcher.submit(i)) for i in range(6, 9)]
        return await asyncio.gather(*first, *late)

    results = run(main())
    assert [r[0] for r in results] == list(range(9))
    assert rec.batches[0] == [0, 1, 2, 3]
    assert sorted(sum(rec.batches[1:], [])) == [4, 5, 6, 7, 8] and all(len(b) <= 4 for b in rec.batches)


def test_a_quiet_window_closes_the_batch():
    rec = Recorder()

    async def main():
        batcher = DynamicBatcher(rec, BatchingOptions(max_batch_size=64, window_s=0.01, max_wait_s=0.02))
        a = asyncio.ensure_future(batcher.submit("a"))
        await asyncio.sleep(0.3)
        b = asyncio.ensure_future(batcher.submit("b"))
        return await asyncio.gather(a, b)

    assert run(main()) == [("a", 0), ("b", 1)]


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving():
    rec = Recorder(fail_on=3)

    async def main():
        batcher = DynamicBatcher(rec, BatchingOptions(max_batch_size=8, window_s=0.05, max_wait_s=0.2))
        failed = await asyncio.gather(*[batcher.submit(i) for i in range(5)], return_exceptions=True)
        later = await batcher.submit(10)
        return failed, later

    failed, later = run(main())
    assert all(isinstance(f, RuntimeError) and "bad request 3" in str(f) for f in failed)
    assert later == (10, 0)


def test_cancel_queued_answers_waiting_requests_and_drain_waits_for_running_ones():
    rec = Recorder(delay=0.2)

    async def main():
        batcher = DynamicBatcher(rec, BatchingOptions(max_batch_size=2, window_s=0.0, max_wait_s=0.0))
        futures = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0.05)  # batch [0, 1] running, 2..4 queued
        cancelled = batcher.cancel_queued(lambda r: ("aborted", r))
        results = await asyncio.gather(*futures)
        await batcher.drain()
        return cancelled, results

    cancelled, results = run(main())
    assert cancelled == 3
    assert results[:2] == [(0, 0), (1, 0)] and results[2:] == [("aborted", 2), ("aborted", 3), ("aborted", 4)]


def test_options_are_validated():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingOptions(max_batch_size=0)
    with pytest.raises(ValueError, match="window_s"):
        BatchingOptions(window_s=0.5, max_wait_s=0.1)
