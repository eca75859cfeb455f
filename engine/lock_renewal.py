"""Keeping the locks of a worker's running jobs alive: one timer, one batch call per tick.

The timer ticks every half ``lock_renew_time`` and renews, in one ``extend_locks`` call, every
lock not renewed for half a period, so a lock is re-armed at least once per ``lock_renew_time``.
A renewal that finds a lock gone (it expired, or a stalled check recovered the job) stops
renewing it and signals the run's cancellation token: the processor may stop early, since its
finish will be refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from corral.engine.clock import Clock
from corral.engine.errors import CorralError, lock_renewal_error_text
from corral.engine.events import EventEmitter
from corral.engine.loop_watch import after_block
from corral.engine.policy import lock_renewal_due
from corral.engine.running import Running
from corral.engine.storage import Storage


class LockRenewer:
    """Renews the locks of the jobs a worker runs.

    Args:
        queue_name: the worker's queue.
        backend: the queue's storage.
        running: the worker's running jobs by lock token (the live dict, read on every tick).
        lock_duration: the TTL a renewal sets, in ms.
        lock_renew_time: the renewal period in ms.
        clock: timestamps source.
        events: the worker's events (``error``, ``locks_renewed``, ``lock_renewal_failed``).
        store_answered: told after every renewal call the outcome of the write: None if the
            store took it, else the error it raised (the worker counts refused writes).
    """

    __slots__ = (
        "_backend",
        "_clock",
        "_events",
        "_lock_duration",
        "_lock_renew_time",
        "_queue_name",
        "_running",
        "_store_answered",
    )

    def __init__(
        self,
        queue_name: str,
        backend: Storage,
        running: dict[str, Running],
        *,
        lock_duration: int,
        lock_renew_time: int,
        clock: Clock,
        events: EventEmitter,
        store_answered: Callable[[Exception | None], None],
    ) -> None:
        self._queue_name = queue_name
        self._backend = backend
        self._running = running
        self._lock_duration = lock_duration
        self._lock_renew_time = lock_renew_time
        self._clock = clock
        self._events = events
        self._store_answered = store_answered

    async def timer(self) -> None:
        """Renew on every tick until cancelled."""
        # Each tick renews on its own task: a renewal whose reply is slow or lost must not hold
        # back the next tick, or a single lost reply could let every lock lapse.
        tick = self._lock_renew_time / 2000
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(tick)
                task = asyncio.create_task(self.renew())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            for task in in_flight:
                task.cancel()

    async def renew(self) -> None:
        """Renew, in one storage call, every lock due for renewal."""
        now = self._clock.now_ms()
        due = [
            running
            for running in self._running.values()
            if running.renew and lock_renewal_due(running.last_renewed, now, self._lock_renew_time)
        ]
        if not due:
            return
        for running in due:
            running.last_renewed = now
        try:
            lost = set(
                await self._backend.extend_locks(
                    self._queue_name,
                    [(running.job.id, running.token) for running in due],
                    self._lock_duration,
                )
            )
        except Exception as exc:
            self._store_answered(exc)
            self._events.emit("error", exc, None)
            return
        self._store_answered(None)
        # Tokens, not ids, tell runs apart: a job that stalled and was taken again by another
        # slot of this worker is tracked twice, and only its newest run still holds the lock.
        # A run that started finishing, or was already found lost by an earlier (overlapping)
        # renewal, is not reported again.
        failed = [running for running in due if running.token in lost and running.renew]
        renewed = [running.job.id for running in due if running.token not in lost]
        if failed:
            for running in failed:
                running.renew = False
                text = after_block(lock_renewal_error_text(running.job.id), running.blocked_ms)
                running.job.cancellation.cancel(text)
                self._events.emit("error", CorralError(text), running.job)
            self._events.emit("lock_renewal_failed", sorted({r.job.id for r in failed}))
        if renewed:
            self._events.emit("locks_renewed", renewed)
