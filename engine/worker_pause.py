"""A Worker's local pause (BullMQ's ``Worker.pause`` / ``resume``): nothing is written to the
store; the worker's slots stop fetching and park until resumed, running jobs finish (their
locks keep renewing) and the stalled checker rests. ``Queue.pause`` is the global one."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.engine.events import EventEmitter


class PauseGate:
    """Where a paused worker's slots park. Slots park when they would fetch; ``pause`` wakes
    the slots waiting for work (their wait is interrupted, as BullMQ closes its blocking
    connection) and can wait until every slot has parked, i.e. every running job finished."""

    def __init__(self) -> None:
        self.paused = False
        self._resumed: asyncio.Event | None = None
        self._parked: set[asyncio.Task[None]] = set()
        self._all_parked: asyncio.Event | None = None
        self._woken: set[asyncio.Task[None]] = set()
        self._slot_count = 0

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        # Made on first use, on the running loop (a Worker is built outside any loop).
        if self._resumed is None or self._all_parked is None:
            self._resumed, self._all_parked = asyncio.Event(), asyncio.Event()
        return self._resumed, self._all_parked

    def pause(self, waiting: list[asyncio.Task[None]], slot_count: int) -> None:
        """Stop fetching; interrupt the ``waiting`` slots' waits for work."""
        resumed, all_parked = self._events()
        self.paused = True
        resumed.clear()
        self._slot_count = slot_count
        if len(self._parked) >= slot_count:
            all_parked.set()
        for slot in waiting:
            self._woken.add(slot)
            slot.cancel()

    def resume(self) -> None:
        """Let the parked slots fetch again."""
        resumed, all_parked = self._events()
        self.paused = False
        all_parked.clear()
        resumed.set()

    def was_woken(self, slot: asyncio.Task[None]) -> bool:
        """Whether a cancellation that reached ``slot`` was :meth:`pause` interrupting its wait
        (then it is taken back: the slot goes on to park)."""
        if slot not in self._woken:
            return False
        self._woken.discard(slot)
        slot.uncancel()
        return True

    async def park(self, slot: asyncio.Task[None]) -> None:
        """Wait here while paused (a cancellation, from closing, passes through)."""
        resumed, all_parked = self._events()
        self._parked.add(slot)
        try:
            if len(self._parked) >= self._slot_count:
                all_parked.set()
            await resumed.wait()
        finally:
            self._parked.discard(slot)

    async def until_all_parked(self, stopped: asyncio.Event | None) -> None:
        """Wait until every slot has parked (the running jobs finished), or the worker was
        resumed meanwhile, or it stopped."""
        resumed, all_parked = self._events()
        if stopped is None or all_parked.is_set():
            return
        waits = {
            asyncio.ensure_future(all_parked.wait()),
            asyncio.ensure_future(resumed.wait()),
            asyncio.ensure_future(stopped.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


class PausableWorker:
    """A Worker's ``pause`` / ``resume`` (mixed into :class:`~corral.engine.worker.Worker`)."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Worker
        _pause: PauseGate
        _events: EventEmitter
        _idle_slots: dict[asyncio.Task[None], None]
        _waiting_for_work: set[asyncio.Task[None]]
        _slots: list[asyncio.Task[None]]
        _stopped: asyncio.Event | None

    async def pause(self, do_not_wait: bool = False) -> None:
        """Stop taking jobs, on this worker only (BullMQ's ``Worker.pause``; nothing is written
        to the store: :meth:`Queue.pause <corral.engine.queue.Queue.pause>` pauses every
        worker). Running jobs go on, their locks renewed; unless ``do_not_wait``, wait until
        they have finished (or :meth:`resume` was called). The stalled checker rests meanwhile.
        Emits ``paused`` (unless resumed before it returns)."""
        if self._pause.paused:
            return
        waiting = [slot for slot in self._idle_slots if slot in self._waiting_for_work]
        self._pause.pause(waiting, len(self._slots))
        if not do_not_wait:
            await self._pause.until_all_parked(self._stopped)
        if self._pause.paused:  # not resumed while it waited
            self._events.emit("paused")

    def resume(self) -> None:
        """Take jobs again after :meth:`pause`. Emits ``resumed``."""
        if not self._pause.paused:
            return
        self._pause.resume()
        self._events.emit("resumed")

    def is_paused(self) -> bool:
        """Whether :meth:`pause` stopped this worker (not whether its queue is paused)."""
        return self._pause.paused
