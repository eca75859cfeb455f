"""Global concurrency (bullmq-features.md §2.5): the ``meta`` field ``concurrency`` caps the
jobs active at once across all workers; removing it lets idle workers fetch at once."""

from __future__ import annotations

import asyncio

import pytest
from helpers import QUEUE, check_invariants, start_worker, stop_worker, wait_for

from corral.engine import InvalidArgumentError, Job, Queue
from corral.engine.storage import FetchRequest, Storage
from corral.sim.loop import VirtualClock


class Tracker:
    """A processor taking 100 ms that records the most jobs running at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.done = 0

    async def __call__(self, job: Job) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.1)
        self.now -= 1
        self.done += 1


async def test_never_more_than_n_active_across_workers(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_concurrency(2)
    assert await queue.get_global_concurrency() == 2
    await queue.add_bulk([{"name": "j", "data": i} for i in range(8)])
    tracker = Tracker()
    workers = [
        await start_worker(backend, tracker, clock, seed=seed, concurrency=3, drain_delay=200)
        for seed in (1, 2)
    ]
    await wait_for(lambda: tracker.done == 8, timeout_s=120, what="all jobs")
    for worker, task in workers:
        await stop_worker(worker, task)
    assert tracker.peak == 2  # reached, never exceeded
    check_invariants(backend)


async def test_fetch_returns_nothing_while_maxed(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_concurrency(1)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(2)])
    first = await backend.fetch_next(QUEUE, FetchRequest("t1", 30_000), clock.now_ms())
    assert first.job is not None
    second = await backend.fetch_next(QUEUE, FetchRequest("t2", 30_000), clock.now_ms())
    assert second.job is None
    assert second.rate_limit_ms == 0
    await queue.remove_global_concurrency()
    assert await queue.get_global_concurrency() is None
    third = await backend.fetch_next(QUEUE, FetchRequest("t3", 30_000), clock.now_ms())
    assert third.job is not None


async def test_rate_limit_is_checked_before_concurrency(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_concurrency(1)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(2)])
    request = FetchRequest("t1", 30_000, limiter=(1, 1000))
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    # Maxed and limited: the limit's TTL is what comes back (BullMQ's order).
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).rate_limit_ms > 0


async def test_removing_global_concurrency_wakes_idle_workers(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_concurrency(1)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(3)])
    gate = asyncio.Event()
    started: list[str] = []

    async def held(job: Job) -> None:
        started.append(job.id)
        await gate.wait()

    workers = [
        await start_worker(backend, held, clock, seed=seed, drain_delay=60_000)
        for seed in (1, 2, 3)
    ]
    await wait_for(lambda: len(started) == 1, what="one job")
    await asyncio.sleep(1)
    assert len(started) == 1
    await queue.remove_global_concurrency()
    await wait_for(lambda: len(started) == 3, timeout_s=1, what="the others, woken at once")
    gate.set()
    for worker, task in workers:
        await stop_worker(worker, task)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
async def test_bad_global_concurrency_is_refused(
    backend: Storage, clock: VirtualClock, value: object
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_concurrency(4)
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        await queue.set_global_concurrency(value)  # type: ignore[arg-type]
    assert await queue.get_global_concurrency() == 4
