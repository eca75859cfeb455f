"""Worker conformance: concurrency, waking, retries and backoff, events, locks, cancellation and
closing. Times are virtual milliseconds since the test started (exact, see ``helpers``)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from typing import Any

import pytest
from helpers import (
    QUEUE,
    Flaky,
    Recorder,
    StorageSpy,
    check_invariants,
    counters,
    elapsed_ms,
    run_one_job,
    start_worker,
    stop_worker,
    stored_job,
    wait_for,
    write_job_field,
)

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine import (
    Job,
    JobCancelledError,
    LockLostError,
    Queue,
    UnrecoverableError,
    Worker,
)
from corral.engine.errors import ResultCode
from corral.engine.storage import Storage
from corral.sim.loop import VirtualClock, VirtualTimeLoop


async def test_concurrency_runs_at_most_n_jobs_at_once(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    for i in range(10):
        await queue.add("job", i)
    running = peak = 0

    async def work(job: Job) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1
        return int(job.data)

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, concurrency=3, recorder=rec)
    await rec.wait("completed", 10)
    await stop_worker(worker, task)
    assert peak == 3
    assert [e.at for e in rec.of("completed")] == [1000] * 3 + [2000] * 3 + [3000] * 3 + [4000]
    assert sorted(e.args[1] for e in rec.of("completed")) == list(range(10))
    assert (await queue.get_job_counts())["completed"] == 10
    check_invariants(backend)


async def test_idle_worker_does_not_poll_and_wakes_on_add_resume_and_due_time(
    backend: Storage, clock: VirtualClock
):
    queue = Queue(QUEUE, backend, clock=clock)
    spy = StorageSpy(backend, clock)
    starts: list[tuple[str, int]] = []

    async def work(job: Job) -> None:
        starts.append((job.data, elapsed_ms(clock)))

    worker, task = await start_worker(spy, work, clock, drain_delay=5_000)
    await asyncio.sleep(600)
    # One fetch per drain_delay at most while idle (a busy poll would make thousands).
    assert len(spy.of("fetch_next")) <= 600_000 // 5_000 + 2
    assert starts == []

    await asyncio.sleep(1.234)
    await queue.add("j", "added")
    await wait_for(lambda: len(starts) == 1)
    assert starts[-1] == ("added", 601_234)

    await queue.pause()
    await queue.add("j", "paused")
    fetches = len(spy.of("fetch_next"))
    await asyncio.sleep(60)
    assert len(starts) == 1
    assert len(spy.of("fetch_next")) - fetches <= 60_000 // 5_000 + 2
    resumed_at = elapsed_ms(clock)
    await queue.resume()
    await wait_for(lambda: len(starts) == 2)
    assert starts[-1] == ("paused", resumed_at)

    for delay in (2_222, 7_777):  # shorter and longer than drain_delay
        added_at, count = elapsed_ms(clock), len(starts)
        await queue.add("j", delay, delay=delay)
        await wait_for(lambda: len(starts) > count, timeout_s=30)  # noqa: B023
        assert starts[-1] == (delay, added_at + delay)
    await stop_worker(worker, task)
    check_invariants(backend)


async def test_sync_processor_runs_in_a_thread(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("sync", 21)
    threads: list[int] = []

    def work(job: Job) -> dict[str, int]:
        threads.append(threading.get_ident())
        return {"double": job.data * 2}

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await rec.wait("completed")
    await stop_worker(worker, task)
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()
    stored = await stored_job(queue, job.id)
    assert stored.return_value == {"double": 42}
    assert await queue.get_job_state(job.id) == "completed"
    check_invariants(backend)


async def test_retries_until_success_and_local_failed_per_attempt(
    backend: Storage, clock: VirtualClock
):
    work = Flaky(clock, fails=2, result="ok")
    job, rec = await run_one_job(backend, clock, work, attempts=3)
    assert job.return_value == "ok"
    assert job.attempts_made == 3
    assert job.attempts_started == 3
    assert work.starts == [0, 0, 0]  # no backoff: retried at once
    assert [str(e.args[1]) for e in rec.of("failed")] == ["fail 1", "fail 2"]
    assert [e.args[0].attempts_made for e in rec.of("failed")] == [1, 2]
    assert [e.args[1] for e in rec.of("completed")] == ["ok"]
    logged = [e.name for e in await backend.get_events(QUEUE)]
    assert logged.count("failed") == 0  # retried attempts are not failures globally
    assert logged.count("completed") == 1


async def test_final_failure_keeps_every_stacktrace(backend: Storage, clock: VirtualClock):
    job, rec = await run_one_job(backend, clock, Flaky(clock, fails=3), attempts=3)
    assert await backend.get_state(QUEUE, job.id) == "failed"
    assert job.failed_reason == "fail 3"
    assert job.attempts_made == 3
    assert job.finished_on == clock.epoch_ms
    assert len(job.stacktrace) == 3
    for n, trace in enumerate(job.stacktrace, 1):
        assert trace.endswith(f"ValueError: fail {n}")
    assert len(rec.of("failed")) == 3
    assert [e.name for e in await backend.get_events(QUEUE)].count("failed") == 1


@pytest.mark.parametrize(
    ("backoff", "starts"),
    [
        ({"type": "fixed", "delay": 1000}, [0, 1000, 2000, 3000]),
        (1000, [0, 1000, 2000, 3000]),
        ({"type": "exponential", "delay": 1000}, [0, 1000, 3000, 7000]),
        ({"type": "no-such-type"}, [0]),  # unknown without a strategy: no retry
    ],
)
async def test_backoff_delays_retries_exactly(
    backend: Storage, clock: VirtualClock, backoff: Any, starts: list[int]
):
    work = Flaky(clock, fails=4)
    job, _ = await run_one_job(backend, clock, work, attempts=4, backoff=backoff)
    assert work.starts == starts
    assert str(job.failed_reason).startswith(f"fail {len(starts)}")


async def test_backoff_jitter_stays_within_bounds(backend: Storage, clock: VirtualClock):
    work = Flaky(clock, fails=5)
    backoff = {"type": "exponential", "delay": 1000, "jitter": 0.5}
    await run_one_job(backend, clock, work, attempts=5, backoff=backoff)
    gaps = [b - a for a, b in zip(work.starts, work.starts[1:], strict=False)]
    assert len(gaps) == 4
    for n, gap in enumerate(gaps):
        full = 1000 * 2**n
        assert full // 2 <= gap <= full
    assert gaps != [1000, 2000, 4000, 8000]  # jitter did shorten something


async def test_custom_backoff_strategy(backend: Storage, clock: VirtualClock):
    seen: list[tuple[int, str, str, str]] = []

    def linear(attempts_made: int, kind: str, error: BaseException, job: Job) -> int:
        seen.append((attempts_made, kind, str(error), job.id))
        return attempts_made * job.opts.backoff.delay if attempts_made < 3 else -1

    work = Flaky(clock, fails=5)
    backoff = {"type": "linear", "delay": 250}
    options = {"backoff_strategy": linear}
    job, rec = await run_one_job(backend, clock, work, options, attempts=5, backoff=backoff)
    assert work.starts == [0, 250, 750]  # then the strategy said "no more" (-1)
    assert seen == [(n, "linear", f"fail {n}", job.id) for n in (1, 2, 3)]
    assert job.failed_reason == "fail 3"
    assert len(rec.of("failed")) == 3


async def test_retry_goes_to_the_back_of_wait(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add("A", attempts=2)
    await queue.add("B")
    order: list[str] = []

    async def work(job: Job) -> None:
        order.append(job.name)
        if order == ["A"]:
            raise ValueError("once")

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await rec.wait("completed", 2)
    await stop_worker(worker, task)
    assert order == ["A", "B", "A"]


async def test_unrecoverable_error_fails_at_once(backend: Storage, clock: VirtualClock):
    work = Flaky(clock, fails=5, error=UnrecoverableError)
    job, rec = await run_one_job(backend, clock, work, attempts=5, backoff=1000)
    assert work.starts == [0]
    assert await backend.get_state(QUEUE, job.id) == "failed"
    assert job.failed_reason == "fail 1"
    assert job.attempts_made == 1
    assert [type(e.args[1]) for e in rec.of("failed")] == [UnrecoverableError]


async def test_events_active_completed_failed_drained_closed(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    first = await queue.add("ok", 1)
    second = await queue.add("bad", 2)

    async def work(job: Job) -> int:
        await asyncio.sleep(1)
        if job.name == "bad":
            raise ValueError("boom")
        return 42

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await asyncio.sleep(100)
    await stop_worker(worker, task)
    sequence = " ".join(rec.names(ignore=frozenset({"locks_renewed"})))
    assert sequence == "active completed active failed drained closed"
    active = rec.of("active")
    assert [(e.at, e.args[0].id) for e in active] == [(0, first.id), (1000, second.id)]
    (completed,) = rec.of("completed")
    assert (completed.at, completed.args[0].id, completed.args[1]) == (1000, first.id, 42)
    assert completed.args[0].return_value == 42
    (failed,) = rec.of("failed")
    assert (failed.at, failed.args[0].id, str(failed.args[1])) == (2000, second.id, "boom")
    assert failed.args[0].failed_reason == "boom"
    assert rec.of("drained")[0].at == 2000
    assert rec.of("closed")[0].at == 100_000
    check_invariants(backend)


async def test_lock_token_is_worker_id_and_fetch_number(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    jobs = [await queue.add("j", i) for i in range(2)]
    seen: list[tuple[str | None, str | None, int]] = []

    async def work(job: Job) -> None:
        lock = await backend.get_lock(QUEUE, job.id)
        assert lock is not None
        seen.append((job.token, lock.token, lock.ttl_ms))
        await asyncio.sleep(1)

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, lock_duration=20_000, recorder=rec)
    await rec.wait("completed", 2)
    await stop_worker(worker, task)
    assert seen == [(f"{worker.id}:{n}",) * 2 + (20_000,) for n in (1, 2)]
    for job in jobs:
        assert await backend.get_lock(QUEUE, job.id) is None  # released on completion


async def test_lock_renewal_keeps_a_long_job_alive(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("long")
    ttls: list[int] = []

    async def work(job: Job) -> str:
        for _ in range(100):  # 10 s = 10 × lock_duration
            await asyncio.sleep(0.1)
            lock = await backend.get_lock(QUEUE, job.id)
            assert lock is not None
            assert lock.token == job.token
            ttls.append(lock.ttl_ms)
        return "done"

    rec = Recorder(clock)
    worker, task = await start_worker(
        backend, work, clock, lock_duration=1_000, stalled_interval=1_000, recorder=rec
    )
    await rec.wait("completed")
    await stop_worker(worker, task)
    assert rec.of("completed")[0].at == 10_000
    assert rec.of("stalled") == []
    assert rec.of("lock_renewal_failed") == []
    renewed = rec.of("locks_renewed")
    assert len(renewed) >= 10_000 // 500
    assert all(e.args == ([job.id],) for e in renewed)
    assert min(ttls) > 0
    stored = await stored_job(queue, job.id)
    assert (counters(stored), stored.return_value) == ((0, 1, 1), "done")
    check_invariants(backend)


async def test_skip_lock_renewal_lets_the_job_stall(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("long")
    runs: list[int] = []

    async def work(job: Job) -> int:
        runs.append(elapsed_ms(clock))
        if len(runs) == 1:
            await asyncio.sleep(10)
        return len(runs)

    rec = Recorder(clock)
    options = {"lock_duration": 1_000, "stalled_interval": 1_000, "skip_lock_renewal": True}
    worker, task = await start_worker(backend, work, clock, recorder=rec, **options)
    await asyncio.sleep(1.5)
    assert await backend.get_lock(QUEUE, job.id) is None
    assert await queue.is_job_stalled(job.id)
    await rec.wait("completed")
    await stop_worker(worker, task)
    # Marked by the check at 1000 (lock expired at 1000), recovered by the check at 2000.
    assert [(e.at, e.args) for e in rec.of("stalled")] == [(2_000, (job.id, "active"))]
    assert rec.of("locks_renewed") == []
    (error,) = rec.of("error")
    assert error.at == 10_000
    assert isinstance(error.args[0], LockLostError)
    assert str(error.args[0]) == f"Missing lock for job {job.id}. moveToFinished"
    assert [(e.at, e.args[1]) for e in rec.of("completed")] == [(10_000, 2)]
    assert runs == [0, 10_000]
    assert counters(await stored_job(queue, job.id)) == (1, 1, 2)
    check_invariants(backend)


async def test_lost_lock_is_signalled_to_the_processor(backend: Storage, clock: VirtualClock):
    """W1's renewals take 3 s to reach the store: its lock expires, the job is recovered and
    taken by W2, and W1's late renewal fails: W1's processor is told, its result is refused."""
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    slow = StorageSpy(backend, clock)
    slow.delays["extend_locks"] = 3.0
    told: list[tuple[int, str, bool]] = []

    async def first(job: Job) -> str:
        reason = await job.cancellation.wait()
        told.append((elapsed_ms(clock), reason, job.cancellation.is_cancelled))
        return "late"

    async def second(job: Job) -> str:
        await asyncio.sleep(5)
        return "second"

    rec1, rec2 = Recorder(clock), Recorder(clock)
    options: dict[str, Any] = {"lock_duration": 1_000, "stalled_interval": 1_000}
    w1, t1 = await start_worker(slow, first, clock, recorder=rec1, **options)
    w2, t2 = await start_worker(backend, second, clock, seed=2, recorder=rec2, **options)
    await rec1.wait("error", 2)
    await rec2.wait("completed")
    await stop_worker(w1, t1)
    await stop_worker(w2, t2)
    # First renewal sent at 250 arrives at 3250; recovered at 2000 (marked at 1000).
    assert told == [(3_250, f"could not renew lock for job {job.id}", True)]
    assert [(e.at, e.args) for e in rec1.of("lock_renewal_failed")] == [(3_250, ([job.id],))]
    assert [str(e.args[0]) for e in rec1.of("error")] == [
        f"could not renew lock for job {job.id}",
        f"Lock mismatch for job {job.id}. Cmd moveToFinished from active",
    ]
    assert rec1.of("error")[1].args[0].code is ResultCode.LOCK_MISMATCH
    assert rec1.of("completed") == []
    assert [e.at for e in rec2.of("active")] == [2_000]
    assert [(e.at, e.args[1]) for e in rec2.of("completed")] == [(7_000, "second")]
    stored = await stored_job(queue, job.id)
    assert (counters(stored), stored.return_value) == ((1, 1, 2), "second")
    check_invariants(backend)


async def test_cancel_job_signals_the_running_processor(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    told: list[tuple[int, str]] = []

    async def work(job: Job) -> None:
        reason = await job.cancellation.wait()
        told.append((elapsed_ms(clock), reason))
        job.cancellation.raise_if_cancelled()

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await asyncio.sleep(0.5)
    assert worker.cancel_job("no-such-job") is False
    assert worker.cancel_job(job.id) is True
    await rec.wait("failed")
    await stop_worker(worker, task)
    assert told == [(500, "cancelled by worker.cancel_job")]
    (failed,) = rec.of("failed")
    assert failed.at == 500
    assert isinstance(failed.args[1], JobCancelledError)
    assert await queue.get_job_state(job.id) == "failed"
    assert worker.cancel_job(job.id) is False  # no longer running
    check_invariants(backend)


async def test_graceful_close_waits_for_the_running_job(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    running = await queue.add("long")
    queued = await queue.add("next")

    async def work(job: Job) -> str:
        await asyncio.sleep(5)
        return "done"

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await asyncio.sleep(1)
    await stop_worker(worker, task)
    assert elapsed_ms(clock) == 5_000
    assert rec.names(ignore=frozenset({"locks_renewed"})) == ["active", "completed", "closed"]
    assert rec.of("closed")[0].at == 5_000
    assert await queue.get_job_state(running.id) == "completed"
    assert await queue.get_job_state(queued.id) == "waiting"  # not taken while closing
    assert not worker.is_running
    check_invariants(backend)


@pytest.mark.parametrize("force", [False, True])
async def test_a_job_fetched_with_the_last_finish_is_not_stranded_by_close(
    backend: Storage, clock: VirtualClock, force: bool
):
    """close() can begin while a slot holds the job its last finish fetched (during the slot's
    yield to the loop, or while a remote finish is in flight): that job is then run (graceful)
    or given back (forced), never left active with its lock until a stalled check finds it."""
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.add_bulk([{"name": "job", "data": i} for i in range(100)])
    done: list[str] = []
    closing: list[asyncio.Task[None]] = []

    async def work(job: Job) -> None:
        done.append(job.id)
        if len(done) == 10:  # the close runs at the loop's next turn, not inside this job
            closing.append(asyncio.get_running_loop().create_task(worker.close(force=force)))

    worker = Worker(QUEUE, work, backend, clock=clock, rng=random.Random(1))
    await worker.run()
    await closing[0]
    counts = await queue.get_job_counts()
    assert counts["active"] == 0
    assert counts["completed"] == len(done) >= 10
    assert counts["completed"] + counts["waiting"] == 100
    for waiting in await queue.get_jobs("waiting"):  # given back: no stall, no attempt counted
        assert counters(waiting)[:2] == (0, 0)
    check_invariants(backend)


async def test_forced_close_requeues_the_running_job_at_the_front(
    backend: Storage, clock: VirtualClock
):
    queue = Queue(QUEUE, backend, clock=clock)
    running = await queue.add("stuck")
    queued = await queue.add("next")
    cancelled: list[int] = []

    async def stuck(job: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(elapsed_ms(clock))
            raise

    rec = Recorder(clock)
    worker, task = await start_worker(backend, stuck, clock, recorder=rec)
    await asyncio.sleep(1)
    await stop_worker(worker, task, force=True)
    assert elapsed_ms(clock) == 1_000
    assert cancelled == [1_000]
    assert [e.at for e in rec.of("closed")] == [1_000]
    assert rec.names(ignore=frozenset({"locks_renewed"})) == ["active", "closed"]
    assert await queue.get_job_state(running.id) == "waiting"
    assert [j.id for j in await queue.get_jobs("waiting", asc=True)] == [running.id, queued.id]
    assert await backend.get_lock(QUEUE, running.id) is None
    assert counters(await stored_job(queue, running.id)) == (0, 0, 1)

    order: list[tuple[str, int]] = []

    async def quick(job: Job) -> None:
        order.append((job.id, elapsed_ms(clock)))

    rec2 = Recorder(clock)
    w2, t2 = await start_worker(backend, quick, clock, seed=2, recorder=rec2)
    await rec2.wait("completed", 2)
    await stop_worker(w2, t2)
    assert order == [(running.id, 1_000), (queued.id, 1_000)]  # no lock_duration wait
    check_invariants(backend)


@pytest.mark.parametrize(
    ("opts", "command"),
    [
        ({}, "moveToFinished"),
        ({"attempts": 2, "backoff": 1000}, "moveToDelayed"),
        ({"attempts": 2}, "retryJob"),
    ],
)
async def test_finishing_without_the_lock_is_refused(
    backend: Storage, clock: VirtualClock, opts: dict[str, Any], command: str
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j", **opts)
    runs: list[int] = []

    async def work(job: Job) -> str:
        runs.append(elapsed_ms(clock))
        if len(runs) > 1:
            return "second"
        await asyncio.sleep(2)  # the 1 s lock expires meanwhile
        if opts:
            raise ValueError("first")
        return "first"

    rec = Recorder(clock)
    options = {"lock_duration": 1_000, "skip_lock_renewal": True, "skip_stalled_check": True}
    worker, task = await start_worker(backend, work, clock, recorder=rec, **options)
    await rec.wait("error")
    (error,) = rec.of("error")
    assert error.at == 2_000
    assert isinstance(error.args[0], LockLostError)
    assert error.args[0].code is ResultCode.MISSING_LOCK
    assert str(error.args[0]) == f"Missing lock for job {job.id}. {command}"
    assert rec.names(ignore=frozenset({"drained"})) == ["active", "error"]
    assert await queue.get_job_state(job.id) == "active"
    assert await queue.is_job_stalled(job.id)
    # The job stays active until a stalled check marks it and the next one recovers it.
    assert (await queue.check_stalled(stalled_interval=1_000)).recovered == []
    await asyncio.sleep(1)
    assert (await queue.check_stalled(stalled_interval=1_000)).recovered == [job.id]
    await rec.wait("completed")
    await stop_worker(worker, task)
    assert runs == [0, 3_000]
    stored = await stored_job(queue, job.id)
    assert (counters(stored), stored.return_value) == ((1, 1, 2), "second")
    check_invariants(backend)


class _Custom(BaseException):
    """A BaseException a processor's own code defines (not an Exception)."""


@pytest.mark.parametrize(
    ("raised", "reason"),
    [
        (
            asyncio.CancelledError(),
            "the processor raised CancelledError, but nothing cancelled it",
        ),
        (_Custom("stop"), "the processor raised _Custom (stop), a BaseException, not an Exception"),
    ],
    ids=["stray-cancelled-error", "custom-base-exception"],
)
async def test_a_base_exception_from_the_processor_fails_the_attempt_and_the_worker_goes_on(
    backend: Storage, clock: VirtualClock, raised: BaseException, reason: str
):
    queue = Queue(QUEUE, backend, clock=clock)
    bad = await queue.add("bad", attempts=2)
    good = await queue.add("good")

    async def work(job: Job) -> str:
        if job.name == "bad":
            raise raised
        return "ok"

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await rec.wait("completed")
    await stop_worker(worker, task)
    # Two failed attempts (the retry fails the same way), then the next job runs.
    assert [(e.args[0].id, str(e.args[1])) for e in rec.of("failed")] == [(bad.id, reason)] * 2
    assert rec.of("failed")[0].args[1].__cause__ is raised
    assert rec.of("error") == []
    assert await queue.get_job_state(bad.id) == "failed"
    stored = await stored_job(queue, bad.id)
    assert stored.failed_reason == reason
    assert counters(stored) == (0, 2, 2)
    assert type(raised).__name__ in stored.stacktrace[-1]  # the original's traceback is kept
    assert await queue.get_job_state(good.id) == "completed"
    check_invariants(backend)


@pytest.mark.parametrize("exit_type", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("plain", [False, True], ids=["async", "plain-def"])
async def test_keyboard_interrupt_or_system_exit_closes_with_force_then_propagates(
    backend: Storage, clock: VirtualClock, exit_type: type[BaseException], plain: bool
):
    queue = Queue(QUEUE, backend, clock=clock)
    hang = await queue.add("hang")
    stop = await queue.add("stop")
    later = await queue.add("later")
    release = threading.Event()

    def stop_now(job: Job) -> None:
        if job.name == "hang":
            release.wait(5)  # a stuck thread, until the test lets it go
        else:
            raise exit_type("told to stop")

    async def stop_soon(job: Job) -> None:
        if job.name == "hang":
            await asyncio.Event().wait()
        await asyncio.sleep(1)
        raise exit_type("told to stop")

    rec = Recorder(clock)
    worker = Worker(
        QUEUE,
        stop_now if plain else stop_soon,
        backend,
        clock=clock,
        rng=random.Random(1),
        concurrency=2,
    )
    rec.attach(worker)
    try:
        with pytest.raises(exit_type, match="told to stop"):
            await worker.run()
    finally:
        release.set()
    assert not worker.is_running
    assert rec.names(ignore=frozenset({"locks_renewed"}))[-1] == "closed"
    assert rec.of("failed") == []
    assert rec.of("completed") == []
    # Both jobs back at the front of wait, unlocked, with no attempt or stall counted.
    waiting = [j.id for j in await queue.get_jobs("waiting", asc=True)]
    assert waiting[:2] in ([hang.id, stop.id], [stop.id, hang.id])
    assert waiting[2:] == [later.id]
    for job in (hang, stop):
        assert await backend.get_lock(QUEUE, job.id) is None
        assert counters(await stored_job(queue, job.id)) == (0, 0, 1)
    check_invariants(backend)


@pytest.mark.parametrize(
    ("field", "raw", "problem"),
    [
        (
            "data",
            "{oops",
            "data is not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2)",
        ),
        ("data", "", None),  # no data is not a problem
        ("data", ' {"a": [1, "é"]} ', None),  # nor is whitespace around JSON, or non-ASCII
        ("data", "\udcff\udcfe{}", "data is not valid UTF-8 (byte 0xff at character 0)"),
        ("opts", "not json", "opts is not valid JSON (Expecting value: line 1 column 1)"),
        ("opts", "[3]", "opts is a JSON list, not an object"),
        (
            "opts",
            '{"attempts": "many"}',
            "opts cannot be read (invalid literal for int() with base 10: 'many')",
        ),
        ("opts", '{"x": "caf\udce9"}', "opts is not valid UTF-8 (byte 0xe9 at character 10)"),
    ],
    ids=[
        "bad-json-data",
        "empty-data",
        "spaced-data",
        "bad-utf8-data",
        "bad-json-opts",
        "list-opts",
        "unreadable-opts",
        "bad-utf8-opts",
    ],
)
async def test_a_job_whose_fields_cannot_be_decoded_fails_at_once_without_running(
    backend: Storage, clock: VirtualClock, field: str, raw: str, problem: str | None
):
    if isinstance(backend, MemoryBackend):
        # Nothing but the Queue API writes to it, and that encodes every field
        # (test_bad_input.py): its workers skip the check (holds_only_encoded_fields).
        pytest.skip("the memory backend has no producer other than corral's API")
    if any("\udc80" <= char <= "\udcff" for char in raw) and isinstance(backend, RedisBackend):
        # fakeredis's own cjson decodes strictly, so its scripts cannot send such a job at all
        pytest.skip("fakeredis cannot send bytes that are not UTF-8 from a script")
    queue = Queue(QUEUE, backend, clock=clock)
    bad = await queue.add("bad", {"n": 1}, attempts=3, backoff=1_000)
    await queue.add("good", {"n": 2})
    await write_job_field(backend, QUEUE, bad.id, field, raw)
    seen: list[tuple[str, Any]] = []

    async def work(job: Job) -> None:
        seen.append((job.name, job.data))

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    await rec.wait("completed")
    await stop_worker(worker, task)
    stored = await stored_job(queue, bad.id)
    if problem is None:
        assert seen == [("bad", json.loads(raw) if raw else None), ("good", {"n": 2})]
        assert await queue.get_job_state(bad.id) == "completed"
        return
    reason = f"job {bad.id} cannot be decoded: {problem}"
    assert seen == [("good", {"n": 2})]  # the processor never saw the bad one
    assert [(e.at, e.args[0].id, str(e.args[1])) for e in rec.of("failed")] == [(0, bad.id, reason)]
    assert isinstance(rec.of("failed")[0].args[1], UnrecoverableError)
    assert rec.of("error") == []
    assert await queue.get_job_state(bad.id) == "failed"  # at once: attempts are not used
    assert stored.failed_reason == reason
    assert counters(stored) == (0, 1, 1)
    check_invariants(backend)


def block_the_loop(seconds: float) -> None:
    """What ``time.sleep(seconds)`` (or as much CPU work) in an ``async def`` processor does to
    the event loop, in virtual time: the clock moves on while nothing else runs."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    loop._now += seconds


async def blocks_for_6_s(job: Job) -> str:
    """An ``async def`` processor that blocks its event loop (the classic mistake)."""
    block_the_loop(6)
    return "done"


async def test_a_blocked_event_loop_is_reported_with_the_jobs_and_remedies(
    backend: Storage, clock: VirtualClock, caplog: pytest.LogCaptureFixture
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    rec = Recorder(clock)
    with caplog.at_level("WARNING", logger="corral.worker"):
        worker, task = await start_worker(
            backend, blocks_for_6_s, clock, lock_duration=2_000, recorder=rec
        )
        await rec.wait("loop_blocked")
        await stop_worker(worker, task, force=True)
    # The watch ticks every 2000 / 16 ms while jobs run: the first tick, due at 125, fires at
    # 6000 (a block shows up to one tick shorter than it was).
    (blocked,) = rec.of("loop_blocked")
    assert (blocked.at, blocked.args) == (6_000, (5_875, [job.id]))
    (warning,) = [r for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert warning.levelname == "WARNING"
    message = warning.getMessage()
    assert "blocked for at least 5875 ms (lock_duration is 2000 ms)" in message
    assert f"ran job(s) {job.id};" in message
    assert "a plain `def`" in message
    assert "sandboxed=True" in message
    check_invariants(backend)


async def test_a_worker_whose_loop_is_never_blocked_reports_nothing(
    backend: Storage, clock: VirtualClock
):
    async def slow(job: Job) -> None:
        await asyncio.sleep(30)  # long, but the loop runs meanwhile

    job, rec = await run_one_job(backend, clock, slow, {"lock_duration": 2_000})
    assert job.return_value is None
    assert rec.of("loop_blocked") == []
    assert rec.of("error") == []


async def blocks_then_waits(job: Job) -> str:
    """Blocks its loop for 6 s, then lets the loop run for 1 s: the renewal tick comes first."""
    block_the_loop(6)
    await asyncio.sleep(1)
    return "done"


@pytest.mark.virtual_ttl
@pytest.mark.parametrize(
    ("processor", "lost"),
    [
        (blocks_for_6_s, "Missing lock for job 1. moveToFinished"),
        (blocks_then_waits, "could not renew lock for job 1"),
    ],
    ids=["finish", "renewal"],
)
async def test_a_lock_lost_after_a_blocked_loop_says_so(
    backend: Storage, clock: VirtualClock, processor: Any, lost: str
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    assert job.id == "1"
    rec = Recorder(clock)
    worker, task = await start_worker(backend, processor, clock, lock_duration=2_000, recorder=rec)
    error = await rec.wait("error")
    await stop_worker(worker, task)
    # BullMQ's text first, then why: the lock (taken at 0) lapsed at 2000, mid-block.
    assert str(error.args[0]) == f"{lost}, after the event loop was blocked for 5875 ms"
    assert rec.names().index("loop_blocked") < rec.names().index("error")
    assert await queue.get_job_state(job.id) == "active"  # left for the stalled check
    check_invariants(backend)
