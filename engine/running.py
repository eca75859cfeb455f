"""What a worker runs: the processor, how a run is started, and the record of a running job.

A processor is an ``async def`` (awaited on the worker's loop) or a plain ``def`` (run in a
thread pool, never on the loop). A :class:`ProcessorRunner` runs it away from the worker
instead (``corral.sandbox`` runs it in child processes). :class:`ProcessorCalls` starts a run
the right one of these ways; :class:`Running` is the worker's record of one job it runs, read by
lock renewal, cancellation and shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from corral.engine.job import Job

Processor = Callable[[Job], Any]


class ProcessorRunner(Protocol):
    """Runs jobs' processors away from the worker's event loop (``corral.sandbox`` has one).

    ``run`` returns the processor's result or raises its error; a cancelled ``run`` (a forced
    close) must stop the processor. The worker calls ``close`` once when it stops, with
    ``force=True`` after a forced close.
    """

    async def run(self, job: Job) -> Any:
        """Run the processor on ``job``."""
        ...

    async def close(self, force: bool = False) -> None:
        """Release the runner's resources (its processes)."""
        ...


class ProcessorCalls:
    """Starts the processor's runs for a worker, and releases what they used when it stops.

    Args:
        processor: the worker's processor.
        runner: runs the processor instead, if given (the worker's ``processor_runner``).
        executor: thread pool for a plain-function processor; by default one of ``threads``
            threads is made on first use, and shut down by :meth:`close`.
        threads: the default pool's size (the worker's concurrency).
        thread_name_prefix: the default pool's thread names.
    """

    __slots__ = (
        "_async_processor",
        "_executor",
        "_owns_executor",
        "_processor",
        "_runner",
        "_thread_name_prefix",
        "_threads",
        "direct",
        "loop",
    )

    def __init__(
        self,
        processor: Processor,
        runner: ProcessorRunner | None,
        executor: concurrent.futures.Executor | None,
        *,
        threads: int,
        thread_name_prefix: str,
    ) -> None:
        self._processor = processor
        self._runner = runner
        self._executor = executor
        self._owns_executor = executor is None
        self._threads = threads
        self._thread_name_prefix = thread_name_prefix
        self._async_processor = (
            cast(Callable[[Job], Awaitable[Any]], processor)
            if is_async_callable(processor)
            else None
        )
        #: The processor to await directly, when there is no runner to go through: the worker
        #: calls it itself, one call less per job than :meth:`start`.
        self.direct = self._async_processor if runner is None else None
        #: The worker's event loop, set when it starts (threads hand their results back to it).
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, job: Job) -> Awaitable[Any]:
        """The processor's run on ``job``, to await (not a coroutine itself: one frame less
        per job)."""
        if self._runner is not None:
            return self._runner.run(job)
        if self._async_processor is not None:
            return self._async_processor(job)
        return self._in_thread(job)

    def _in_thread(self, job: Job) -> Awaitable[Any]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix=self._thread_name_prefix
            )
        loop = self.loop
        assert loop is not None
        job.cancellation  # noqa: B018 - made here, on the loop, before a thread can race to make it
        return loop.run_in_executor(self._executor, self._processor, job)

    async def close(self, force: bool) -> None:
        """Shut down the thread pool made here and close the runner (``force``: after a forced
        close); raises what closing the runner raised."""
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._runner is not None:
            await self._runner.close(force=force)


@dataclasses.dataclass(eq=False, slots=True)
class Running:
    """A job this worker is running, tracked for lock renewal and cancellation."""

    job: Job
    token: str
    last_renewed: int
    slot: asyncio.Task[None]  # the slot running it (a forced close cancels it)
    # False once the run is finishing (its lock is about to go) or a renewal found the lock
    # gone (it never comes back): renewing it then could only fail.
    renew: bool = True
    # True while its outcome is being stored: a forced close lets that call end (cancelling it
    # mid-flight would lose the job it fetches in the same step) and gives that job back.
    finishing: bool = False
    # The longest the event loop was blocked while it ran (ms; see loop_watch).
    blocked_ms: int = 0


def is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` returns an awaitable to await on the loop (an ``async def``,
    or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - objects with an async __call__
    )
