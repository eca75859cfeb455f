"""Time and randomness sources for the engine.

The engine never reads real time or global randomness directly: every timestamp it stores comes
from a :class:`Clock` it was given, and every random choice (lock tokens, backoff jitter) from a
``random.Random`` it was given. :class:`SystemClock` is the one place in the engine that reads the
real wall clock; the simulator and the tests inject a virtual clock instead. Waiting is never done
here: the engine waits with the event loop (``asyncio.sleep`` and loop timers), whose notion of time
the simulator also controls.
"""

from __future__ import annotations

import os
import random
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time in integer milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds (BullMQ's ``Date.now()``)."""
        ...


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        """Return ``time.time()`` in whole milliseconds."""
        return time.time_ns() // 1_000_000


def system_random() -> random.Random:
    """Return a fresh generator seeded from the operating system's entropy pool.

    Used as the default wherever a component accepts an injectable ``random.Random``; tests and the
    simulator pass a seeded generator instead.
    """
    return random.Random(os.urandom(16))
