"""Conformance: the operator calls on a whole queue (issue 14) — retry_jobs, promote_jobs,
clean, drain, obliterate, trim_events, get_counts_per_priority, the list readers and the
counts — on every backend, with their events, refusals and the structural checks after each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from helpers import QUEUE

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.backends.redis.checks import check_queue
from corral.engine import CorralError, InvalidArgumentError, Queue
from corral.engine.storage import Complete, Fail, FetchRequest, Storage
from corral.sim.loop import VirtualClock, VirtualTimeLoop

Q = QUEUE
T = TypeVar("T")


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


def redis_of(backend: object) -> RedisBackend | None:
    inner = getattr(backend, "inner", backend)  # the real-server wrapper holds it
    return inner if isinstance(inner, RedisBackend) else None


async def direct(call: Awaitable[T]) -> T:
    """A call straight to the Redis client, with virtual time held until the reply is in."""
    loop = asyncio.get_running_loop()
    hold = loop.external_work() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
    with hold:
        return await call


async def queue_keys(redis: RedisBackend) -> list[str]:
    return list(await direct(redis.client.keys(redis.keys(Q).base + "*")))


async def check_all(backend: Storage) -> None:
    """The backend's structural checks: no job hash without a place, no place without one."""
    if isinstance(backend, MemoryBackend):
        backend.check()
        return
    redis = redis_of(backend)
    assert redis is not None
    await direct(check_queue(redis, Q))


async def counts(queue: Queue) -> dict[str, int]:
    return {k: v for k, v in (await queue.get_job_counts()).items() if v}


async def finish(backend: Storage, clock: VirtualClock, outcomes: list[str]) -> list[str]:
    """Fetch and finish one job per entry: "c" completes it, "f" fails it; return the ids."""
    done = []
    for n, outcome in enumerate(outcomes):
        now = clock.now_ms()
        result = await backend.fetch_next(Q, FetchRequest(f"tok{n}", 30_000), now)
        assert result.job is not None
        job_id = result.job.job_id
        finished = Complete("1") if outcome == "c" else Fail("bad")
        await backend.finish(Q, job_id, f"tok{n}", finished, now)
        done.append(job_id)
    return done


async def events_since(backend: Storage, after: int) -> list[tuple[str, dict[str, str]]]:
    return [(e.name, e.fields) for e in (await backend.get_events(Q))[after:]]


# ---------------------------------------------------------------------------- retry_jobs


async def test_retry_jobs_moves_failed_jobs_to_wait_with_events(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(3):
        await queue.add("j", i, priority=5 if i == 1 else 0)
    failed = await finish(backend, clock, ["f", "c", "f"])
    assert await counts(queue) == {"failed": 2, "completed": 1}
    mark = len(await backend.get_events(Q))
    await queue.retry_jobs()
    # Priority is ignored: every retried job goes to wait (BullMQ's moveJobsToWait).
    assert await counts(queue) == {"waiting": 2, "completed": 1}
    retried = [failed[0], failed[2]]
    assert [f for n, f in await events_since(backend, mark) if n == "waiting"] == [
        {"jobId": job_id, "prev": "failed"} for job_id in retried
    ]
    for job_id in retried:
        job = await queue.get_job(job_id)
        assert job is not None
        assert job.failed_reason is None
        assert job.finished_on is None
        assert job.processed_on is None
        assert job.attempts_made == 1  # never reset by retry_jobs
    # First failed, first served again.
    result = await backend.fetch_next(Q, FetchRequest("again", 30_000), clock.now_ms())
    assert result.job is not None
    assert result.job.job_id == retried[0]
    await check_all(backend)


async def test_retry_jobs_completed_only_up_to_timestamp_in_batches(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(5):
        await queue.add("j", i)
    done = []
    for _ in range(5):
        done += await finish(backend, clock, ["c"])
        clock.offset_ms += 10
    cutoff = (await queue.get_job(done[2])).finished_on  # type: ignore[union-attr]
    assert cutoff is not None
    await queue.retry_jobs("completed", count=2, timestamp=cutoff)
    assert await counts(queue) == {"waiting": 3, "completed": 2}
    assert {j.id for j in await queue.get_waiting()} == set(done[:3])
    job = await queue.get_job(done[0])
    assert job is not None
    assert job.return_value is None
    await check_all(backend)


async def test_retry_jobs_refuses_other_states(queue: Queue) -> None:
    with pytest.raises(InvalidArgumentError, match="'completed' or 'failed'"):
        await queue.retry_jobs("delayed")
    with pytest.raises(InvalidArgumentError, match="count"):
        await queue.retry_jobs(count=0)


# ---------------------------------------------------------------------------- promote_jobs


async def test_promote_jobs_makes_every_delayed_job_ready(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(5):
        await queue.add("j", i, delay=60_000 * (i + 1), priority=3 if i == 0 else 0)
    await queue.add("other", 9)
    mark = len(await backend.get_events(Q))
    await queue.promote_jobs(count=2)  # three store calls
    assert await counts(queue) == {"waiting": 6}
    promoted = [(n, f) for n, f in await events_since(backend, mark)]
    assert promoted == [("waiting", {"jobId": str(i), "prev": "delayed"}) for i in range(1, 6)]
    job = await queue.get_job("1")
    assert job is not None
    assert job.delay == 60_000
    await check_all(backend)


async def test_promote_jobs_on_a_paused_queue_sets_no_marker(queue: Queue) -> None:
    await queue.add("j", 1, delay=1000)
    await queue.pause()
    await queue.promote_jobs()
    assert await counts(queue) == {"waiting": 1}
    await check_all(queue.backend)  # the checks refuse a marker on a paused queue


# ---------------------------------------------------------------------------- clean


async def test_clean_deletes_finished_jobs_older_than_grace(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(4):
        await queue.add("j", i)
    old = await finish(backend, clock, ["c", "c"])
    clock.offset_ms += 10_000
    await finish(backend, clock, ["c", "f"])
    mark = len(await backend.get_events(Q))
    assert await queue.clean(5_000, 0) == old
    assert await counts(queue) == {"completed": 1, "failed": 1}
    assert await events_since(backend, mark) == [("cleaned", {"count": "2"})]
    assert await queue.get_job(old[0]) is None
    assert await queue.clean(0, 0, "failed") == ["4"]
    assert await counts(queue) == {"completed": 1}
    await check_all(backend)


async def test_clean_limit_and_the_wait_list_names(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(5):
        await queue.add("j", i)
    clock.offset_ms += 1000
    await queue.add("new", 5)
    # The oldest first; "waiting", "wait" and "paused" all name the wait list.
    assert await queue.clean(500, 2, "waiting") == ["2", "1"]
    assert await queue.clean(500, 1, "wait") == ["3"]
    assert await queue.clean(500, 0, "paused") == ["5", "4"]
    assert [j.id for j in await queue.get_waiting()] == ["6"]
    await check_all(backend)


async def test_clean_skips_active_jobs_holding_a_lock(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    await queue.add("j", 1)
    await backend.fetch_next(Q, FetchRequest("tok", 30_000), clock.now_ms())
    clock.offset_ms += 10_000
    assert await queue.clean(0, 0, "active") == []
    assert await counts(queue) == {"active": 1}


async def test_clean_delayed_and_prioritized_by_creation_time(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    await queue.add("d", 1, delay=60_000)
    await queue.add("p", 2, priority=4)
    clock.offset_ms += 1000
    await queue.add("d2", 3, delay=60_000)
    assert await queue.clean(500, 0, "delayed") == ["1"]
    assert await queue.clean(500, 0, "prioritized") == ["2"]
    assert await counts(queue) == {"delayed": 1}
    await check_all(backend)


async def test_clean_refuses_bad_arguments(queue: Queue) -> None:
    await queue.add("j", 1)
    with pytest.raises(InvalidArgumentError, match="cannot clean state 'finished'"):
        await queue.clean(0, 0, "finished")
    with pytest.raises(InvalidArgumentError, match="limit"):
        await queue.clean(0, -1)
    with pytest.raises(InvalidArgumentError, match="grace"):
        await queue.clean(-5, 0)
    assert await counts(queue) == {"waiting": 1}


# ---------------------------------------------------------------------------- drain


async def test_drain_deletes_jobs_not_yet_started_without_events(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(3):
        await queue.add("j", i)
    await finish(backend, clock, ["c"])
    await backend.fetch_next(Q, FetchRequest("tok", 30_000), clock.now_ms())
    await queue.add("p", 1, priority=2)
    await queue.add("d", 1, delay=5000)
    mark = len(await backend.get_events(Q))
    await queue.drain()
    assert await counts(queue) == {"active": 1, "completed": 1, "delayed": 1}
    await queue.drain(delayed=True)
    assert await counts(queue) == {"active": 1, "completed": 1}
    assert await events_since(backend, mark) == []
    assert await queue.get_job("3") is None
    await check_all(backend)


# ---------------------------------------------------------------------------- obliterate


async def test_obliterate_refuses_active_jobs_without_force(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    await queue.add("j", 1)
    await queue.add("j", 2)
    await backend.fetch_next(Q, FetchRequest("tok", 30_000), clock.now_ms())
    with pytest.raises(CorralError, match=r"^Cannot obliterate queue with active jobs$"):
        await queue.obliterate()
    # It paused the queue first, as BullMQ's, and deleted nothing.
    assert await queue.is_paused()
    assert await counts(queue) == {"active": 1, "waiting": 1}
    assert (await backend.get_events(Q))[-1].name == "paused"


async def test_obliterate_refuses_a_queue_that_is_not_paused(backend: Storage) -> None:
    from corral.engine.storage import ObliterateResult

    assert await backend.obliterate(Q, 100, False) is ObliterateResult.NOT_PAUSED


async def test_obliterate_with_force_deletes_everything(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    for i in range(7):
        await queue.add("j", i)
    await queue.add("p", 1, priority=3)
    await queue.add("d", 1, delay=9000)
    await finish(backend, clock, ["c", "f"])
    await backend.fetch_next(Q, FetchRequest("held", 30_000), clock.now_ms())
    await queue.obliterate(force=True, count=2)  # several store calls
    assert await counts(queue) == {}
    assert not await queue.is_paused()  # meta went with the rest
    assert await backend.get_events(Q) == []
    redis = redis_of(backend)
    if redis is not None:
        assert await queue_keys(redis) == []
    else:
        assert isinstance(backend, MemoryBackend)
        backend.check()
    # The queue starts afresh: ids count from 1 again.
    job = await queue.add("again", 1)
    assert job.id == "1"


async def test_obliterate_deletes_lock_and_logs_of_jobs(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    redis = redis_of(backend)
    if redis is None:
        pytest.skip("the memory backend keeps no per-job sub-keys")
    await queue.add("j", 1)
    await backend.fetch_next(Q, FetchRequest("held", 30_000), clock.now_ms())
    await direct(redis.client.rpush(redis.keys(Q).job("1") + ":logs", "a row"))
    await queue.obliterate(force=True)
    assert await queue_keys(redis) == []


async def test_obliterate_deletes_job_schedulers_releases_dedup_keys_and_keeps_the_window(
    queue: Queue, backend: Storage
) -> None:
    """BullMQ's obliterate deletes the queue's schedulers (``repeat`` and each hash) with the
    rest, releases the dedup keys of the jobs it deletes (every removal path does,
    bullmq-features.md §4.4), and leaves what it does not list: the ``limiter`` window. (Found
    by the state machine: Redis kept the schedulers, memory dropped the window.)"""
    await queue.upsert_job_scheduler("s", {"every": 60_000})
    await queue.add("j", 1, deduplication={"id": "d"})
    await queue.rate_limit(50_000)
    await queue.pause()
    await queue.obliterate(force=True)
    assert await queue.get_job_schedulers_count() == 0
    assert await queue.get_job_scheduler("s") is None
    assert await queue.get_deduplication_job_id("d") is None
    assert await queue.get_rate_limit_ttl() > 0
    redis = redis_of(backend)
    if redis is not None:
        left = sorted(
            key.decode() if isinstance(key, bytes) else key for key in await queue_keys(redis)
        )
        assert left == [redis.keys(Q).base + "limiter"]


# ---------------------------------------------------------------------------- events, counts


async def test_trim_events_keeps_at_least_max_length(queue: Queue, backend: Storage) -> None:
    for i in range(300):
        await queue.add("j", i)
    before = len(await backend.get_events(Q))
    removed = await queue.trim_events(10)
    after = len(await backend.get_events(Q))
    assert removed == before - after
    # Redis trims whole stream nodes (100 entries by default): "about" max_length.
    assert 10 <= after < 10 + 100
    assert removed > 0
    with pytest.raises(InvalidArgumentError, match="max_length"):
        await queue.trim_events(-1)


async def test_get_counts_per_priority(queue: Queue) -> None:
    await queue.add("a", 1)
    await queue.add("b", 1)
    for priority in (1, 1, 7, 2**21 - 1):
        await queue.add("p", 1, priority=priority)
    assert await queue.get_counts_per_priority([0, 1, 2, 7, 2**21 - 1, 1]) == {
        0: 2,
        1: 2,
        2: 0,
        7: 1,
        2**21 - 1: 1,
    }
    with pytest.raises(InvalidArgumentError, match="priority must be between"):
        await queue.get_counts_per_priority([2**21])


async def test_counts_and_list_readers(queue: Queue, backend: Storage, clock: VirtualClock) -> None:
    for i in range(4):
        await queue.add("j", i)
    await queue.add("p", 1, priority=2)
    await queue.add("d", 1, delay=1000)
    await finish(backend, clock, ["c", "f"])
    await backend.fetch_next(Q, FetchRequest("held", 30_000), clock.now_ms())
    assert await queue.count() == 3  # waiting 1, prioritized 1, delayed 1
    assert await queue.get_job_count() == 6
    assert await queue.get_job_count("completed", "failed") == 2
    assert (await queue.get_waiting_count(), await queue.get_active_count()) == (1, 1)
    assert (await queue.get_completed_count(), await queue.get_failed_count()) == (1, 1)
    assert (await queue.get_delayed_count(), await queue.get_prioritized_count()) == (1, 1)
    assert [j.id for j in await queue.get_waiting()] == ["4"]
    assert [j.id for j in await queue.get_active()] == ["3"]
    assert [j.id for j in await queue.get_prioritized()] == ["5"]
    assert [j.id for j in await queue.get_delayed()] == ["6"]
    assert [j.id for j in await queue.get_completed()] == ["1"]
    assert [j.id for j in await queue.get_failed()] == ["2"]
