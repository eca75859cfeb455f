"""Conformance: operator calls on one job (issue 14) — retry, promote, update_data,
change_priority, change_delay, remove — with BullMQ's refusals, events and fields, on every
backend."""

from __future__ import annotations

import pytest
from helpers import QUEUE, check_invariants, stored_job, write_job_field

from corral.engine import InvalidArgumentError, Job, Queue
from corral.engine.errors import CorralError, JobStateError, ResultCode
from corral.engine.storage import Complete, Fail, FetchRequest, Storage
from corral.sim.loop import VirtualClock

Q = QUEUE


async def take(backend: Storage, clock: VirtualClock, token: str = "tok") -> str:
    result = await backend.fetch_next(Q, FetchRequest(token, 30_000), clock.now_ms())
    assert result.job is not None
    return result.job.job_id


async def fetch_order(backend: Storage, clock: VirtualClock) -> list[str]:
    taken = []
    for n in range(100):
        result = await backend.fetch_next(Q, FetchRequest(f"t{n}", 30_000), clock.now_ms())
        if result.job is None:
            return taken
        taken.append(result.job.job_id)
    raise AssertionError("never ran dry")


async def failed_job(queue: Queue, clock: VirtualClock, **opts: object) -> Job:
    """A job that ran once and failed for good, with a stacktrace and a stall counted."""
    job = await queue.add("j", {"n": 1}, **opts)  # type: ignore[arg-type]
    backend = queue.backend
    assert await take(backend, clock) == job.id
    code = await backend.finish(Q, job.id, "tok", Fail("boom", '["trace"]'), clock.now_ms())
    assert code is ResultCode.OK
    return await stored_job(queue, job.id)


async def completed_job(queue: Queue, clock: VirtualClock, **opts: object) -> Job:
    job = await queue.add("j", None, **opts)  # type: ignore[arg-type]
    assert await take(queue.backend, clock) == job.id
    code = await queue.backend.finish(Q, job.id, "tok", Complete('"ok"'), clock.now_ms())
    assert code is ResultCode.OK
    return await stored_job(queue, job.id)


async def events_of(backend: Storage, job_id: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (e.name, e.fields) for e in await backend.get_events(Q) if e.fields.get("jobId") == job_id
    ]


# ---------------------------------------------------------------------------- retry


async def test_retry_moves_a_failed_job_back_to_wait_keeping_stacktrace(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await failed_job(queue, clock)
    assert job.failed_reason == "boom"
    assert job.finished_on is not None
    await write_job_field(backend, Q, job.id, "stc", "1")  # as if it had stalled once
    await job.retry()
    assert await queue.get_job_state(job.id) == "waiting"
    stored = await stored_job(queue, job.id)
    for gone in ("finishedOn", "processedOn", "failedReason"):
        assert gone not in stored.fields
    # BullMQ keeps the stacktrace and the counters unless asked to reset them.
    assert stored.stacktrace == ["trace"]
    assert stored.stalled_counter == 1
    assert (stored.attempts_made, stored.attempts_started) == (1, 1)
    assert (await events_of(backend, job.id))[-1] == (
        "waiting",
        {"jobId": job.id, "prev": "failed"},
    )
    assert job.failed_reason is None  # the snapshot follows
    assert await fetch_order(backend, clock) == [job.id]
    check_invariants(backend)


async def test_retry_resets_the_attempt_counters_when_asked(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await completed_job(queue, clock)
    await job.retry("completed", reset_attempts_made=True, reset_attempts_started=True)
    stored = await stored_job(queue, job.id)
    assert "returnvalue" not in stored.fields
    assert (stored.attempts_made, stored.attempts_started) == (0, 0)
    assert (await events_of(backend, job.id))[-1][1]["prev"] == "completed"


async def test_retry_of_a_prioritized_job_goes_to_prioritized_and_lifo_to_the_front(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    prioritized = await failed_job(queue, clock, priority=3)
    await prioritized.retry()
    assert await queue.get_job_state(prioritized.id) == "prioritized"
    lifo = await completed_job(queue, clock, lifo=True)
    waiting = await queue.add("w")
    await lifo.retry("completed")
    # wait is served first, and lifo put the retried job ahead of the waiting one.
    assert await fetch_order(backend, clock) == [lifo.id, waiting.id, prioritized.id]


async def test_retry_refusals_change_nothing(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    failed = await failed_job(queue, clock)
    with pytest.raises(
        JobStateError, match=rf"^Job {failed.id} is not in the completed state\. reprocessJob$"
    ) as info:
        await failed.retry("completed")
    assert info.value.code is ResultCode.NOT_IN_STATE
    waiting = await queue.add("w")
    with pytest.raises(
        JobStateError, match=rf"^Job {waiting.id} is not in the failed state\. reprocessJob$"
    ):
        await waiting.retry()
    active = await queue.add("a")
    await take(backend, clock, "locked")  # takes "w" (FIFO)
    await take(backend, clock, "locked2")
    with pytest.raises(JobStateError, match="is not in the failed state"):
        await active.retry()
    assert await queue.get_job_state(active.id) == "active"
    with pytest.raises(InvalidArgumentError, match="retry state"):
        await failed.retry("waiting")
    with pytest.raises(InvalidArgumentError, match="reset_attempts_made"):
        await failed.retry(reset_attempts_made=1)  # type: ignore[arg-type]
    assert await queue.remove(failed.id)
    with pytest.raises(JobStateError, match=rf"^Missing key for job {failed.id}\. reprocessJob$"):
        await failed.retry()
    assert [
        e for e in await backend.get_events(Q) if e.name == "waiting" and "prev" in e.fields
    ] == []
    check_invariants(backend)


# ---------------------------------------------------------------------------- promote


async def test_promote_makes_a_delayed_job_ready_now(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    first = await queue.add("w")
    delayed = await queue.add("d", delay=60_000)
    high = await queue.add("p", delay=60_000, priority=2)
    await delayed.promote()
    await high.promote()
    assert await queue.get_job_state(delayed.id) == "waiting"
    assert await queue.get_job_state(high.id) == "prioritized"
    assert (await stored_job(queue, delayed.id)).delay == 0
    assert delayed.delay == 0
    assert (await events_of(backend, delayed.id))[-1] == (
        "waiting",
        {"jobId": delayed.id, "prev": "delayed"},
    )
    # Promoted to the back of wait, before prioritized jobs.
    assert await fetch_order(backend, clock) == [first.id, delayed.id, high.id]
    check_invariants(backend)


async def test_promote_refuses_a_job_that_is_not_delayed(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("w")
    with pytest.raises(
        JobStateError, match=rf"^Job {job.id} is not in the delayed state\. promote$"
    ):
        await job.promote()
    assert await queue.get_job_state(job.id) == "waiting"
    await queue.remove(job.id)
    with pytest.raises(JobStateError, match=r"is not in the delayed state\. promote"):
        await job.promote()


# ---------------------------------------------------------------------------- update_data


async def test_update_data_in_any_state_even_locked(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j", {"v": 1})
    await take(backend, clock)
    await job.update_data({"v": 2, "s": "ü"})
    assert (await stored_job(queue, job.id)).data == {"v": 2, "s": "ü"}
    assert job.data == {"v": 2, "s": "ü"}
    assert await queue.get_job_state(job.id) == "active"
    assert [name for name, _ in await events_of(backend, job.id)] == ["added", "waiting", "active"]


async def test_update_data_refusals_keep_the_stored_data(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j", {"v": 1})
    with pytest.raises(InvalidArgumentError, match="cannot be encoded as JSON"):
        await job.update_data({"bad": object()})
    with pytest.raises(InvalidArgumentError, match="cannot be encoded as JSON"):
        await job.update_data(float("nan"))
    assert (await stored_job(queue, job.id)).data == {"v": 1}
    await queue.remove(job.id)
    with pytest.raises(JobStateError, match=rf"^Missing key for job {job.id}\. updateData$"):
        await job.update_data(1)


# ---------------------------------------------------------------------------- change_priority


async def test_change_priority_requeues_waiting_and_prioritized_jobs(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    a = await queue.add("a", priority=5)
    b = await queue.add("b", priority=5)
    c = await queue.add("c")
    await c.change_priority(5)  # waiting -> prioritized, behind a and b
    assert await queue.get_job_state(c.id) == "prioritized"
    await b.change_priority(5, lifo=True)  # the front of priority 5
    await a.change_priority(0)  # prioritized -> wait
    assert await queue.get_job_state(a.id) == "waiting"
    assert (await stored_job(queue, c.id)).priority == 5
    assert (await stored_job(queue, a.id)).priority == 0
    assert await fetch_order(backend, clock) == [a.id, b.id, c.id]
    # No event, as BullMQ.
    assert all(name in ("added", "waiting", "active") for name, _ in await events_of(backend, c.id))
    check_invariants(backend)


async def test_change_priority_elsewhere_only_sets_the_field(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    delayed = await queue.add("d", delay=1_000)
    await delayed.change_priority(7)
    assert await queue.get_job_state(delayed.id) == "delayed"
    assert (await stored_job(queue, delayed.id)).priority == 7
    clock_due = clock.now_ms() + 1_000
    result = await backend.fetch_next(Q, FetchRequest("t", 30_000), clock_due)
    assert result.job is None or result.job.job_id == delayed.id
    # Promoted when due, by its new priority.
    assert await queue.get_job_state(delayed.id) in ("prioritized", "active")


async def test_change_priority_refusals(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j")
    for bad in (-1, 2**21, 1.5, True, "3"):
        with pytest.raises(InvalidArgumentError, match="priority"):
            await job.change_priority(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="lifo"):
        await job.change_priority(1, lifo="yes")  # type: ignore[arg-type]
    assert (await stored_job(queue, job.id)).priority == 0
    assert await queue.get_job_state(job.id) == "waiting"
    await queue.remove(job.id)
    with pytest.raises(JobStateError, match=rf"^Missing key for job {job.id}\. changePriority$"):
        await job.change_priority(1)


# ---------------------------------------------------------------------------- change_delay


async def test_change_delay_reschedules_from_now(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("d", delay=1_000)
    now = clock.now_ms()
    await job.change_delay(5_000)
    stored = await stored_job(queue, job.id)
    assert stored.delay == 5_000
    assert job.delay == 5_000
    assert (await events_of(backend, job.id))[-1] == (
        "delayed",
        {"jobId": job.id, "delay": str(now + 5_000)},
    )
    # Not due at the old time, due at the new one.
    assert (await backend.fetch_next(Q, FetchRequest("t1", 30_000), now + 4_999)).job is None
    due = await backend.fetch_next(Q, FetchRequest("t2", 30_000), now + 5_000)
    assert due.job is not None
    assert due.job.job_id == job.id
    check_invariants(backend)


async def test_change_delay_refusals(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("w")
    with pytest.raises(
        JobStateError, match=rf"^Job {job.id} is not in the delayed state\. changeDelay$"
    ):
        await job.change_delay(10)
    delayed = await queue.add("d", delay=100)
    with pytest.raises(InvalidArgumentError, match="delay"):
        await delayed.change_delay(-1)
    assert (await stored_job(queue, delayed.id)).delay == 100
    await queue.remove(delayed.id)
    with pytest.raises(JobStateError, match=rf"^Missing key for job {delayed.id}\. changeDelay$"):
        await delayed.change_delay(10)


# ---------------------------------------------------------------------------- remove


async def test_job_remove(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j")
    locked = await queue.add("k")
    await take(backend, clock)
    with pytest.raises(CorralError, match="could not be removed because it is locked"):
        await job.remove()
    assert await locked.remove() is True
    assert await locked.remove() is False
    assert await queue.get_job_state(locked.id) == "unknown"


async def test_a_job_not_read_through_a_queue_has_no_calls(backend: Storage) -> None:
    job = Job(Q, "1", {"name": "j"})
    with pytest.raises(RuntimeError, match="not read through a queue or worker"):
        await job.promote()
