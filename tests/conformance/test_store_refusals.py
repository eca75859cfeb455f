"""A store that is up but refuses writes (Redis out of memory, a user without permission): the
worker takes no new jobs until a write succeeds again, and backs off meanwhile. The refusals are
injected in front of each backend, so every backend sees the same calls."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import QUEUE, Recorder, StorageSpy, elapsed_ms, start_worker, stop_worker, wait_for

from corral.engine import Job, Queue
from corral.engine.errors import StoreRefusedError
from corral.engine.policy import FETCH_BACKOFF_MAX_MS, FETCH_BACKOFF_MS
from corral.engine.storage import Storage
from corral.sim.loop import VirtualClock


class Refusing(StorageSpy):
    """A spy that refuses the methods in ``refused`` (nothing reaches the store) and records
    when each was attempted."""

    def __init__(self, inner: Storage, clock: VirtualClock) -> None:
        super().__init__(inner, clock)
        self.refused: set[str] = set()
        self.attempts: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        forward = super().__getattr__(name)
        if not callable(forward) or name in ("close", "keys"):
            return forward

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.attempts.append((name, elapsed_ms(self.clock)))
            if name in self.refused:
                raise StoreRefusedError(name, "Redis is out of memory")
            return await forward(*args, **kwargs)

        return call

    def attempted(self, name: str) -> list[int]:
        return [at for method, at in self.attempts if method == name]


async def test_a_refused_lock_renewal_stops_fetching_until_a_write_succeeds(
    backend: Storage, clock: VirtualClock
):
    store = Refusing(backend, clock)
    queue = Queue(QUEUE, backend, clock=clock)
    release = asyncio.Event()
    starts: list[tuple[str, int]] = []

    async def work(job: Job) -> None:
        starts.append((job.data, elapsed_ms(clock)))
        if job.data == "long":
            await release.wait()

    rec = Recorder(clock, events={"error"})
    worker, task = await start_worker(
        store, work, clock, recorder=rec, concurrency=2, lock_duration=10_000
    )
    await queue.add("j", "long")
    await wait_for(lambda: len(starts) == 1)
    store.refused = {"extend_locks"}
    refusal = await rec.wait("error")
    assert isinstance(refusal.args[0], StoreRefusedError)
    assert str(refusal.args[0]) == "extend_locks refused: Redis is out of memory"
    # Renewals are accepted again only later; the idle slot is woken by a new job meanwhile.
    store.refused = set()
    added_at = elapsed_ms(clock)
    await queue.add("j", "next")
    await wait_for(lambda: len(starts) == 2)
    fetches = [at for at in store.attempted("fetch_next") if at >= added_at]
    assert fetches, store.attempts
    assert fetches[0] >= added_at + FETCH_BACKOFF_MS  # backed off before taking new work
    assert starts[1][0] == "next"
    release.set()
    await stop_worker(worker, task)


async def test_refused_fetches_back_off_and_resume_when_writes_succeed(
    backend: Storage, clock: VirtualClock
):
    store = Refusing(backend, clock)
    queue = Queue(QUEUE, backend, clock=clock)
    done: list[int] = []

    async def work(job: Job) -> None:
        done.append(elapsed_ms(clock))

    store.refused = {"fetch_next"}
    rec = Recorder(clock, events={"error"})
    worker, task = await start_worker(store, work, clock, recorder=rec)
    await queue.add("j", 1)
    await asyncio.sleep(60)
    attempts = store.attempted("fetch_next")
    # 100, 200, ... ms doubling to the 5 s cap: a handful of probes a minute, not a busy loop.
    assert len(attempts) <= 7 + 60_000 // FETCH_BACKOFF_MAX_MS, attempts
    assert all(isinstance(e.args[0], StoreRefusedError) for e in rec.of("error"))
    assert len(rec.of("error")) == len(attempts)
    assert done == []
    store.refused = set()
    await wait_for(lambda: len(done) == 1, timeout_s=FETCH_BACKOFF_MAX_MS / 1000 + 1)
    await stop_worker(worker, task)


async def test_a_refused_finish_keeps_the_lock_and_is_stored_once_accepted(
    backend: Storage, clock: VirtualClock
):
    """The work done is not lost: the worker renews the job's lock while the store refuses its
    outcome, and stores it once the store accepts writes again; the job runs once."""
    store = Refusing(backend, clock)
    queue = Queue(QUEUE, backend, clock=clock)
    starts: list[int] = []

    async def work(job: Job) -> str:
        starts.append(elapsed_ms(clock))
        return "done"

    store.refused = {"finish"}
    rec = Recorder(clock, events={"error", "completed"})
    worker, task = await start_worker(
        store, work, clock, recorder=rec, lock_duration=1_000, stalled_interval=1_000
    )
    job = await queue.add("j", None)
    await rec.wait("error", 3)
    await asyncio.sleep(5)  # five lock durations
    assert await queue.get_job_state(job.id) == "active"
    assert (await backend.get_lock(QUEUE, job.id)) is not None
    store.refused = set()
    await rec.wait("completed")
    assert await queue.get_job_state(job.id) == "completed"
    assert len(starts) == 1
    errors = [e.args[0] for e in rec.of("error")]
    assert all(str(e) == "finish refused: Redis is out of memory" for e in errors), errors
    await stop_worker(worker, task)
