"""Conformance: job logs (``job.log``, ``keep_logs``, ``Queue.get_job_logs``), manual processing
(a Worker without a processor) and ``job.wait_until_finished`` (issue 14), on every backend."""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers import QUEUE, check_invariants, stored_job

from corral.engine import (
    InvalidArgumentError,
    LockLostError,
    Queue,
    QueueEvents,
    UnrecoverableError,
    Worker,
)
from corral.engine.errors import JobFailedError, JobStateError, WaitTimeoutError
from corral.engine.storage import Complete, Fail, FetchRequest, Storage
from corral.sim.loop import VirtualClock

Q = QUEUE


# ---------------------------------------------------------------------------- logs


async def test_log_rows_are_read_back_in_both_orders(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j")
    counts = [await job.log(f"l{n}") for n in range(1, 7)]
    assert counts == [1, 2, 3, 4, 5, 6]
    logs = await queue.get_job_logs(job.id)
    assert (logs.logs, logs.count) == (["l1", "l2", "l3", "l4", "l5", "l6"], 6)
    assert (await queue.get_job_logs(job.id, 1, 2)).logs == ["l2", "l3"]
    # BullMQ: newest first, the range counted from the newest row.
    assert (await queue.get_job_logs(job.id, 0, 1, asc=False)).logs == ["l6", "l5"]
    assert (await queue.get_job_logs(job.id, 2, -1, asc=False)).logs == ["l4", "l3", "l2", "l1"]
    none = await queue.get_job_logs("nothing")
    assert (none.logs, none.count) == ([], 0)


async def test_keep_logs_keeps_the_newest_rows(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j", keep_logs=2)
    assert json.loads(job.fields["opts"])["kl"] == 2  # BullMQ's name for keepLogs
    read = await stored_job(queue, job.id)
    assert read.opts.keep_logs == 2
    assert [await read.log(r) for r in ("a", "b", "c")] == [1, 2, 2]
    logs = await queue.get_job_logs(job.id)
    assert (logs.logs, logs.count) == (["b", "c"], 2)


async def test_bad_log_input_stores_nothing(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="keep_logs"):
            await queue.add("j", keep_logs=bad)  # type: ignore[arg-type]
    assert await queue.get_job_counts() == dict.fromkeys(await queue.get_job_counts(), 0)
    job = await queue.add("j")
    with pytest.raises(InvalidArgumentError, match="log row must be a string"):
        await job.log(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="log row"):
        await job.log("\ud800")
    with pytest.raises(InvalidArgumentError, match="start must be an int"):
        await queue.get_job_logs(job.id, "0")  # type: ignore[arg-type]
    assert (await queue.get_job_logs(job.id)).count == 0
    await queue.remove(job.id)
    with pytest.raises(JobStateError, match=rf"^Missing key for job {job.id}\. addLog$"):
        await job.log("late")
    assert (await queue.get_job_logs(job.id)).count == 0


async def test_logs_are_deleted_with_the_job(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    removed = await queue.add("r")
    trimmed = await queue.add("t", remove_on_complete=True)
    await removed.log("x")
    await trimmed.log("y")
    assert await queue.remove(removed.id)
    result = await backend.fetch_next(Q, FetchRequest("tok", 30_000), clock.now_ms())
    assert result.job is not None
    assert result.job.job_id == trimmed.id
    outcome = Complete("null", trimmed.opts.remove_on_complete)
    assert await backend.finish(Q, trimmed.id, "tok", outcome, clock.now_ms()) == 0
    assert await queue.get_job_state(trimmed.id) == "unknown"
    # A job added again under the same id must not inherit the old rows.
    for job_id in (removed.id, trimmed.id):
        assert (await queue.get_job_logs(job_id)).count == 0
    check_invariants(backend)


# ---------------------------------------------------------------------------- manual processing


async def test_manual_processing_end_to_end(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(Q, backend, clock=clock)
    worker = Worker(Q, None, backend, clock=clock, lock_duration=10_000, name="manual")
    first = await queue.add("a", {"n": 1})
    second = await queue.add("b", {"n": 2})
    job = await worker.get_next_job("token-1")
    assert job is not None
    assert job.id == first.id
    assert job.token == "token-1"
    assert job.data == {"n": 1}
    assert await queue.get_job_state(job.id) == "active"
    lock = await backend.get_lock(Q, job.id)
    assert lock is not None
    assert lock.token == "token-1"
    assert (await stored_job(queue, job.id)).processed_by == "manual"
    # A wrong token is refused with BullMQ's text, and nothing changes.
    with pytest.raises(LockLostError, match=rf"^Lock mismatch for job {job.id}\."):
        await job.move_to_completed("nope", "other")
    with pytest.raises(InvalidArgumentError, match="cannot be encoded as JSON"):
        await job.move_to_completed(object(), "token-1")
    assert await queue.get_job_state(job.id) == "active"
    assert await job.extend_lock("token-1", 20_000) is True
    assert await job.extend_lock("other", 20_000) is False
    following = await job.move_to_completed({"ok": True}, "token-1", fetch_next=True)
    done = await stored_job(queue, first.id)
    assert done.return_value == {"ok": True}
    assert await queue.get_job_state(first.id) == "completed"
    assert following is not None
    assert following.id == second.id
    await following.move_to_completed(None, "token-1")
    assert await worker.get_next_job("token-2", block=False) is None
    check_invariants(backend)


async def test_manual_move_to_failed_applies_the_retry_decision(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    worker = Worker(Q, None, backend, clock=clock)
    added = await queue.add("j", attempts=2)
    job = await worker.get_next_job("t1")
    assert job is not None
    await job.move_to_failed(ValueError("first"), "t1")
    assert await queue.get_job_state(added.id) == "waiting"  # one attempt left: retried
    job = await worker.get_next_job("t2")
    assert job is not None
    with pytest.raises(LockLostError, match=rf"^Lock mismatch for job {added.id}\."):
        await job.move_to_failed(ValueError("wrong token"), "t1")
    await job.move_to_failed(ValueError("second"), "t2")
    failed = await stored_job(queue, added.id)
    assert await queue.get_job_state(added.id) == "failed"
    assert failed.failed_reason == "second"
    assert failed.attempts_made == 2
    assert len(failed.stacktrace) == 2
    assert "ValueError: second" in failed.stacktrace[-1]
    other = await queue.add("u", attempts=5)
    job = await worker.get_next_job("t3")
    assert job is not None
    assert job.id == other.id
    await job.move_to_failed(UnrecoverableError("stop"), "t3")
    assert await queue.get_job_state(other.id) == "failed"
    with pytest.raises(InvalidArgumentError, match="needs an exception"):
        await job.move_to_failed("text", "t3")  # type: ignore[arg-type]


async def test_a_worker_without_processor_cannot_run_and_waits_for_work(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    worker = Worker(Q, None, backend, clock=clock, drain_delay=1_000)
    with pytest.raises(RuntimeError, match="no processor"):
        await worker.run()
    with pytest.raises(InvalidArgumentError, match="token"):
        await worker.get_next_job("")
    added = await queue.add("later", delay=300)
    job = await worker.get_next_job("tok")  # blocks until the delayed job is due
    assert job is not None
    assert job.id == added.id
    await worker.close()


@pytest.mark.virtual_ttl
async def test_a_manual_worker_runs_the_stalled_checker_on_its_own(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    worker = Worker(Q, None, backend, clock=clock, lock_duration=1_000, stalled_interval=500)
    added = await queue.add("j")
    job = await worker.get_next_job("tok")
    assert job is not None
    stalled: list[str] = []
    worker.on("stalled", lambda job_id, prev: stalled.append(job_id))
    worker.start_stalled_check_timer()
    await asyncio.sleep(0.9)  # the lock still holds: marked, not recovered
    assert await queue.get_job_state(added.id) == "active"
    assert await job.extend_lock("tok", 1_000)
    await asyncio.sleep(0.9)
    assert await queue.get_job_state(added.id) == "active"  # the extension kept it
    await asyncio.sleep(1.5)  # no more extensions: recovered at a check after its mark
    assert await queue.get_job_state(added.id) == "waiting"
    assert stalled == [added.id]
    assert await job.extend_lock("tok", 1_000) is False  # never re-created
    await worker.close()


# ---------------------------------------------------------------------------- waiting


async def _listening(backend: Storage) -> tuple[QueueEvents, asyncio.Task[None]]:
    events = QueueEvents(Q, backend, block=100)
    task = asyncio.create_task(events.run())
    await events.wait_until_ready()
    return events, task


async def test_wait_until_finished_returns_the_result_or_raises_the_failure(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    events, task = await _listening(backend)
    ok = await queue.add("ok")
    bad = await queue.add("bad")
    waiting_ok = asyncio.create_task(ok.wait_until_finished(events))
    waiting_bad = asyncio.create_task(bad.wait_until_finished(events, ttl=60_000))
    await asyncio.sleep(0.05)
    assert not waiting_ok.done()
    for job_id, outcome in ((ok.id, Complete('{"v":1}')), (bad.id, Fail("it broke"))):
        fetched = await backend.fetch_next(Q, FetchRequest("t" + job_id, 30_000), clock.now_ms())
        assert fetched.job is not None
        assert fetched.job.job_id == job_id
        assert await backend.finish(Q, job_id, "t" + job_id, outcome, clock.now_ms()) == 0
    assert await waiting_ok == {"v": 1}
    with pytest.raises(JobFailedError, match=r"^it broke$"):
        await waiting_bad
    # Already finished: answered from the stored job.
    assert await ok.wait_until_finished(events) == {"v": 1}
    with pytest.raises(JobFailedError, match=r"^it broke$"):
        await bad.wait_until_finished(events)
    await events.close()
    await task


async def test_wait_until_finished_times_out_and_fails_for_a_missing_job(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    events, task = await _listening(backend)
    job = await queue.add("slow")
    with pytest.raises(
        WaitTimeoutError,
        match=(
            rf"^Job wait slow timed out before finishing, no finish notification arrived "
            rf"after 250ms \(id={job.id}\)$"
        ),
    ):
        await job.wait_until_finished(events, ttl=250)
    assert await queue.remove(job.id)
    with pytest.raises(JobFailedError, match=rf"^Missing key for job {job.id}\. isFinished$"):
        await job.wait_until_finished(events)
    with pytest.raises(InvalidArgumentError, match="ttl"):
        await job.wait_until_finished(events, ttl=-5)
    await events.close()
    await task
