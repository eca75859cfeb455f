"""SyncQueue: the blocking producer API, for code without an event loop.

Django and Flask views, management commands, scripts and notebooks can add and inspect jobs
without touching asyncio::

    from corral import SyncQueue

    emails = SyncQueue.from_url("emails", "redis://localhost:6379/0")
    job = emails.add("welcome", {"to": "ada@example.com"}, attempts=3)
    emails.get_job_state(job.id)  # "waiting"

Every method of :class:`~corral.engine.queue.Queue` is here with the same arguments, the same
return values and the same exceptions, but blocking. A SyncQueue may be shared by any number of
threads.

How it works: each call is submitted (``asyncio.run_coroutine_threadsafe``) to an event loop
that runs in a background thread, and the calling thread waits for the result. There is one such
thread per *backend*, shared by every SyncQueue on that backend and started by the first call,
because a Redis backend's connections belong to the loop they were opened on. When the last
SyncQueue on a backend closes, the backend is closed on that loop and the thread stops.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Never, Self, TypeVar

from corral.engine.clock import Clock
from corral.engine.errors import ClosedError
from corral.engine.job import Duration, Job
from corral.engine.queue import Queue
from corral.engine.states import JobState
from corral.engine.storage import StalledCheck, Storage

if TYPE_CHECKING:
    from corral.backends.redis import RedisBackend

__all__ = ["SyncQueue"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, shared by the SyncQueues of one backend."""

    def __init__(self, backend: Storage) -> None:
        self.backend = backend
        self.users = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running the loop (None until the first call)."""
        return self._thread

    @property
    def running_here(self) -> bool:
        """Whether the loop thread was started, in this process."""
        return self._loop is not None and self._pid == os.getpid()

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run,
                    args=(loop, ready),
                    name=f"corral-sync {self.backend!r}",
                    # A daemon: an application that never closes its queues must still exit.
                    daemon=True,
                )
                thread.start()
                ready.wait()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            elif self._pid != os.getpid():
                raise RuntimeError(
                    f"this SyncQueue's event-loop thread was started in process {self._pid}, "
                    f"and this process ({os.getpid()}) is a fork of it: threads do not survive "
                    "fork() and the backend's connections belong to the parent. Create the "
                    "SyncQueue (and its backend) in the child, after forking (with gunicorn: "
                    "in post_fork, or without --preload)"
                )
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine ``make()`` on the loop and wait for its result or exception."""
        loop = self._started_loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a SyncQueue was called from its own event-loop thread, where waiting for the "
                "result would deadlock; use an async Queue there"
            )
        future = asyncio.run_coroutine_threadsafe(make(), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt and friends: do not leave the call running
            raise

    def stop(self) -> None:
        """Close the backend on the loop, then stop the loop and its thread."""
        if not self.running_here:
            return  # never started, or started by the process this one was forked from
        try:
            self.call(self.backend.close)
        finally:
            loop, thread = self._loop, self._thread
            assert loop is not None
            assert thread is not None
            loop.call_soon_threadsafe(loop.stop)
            thread.join()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


# One loop thread per backend (by identity; the entry keeps the backend alive, so an id is never
# reused while it is registered).
_loops: dict[int, _LoopThread] = {}
_loops_lock = threading.Lock()


def _acquire(backend: Storage) -> _LoopThread:
    with _loops_lock:
        shared = _loops.get(id(backend))
        if shared is None:
            shared = _loops[id(backend)] = _LoopThread(backend)
        shared.users += 1
        return shared


def _release(shared: _LoopThread) -> None:
    # Held while the backend closes, so that a SyncQueue made meanwhile on the same backend
    # waits and then starts a fresh thread, instead of joining one that is stopping.
    with _loops_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _loops[id(shared.backend)]
        shared.stop()


class SyncQueue:
    """A blocking :class:`~corral.engine.queue.Queue`, safe to call from many threads at once.

    Use it where there is no event loop (Django, Flask, scripts); in async code use
    :class:`~corral.engine.queue.Queue` itself. Methods, arguments, results and exceptions are
    those of Queue (``InvalidArgumentError`` for bad input, ``CorralError`` for a locked job,
    ``RedisUnavailableError`` for an unreachable server, ...), raised unchanged in the calling
    thread.

    Calls run on an event loop in a background thread, one per backend (shared by all the
    SyncQueues on that backend, started by the first call). Closing the last SyncQueue on a
    backend also closes the backend (its connections live on that thread's loop) and stops the
    thread; a Redis backend closed so stays closed (queues made on it later refuse to work). So
    give a SyncQueue a backend of its own, or one shared only with other SyncQueues:
    a Redis backend cannot serve both a SyncQueue and async code on another loop (a
    :class:`~corral.backends.memory.MemoryBackend` can, since it is thread-safe and holds no
    connections; closing it does nothing).

    The jobs returned are ordinary :class:`~corral.engine.job.Job` records; report progress on
    them with ``job.update_progress_sync(value)``.

    Make SyncQueues once (at startup, or per script) and close them (or use ``with``): a
    SyncQueue never closed keeps its backend and thread until the process exits, which is right
    for an application-wide queue and a leak for one made per request.

    After a ``fork()``, a SyncQueue used in the parent refuses to work in the child (its thread
    is gone there): create SyncQueues after forking, e.g. in gunicorn's ``post_fork``.

    Args:
        name: the queue's name (no ``:``).
        backend: where the queue is stored; see :meth:`from_url` for Redis in one step.
        clock: source of the timestamps written into jobs; the system clock by default.

    Example::

        with SyncQueue("emails", MemoryBackend()) as emails:
            emails.add("welcome", {"to": "ada@example.com"})
    """

    def __init__(self, name: str, backend: Storage, *, clock: Clock | None = None) -> None:
        self._queue = Queue(name, backend, clock=clock)
        self._shared: _LoopThread | None = _acquire(backend)
        self._state = threading.Condition()
        self._in_flight = 0

    @classmethod
    def from_url(
        cls,
        name: str,
        url: str,
        *,
        prefix: str = "bull",
        clock: Clock | None = None,
        **options: Any,
    ) -> SyncQueue:
        """A SyncQueue on a new :class:`~corral.backends.redis.RedisBackend` for ``url``
        (``RedisBackend.from_url(url, prefix, **options)``), closed with the queue.

        Needs the ``redis`` extra. Connecting is lazy: an unreachable server raises
        ``RedisUnavailableError`` on the first call.
        """
        from corral.backends.redis import RedisBackend

        backend: RedisBackend = RedisBackend.from_url(url, prefix, **options)
        return cls(name, backend, clock=clock)

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._queue.name

    @property
    def backend(self) -> Storage:
        """The queue's storage."""
        return self._queue.backend

    @property
    def clock(self) -> Clock:
        """The clock whose readings are written into jobs."""
        return self._queue.clock

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._shared is None

    def __repr__(self) -> str:
        return f"<SyncQueue {self.name!r}{' closed' if self.closed else ''}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        with self._state:
            shared = self._shared
            if shared is None:
                raise ClosedError(f"SyncQueue {self.name!r} is closed")
            self._in_flight += 1
        try:
            return shared.call(make)
        finally:
            with self._state:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._state.notify_all()

    async def _bound(self, job: Job) -> Job:
        job.bind_loop(asyncio.get_running_loop())  # for job.update_progress_sync
        return job

    # ------------------------------------------------------------------ adding

    def add(
        self,
        name: str,
        data: Any = None,
        *,
        delay: Duration = 0,
        priority: int = 0,
        attempts: int = 1,
        backoff: Any = None,
        job_id: str | None = None,
        remove_on_complete: bool | int | Mapping[str, int] = False,
        remove_on_fail: bool | int | Mapping[str, int] = False,
        lifo: bool = False,
        **unknown: Never,
    ) -> Job:
        """Add one job and return it (see :meth:`Queue.add <corral.engine.queue.Queue.add>`).

        Raises:
            InvalidArgumentError: on invalid options or data that JSON cannot encode; nothing
                is stored then (an unknown option: ``UnknownOptionError``, which suggests the
                closest name).
        """

        async def add() -> Job:
            job = await self._queue.add(
                name,
                data,
                delay=delay,
                priority=priority,
                attempts=attempts,
                backoff=backoff,
                job_id=job_id,
                remove_on_complete=remove_on_complete,
                remove_on_fail=remove_on_fail,
                lifo=lifo,
                **unknown,
            )
            return await self._bound(job)

        return self._call(add)

    def add_bulk(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Add several jobs atomically: ``[{"name": ..., "data": ..., "opts": {...}}, ...]``
        (see :meth:`Queue.add_bulk <corral.engine.queue.Queue.add_bulk>`)."""
        entries = list(jobs)  # iterate the caller's iterable in the caller's thread

        async def add_bulk() -> list[Job]:
            return [await self._bound(job) for job in await self._queue.add_bulk(entries)]

        return self._call(add_bulk)

    # ------------------------------------------------------------------ reading

    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

        async def get_job() -> Job | None:
            job = await self._queue.get_job(job_id)
            return None if job is None else await self._bound(job)

        return self._call(get_job)

    def get_job_state(self, job_id: str) -> str:
        """One of waiting, prioritized, delayed, active, completed, failed, or unknown."""
        return self._call(lambda: self._queue.get_job_state(job_id))

    def get_job_counts(self, *states: str | JobState) -> dict[str, int]:
        """Number of jobs per state (all states when none are named)."""
        return self._call(lambda: self._queue.get_job_counts(*states))

    def get_jobs(
        self,
        states: str | JobState | Sequence[str | JobState] | None = None,
        start: int = 0,
        end: int = -1,
        *,
        asc: bool = False,
    ) -> list[Job]:
        """Jobs in the given states; the range applies to each state, newest first by default
        (see :meth:`Queue.get_jobs <corral.engine.queue.Queue.get_jobs>`)."""

        async def get_jobs() -> list[Job]:
            found = await self._queue.get_jobs(states, start, end, asc=asc)
            return [await self._bound(job) for job in found]

        return self._call(get_jobs)

    def is_paused(self) -> bool:
        """Whether the queue is paused."""
        return self._call(self._queue.is_paused)

    def is_job_stalled(self, job_id: str) -> bool:
        """True if the job is active but holds no lock (see :meth:`Queue.is_job_stalled
        <corral.engine.queue.Queue.is_job_stalled>`)."""
        return self._call(lambda: self._queue.is_job_stalled(job_id))

    # ------------------------------------------------------------------ administration

    def pause(self) -> None:
        """Stop workers from taking jobs (adds still land in wait)."""
        self._call(self._queue.pause)

    def resume(self) -> None:
        """Let workers take jobs again and wake them."""
        self._call(self._queue.resume)

    def remove(self, job_id: str) -> bool:
        """Delete a job; return False if it did not exist.

        Raises:
            CorralError: if the job is locked by a worker (it is being processed).
        """
        return self._call(lambda: self._queue.remove(job_id))

    def check_stalled(
        self, max_stalled_count: int = 1, stalled_interval: Duration = 30_000
    ) -> StalledCheck:
        """Run one stalled check now (subject to the shared throttle); see
        :meth:`Queue.check_stalled <corral.engine.queue.Queue.check_stalled>`."""
        return self._call(lambda: self._queue.check_stalled(max_stalled_count, stalled_interval))

    def close(self) -> None:
        """Wait for this queue's calls in flight, then release it; idempotent.

        Closing the last SyncQueue on a backend closes the backend and stops the background
        thread. Calls after closing raise :class:`~corral.engine.errors.ClosedError` (a
        ``RuntimeError``), as do the calls of any queue on a Redis backend closed so.

        Raises:
            RuntimeError: if called from the background thread itself.
        """
        with self._state:
            shared = self._shared
            if shared is None:
                return
            if threading.current_thread() is shared.thread:
                raise RuntimeError(
                    f"SyncQueue {self.name!r} cannot be closed from its own event-loop thread"
                )
            self._shared = None
            while self._in_flight:
                self._state.wait()
        try:
            if shared.running_here:
                shared.call(self._queue.close)
        finally:
            _release(shared)
