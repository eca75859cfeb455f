"""Noticing that a worker's event loop was blocked, the most common cause of stalled jobs.

Locks are renewed by a timer on the worker's event loop. A processor that blocks the loop (an
``async def`` that calls ``time.sleep``, parses a huge file, hashes passwords) holds that timer
back; if it blocks longer than the lock has left, the lock lapses, the job is recovered as
stalled and runs again, and all the worker sees is a refused finish. :class:`LoopWatch` arms a
timer on the same loop while jobs run and measures how late it fires: the lag is how long the
loop could not run anything. The worker reports a lag over :func:`lag_threshold_ms` as a
``loop_blocked`` event and a warning naming the jobs and the remedies, and a lock lost after
such a block says so in its error (:func:`after_block`).

Time is the loop's own (``loop.time()``), so the watch works alike on a real loop, a virtual-time
test loop and the simulator's loops, where a blocked process's overdue timers fire late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence, Sized

logger = logging.getLogger("corral.worker")


def lag_threshold_ms(lock_duration: int) -> int:
    """The lag worth reporting: a quarter of ``lock_duration``.

    With the default ``lock_renew_time`` (half the lock), a lock is renewed when it still has at
    least half of its duration left, so a block longer than that half can make it lapse: this
    warns at half of that margin, before the locks are lost.
    """
    return max(1, lock_duration // 4)


class LoopWatch:
    """A timer, armed while jobs run, that reports how late it fired when it was held back.

    Args:
        loop: the worker's event loop.
        threshold_ms: report a lag longer than this.
        on_block: called with the lag in ms: how long the loop was blocked, less at most one
            period (a sixteenth of the lock duration).
        running: the worker's running jobs: the watch stays armed while there are any.
    """

    __slots__ = (
        "_due",
        "_handle",
        "_loop",
        "_on_block",
        "_period",
        "_running",
        "_threshold_s",
        "threshold_ms",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold_ms: int,
        on_block: Callable[[int], None],
        running: Sized,
    ) -> None:
        self._loop = loop
        self.threshold_ms = threshold_ms
        # A block is measured from the first tick it holds back, so it may show up to one
        # period shorter than it was: a quarter of the threshold keeps that error small, and
        # ticks come only while jobs run.
        self._period = threshold_ms / 4000
        self._threshold_s = threshold_ms / 1000  # (read per job by check())
        self._on_block = on_block
        self._running = running
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def arm(self) -> None:
        """Start ticking unless already ticking (the worker calls this when a job starts)."""
        if self._handle is None:
            self._due = self._loop.time() + self._period
            self._handle = self._loop.call_at(self._due, self._tick)

    def check(self) -> None:
        """Tick now if the tick is overdue by more than the threshold: the worker calls this
        when a processor returns, so that a block the processor caused is reported (and marked
        on its job) before the job is finished, even if finishing never yields to the loop."""
        handle = self._handle
        if handle is not None and self._loop.time() - self._due > self._threshold_s:
            handle.cancel()
            self._tick()

    def _tick(self) -> None:
        now = self._loop.time()
        lag_ms = round((now - self._due) * 1000)
        self._handle = None
        if lag_ms > self.threshold_ms:
            self._on_block(lag_ms)
        if len(self._running):
            self.arm()

    def cancel(self) -> None:
        """Stop ticking (the worker is done)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def warn_blocked(worker: str, lag_ms: int, lock_duration: int, job_ids: Sequence[str]) -> None:
    """Log why a blocked loop matters and what to do about it."""
    jobs = ", ".join(job_ids)
    logger.warning(
        "%s: the event loop was blocked for at least %d ms (lock_duration is %d ms) while it ran "
        "job(s) %s; their locks may lapse, and such jobs then run again as stalled. Keep "
        "blocking work off the event loop: make the processor a plain `def` (it then runs in a "
        "thread) or pass sandboxed=True (each job runs in a child process).",
        worker,
        lag_ms,
        lock_duration,
        jobs,
    )


def lock_lost_after_block(error: Exception, blocked_ms: int) -> Exception:
    """``error`` (a :class:`LockLostError`), its text saying the loop was blocked if it was."""
    if blocked_ms:
        error.args = (after_block(str(error), blocked_ms),)
    return error


def after_block(text: str, blocked_ms: int) -> str:
    """``text`` (a lost-lock error), saying that the loop was blocked for ``blocked_ms`` first."""
    return f"{text}, after the event loop was blocked for {blocked_ms} ms" if blocked_ms else text
