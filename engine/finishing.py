"""Storing a job's outcome again when the store refused it or its call got no reply.

Two failures are worth sending a finish again for, and they differ in what the worker may do
while it waits:

* **A refusal** (:class:`~corral.engine.errors.StoreRefusedError`, e.g. Redis out of memory):
  the store applied nothing, so the job's lock is still the worker's to renew, and the worker
  keeps renewing it while it waits; the work done is stored once the store accepts writes again
  instead of being lost and run a second time.
* **No reply** (``OSError``: connection dropped, timeout, store restarting): the finish may or
  may not have been applied. Renewing the lock of a job whose finish was applied would report a
  false lock loss, so the lock is left alone and the last try lands while it may still hold.
  Sending it again is safe because the store applies a finish once per lock token and answers a
  repeat as it answered the first (see ``Storage.finish``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from corral.engine.clock import Clock
from corral.engine.errors import LockLostError, ResultCode, StoreRefusedError
from corral.engine.policy import finish_retry_delay
from corral.engine.storage import FetchRequest, FinishResult, Outcome

if TYPE_CHECKING:
    from corral.engine.events import EventEmitter
    from corral.engine.running import Running
    from corral.engine.storage import Storage

#: What a finish call may fail with and still be sent again.
RETRIED_FINISH_ERRORS = (OSError, StoreRefusedError)


async def send_finish_again(
    error: OSError | StoreRefusedError,
    send: Callable[[], Awaitable[FinishResult]],
    *,
    clock: Clock,
    rng: random.Random,
    lock_expires_ms: Callable[[], int],
    keep_lock: Callable[[bool], None],
    closing: Callable[[], bool],
    on_error: Callable[[Exception], None],
) -> FinishResult | None:
    """Send a finish again (``send()``) whose call failed with ``error``.

    Waits with the back-off of :func:`~corral.engine.policy.finish_retry_delay` until a call
    gets an answer or the lock has lapsed (``lock_expires_ms()``, on the worker's clock; renewals
    move it while only refusals were seen).

    Args:
        error: how the first call failed.
        send: makes one finish call.
        clock: the worker's clock.
        rng: the worker's randomness (for the back-off's jitter).
        lock_expires_ms: when the job's lock lapses, as far as the worker knows.
        keep_lock: turns the renewal of the job's lock on (True) or off (False).
        closing: whether the worker began closing (then a refused finish is given up: the
            stalled checker gives the job back once its lock lapses).
        on_error: receives every failure but the one raised.

    Returns:
        The store's answer, or None if the worker closed while the store refused the finish.

    Raises:
        OSError | StoreRefusedError: the last failure, once the lock may have lapsed.
    """
    failures = 0
    maybe_applied = False
    while True:
        failures += 1
        maybe_applied = maybe_applied or not isinstance(error, StoreRefusedError)
        delay = finish_retry_delay(failures, clock.now_ms(), lock_expires_ms(), rng)
        if delay is None:
            raise error
        on_error(error)
        keep_lock(not maybe_applied)
        try:
            await asyncio.sleep(delay / 1000)
        finally:
            keep_lock(False)
        if not maybe_applied and closing():
            return None
        try:
            return await send()
        except RETRIED_FINISH_ERRORS as exc:
            error = exc


class WorkerFinishing:
    """A Worker's finishes sent again, and its forced releases (mixed into
    :class:`~corral.engine.worker.Worker`)."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Worker
        queue_name: str
        backend: Storage
        clock: Clock
        lock_duration: int
        _rng: random.Random
        _events: EventEmitter
        _closing: bool

        def _store_answered(self, error: Exception | None) -> None: ...

    async def _finish_again(
        self,
        running: Running,
        outcome: Outcome,
        fetch: FetchRequest | None,
        error: OSError | StoreRefusedError,
    ) -> FinishResult | None:
        """Send again a finish the store refused or left unanswered (see
        :mod:`corral.engine.finishing`); None if the worker closed meanwhile."""
        job = running.job

        def on_error(exc: Exception) -> None:
            self._store_answered(exc)
            self._events.emit("error", exc, job)

        def keep_lock(renew: bool) -> None:
            running.renew = renew

        result = await send_finish_again(
            error,
            lambda: self.backend.finish(
                self.queue_name, job.id, running.token, outcome, self.clock.now_ms(), fetch
            ),
            clock=self.clock,
            rng=self._rng,
            lock_expires_ms=lambda: running.last_renewed + self.lock_duration,
            keep_lock=keep_lock,
            closing=lambda: self._closing,
            on_error=on_error,
        )
        if result is not None:
            self._store_answered(None)
        return result

    async def _release(self, running: Running) -> None:
        running.job.cancellation.cancel("worker closed with force")
        try:
            code = await self.backend.release(
                self.queue_name, running.job.id, running.token, self.clock.now_ms()
            )
        except Exception as exc:
            self._events.emit("error", exc, running.job)
            return
        if code is not ResultCode.OK:
            self._events.emit("error", LockLostError(code, running.job.id, "release"), running.job)
