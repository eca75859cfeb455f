"""Knowing whether a worker's event loop has had a turn lately, without making it poll.

A slot whose jobs never suspend (fast processors on an in-process backend) must yield now and
then, or the other slots, the lock renewer and the stalled checker never run. A slot that
suspends anyway (waiting for Redis) has let the loop turn already, and a yield would only cost
one more poll of the selector. :class:`LoopTurns` tells the two apart.
"""

from __future__ import annotations

import asyncio
from typing import Final

# How long after a slot asks the loop-turn marker fires (less than the worker's time-based
# yield, so that a loop that is turning has run it before a slot would yield for nothing).
# Module-level so that the benchmarks can stretch it along with the worker's yield time.
TURN_MARK_S: Final = 0.001


class LoopTurns:
    """Tells the slots of a worker whether the event loop has had a turn lately.

    A marker timer, armed on demand, bumps ``generation`` when the loop runs it: a slot that
    sees the generation change since it last looked knows that the loop ran its timers (and
    so its other callbacks) meanwhile. A timer, unlike a callback made ready at once, never
    makes the loop poll once more than it would anyway.
    """

    __slots__ = ("_handle", "_loop", "generation")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self.generation = 0

    def mark(self) -> int:
        """Arm the marker unless it is armed; return the current generation."""
        if self._handle is None:
            self._handle = self._loop.call_later(TURN_MARK_S, self._fire)
        return self.generation

    def _fire(self) -> None:
        self.generation += 1
        self._handle = None

    def cancel(self) -> None:
        """Disarm the marker (the worker is done)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
