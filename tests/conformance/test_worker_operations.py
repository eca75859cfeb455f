"""Conformance: a Worker's local pause and resume (BullMQ's ``Worker.pause``), its entry in
``Queue.get_workers``, and its retention defaults (``remove_on_complete`` / ``remove_on_fail``
for jobs without their own), on every backend."""

from __future__ import annotations

import asyncio
import base64

import pytest
from helpers import QUEUE, Recorder, start_worker, stop_worker, wait_for

from corral.engine import Job, Queue
from corral.engine.storage import Storage
from corral.sim.loop import VirtualClock

Q = QUEUE


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


class Gate:
    """A processor that holds each job until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, job: Job) -> str:
        self.started.append(job.id)
        await self.release.wait()
        return "done"


async def completed(queue: Queue, count: int) -> bool:
    return await queue.get_completed_count() == count


async def state_counts(queue: Queue) -> dict[str, int]:
    return {k: v for k, v in (await queue.get_job_counts()).items() if v}


# ---------------------------------------------------------------------------- pause / resume


async def test_pause_waits_for_running_jobs_then_stops_fetching(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    gate = Gate()
    rec = Recorder(clock)
    worker, task = await start_worker(backend, gate, clock, recorder=rec, drain_delay=1000)
    await queue.add("j", 1)
    await wait_for(lambda: gate.started == ["1"], what="the first job to start")
    pausing = asyncio.create_task(worker.pause())
    await asyncio.sleep(5)
    assert not pausing.done()  # the running job has not finished yet
    assert worker.is_paused()
    gate.release.set()
    await pausing
    assert [e.name for e in rec.events if e.name in ("completed", "paused")] == [
        "completed",
        "paused",
    ]
    await queue.add("j", 2)
    await asyncio.sleep(30)
    assert await state_counts(queue) == {"completed": 1, "waiting": 1}
    assert not await queue.is_paused()  # local: nothing written to the store
    worker.resume()
    assert not worker.is_paused()
    await wait_for(lambda: gate.started == ["1", "2"], what="the worker to resume")
    await stop_worker(worker, task)
    assert [e.name for e in rec.events].count("resumed") == 1


async def test_pause_interrupts_a_wait_for_work(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    gate = Gate()
    gate.release.set()
    worker, task = await start_worker(backend, gate, clock, drain_delay=60_000)
    await asyncio.sleep(1)  # the worker now waits for work
    await worker.pause()  # nothing runs: returns at once
    await queue.add("j", 1)
    await asyncio.sleep(120)
    assert gate.started == []
    worker.resume()
    await wait_for(lambda: gate.started == ["1"], what="the resumed worker to take the job")
    await stop_worker(worker, task)


async def test_pause_without_waiting_and_close_while_paused(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    gate = Gate()
    worker, task = await start_worker(backend, gate, clock, concurrency=2)
    await queue.add("j", 1)
    await wait_for(lambda: gate.started == ["1"], what="the job to start")
    await worker.pause(do_not_wait=True)
    assert await state_counts(queue) == {"active": 1}  # still running
    await queue.add("j", 2)
    gate.release.set()
    await wait_for(lambda: completed(queue, 1), what="the running job to finish")
    await asyncio.sleep(10)
    assert await state_counts(queue) == {"completed": 1, "waiting": 1}
    await stop_worker(worker, task)  # a paused worker closes


async def test_resume_releases_a_pause_still_waiting_for_jobs(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    gate = Gate()
    rec = Recorder(clock)
    worker, task = await start_worker(backend, gate, clock, recorder=rec)
    await queue.add("j", 1)
    await wait_for(lambda: gate.started == ["1"], what="the job to start")
    pausing = asyncio.create_task(worker.pause())
    await asyncio.sleep(1)
    worker.resume()
    await asyncio.wait_for(pausing, 1)  # returns though the job still runs
    assert not worker.is_paused()
    gate.release.set()
    await stop_worker(worker, task)
    # No "paused" after the "resumed": the worker was never paused by the time it returned.
    assert [e.name for e in rec.events if e.name in ("paused", "resumed")] == ["resumed"]


@pytest.mark.virtual_ttl
async def test_a_paused_worker_keeps_renewing_locks(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    gate = Gate()
    rec = Recorder(clock)
    worker, task = await start_worker(
        backend, gate, clock, recorder=rec, lock_duration=2000, stalled_interval=1000
    )
    await queue.add("j", 1)
    await wait_for(lambda: gate.started == ["1"], what="the job to start")
    pausing = asyncio.create_task(worker.pause())
    await asyncio.sleep(20)  # ten lock durations
    gate.release.set()
    await pausing
    assert await state_counts(queue) == {"completed": 1}
    assert not [e for e in rec.events if e.name in ("lock_renewal_failed", "error")]
    await stop_worker(worker, task)


# ---------------------------------------------------------------------------- get_workers


def client_name(worker_name: str | None, prefix: str = "bull") -> str:
    name = f"{prefix}:{base64.b64encode(Q.encode()).decode()}"
    return name if worker_name is None else f"{name}:w:{worker_name}"


async def listed(queue: Queue, count: int) -> bool:
    return await queue.get_workers_count() == count


async def test_get_workers_lists_running_workers_by_bullmq_name(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    prefix = getattr(getattr(backend, "inner", backend), "prefix", "bull")
    assert await queue.get_workers() == []
    named, named_task = await start_worker(backend, Gate(), clock, name="mailer", seed=1)
    plain, plain_task = await start_worker(backend, Gate(), clock, seed=2)
    other = Queue("other", backend, clock=clock)
    await wait_for(lambda: listed(queue, 2), what="both workers to be listed")
    workers = await queue.get_workers()
    assert sorted(w["rawname"] for w in workers) == sorted(
        [client_name("mailer", prefix), client_name(None, prefix)]
    )
    assert {w["name"] for w in workers} == {Q}
    assert await queue.get_workers_count() == 2
    assert await other.get_workers() == []
    await stop_worker(named, named_task)
    await stop_worker(plain, plain_task)


async def test_a_closed_worker_is_no_longer_listed(
    queue: Queue, backend: Storage, clock: VirtualClock, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["backend"] == "fakeredis":
        pytest.skip("fakeredis keeps closed connections in its CLIENT LIST")
    prefix = getattr(getattr(backend, "inner", backend), "prefix", "bull")
    named, named_task = await start_worker(backend, Gate(), clock, name="mailer", seed=1)
    plain, plain_task = await start_worker(backend, Gate(), clock, seed=2)
    await wait_for(lambda: listed(queue, 2), what="both workers to be listed")
    await stop_worker(named, named_task)
    assert [w["rawname"] for w in await queue.get_workers()] == [client_name(None, prefix)]
    await stop_worker(plain, plain_task)
    assert await queue.get_workers() == []


# ---------------------------------------------------------------------------- retention


async def ok(job: Job) -> str:
    return "ok"


async def bad(job: Job) -> str:
    raise ValueError("no")


async def test_worker_retention_applies_to_jobs_without_their_own(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    await queue.add("plain", 1)
    await queue.add("own", 2, remove_on_complete=5)
    worker, task = await start_worker(backend, ok, clock, remove_on_complete=True)
    await wait_for(lambda: _no_pending(queue), what="both jobs to finish")
    await stop_worker(worker, task)
    # The job without its own option was deleted by the worker's default; the other kept.
    assert await queue.get_job("1") is None
    assert [j.id for j in await queue.get_completed()] == ["2"]


async def test_worker_fail_retention_applies_to_jobs_without_their_own(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    await queue.add("plain", 1)
    await queue.add("plain", 2)
    await queue.add("own", 3, remove_on_fail={"count": 10})
    worker, task = await start_worker(backend, bad, clock, remove_on_fail={"count": 1})
    await wait_for(lambda: _no_pending(queue), what="the jobs to fail")
    await stop_worker(worker, task)
    assert sorted(j.id for j in await queue.get_failed()) == ["2", "3"]


async def _no_pending(queue: Queue) -> bool:
    return await queue.get_job_count("waiting", "active") == 0
