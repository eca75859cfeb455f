"""corral's pytest plugin: test your job code on the memory backend, in virtual time.

Installed with corral and loaded by pytest through the ``pytest11`` entry point; nothing to
configure. It provides:

Fixtures (all per test, all prefixed ``corral_`` so they cannot clash with yours):

- ``corral_loop``: a fresh :class:`~corral.sim.loop.VirtualTimeLoop` (asyncio with virtual
  time: ``asyncio.sleep(3600)`` returns at once, one virtual hour later).
- ``corral_clock``: that loop's :class:`~corral.sim.loop.VirtualClock` (ms since the epoch).
- ``corral_backend``: a :class:`~corral.backends.memory.MemoryBackend` on that clock.
- ``corral_queue``: a :class:`~corral.engine.queue.Queue` on that backend and clock, named by
  the ``corral_queue_name`` fixture (``"test"``; override it to change the name).
- ``corral_drain``: ``await corral_drain(processor, **worker_options)`` runs a Worker on
  ``corral_queue`` until the queue is empty and returns a :class:`DrainResult`.
- ``corral_run``: ``corral_run(coroutine)`` runs a coroutine to completion on ``corral_loop``,
  from a plain ``def`` test or fixture; call it as often as you like.

Async tests: mark them ``@pytest.mark.corral`` (or a module with ``pytestmark =
pytest.mark.corral``) and they run on ``corral_loop``. Only marked tests are touched, so the
plugin coexists with pytest-asyncio and anyio in their default (strict) modes; under
pytest-asyncio's *auto* mode, write plain ``def`` tests that call ``corral_run`` (a test claimed
by both is refused with a message saying so).

:func:`drain` is also usable on its own, on any event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Final, Protocol, TypeVar

import pytest

from corral.backends.memory import MemoryBackend
from corral.engine.job import Duration, Job, duration_ms
from corral.engine.queue import Queue
from corral.engine.worker import Processor, Worker
from corral.sim.loop import VirtualClock, VirtualTimeLoop

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_MS",
    "DrainResult",
    "DrainTimeoutError",
    "Drainer",
    "drain",
]

T = TypeVar("T")

DEFAULT_DRAIN_TIMEOUT_MS: Final = 24 * 3_600_000
"""How long :func:`drain` waits, in the loop's (virtual) time, for the queue to empty."""

# States a job is in while a worker still has something to do with it.
_PENDING_STATES: Final = ("waiting", "prioritized", "delayed", "active")
# drain() looks again this often even when no worker event says something changed.
_RECHECK_S: Final = 60.0


class DrainTimeoutError(AssertionError):
    """The queue still had unfinished jobs when :func:`drain`'s timeout ran out."""


@dataclasses.dataclass
class DrainResult:
    """What happened while :func:`drain` ran a queue empty.

    Attributes:
        completed: jobs that completed, in completion order (``job.return_value`` holds the
            result, ``job.attempts_made`` the tries it took).
        failed: jobs that failed for good (attempts used up, ``UnrecoverableError``, or
            stalled too often), in the order they failed; ``job.failed_reason`` says why.
        attempt_failures: every failed attempt, retried or not, as ``(job, exception)``: the
            job as it was after that attempt, and what the processor raised.
        stalled: ids of jobs recovered as stalled, once per recovery.
        errors: the worker's ``error`` events as ``(error, job_or_none)``: storage errors, lost
            locks, failing event handlers. Empty in a healthy run.
        started_ms: the queue clock's reading when the drain began.
        finished_ms: its reading when the queue was found empty.
    """

    completed: list[Job] = dataclasses.field(default_factory=list)
    failed: list[Job] = dataclasses.field(default_factory=list)
    attempt_failures: list[tuple[Job, BaseException]] = dataclasses.field(default_factory=list)
    stalled: list[str] = dataclasses.field(default_factory=list)
    errors: list[tuple[BaseException, Job | None]] = dataclasses.field(default_factory=list)
    started_ms: int = 0
    finished_ms: int = 0

    @property
    def elapsed_ms(self) -> int:
        """Clock time the drain took (virtual milliseconds on a virtual-time loop)."""
        return self.finished_ms - self.started_ms

    @property
    def results(self) -> dict[str, Any]:
        """Return values of the completed jobs, by job id."""
        return {job.id: job.return_value for job in self.completed}


async def drain(
    queue: Queue,
    processor: Processor,
    *,
    timeout: Duration = DEFAULT_DRAIN_TIMEOUT_MS,
    **worker_options: Any,
) -> DrainResult:
    """Run a Worker on ``queue`` until no job is waiting, prioritized, delayed or active.

    The worker is an ordinary :class:`~corral.engine.worker.Worker` on the queue's backend and
    clock; it waits out delays and retry backoffs, recovers stalled jobs and is closed before
    this returns. On a :class:`~corral.sim.loop.VirtualTimeLoop` every wait is a jump in virtual
    time, so hours of backoff take no real time, and a run is reproducible: the worker's
    randomness (lock tokens, backoff jitter) is seeded with 0 unless you pass ``rng``.

    Args:
        queue: the queue to empty.
        processor: the job function, ``async def`` or plain ``def``, as for a Worker.
        timeout: the longest (virtual) time to wait, in ms or as a timedelta; one day by
            default.
        worker_options: keyword arguments for the Worker (``concurrency``, ``lock_duration``,
            ``stalled_interval``, ``max_stalled_count``, ``backoff_strategy``, ...).

    Returns:
        The completed and failed jobs, every failed attempt, stalls and worker errors.

    Raises:
        DrainTimeoutError: jobs were still unfinished after ``timeout``; the message gives the
            counts and says whether the queue is paused. The worker is closed with force first.
    """
    loop = asyncio.get_running_loop()
    timeout_s = duration_ms(timeout, "timeout", allow_zero=False) / 1000
    worker_options.setdefault("clock", queue.clock)
    worker_options.setdefault("rng", random.Random(0))
    # Idle waits end early anyway when a job is added or comes due; a long one just saves the
    # loop from waking every few seconds of virtual time for nothing.
    worker_options.setdefault("drain_delay", 3_600_000)
    worker = Worker(queue.name, processor, queue.backend, **worker_options)

    result = DrainResult(started_ms=queue.clock.now_ms())
    last_failure: dict[str, Job] = {}
    changed = asyncio.Event()

    def on_completed(job: Job, _value: Any) -> None:
        result.completed.append(job)
        changed.set()

    def on_failed(job: Job, error: BaseException) -> None:
        result.attempt_failures.append((job, error))
        last_failure.pop(job.id, None)  # keep the dict in order of each job's latest failure
        last_failure[job.id] = job
        changed.set()

    def on_stalled(job_id: str, _previous: str) -> None:
        result.stalled.append(job_id)
        changed.set()

    def on_error(error: BaseException, job: Job | None) -> None:
        result.errors.append((error, job))
        changed.set()

    worker.on("completed", on_completed)
    worker.on("failed", on_failed)
    worker.on("stalled", on_stalled)
    worker.on("error", on_error)
    worker.on("drained", lambda: changed.set())

    runner = asyncio.create_task(worker.run(), name=f"corral-drain-{queue.name}")
    deadline = loop.time() + timeout_s
    finished = False
    try:
        while True:
            changed.clear()
            counts = await queue.get_job_counts(*_PENDING_STATES)
            if not any(counts.values()):
                break
            if runner.done():
                runner.result()  # the worker died: raise why
                raise RuntimeError("the worker stopped before the queue was empty")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DrainTimeoutError(await _timeout_message(queue, counts, timeout_s))
            woken = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait(
                    {woken, runner},
                    timeout=min(remaining, _RECHECK_S),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                woken.cancel()
        finished = True
    finally:
        if not runner.done():
            await worker.close(force=not finished)
        if finished:
            await runner
        else:  # already failing: do not hide that error behind the worker's
            await asyncio.gather(runner, return_exceptions=True)
    result.finished_ms = queue.clock.now_ms()
    completed = {job.id for job in result.completed}
    result.failed = [job for job_id, job in last_failure.items() if job_id not in completed]
    return result


async def _timeout_message(queue: Queue, counts: dict[str, int], timeout_s: float) -> str:
    pending = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    paused = await queue.is_paused()
    hint = (
        "the queue is paused"
        if paused
        else "is a processor waiting for something that never happens?"
    )
    return (
        f"queue {queue.name!r} still has unfinished jobs ({pending}) after "
        f"{timeout_s:g} s of loop time; {hint}"
    )


# ---------------------------------------------------------------------------- the pytest plugin


class Drainer(Protocol):
    """The ``corral_drain`` fixture: :func:`drain` with ``corral_queue`` as the default queue."""

    def __call__(
        self,
        processor: Processor,
        *,
        queue: Queue | None = None,
        timeout: Duration = DEFAULT_DRAIN_TIMEOUT_MS,
        **worker_options: Any,
    ) -> Coroutine[Any, Any, DrainResult]: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "corral: run this async test on the corral_loop virtual-time event loop "
        "(corral's pytest plugin)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test marked ``corral`` the loop it is to run on."""
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and item.get_closest_marker("corral") is not None
            and "corral_loop" not in item.fixturenames
        ):
            item.fixturenames.append("corral_loop")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (
        isinstance(item, pytest.Function)
        and item.get_closest_marker("corral") is not None
        and item.get_closest_marker("asyncio") is not None
    ):
        pytest.fail(
            f"{item.nodeid} is marked both 'corral' and 'asyncio' (pytest-asyncio's auto mode "
            "marks every async test): only one event loop can run it. Drop one mark, or write "
            "a plain def test that calls corral_run(...)",
            pytrace=False,
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests marked ``corral`` on their ``corral_loop``; leave others alone."""
    if pyfuncitem.get_closest_marker("corral") is None:
        return None
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None  # a plain test in a marked module or class: pytest runs it as usual
    loop = pyfuncitem.funcargs["corral_loop"]
    assert isinstance(loop, VirtualTimeLoop)
    funcargs = pyfuncitem.funcargs
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    loop.run_until_complete(pyfuncitem.obj(**kwargs))
    return True


@pytest.fixture
def corral_loop() -> Iterator[VirtualTimeLoop]:
    """A fresh virtual-time event loop for this test; left-over tasks are cancelled and the
    loop closed afterwards (as ``asyncio.run`` does)."""
    loop = VirtualTimeLoop()
    try:
        yield loop
    finally:
        _shut_down(loop)


def _shut_down(loop: VirtualTimeLoop) -> None:
    if loop.is_closed():
        return
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


@pytest.fixture
def corral_clock(corral_loop: VirtualTimeLoop) -> VirtualClock:
    """The virtual clock of ``corral_loop``: ms since the epoch, starting at 1_700_000_000_000
    and moving only with the loop's virtual time."""
    return corral_loop.clock


@pytest.fixture
def corral_backend(corral_clock: VirtualClock) -> MemoryBackend:
    """An empty in-memory backend whose lock TTLs follow the virtual clock."""
    return MemoryBackend(clock=corral_clock)


@pytest.fixture
def corral_queue_name() -> str:
    """The name of ``corral_queue``; override this fixture to choose another."""
    return "test"


@pytest.fixture
def corral_queue(
    corral_queue_name: str, corral_backend: MemoryBackend, corral_clock: VirtualClock
) -> Queue:
    """A Queue on ``corral_backend`` that stamps jobs with the virtual clock."""
    return Queue(corral_queue_name, corral_backend, clock=corral_clock)


@pytest.fixture
def corral_run(corral_loop: VirtualTimeLoop) -> Callable[[Awaitable[T]], T]:
    """``corral_run(coroutine)``: run it on ``corral_loop`` and return its result (for plain
    ``def`` tests and fixtures; not from inside a running loop)."""

    def run(awaitable: Awaitable[T]) -> T:
        return corral_loop.run_until_complete(awaitable)

    return run


@pytest.fixture
def corral_drain(corral_queue: Queue) -> Drainer:
    """``await corral_drain(processor, queue=None, timeout=..., **worker_options)``: run a
    Worker until the queue (``corral_queue`` by default) is empty; see :func:`drain`."""

    def drain_queue(
        processor: Processor,
        *,
        queue: Queue | None = None,
        timeout: Duration = DEFAULT_DRAIN_TIMEOUT_MS,
        **worker_options: Any,
    ) -> Coroutine[Any, Any, DrainResult]:
        return drain(queue or corral_queue, processor, timeout=timeout, **worker_options)

    return drain_queue
