"""Manual processing with a Worker (BullMQ's "manually fetching jobs" pattern).

A Worker made without a processor (``Worker(queue, None, backend)``) runs nothing by itself: the
caller takes jobs with :meth:`ManualFetching.get_next_job` under a token of its choosing and
finishes them with ``job.move_to_completed(result, token)`` / ``job.move_to_failed(error,
token)`` (the normal retry decision applies), extending locks with ``job.extend_lock``. The
stalled checker runs only when asked (:meth:`ManualFetching.start_stalled_check_timer`), and
locks are not renewed for the caller, as in BullMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from corral.engine.errors import InvalidArgumentError
from corral.engine.job import Job
from corral.engine.scheduler_iterations import schedule_next
from corral.engine.storage import Fetched, FetchRequest, Outcome

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.events import EventEmitter
    from corral.engine.limits import Limiter
    from corral.engine.storage import Storage


def no_processor(job: Job) -> None:
    """The processor of a worker made without one (never called: it cannot ``run()``)."""
    raise RuntimeError(f"this worker has no processor to run job {job.id}")


class ManualFetching:
    """Manual fetching, and what a job of a worker needs of it (``JobHost``)."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Worker
        queue_name: str
        backend: Storage
        clock: Clock
        lock_duration: int
        drain_delay: int
        name: str | None
        limiter: Limiter | None
        _timers: list[asyncio.Task[None]]
        _events: EventEmitter
        _closing: bool

        def _failure(self, job: Job, error: BaseException) -> tuple[Outcome, object, object]: ...

        async def _write_progress(self, job_id: str, progress: str) -> None: ...

        async def _stalled_check_timer(self) -> None: ...

    async def get_next_job(self, token: str, *, block: bool = True) -> Job | None:
        """Take the next ready job and lock it under ``token`` for ``lock_duration`` ms;
        None when there is none (after waiting up to ``drain_delay`` ms for one when
        ``block``). Use a fresh token per job (a UUID, say). Nothing renews the lock: call
        ``job.extend_lock(token, ms)`` for long work.

        The worker's ``limiter`` applies (the activation counts in the queue's window); while
        the queue is rate limited a blocking call sleeps until the window ends, within
        ``drain_delay`` in all. A job of a job scheduler makes the scheduler's next iteration
        before it is returned (bullmq-features.md §1.6, §5.10).

        Raises:
            InvalidArgumentError: if ``token`` is not a non-empty string.
        """
        if not isinstance(token, str) or not token:
            raise InvalidArgumentError(f"token must be a non-empty string, got {token!r}")
        request = self.next_fetch(token)
        deadline = self.clock.now_ms() + self.drain_delay
        while True:
            now = self.clock.now_ms()
            result = await self.backend.fetch_next(self.queue_name, request, now)
            if result.job is not None:
                return await self.adopt(result.job)
            if not block or now >= deadline:
                return None
            timeout = deadline - now
            if result.rate_limit_ms:
                # Waiting jobs keep their marker while the window runs: sleep, not block.
                await asyncio.sleep(min(timeout, result.rate_limit_ms) / 1000)
                continue
            # A wake-up may come early (a marker for a delayed job not yet due): fetch again
            # until the deadline.
            if result.next_due_ms is not None:
                timeout = max(1, min(timeout, result.next_due_ms - now))
            await self.backend.wait_for_work(self.queue_name, timeout)

    def start_stalled_check_timer(self) -> None:
        """Run the stalled check now and then every ``stalled_interval`` (for a worker that is
        not running, e.g. one used for manual fetching), until ``close()``."""
        self._timers.append(asyncio.create_task(self._stalled_check_timer()))

    async def stop_timers(self) -> None:
        """Stop the timers :meth:`start_stalled_check_timer` started."""
        timers, self._timers[:] = list(self._timers), []
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    # ------------------------------------------------------------------ a job's host

    def failure_outcome(self, job: Job, error: BaseException) -> Outcome:
        """The worker's retry decision for a failed attempt of ``job`` (with its backoff
        strategy and randomness)."""
        return self._failure(job, error)[0]

    def next_fetch(self, token: str) -> FetchRequest:
        """The fetch that takes a job under ``token`` with this worker's lock, name and
        limiter (the same store checks as the worker's own fetches)."""
        limiter = None if self.limiter is None else self.limiter.pair
        return FetchRequest(token, self.lock_duration, self.name, limiter=limiter)

    async def adopt(self, fetched: Fetched) -> Job | None:
        """A job this worker fetched (for manual processing), once its scheduler's next
        iteration is made; None if the store could not be reached for that (the job is left
        to stall, as BullMQ's ``nextJobFromJobData`` leaves it)."""
        job = Job(self.queue_name, fetched.job_id, fetched.fields, self._write_progress)
        job.token = fetched.token
        job._host = self
        if "rjk" in fetched.fields and not await self._schedule_next(job, fetched.fields):
            return None
        return job

    async def _schedule_next(self, job: Job, fields: dict[str, str]) -> bool:
        """Make the next iteration of the scheduler ``job`` belongs to (a worker does it on
        every activation, manual or not); False if the store could not be reached while the
        job's lock held (the job is then left to stall, and whoever takes it next tries
        again). Bad stored options are reported as an ``error`` event and the job still runs."""
        try:
            return await schedule_next(
                self.backend,
                self.queue_name,
                job.id,
                fields,
                self.clock.now_ms(),
                lambda: not (self._closing or job.cancellation.is_cancelled),
            )
        except Exception as exc:
            self._events.emit("error", exc, job)
            return True
