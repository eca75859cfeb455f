"""An asyncio event loop that the simulator steps by hand.

Each simulated process runs its production code (Worker, Queue) on its own :class:`SimLoop`. The
loop never runs by itself and never blocks: the simulator asks each loop when it next has work
(:meth:`SimLoop.next_due`), moves the one world clock forward, and runs one iteration of the loop
whose work is due (:meth:`SimLoop.step`). A process that is "blocked" or "crashed" is simply not
stepped, so its timers fire late or never, exactly like a stalled or killed process.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import selectors
from collections.abc import Callable
from typing import Any

from corral.sim.loop import DelegatingSelector


class _NeverBlockingSelector(DelegatingSelector):
    """Polls the real selector without waiting: the simulator owns time, not the loop."""

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._inner.select(0)


class SimLoop(asyncio.SelectorEventLoop):
    """A loop whose ``time()`` is the simulator's world time and which runs only when stepped."""

    _ready: Any
    _scheduled: list[asyncio.TimerHandle]
    _run_once: Callable[[], None]

    def __init__(self, now: Callable[[], float]) -> None:
        """Create a loop reading world time (seconds) from ``now``."""
        self._world_now = now
        super().__init__(_NeverBlockingSelector())
        self.slow_callback_duration = math.inf

    @property
    def _clock_resolution(self) -> float:
        return max(1e-9, math.ulp(self._world_now()))

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        pass

    def time(self) -> float:
        """The world time in seconds."""
        return self._world_now()

    def next_due(self) -> float | None:
        """World time at which this loop next has work (now if callbacks are ready)."""
        if self._ready:
            return self._world_now()
        scheduled = self._scheduled
        while scheduled and scheduled[0].cancelled():
            # Drop cancelled timers at the head as _run_once would, so that a cancelled timeout
            # does not make the loop look due.
            self._timer_cancelled_count -= 1
            heapq.heappop(scheduled)._scheduled = False  # type: ignore[attr-defined]
        return scheduled[0].when() if scheduled else None

    _timer_cancelled_count: int

    def step(self) -> None:
        """Run one iteration: due timers become ready, then the ready callbacks run.

        May be called from a callback of another loop (the fakeredis store runs its server's
        loop inside the store loop's step): that loop is the running one again afterwards.
        """
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            self._run_once()
        finally:
            asyncio.events._set_running_loop(previous)

    def settle(self) -> None:
        """Step until no callback is ready; time does not move (timers due now do fire)."""
        while self._ready:
            self.step()
