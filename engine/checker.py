"""StalledChecker: stall recovery for a queue, without processing any job.

BullMQ 1.x had a ``QueueScheduler`` and the Elixir port has a ``StalledChecker``: a process whose
only job is to run the stalled check, so that stall recovery goes on while every worker is paused,
busy or scaled to zero. Workers run the same check (they own a StalledChecker); the store's
``stalled-check`` throttle makes sure that a checker beside workers never doubles the work.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from corral.engine.clock import Clock, SystemClock
from corral.engine.errors import STALLED_LIMIT_REASON, InvalidArgumentError, UnrecoverableError
from corral.engine.events import EventEmitter, Handler
from corral.engine.job import Duration, Job, duration_ms, validate_queue_name
from corral.engine.storage import StalledCheck, Storage

#: Events a StalledChecker emits.
CHECKER_EVENTS: Final = frozenset({"stalled", "failed", "error", "closed"})


class StalledChecker:
    """Recovers the stalled jobs of one queue, once per ``stalled_interval``.

    Args:
        queue_name: the queue to watch.
        backend: the queue's storage.
        stalled_interval: ms between checks (also the shared throttle's TTL).
        max_stalled_count: stalls a job may survive; one more fails it.
        clock: timestamps source (system clock by default).
        events: an emitter to report to instead of the checker's own (a Worker passes its own,
            so that its ``stalled`` and ``failed`` listeners hear the checks it runs).
    """

    def __init__(
        self,
        queue_name: str,
        backend: Storage,
        *,
        stalled_interval: Duration = 30_000,
        max_stalled_count: int = 1,
        clock: Clock | None = None,
        events: EventEmitter | None = None,
    ) -> None:
        self.queue_name = validate_queue_name(queue_name)
        if (
            not isinstance(max_stalled_count, int)
            or isinstance(max_stalled_count, bool)
            or max_stalled_count < 0
        ):
            raise InvalidArgumentError(f"max_stalled_count must be >= 0: {max_stalled_count!r}")
        self.backend = backend
        self.stalled_interval = duration_ms(stalled_interval, "stalled_interval", allow_zero=False)
        self.max_stalled_count = max_stalled_count
        self.clock: Clock = clock or SystemClock()
        self._events = events if events is not None else EventEmitter(CHECKER_EVENTS)
        self._closing: asyncio.Event | None = None
        self._running = False

    def on(self, event: str, handler: Handler) -> Handler:
        """Register a handler: ``stalled(job_id, previous_state)``, ``failed(job, error)``
        (``job`` is None if retention deleted it), ``error(error, None)``, ``closed()``."""
        return self._events.on(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Unregister a handler."""
        self._events.off(event, handler)

    async def check(self) -> StalledCheck:
        """Run one check now (subject to the shared throttle) and emit its events.

        Returns:
            The same result as ``Queue.check_stalled``: ``.recovered``, ``.failed``, ``.ran``.
        """
        result = await self.backend.check_stalled(
            self.queue_name,
            max_stalled_count=self.max_stalled_count,
            stalled_interval=self.stalled_interval,
            now=self.clock.now_ms(),
        )
        for job_id in result.recovered:
            self._events.emit("stalled", job_id, "active")
        # As BullMQ 6 does, a job over the stall limit is reported stalled too, before failed.
        listening = self._events.has_listeners("failed")
        for job_id in result.failed:
            self._events.emit("stalled", job_id, "active")
            if listening:
                fields = await self.backend.get_job(self.queue_name, job_id)
                job = None if fields is None else Job(self.queue_name, job_id, fields)
                self._events.emit("failed", job, UnrecoverableError(STALLED_LIMIT_REASON))
        return result

    async def run(self) -> None:
        """Check at once, then every ``stalled_interval``, until :meth:`close`.

        A failing check (an unreachable store) is reported as ``error`` and retried at the next
        interval.
        """
        if self._running:
            raise RuntimeError("this checker is already running")
        self._running = True
        self._closing = closing = asyncio.Event()
        try:
            while not closing.is_set():
                try:
                    await self.check()
                except Exception as exc:
                    self._events.emit("error", exc, None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), self.stalled_interval / 1000)
        finally:
            self._running = False
            self._events.emit("closed")

    async def close(self) -> None:
        """Stop :meth:`run` after the check in progress, if any."""
        if self._closing is not None:
            self._closing.set()
