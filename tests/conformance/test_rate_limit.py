"""Rate limiting (bullmq-features.md §2.2-2.4, §8 facts 5-6): the worker ``limiter`` enforced by
the store across workers as a fixed window, the global rate limit and its uneven precedence, the
manual limit with ``RateLimitError``, the TTL queries, and lifting a limit waking the workers.
All times are virtual milliseconds since the test started (see ``helpers``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import (
    QUEUE,
    check_invariants,
    elapsed_ms,
    start_worker,
    stop_worker,
    stored_job,
    wait_for,
)

from corral.engine import InvalidArgumentError, Job, Queue, RateLimitError, Worker
from corral.engine.storage import FetchRequest, Storage
from corral.sim.loop import VirtualClock


class Starts:
    """A processor that records the virtual start time of every job."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.at: list[int] = []

    async def __call__(self, job: Job) -> str:
        self.at.append(elapsed_ms(self.clock))
        return "ok"


async def run_all(
    backend: Storage, clock: VirtualClock, count: int, workers: list[dict[str, Any]]
) -> list[int]:
    """Add ``count`` jobs, run one worker per options dict until all completed; start times."""
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(count)])
    starts = Starts(clock)
    running = [
        await start_worker(backend, starts, clock, seed=seed, **options)
        for seed, options in enumerate(workers, start=1)
    ]

    async def done() -> bool:
        return (await queue.get_job_counts("completed"))["completed"] == count

    await wait_for(done, timeout_s=600, what="every job to complete")
    for worker, task in running:
        await stop_worker(worker, task)
    check_invariants(backend)
    return sorted(starts.at)


def max_in_any_window(starts: list[int], duration: int) -> int:
    """The most starts within any half-open window of ``duration`` ms."""
    return max(sum(1 for t in starts if s <= t < s + duration) for s in starts)


@pytest.mark.virtual_ttl
async def test_limiter_holds_across_two_workers_as_a_fixed_window(
    backend: Storage, clock: VirtualClock
) -> None:
    # Two workers with room for 5 jobs each: the limit is the queue's, not each worker's.
    limiter = {"max": 2, "duration": 1000}
    workers = [{"concurrency": 5, "limiter": limiter}, {"concurrency": 5, "limiter": limiter}]
    starts = await run_all(backend, clock, 6, workers)
    # Fixed windows opened by the first start of each: 0, 1000, 2000 (two jobs each).
    assert [t // 1000 for t in starts] == [0, 0, 1, 1, 2, 2]
    assert max_in_any_window(starts, 1000) == 2


@pytest.mark.virtual_ttl
async def test_global_max_beats_the_worker_max_but_the_worker_duration_wins(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_rate_limit(1, 800)
    starts = await run_all(
        backend, clock, 3, [{"concurrency": 5, "limiter": {"max": 10, "duration": 200}}]
    )
    # max 1 (the queue's), window 200 ms (the worker's): one job per 200 ms.
    assert [t // 200 for t in starts] == [0, 1, 2]


@pytest.mark.virtual_ttl
async def test_global_rate_limit_alone_limits_workers_without_limiter(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_rate_limit(2, 500)
    assert await queue.get_global_rate_limit() == {"max": 2, "duration": 500}
    starts = await run_all(backend, clock, 4, [{"concurrency": 4}])
    assert [t // 500 for t in starts] == [0, 0, 1, 1]
    await queue.remove_global_rate_limit()
    assert await queue.get_global_rate_limit() is None


@pytest.mark.virtual_ttl
async def test_rate_limit_error_puts_the_job_back_without_an_attempt(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    added = await queue.add("j", None, attempts=1)
    calls: list[int] = []

    async def limited_once(job: Job) -> str:
        calls.append(elapsed_ms(clock))
        if len(calls) == 1:
            await queue.rate_limit(1500)
            raise RateLimitError()
        return "ok"

    worker, task = await start_worker(
        backend, limited_once, clock, limiter={"max": 10, "duration": 100}
    )
    await wait_for(lambda: queue.get_job_state(added.id), timeout_s=60, what="job to run")

    async def completed() -> bool:
        return await queue.get_job_state(added.id) == "completed"

    await wait_for(completed, timeout_s=60, what="the job to complete")
    await stop_worker(worker, task)
    job = await stored_job(queue, added.id)
    # atm unchanged by the rate-limited run, ats counted both activations.
    assert (job.attempts_made, job.attempts_started) == (1, 2)
    # The worker waited the store-given 1500 ms before taking the job again.
    assert calls[0] == 0
    assert calls[1] >= 1500
    names = [e.name for e in await backend.get_events(QUEUE)]
    assert names[:5] == ["added", "waiting", "active", "waiting", "active"]
    check_invariants(backend)


async def test_manual_limit_does_not_hold_back_workers_without_a_max(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.rate_limit(5000)
    starts = await run_all(backend, clock, 1, [{}])
    assert starts == [0]  # BullMQ: no max anywhere, no check (§8 fact 5)


@pytest.mark.parametrize(
    ("window", "maximum", "waited"), [(1000, 30_000, 1000), (60_000, 2000, 2000)]
)
async def test_rate_limit_error_without_a_limiter_waits_out_the_window(
    backend: Storage, clock: VirtualClock, window: int, maximum: int, waited: int
) -> None:
    """BullMQ (§2.3): the worker sets limitUntil from the TTL moveJobFromActiveToWait returns
    and fetches nothing until then (at most ``maximum_rate_limit_delay``), even with no
    ``limiter.max``: the given-back job is not taken again at once, over and over."""
    queue = Queue(QUEUE, backend, clock=clock)
    added = await queue.add("j", None)
    calls: list[int] = []

    async def limited_once(job: Job) -> str:
        calls.append(elapsed_ms(clock))
        if len(calls) == 1:
            await queue.rate_limit(window)
            raise RateLimitError()
        return "ok"

    worker, task = await start_worker(
        backend, limited_once, clock, maximum_rate_limit_delay=maximum
    )

    async def completed() -> bool:
        return await queue.get_job_state(added.id) == "completed"

    await wait_for(completed, timeout_s=120, what="the job to complete")
    await stop_worker(worker, task)
    job = await stored_job(queue, added.id)
    assert job.attempts_started == 2  # taken once more, not once per loop turn
    assert calls[0] == 0
    # The store's PTTL (a real server's clock may have run a little meanwhile), bounded.
    assert waited - 50 < calls[1] <= waited
    check_invariants(backend)


async def test_manual_fetching_obeys_and_counts_in_the_worker_limiter(
    backend: Storage, clock: VirtualClock
) -> None:
    """§5.10: ``get_next_job`` takes the same path as the worker's fetch, limiter included."""
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(3)])
    worker = Worker(QUEUE, None, backend, clock=clock, limiter={"max": 1, "duration": 10_000})
    first = await worker.get_next_job("t1", block=False)
    assert first is not None
    assert await worker.get_next_job("t2", block=False) is None  # the window is used up
    # The manual activation counted in the queue's window: another worker's fetch waits too.
    other = FetchRequest("t3", 30_000, limiter=(1, 10_000))
    assert (await backend.fetch_next(QUEUE, other, clock.now_ms())).rate_limit_ms > 0
    # A finish that fetches the next job obeys it as well.
    assert await first.move_to_completed("ok", "t1", fetch_next=True) is None
    assert await queue.get_waiting_count() == 2
    await worker.close()


@pytest.mark.virtual_ttl
@pytest.mark.parametrize(("window", "got_at"), [(2000, 2000), (60_000, None)])
async def test_a_rate_limited_blocking_manual_fetch_waits_within_drain_delay(
    backend: Storage, clock: VirtualClock, window: int, got_at: int | None
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(2)])
    limiter = {"max": 1, "duration": window}
    worker = Worker(QUEUE, None, backend, clock=clock, limiter=limiter, drain_delay=5000)
    assert await worker.get_next_job("t1") is not None
    second = await worker.get_next_job("t2")
    if got_at is None:  # the window outlasts drain_delay: None once it has passed
        assert second is None
        assert elapsed_ms(clock) == 5000
    else:  # taken as soon as the window ended
        assert second is not None
        assert elapsed_ms(clock) == got_at
    await worker.close()


async def test_rate_limit_ttl_queries(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    assert await queue.get_rate_limit_ttl() == -2  # no window at all
    request = FetchRequest("t1", 30_000, limiter=(2, 1000))
    await queue.add_bulk([{"name": "j", "data": i} for i in range(3)])
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    limited = await backend.fetch_next(QUEUE, request, clock.now_ms())
    assert limited.job is None
    assert 0 < limited.rate_limit_ms <= 1000
    assert 0 < await queue.get_rate_limit_ttl() <= 1000  # raw PTTL: no max anywhere
    assert 0 < await queue.get_rate_limit_ttl(2) <= 1000  # counter 2 >= 2
    assert await queue.get_rate_limit_ttl(5) == 0  # counter 2 < 5
    assert await queue.remove_rate_limit_key() == 1
    assert await queue.remove_rate_limit_key() == 0
    assert await queue.get_rate_limit_ttl(2) == 0
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    await queue.rate_limit(700)
    assert 0 < await queue.get_rate_limit_ttl(1) <= 700


async def test_window_lasts_through_its_last_millisecond(
    backend: Storage, clock: VirtualClock
) -> None:
    """BullMQ's window is a key with ``PX duration``: at exactly start + duration it is still
    there (PTTL 0) and an activation counts in it rather than opening a new window; one ms
    later it is gone. (Found by the state machine: the memory backend ended it 1 ms early.)"""
    if getattr(backend, "inner", None) is not None:
        pytest.skip("a real server expires keys by its own clock, not the virtual one")
    queue = Queue(QUEUE, backend, clock=clock)
    request = FetchRequest("t1", 30_000, limiter=(3, 1000))
    await queue.add_bulk([{"name": "j", "data": i} for i in range(3)])
    start = clock.now_ms()
    assert (await backend.fetch_next(QUEUE, request, start)).job is not None
    await asyncio.sleep(1.0)
    assert clock.now_ms() == start + 1000
    assert await queue.get_rate_limit_ttl() == 0  # raw PTTL: the key is there, 0 ms left
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    await asyncio.sleep(0.001)
    assert await queue.get_rate_limit_ttl() == -2  # gone: no new window was opened


async def test_job_with_defa_does_not_use_a_slot(backend: Storage, clock: VirtualClock) -> None:
    from helpers import write_job_field

    queue = Queue(QUEUE, backend, clock=clock)
    first = await queue.add("j", None)
    await queue.add("j", None)
    await write_job_field(backend, QUEUE, first.id, "defa", "failed elsewhere")
    request = FetchRequest("t1", 30_000, limiter=(1, 1000))
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None
    # The defa job did not count: the next one is still allowed in this window.
    assert (await backend.fetch_next(QUEUE, request, clock.now_ms())).job is not None


@pytest.mark.virtual_ttl
async def test_removing_the_limit_wakes_a_waiting_worker_at_once(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(2)])
    starts = Starts(clock)
    worker, task = await start_worker(
        backend, starts, clock, limiter={"max": 1, "duration": 60_000}
    )
    await wait_for(lambda: len(starts.at) == 1, what="the first job")
    spy_at = elapsed_ms(clock)
    await queue.remove_rate_limit_key()
    await wait_for(lambda: len(starts.at) == 2, timeout_s=60, what="the second job")
    await stop_worker(worker, task)
    # Woken by the removal (not by the 30 s maximum_rate_limit_delay nor the 60 s window).
    assert starts.at[1] - spy_at < 1000


@pytest.mark.virtual_ttl
async def test_rate_limited_worker_waits_without_polling(
    backend: Storage, clock: VirtualClock
) -> None:
    from helpers import StorageSpy

    spy = StorageSpy(backend, clock)
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(3)])
    starts = Starts(clock)
    worker, task = await start_worker(
        spy,  # type: ignore[arg-type]
        starts,
        clock,
        limiter={"max": 1, "duration": 10_000},
        drain_delay=100,
    )
    await wait_for(lambda: len(starts.at) == 3, timeout_s=60, what="three jobs")
    await stop_worker(worker, task)
    assert [t // 10_000 for t in starts.at] == [0, 1, 2]
    # Over 20 s of limits: at most three fetches per job (the one that is limited, one more
    # when the marker of the waiting jobs wakes it once), not one per 100 ms drain_delay.
    assert len(spy.of("fetch_next")) <= 9


@pytest.mark.parametrize(
    "limiter",
    [{"max": 0, "duration": 10}, {"max": 1}, {"max": 1, "duration": 0}, {"max": 1, "d": 1}, 5],
)
def test_bad_limiter_is_refused(backend: Storage, limiter: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="limiter"):
        Worker(QUEUE, lambda job: None, backend, limiter=limiter)


async def test_bad_global_rate_limit_is_refused_and_stores_nothing(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.set_global_rate_limit(3, 100)
    with pytest.raises(InvalidArgumentError, match="max"):
        await queue.set_global_rate_limit(0, 100)
    with pytest.raises(InvalidArgumentError, match="duration"):
        await queue.set_global_rate_limit(1, -5)
    assert await queue.get_global_rate_limit() == {"max": 3, "duration": 100}
