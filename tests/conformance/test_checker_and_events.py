"""The standalone StalledChecker and queue-level events (QueueEvents), on every backend.

Times are virtual milliseconds since the test started (exact, see ``helpers``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import (
    QUEUE,
    Recorder,
    check_invariants,
    dead_owner_takes,
    elapsed_ms,
    start_worker,
    stop_worker,
    stored_job,
)

from corral.engine import Job, Queue, QueueEvent, QueueEvents, StalledChecker
from corral.engine.errors import STALLED_LIMIT_REASON, InvalidArgumentError
from corral.engine.storage import Storage, StoredEvent
from corral.sim.loop import VirtualClock

CHECKER_EVENTS = {"stalled", "failed", "error", "closed"}


async def forever(job: Job) -> None:
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------- StalledChecker


@pytest.mark.virtual_ttl
async def test_check_gives_the_same_result_as_queue_check_stalled(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    first, second = await queue.add("a"), await queue.add("b")
    await dead_owner_takes(backend, clock, "dead:1", 1_000)
    await dead_owner_takes(backend, clock, "dead:2", 1_000)
    checker = StalledChecker(QUEUE, backend, stalled_interval=2_000, clock=clock)
    rec = Recorder(clock)
    rec.attach(checker, CHECKER_EVENTS)  # type: ignore[arg-type]

    marked = await checker.check()  # phase 1 marks both
    assert (marked.ran, marked.recovered, marked.failed) == (True, [], [])
    await asyncio.sleep(2)
    recovered = await checker.check()
    assert recovered.ran
    assert sorted(recovered.recovered) == sorted([first.id, second.id])
    assert sorted(e.args for e in rec.of("stalled")) == sorted(
        [(first.id, "active"), (second.id, "active")]
    )
    throttled = await queue.check_stalled(stalled_interval=2_000)  # same throttle key
    assert not throttled.ran
    assert await queue.get_job_state(first.id) == "waiting"
    assert (await stored_job(queue, first.id)).stalled_counter == 1
    check_invariants(backend)


@pytest.mark.virtual_ttl
async def test_checker_fails_a_job_over_the_limit_and_reports_it(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("a", attempts=5)
    await dead_owner_takes(backend, clock, "dead:1", 500)
    checker = StalledChecker(
        QUEUE, backend, stalled_interval=1_000, max_stalled_count=0, clock=clock
    )
    rec = Recorder(clock)
    rec.attach(checker, CHECKER_EVENTS)  # type: ignore[arg-type]
    await checker.check()
    await asyncio.sleep(1)
    result = await checker.check()
    assert result.failed == [job.id]
    failed = rec.of("failed")
    assert len(failed) == 1
    assert failed[0].args[0].id == job.id
    assert str(failed[0].args[1]) == STALLED_LIMIT_REASON
    assert [e.name for e in rec.events] == ["stalled", "failed"]  # BullMQ 6: both, in order
    assert rec.of("stalled")[0].args == (job.id, "active")
    assert await queue.get_job_state(job.id) == "failed"
    check_invariants(backend)


@pytest.mark.virtual_ttl
async def test_only_the_checker_recovers_a_crashed_workers_job(
    backend: Storage, clock: VirtualClock
) -> None:
    """The crashed worker's job is recovered while the only live worker is busy and runs no
    stalled checks itself (scaled to one busy worker): the checker alone does it, at the check
    after the job was marked and its lock expired; then the job runs again."""
    queue = Queue(QUEUE, backend, clock=clock)
    crashed = await queue.add("crashed")
    await dead_owner_takes(backend, clock, "dead:1", 3_000)  # lock until 3000
    busy_job = await queue.add("busy")
    starts: dict[str, int] = {}

    async def work(job: Job) -> None:
        starts.setdefault(job.name, elapsed_ms(clock))
        if job.name == "busy":
            await asyncio.sleep(60)

    worker, task = await start_worker(backend, work, clock, concurrency=2, skip_stalled_check=True)
    checker = StalledChecker(QUEUE, backend, stalled_interval=2_000, clock=clock)
    rec = Recorder(clock)
    rec.attach(checker, CHECKER_EVENTS)  # type: ignore[arg-type]
    runner = asyncio.create_task(checker.run())
    stalled = await rec.wait("stalled")
    # checks at 0 (marks), 2000 (lock still held until 3000), 4000 (recovers)
    assert (stalled.at, stalled.args) == (4_000, (crashed.id, "active"))
    await asyncio.sleep(0.1)
    assert starts == {"busy": 0, "crashed": 4_000}
    await checker.close()
    await runner
    assert [e.name for e in rec.events][-1] == "closed"
    await stop_worker(worker, task, force=True)
    assert (await stored_job(queue, crashed.id)).stalled_counter == 1
    assert await queue.get_job_state(busy_job.id) == "waiting"  # given back by the forced close
    check_invariants(backend)


@pytest.mark.virtual_ttl
async def test_checker_beside_workers_never_doubles_the_work(
    backend: Storage, clock: VirtualClock
) -> None:
    calls: list[int] = []
    original = backend.check_stalled

    async def counting(queue: str, **kwargs: Any) -> Any:
        result = await original(queue, **kwargs)
        if result.ran:
            calls.append(elapsed_ms(clock))
        return result

    backend.check_stalled = counting  # type: ignore[method-assign]
    worker, task = await start_worker(backend, forever, clock, stalled_interval=5_000)
    checker = StalledChecker(QUEUE, backend, stalled_interval=5_000, clock=clock)
    runner = asyncio.create_task(checker.run())
    await asyncio.sleep(21)
    await checker.close()
    await runner
    await stop_worker(worker, task)
    assert calls == [0, 5_000, 10_000, 15_000, 20_000]  # one check per interval, not two


def test_checker_rejects_bad_settings(backend: Storage) -> None:
    with pytest.raises(InvalidArgumentError, match="max_stalled_count"):
        StalledChecker(QUEUE, backend, max_stalled_count=-1)
    with pytest.raises(InvalidArgumentError, match="stalled_interval"):
        StalledChecker(QUEUE, backend, stalled_interval=0)
    with pytest.raises(InvalidArgumentError, match="queue name"):
        StalledChecker("a:b", backend)


# ---------------------------------------------------------------------------- QueueEvents

LIFE = ["added", "waiting", "active", "progress", "completed"]


async def _one_job_life(queue: Queue, clock: VirtualClock) -> str:
    async def work(job: Job) -> str:
        await job.update_progress(50)
        return "done"

    job = await queue.add("life", {"x": 1})
    rec = Recorder(clock)
    worker, task = await start_worker(queue.backend, work, clock, recorder=rec)
    await rec.wait("completed")
    await stop_worker(worker, task)
    return job.id


def _of_job(events: list[QueueEvent], job_id: str) -> list[QueueEvent]:
    return [e for e in events if e.job_id == job_id]


async def test_every_event_of_a_jobs_life_arrives_once_in_order(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    listener = QueueEvents(QUEUE, backend, block=1_000)
    heard: list[QueueEvent] = []
    for name in LIFE:
        listener.on(name, heard.append)
    runner = asyncio.create_task(listener.run())
    await asyncio.sleep(0.01)  # the listener starts before the job exists
    job_id = await _one_job_life(queue, clock)
    await asyncio.sleep(0.01)
    await listener.close()
    await runner
    mine = _of_job(heard, job_id)
    assert [e.name for e in mine] == LIFE
    assert len({e.id for e in heard}) == len(heard)  # each once
    assert mine[-1].fields["returnvalue"] == '"done"'
    assert mine[2].fields.get("prev") == "waiting"
    assert mine[3].fields["data"] == "50"


async def test_async_iteration_and_a_late_listener_from_the_start(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    job_id = await _one_job_life(queue, clock)
    late = QueueEvents(QUEUE, backend, last_event_id="0-0", block=100)
    seen: list[QueueEvent] = []
    async for event in late:
        seen.append(event)
        if event.name == "completed":
            break
    assert [e.name for e in _of_job(seen, job_id)] == LIFE
    # A listener without a start id hears only what is logged after it started.
    fresh = QueueEvents(QUEUE, backend, block=100)
    iterator = fresh.events()
    second = asyncio.create_task(anext(iterator))
    await asyncio.sleep(0.01)
    added = await queue.add("next")
    event = await second
    assert (event.name, event.job_id) == ("added", added.id)


async def test_a_storage_error_resumes_from_the_last_event_delivered(
    backend: Storage, clock: VirtualClock
) -> None:
    """A read that fails (a dropped connection) is reported, and the next read starts after the
    last delivered event: nothing is skipped and nothing is delivered twice."""
    queue = Queue(QUEUE, backend, clock=clock)
    original = backend.wait_for_events
    failures = [ConnectionError("connection lost")]

    async def flaky(
        queue_name: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        if failures and after != "0-0":
            raise failures.pop()
        return await original(queue_name, after, timeout_ms, 2)  # small batches

    backend.wait_for_events = flaky  # type: ignore[method-assign]
    listener = QueueEvents(QUEUE, backend, last_event_id="0-0", block=100, retry_delay=500)
    errors: list[Any] = []
    listener.on("error", lambda error, _: errors.append(error))
    for n in range(3):
        await queue.add(f"j{n}")
    seen: list[QueueEvent] = []
    async for event in listener:
        seen.append(event)
        if len(seen) == 6:  # added + waiting for each of the 3 jobs
            break
    assert [str(e) for e in errors] == ["connection lost"]
    assert [(e.name, e.job_id) for e in seen] == [
        (name, job) for job in ("1", "2", "3") for name in ("added", "waiting")
    ]
