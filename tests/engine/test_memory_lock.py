"""The memory backend's operation lock when the store clock fails, and signals sent at the end
of an operation that fails part-way."""

from __future__ import annotations

import asyncio
import threading

from corral.backends.memory import MemoryBackend
from corral.engine.states import JobState
from corral.engine.storage import new_job
from corral.sim.loop import run_virtual


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


class _Fixed:
    def now_ms(self) -> int:
        return 1_000


def test_jobs_stored_before_a_bulk_add_fails_still_wake_a_waiting_worker() -> None:
    """A bulk add signals waiting workers once, at its end: when it fails part-way, the jobs
    it stored before the failure are announced all the same."""
    backend = MemoryBackend(clock=_Fixed())
    moves: list[str] = []

    def fail_on_the_second_job(queue: str, job_id: str, *rest: object) -> None:
        moves.append(job_id)
        if len(moves) == 2:
            raise RuntimeError("listener failed")

    backend.transition_listener = fail_on_the_second_job

    async def scenario() -> bool:
        waiting = asyncio.create_task(backend.wait_for_work("q", 10_000))
        await asyncio.sleep(0)  # the worker is blocked, waiting for work
        jobs = [new_job("job", "{}", "{}", 1_000), new_job("job", "{}", "{}", 1_000)]
        try:
            await backend.add_jobs("q", jobs)
        except RuntimeError:
            pass
        else:
            raise AssertionError("the listener's error was swallowed")
        # Woken at once, not by the wait's 10 s timeout (virtual time: nothing really waits).
        started = asyncio.get_running_loop().time()
        woken = await waiting
        assert asyncio.get_running_loop().time() == started
        return woken

    assert run_virtual(scenario()) is True  # woken for job 1, which is in wait
    assert run_virtual(backend.get_job_ids("q", JobState.WAITING, 0, -1, True)) == ["1"]
