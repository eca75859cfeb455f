"""Shared helpers for the conformance tests (imported as ``from helpers import ...``).

Everything here works in virtual time: waits poll or block on the test's virtual-time loop, so
they take no real time and timestamps are exact. Helpers only use the Storage protocol and the
public API, so they work with every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import random
from collections.abc import Awaitable, Callable
from typing import Any

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker
from corral.engine.storage import FetchRequest, Storage
from corral.engine.worker import WORKER_EVENTS
from corral.sim.loop import VirtualClock, VirtualTimeLoop

QUEUE = "q"


def elapsed_ms(clock: VirtualClock) -> int:
    """Virtual milliseconds since the test's loop started (loop time 0)."""
    return clock.now_ms() - clock.epoch_ms - clock.offset_ms


def check_invariants(backend: object) -> None:
    """Call the backend's structural self-check, if it has one."""
    check = getattr(backend, "check", None)
    if check is not None:
        check()


async def write_job_field(backend: object, queue: str, job_id: str, field: str, value: str) -> None:
    """Write one raw field of a stored job, as another BullMQ process could (test-only: no
    Storage operation writes arbitrary fields)."""
    if isinstance(backend, MemoryBackend):
        backend._store(queue).jobs[job_id][field] = value
        return
    redis_backend = getattr(backend, "inner", backend)  # the real-server wrapper holds it
    if not isinstance(redis_backend, RedisBackend):
        raise TypeError(f"cannot write job fields on {backend!r}")
    loop = asyncio.get_running_loop()
    # Real I/O on a virtual-time loop: hold virtual time still until the reply is in (else the
    # client's read timeout, counted in loop time, would fire at once).
    hold = loop.external_work() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
    with hold:
        await redis_backend.client.hset(redis_backend.keys(queue).job(job_id), field, value)


async def dead_owner_takes(backend: Storage, clock: VirtualClock, token: str, lock_ms: int) -> str:
    """Fetch the next job under ``token`` and abandon it (a crashed worker); return its id."""
    result = await backend.fetch_next(QUEUE, FetchRequest(token, lock_ms), clock.now_ms())
    assert result.job is not None
    return result.job.job_id


async def stored_job(queue: Queue, job_id: str) -> Job:
    """The job as stored now (fails the test if it does not exist)."""
    job = await queue.get_job(job_id)
    assert job is not None, f"job {job_id} does not exist"
    return job


def counters(job: Job) -> tuple[int, int, int]:
    """``(stalled_counter, attempts_made, attempts_started)`` of a job."""
    return job.stalled_counter, job.attempts_made, job.attempts_started


async def start_worker(
    backend: Storage,
    processor: Callable[..., Any],
    clock: VirtualClock,
    *,
    seed: int = 1,
    queue: str = QUEUE,
    recorder: Recorder | None = None,
    **options: Any,
) -> tuple[Worker, asyncio.Task[None]]:
    """Build a Worker on ``queue`` and start ``run()`` as a task; return both.

    Each worker of one test needs its own ``seed``: the worker id (and so every lock token) is
    drawn from the seeded generator, so two workers with the same seed share tokens. The
    ``recorder`` (if any) is attached before the worker starts. Yields to the loop (no virtual
    time passes) until the worker's first stalled check and first fetch have run.
    """
    worker = Worker(queue, processor, backend, clock=clock, rng=random.Random(seed), **options)
    if recorder is not None:
        recorder.attach(worker)
    task = asyncio.create_task(worker.run())
    for _ in range(3):  # run() starts, then its timers and slots take their first steps
        await asyncio.sleep(0)
    return worker, task


async def stop_worker(
    worker: Worker, task: asyncio.Task[None], *, force: bool = False, timeout_s: float = 600.0
) -> None:
    """Close the worker and wait for its ``run()`` task; re-raises what ``run()`` raised.

    Raises:
        AssertionError: if a graceful close has not finished after ``timeout_s`` virtual seconds
            (a processor that never returns); the worker is then closed with force.
    """
    try:
        await asyncio.wait_for(asyncio.shield(worker.close(force=force)), timeout_s)
    except TimeoutError:
        await worker.close(force=True)
        await task
        raise AssertionError(f"close(force={force}) did not finish in {timeout_s} s") from None
    await task


class Flaky:
    """An async processor that raises ``error("fail <n>")`` on its first ``fails`` calls and then
    returns ``result``; ``starts`` holds the virtual start time of every call."""

    def __init__(
        self, clock: VirtualClock, fails: int, result: Any = "ok", error: type = ValueError
    ):
        self.clock, self.fails, self.result, self.error = clock, fails, result, error
        self.starts: list[int] = []

    async def __call__(self, job: Job) -> Any:
        self.starts.append(elapsed_ms(self.clock))
        if len(self.starts) <= self.fails:
            raise self.error(f"fail {len(self.starts)}")
        return self.result


async def run_one_job(
    backend: Storage, clock: VirtualClock, processor: Any, worker_options: Any = None, **opts: Any
) -> tuple[Job, Recorder]:
    """Add one job with ``opts``, run a worker until the job is completed or failed, and return
    the stored job and the worker's events."""
    queue = Queue(QUEUE, backend, clock=clock)
    added = await queue.add("j", None, **opts)
    rec = Recorder(clock)
    worker, task = await start_worker(
        backend, processor, clock, recorder=rec, **(worker_options or {})
    )

    async def finished() -> bool:
        return await queue.get_job_state(added.id) in ("completed", "failed")

    await wait_for(finished, timeout_s=3600, what="the job to finish")
    await stop_worker(worker, task)
    job = await stored_job(queue, added.id)
    check_invariants(backend)
    return job, rec


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 120.0,
    step_s: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` (sync or async) every ``step_s`` of virtual time until it is true.

    Raises:
        AssertionError: if it is still false after ``timeout_s`` virtual seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} virtual s waiting for {what}")
        await asyncio.sleep(step_s)


@dataclasses.dataclass(frozen=True)
class Event:
    """One emitted worker event: its name, when (virtual ms since start) and its arguments."""

    name: str
    at: int
    args: tuple[Any, ...]


class Recorder:
    """Records the events of one or more workers with their virtual timestamps."""

    def __init__(self, clock: VirtualClock, *workers: Worker, events: set[str] | None = None):
        self.clock = clock
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        for worker in workers:
            self.attach(worker, events)

    def attach(self, worker: Worker, events: set[str] | None = None) -> None:
        """Record ``events`` (all worker events by default) of ``worker``."""
        for name in sorted(events or WORKER_EVENTS):
            worker.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.events.append(Event(name, elapsed_ms(self.clock), args))
            self._changed.set()

        return record

    def of(self, name: str) -> list[Event]:
        """The recorded events called ``name``, oldest first."""
        return [event for event in self.events if event.name == name]

    def names(self, *, ignore: frozenset[str] = frozenset()) -> list[str]:
        """The names of the recorded events in order, without those in ``ignore``."""
        return [event.name for event in self.events if event.name not in ignore]

    async def wait(self, name: str, count: int = 1, timeout_s: float = 600.0) -> Event:
        """Wait (in virtual time) until ``count`` events called ``name`` were recorded; return
        the ``count``-th one.

        Raises:
            AssertionError: on timeout, listing what was recorded.
        """

        async def arrived() -> None:
            while len(self.of(name)) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(arrived(), timeout_s)
        except TimeoutError:
            seen = [(e.name, e.at) for e in self.events]
            raise AssertionError(f"no {count}x {name!r} within {timeout_s} s; saw {seen}") from None
        return self.of(name)[count - 1]


@dataclasses.dataclass(frozen=True)
class Call:
    """One storage call made through a :class:`StorageSpy`."""

    method: str
    at: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any


class StorageSpy:
    """A thin Storage that delegates to ``inner`` and records every call (when, with what, and
    what came back). ``delays`` maps a method name to virtual seconds to wait before forwarding
    the call, to simulate a slow link to the store."""

    def __init__(self, inner: Storage, clock: VirtualClock) -> None:
        self.inner = inner
        self.clock = clock
        self.calls: list[Call] = []
        self.delays: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            delay = self.delays.get(name)
            if delay:
                await asyncio.sleep(delay)
            result = await target(*args, **kwargs)
            self.calls.append(Call(name, elapsed_ms(self.clock), args, kwargs, result))
            return result

        return call

    def of(self, method: str) -> list[Call]:
        """The recorded calls of ``method``, oldest first."""
        return [call for call in self.calls if call.method == method]
