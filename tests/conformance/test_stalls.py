"""Stalled-job semantics (bullmq-semantics.md §3): two-phase checks, recovery timing, the strict
stall limit, late finishes by a lost owner, the shared throttle, ``defa``, and forced close versus
a crash. Times are virtual milliseconds since the test started (exact, see ``helpers``).

A *dead owner* is simulated by fetching a job straight from the store and never renewing or
finishing it: exactly what a crashed worker leaves behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import (
    QUEUE,
    Recorder,
    StorageSpy,
    check_invariants,
    counters,
    dead_owner_takes,
    elapsed_ms,
    start_worker,
    stop_worker,
    stored_job,
    write_job_field,
)

from corral.engine import Job, LockLostError, Queue, UnrecoverableError
from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.storage import Complete, Storage
from corral.sim.loop import VirtualClock


async def forever(job: Job) -> None:
    """A processor that never finishes (until its worker is closed with force)."""
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("lock_ms", "interval_ms", "dead_at_start", "recovered_at"),
    [
        # marked at 0, lock gone at 10000, recovered by the next check: 12000
        (10_000, 4_000, True, 12_000),
        # L < S: marked at 0, lock gone at 1000, recovered at the next check
        (1_000, 5_000, True, 5_000),
        # taken just after the check at 0: marked at 5000, recovered at 10000 (≈ 2S)
        (1_000, 5_000, False, 10_000),
        # marked at 2000; the check at 4000 still sees the lock (until 4501)
        (4_500, 2_000, False, 6_000),
    ],
)
async def test_dead_owner_job_is_recovered_at_the_check_after_its_mark(
    backend: Storage,
    clock: VirtualClock,
    lock_ms: int,
    interval_ms: int,
    dead_at_start: bool,
    recovered_at: int,
):
    queue = Queue(QUEUE, backend, clock=clock)
    runs: list[tuple[str, int, tuple[int, int, int]]] = []

    async def work(job: Job) -> None:
        runs.append((job.name, elapsed_ms(clock), counters(job)))
        if job.name == "B":  # keeps the only slot busy past the recovery
            await asyncio.sleep(30)

    rec = Recorder(clock)
    options: dict[str, Any] = {"stalled_interval": interval_ms, "recorder": rec}
    if dead_at_start:
        a = await queue.add("A")
        assert await dead_owner_takes(backend, clock, "dead:1", lock_ms) == a.id
        await queue.add("B")
        worker, task = await start_worker(backend, work, clock, **options)
    else:
        await queue.add("B")
        worker, task = await start_worker(backend, work, clock, **options)
        await asyncio.sleep(0.001)
        a = await queue.add("A")
        assert await dead_owner_takes(backend, clock, "dead:1", lock_ms) == a.id
    c = await queue.add("C")

    stalled = await rec.wait("stalled")
    assert (stalled.at, stalled.args) == (recovered_at, (a.id, "active"))
    # Back at the front of wait, ahead of C; the stall is counted, the attempt is not.
    assert [j.id for j in await queue.get_jobs("waiting", asc=True)] == [a.id, c.id]
    assert counters(await stored_job(queue, a.id)) == (1, 0, 1)
    await rec.wait("completed", 3)
    await stop_worker(worker, task)
    start_b = runs[0][1]
    assert runs == [
        ("B", start_b, (0, 0, 1)),
        ("A", start_b + 30_000, (1, 0, 2)),
        ("C", start_b + 30_000, (0, 0, 1)),
    ]
    assert len(rec.of("stalled")) == 1
    log = [
        (e.name, e.fields.get("prev"))
        for e in await backend.get_events(QUEUE)
        if e.fields.get("jobId") == a.id
    ]
    assert log == [
        ("added", None),
        ("waiting", None),
        ("active", "waiting"),
        ("waiting", "active"),
        ("stalled", None),
        ("active", "waiting"),
        ("completed", "active"),
    ]
    check_invariants(backend)


async def test_renewal_rearms_a_held_lock_but_never_recreates_an_expired_one(
    backend: Storage, clock: VirtualClock
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    await dead_owner_takes(backend, clock, "owner:1", 1_000)
    assert (await queue.check_stalled(stalled_interval=1_000)).ran
    assert await backend.is_marked_stalled(QUEUE, job.id)
    await asyncio.sleep(0.5)
    assert await backend.extend_locks(QUEUE, [(job.id, "someone-else")], 1_000) == ["someone-else"]
    assert await backend.extend_locks(QUEUE, [(job.id, "owner:1")], 1_000) == []
    assert not await backend.is_marked_stalled(QUEUE, job.id)  # a renewal unmarks the job
    lock = await backend.get_lock(QUEUE, job.id)
    assert lock is not None
    assert (lock.token, lock.ttl_ms) == ("owner:1", 1_000)
    await asyncio.sleep(1.5)  # expired at 1500
    assert await backend.extend_locks(QUEUE, [(job.id, "owner:1")], 1_000) == ["owner:1"]
    assert await backend.get_lock(QUEUE, job.id) is None
    assert await queue.is_job_stalled(job.id)
    check_invariants(backend)


@pytest.mark.parametrize("max_stalled_count", [0, 1, 2])
async def test_stall_limit_is_strict_and_stalls_do_not_use_attempts(
    backend: Storage, clock: VirtualClock, max_stalled_count: int
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j", attempts=5)
    for stall in range(1, max_stalled_count + 2):
        await asyncio.sleep(1.5)  # past the throttle of the previous check
        await dead_owner_takes(backend, clock, f"dead:{stall}", 1_000)
        assert not await queue.is_job_stalled(job.id)  # its lock is held
        marking = await queue.check_stalled(max_stalled_count, 1_000)
        assert (marking.ran, marking.recovered, marking.failed) == (True, [], [])
        assert await backend.is_marked_stalled(QUEUE, job.id)
        await asyncio.sleep(1.5)
        assert await queue.is_job_stalled(job.id)
        result = await queue.check_stalled(max_stalled_count, 1_000)
        stored = await stored_job(queue, job.id)
        assert counters(stored) == (stall, 0, stall)
        if stall <= max_stalled_count:
            assert (result.recovered, result.failed) == ([job.id], [])
            assert await queue.get_job_state(job.id) == "waiting"
            assert stored.finished_on is None
        else:
            assert (result.recovered, result.failed) == ([], [job.id])
            assert await queue.get_job_state(job.id) == "failed"
            assert stored.failed_reason == "job stalled more than allowable limit"
            assert stored.finished_on == clock.now_ms()
    check_invariants(backend)


@pytest.mark.parametrize("max_stalled_count", [0, 1])
async def test_worker_fails_a_job_that_stalls_too_often(
    backend: Storage, clock: VirtualClock, max_stalled_count: int
):
    """A worker whose processors hang and whose locks are not renewed: each run stalls."""
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j", attempts=3)
    starts: list[int] = []

    async def hang(job: Job) -> None:
        starts.append(elapsed_ms(clock))
        await forever(job)

    rec = Recorder(clock)
    worker, task = await start_worker(
        backend,
        hang,
        clock,
        concurrency=2,
        lock_duration=1_000,
        stalled_interval=2_000,
        skip_lock_renewal=True,
        max_stalled_count=max_stalled_count,
        recorder=rec,
    )
    failed = await rec.wait("failed")
    await stop_worker(worker, task, force=True)
    # Each run: taken at T, marked at T + 2000, recovered or failed at T + 4000.
    fail_at = 4_000 * (max_stalled_count + 1)
    assert starts == [4_000 * n for n in range(max_stalled_count + 1)]
    # Every stall is reported, the one over the limit too (just before its failure).
    assert [(e.at, e.args) for e in rec.of("stalled")] == [
        (4_000 * n, (job.id, "active")) for n in range(1, max_stalled_count + 2)
    ]
    names = rec.names()
    assert names[names.index("failed") - 1] == "stalled"
    assert failed.at == fail_at
    assert failed.args[0].id == job.id
    assert isinstance(failed.args[1], UnrecoverableError)
    assert str(failed.args[1]) == STALLED_LIMIT_REASON
    stored = await stored_job(queue, job.id)
    assert await queue.get_job_state(job.id) == "failed"
    assert stored.failed_reason == STALLED_LIMIT_REASON
    assert stored.finished_on == clock.epoch_ms + fail_at
    assert stored.stalled_counter == max_stalled_count + 1
    check_invariants(backend)


async def test_a_job_failed_for_stalling_is_reported_stalled_then_failed(
    backend: Storage, clock: VirtualClock
):
    """BullMQ 6 emits ``stalled`` for every job a check finds, then fails the one over the
    limit: locally (the worker that ran the check) and in the queue's event stream."""
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j", attempts=3)
    # Short enough to run out in real time too (on a real server, TTLs are not virtual): the
    # worker's checks then come until one finds the lock gone.
    await dead_owner_takes(backend, clock, "dead:1", 20)
    rec = Recorder(clock)
    worker, task = await start_worker(
        backend, forever, clock, stalled_interval=20, max_stalled_count=0, recorder=rec
    )
    failed = await rec.wait("failed")
    await stop_worker(worker, task, force=True)
    assert [(e.name, e.args[0]) for e in rec.events if e.name in ("stalled", "failed")] == [
        ("stalled", job.id),
        ("failed", failed.args[0]),
    ]
    assert rec.of("stalled")[0].args == (job.id, "active")
    assert failed.args[0].id == job.id
    assert str(failed.args[1]) == STALLED_LIMIT_REASON
    log = [
        (e.name, e.fields.get("prev"), e.fields.get("failedReason"))
        for e in await backend.get_events(QUEUE)
        if e.fields.get("jobId") == job.id
    ]
    assert log[-2:] == [
        ("stalled", None, None),
        ("failed", "active", STALLED_LIMIT_REASON),
    ]
    assert await queue.get_job_state(job.id) == "failed"
    check_invariants(backend)


async def test_late_finish_by_the_old_owner_is_refused(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    tokens: dict[str, str | None] = {}

    def slow(result: str):
        async def work(job: Job) -> str:
            tokens[result] = job.token
            await asyncio.sleep(10)
            return result

        return work

    rec1, rec2 = Recorder(clock), Recorder(clock)
    options: dict[str, Any] = {"lock_duration": 1_000, "stalled_interval": 1_000}
    w1, t1 = await start_worker(
        backend, slow("old"), clock, recorder=rec1, skip_lock_renewal=True, **options
    )
    w2, t2 = await start_worker(backend, slow("new"), clock, seed=2, recorder=rec2, **options)
    error = await rec1.wait("error")
    # W1's lock expired at 1000, marked at 1000, recovered at 2000 and taken by W2.
    assert [e.at for e in rec2.of("active")] == [2_000]
    assert error.at == 10_000
    assert isinstance(error.args[0], LockLostError)
    assert error.args[0].code is ResultCode.LOCK_MISMATCH
    assert str(error.args[0]) == f"Lock mismatch for job {job.id}. Cmd moveToFinished from active"
    assert await queue.get_job_state(job.id) == "active"  # W2 still owns it
    old = tokens["old"]
    assert old is not None
    assert old != tokens["new"]
    late = await backend.finish(QUEUE, job.id, old, Complete('"x"'), clock.now_ms())
    assert late is ResultCode.LOCK_MISMATCH

    await rec2.wait("completed")
    await stop_worker(w1, t1)
    await stop_worker(w2, t2)
    assert rec1.of("completed") == []
    assert [(e.at, e.args[1]) for e in rec2.of("completed")] == [(12_000, "new")]
    late = await backend.finish(QUEUE, job.id, old, Complete('"x"'), clock.now_ms())
    assert late is ResultCode.MISSING_LOCK
    stored = await stored_job(queue, job.id)
    assert (stored.return_value, counters(stored)) == ("new", (1, 1, 2))
    assert [e.name for e in await backend.get_events(QUEUE)].count("completed") == 1
    check_invariants(backend)


async def test_stalled_check_is_throttled_across_workers(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    spy1, spy2 = StorageSpy(backend, clock), StorageSpy(backend, clock)
    w1, t1 = await start_worker(spy1, forever, clock, stalled_interval=5_000)
    await asyncio.sleep(1)
    w2, t2 = await start_worker(spy2, forever, clock, seed=2, stalled_interval=5_000)
    await asyncio.sleep(1.5)
    assert not (await queue.check_stalled(stalled_interval=5_000)).ran  # at 2500
    await asyncio.sleep(9.5)  # until 12000
    await stop_worker(w1, t1)
    await stop_worker(w2, t2)

    def checks(spy: StorageSpy) -> list[tuple[int, bool]]:
        return [(call.at, call.result.ran) for call in spy.of("check_stalled")]

    # The first check runs when the worker starts; then one per interval across both workers.
    assert checks(spy1) == [(0, True), (5_000, True), (10_000, True)]
    assert checks(spy2) == [(1_000, False), (6_000, False), (11_000, False)]
    check_invariants(backend)


async def test_skip_stalled_check_runs_no_checks(backend: Storage, clock: VirtualClock):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    await dead_owner_takes(backend, clock, "dead:1", 1_000)
    spy = StorageSpy(backend, clock)
    worker, task = await start_worker(spy, forever, clock, skip_stalled_check=True)
    await asyncio.sleep(300)
    await stop_worker(worker, task)
    assert spy.of("check_stalled") == []
    assert await queue.get_job_state(job.id) == "active"
    assert await queue.is_job_stalled(job.id)
    assert counters(await stored_job(queue, job.id)) == (0, 0, 1)
    check_invariants(backend)


async def test_deferred_failure_from_a_node_checker_fails_on_pickup(
    backend: Storage, clock: VirtualClock
):
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j", attempts=3)
    # What Node BullMQ >= 5.53.2 leaves behind: the job back in wait with ``defa`` set.
    await write_job_field(backend, QUEUE, job.id, "defa", STALLED_LIMIT_REASON)
    called: list[str] = []

    async def work(job: Job) -> None:
        called.append(job.id)

    rec = Recorder(clock)
    worker, task = await start_worker(backend, work, clock, recorder=rec)
    failed = await rec.wait("failed")
    await stop_worker(worker, task)
    assert called == []
    assert failed.at == 0
    assert isinstance(failed.args[1], UnrecoverableError)
    assert str(failed.args[1]) == STALLED_LIMIT_REASON
    assert await queue.get_job_state(job.id) == "failed"  # remaining attempts are ignored
    stored = await stored_job(queue, job.id)
    assert stored.failed_reason == STALLED_LIMIT_REASON
    assert stored.deferred_failure is None
    assert counters(stored) == (0, 1, 1)
    check_invariants(backend)


async def test_forced_close_requeues_at_once_but_a_crash_waits_for_checks(
    backend: Storage, clock: VirtualClock
):
    queue = Queue(QUEUE, backend, clock=clock)
    crashed = await queue.add("crashed")
    await dead_owner_takes(backend, clock, "dead:1", 4_500)
    closed = await queue.add("closed")
    w1, t1 = await start_worker(backend, forever, clock, skip_stalled_check=True)
    await asyncio.sleep(1)
    await stop_worker(w1, t1, force=True)
    assert await queue.get_job_state(closed.id) == "waiting"
    assert await queue.get_job_state(crashed.id) == "active"

    starts: dict[str, int] = {}

    async def work(job: Job) -> None:
        starts[job.name] = elapsed_ms(clock)

    rec = Recorder(clock)
    w2, t2 = await start_worker(backend, work, clock, seed=2, stalled_interval=2_000, recorder=rec)
    await rec.wait("completed", 2)
    await stop_worker(w2, t2)
    # The released job runs at once; the crashed one after its lock expired (4500) and two
    # checks (marked at 1000, still locked at 3000, recovered at 5000).
    assert starts == {"closed": 1_000, "crashed": 5_000}
    assert counters(await stored_job(queue, closed.id)) == (0, 1, 2)
    assert counters(await stored_job(queue, crashed.id)) == (1, 1, 2)
    check_invariants(backend)


async def test_a_job_retaken_by_the_same_worker_keeps_its_new_lock(
    backend: Storage, clock: VirtualClock
):
    """Run 1's renewals are stuck in transit, so the job stalls and the worker's other slot
    takes it again (run 2). Then the worker tracks the job twice: only run 1 has lost the lock,
    and only run 1 may be told so."""
    queue = Queue(QUEUE, backend, clock=clock)
    job = await queue.add("j")
    spy = StorageSpy(backend, clock)
    spy.delays["extend_locks"] = 5.0
    runs: list[Job] = []

    async def work(job: Job) -> int:
        runs.append(job)
        await asyncio.sleep(10)  # does not stop when told
        return len(runs)

    rec = Recorder(clock)
    options = {"concurrency": 2, "lock_duration": 4_000, "stalled_interval": 1_500}
    worker, task = await start_worker(spy, work, clock, recorder=rec, **options)
    await asyncio.sleep(4.6)
    spy.delays.clear()  # the renewals sent at 1000..4000 are slow (they arrive at 6000..9000)
    await rec.wait("completed")
    await stop_worker(worker, task)
    # Marked at 1500, still locked at 3000, recovered at 4500 and taken by the other slot.
    assert [(e.at, e.args) for e in rec.of("stalled")] == [(4_500, (job.id, "active"))]
    first, second = runs
    assert [e.at for e in rec.of("active")] == [0, 4_500]
    assert first.cancellation.is_cancelled
    assert not second.cancellation.is_cancelled
    assert rec.of("lock_renewal_failed")[0].at == 5_000  # the first renewal sent after 4600
    assert all(e.args == ([job.id],) for e in rec.of("lock_renewal_failed"))
    assert all(e.args[1] is first for e in rec.of("error"))
    assert [e.at for e in rec.of("locks_renewed")][:1] == [6_000]  # run 2's lock, renewed
    assert [(e.at, e.args[1]) for e in rec.of("completed")] == [(14_500, 2)]
    assert counters(await stored_job(queue, job.id)) == (1, 1, 2)
    check_invariants(backend)
