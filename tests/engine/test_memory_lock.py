"""The memory backend's operation lock when the store clock fails."""

from __future__ import annotations

import asyncio
import threading

from corral.backends.memory import MemoryBackend


class _FailingOnce:
    """A clock whose first reading raises (a broken injected clock)."""

    def __init__(self) -> None:
        self.failed = False

    def now_ms(self) -> int:
        if not self.failed:
            self.failed = True
            raise OSError("clock unavailable")
        return 1_000


def test_a_failing_store_clock_leaves_the_store_unlocked() -> None:
    backend = MemoryBackend(clock=_FailingOnce())
    try:
        asyncio.run(backend.get_counts("q"))
    except OSError:
        pass
    else:
        raise AssertionError("the clock's error was swallowed")
    taken: list[bool] = []

    def take_and_give_back() -> None:
        taken.append(backend._mutex._lock.acquire(timeout=1))
        if taken[-1]:
            backend._mutex._lock.release()

    other = threading.Thread(target=take_and_give_back)
    other.start()
    other.join()
    assert taken == [True]  # another thread can take the lock: it was released
    assert asyncio.run(backend.get_lock("q", "1")) is None  # and operations run again
    assert backend._mutex._depth == 0
