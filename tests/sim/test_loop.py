"""Tests for the virtual-time event loop and the clocks in corral.sim.loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from corral.engine.clock import Clock
from corral.sim.loop import (
    DEFAULT_EPOCH_MS,
    ManualClock,
    VirtualClock,
    VirtualTimeDeadlockError,
    VirtualTimeLoop,
    current_clock,
    run_virtual,
)

T = TypeVar("T")

# Real-time budget for anything that should finish instantly; only exceeded if the loop hangs.
SAFETY_NET_S = 10.0


def run_guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a daemon thread so a hanging loop fails the test instead of hanging it."""
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        try:
            outcome.set_result(fn())
        except BaseException as exc:  # handed to the test thread, which re-raises it
            outcome.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    concurrent.futures.wait([outcome], timeout=SAFETY_NET_S)
    if not outcome.done():
        pytest.fail(f"virtual-time loop did not finish within {SAFETY_NET_S} real seconds")
    return outcome.result()


def test_long_sleep_is_instant_and_exact() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    started = time.monotonic()
    before, after = run_guarded(lambda: run_virtual(main()))
    assert time.monotonic() - started < 2.0
    assert before == 0.0
    assert after == 3600.0


def test_start_time_is_respected_and_time_never_goes_backwards() -> None:
    loop = VirtualTimeLoop(start=100.0)
    try:
        seen: list[float] = []

        async def main() -> None:
            for delay in (5.0, 0.0, 86_400.0 * 3, 0.25):
                await asyncio.sleep(delay)
                seen.append(loop.time())

        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == [105.0, 105.0, 105.0 + 86_400.0 * 3, 105.0 + 86_400.0 * 3 + 0.25]


def test_timer_fires_at_large_virtual_times() -> None:
    # At ~1e9 s the float spacing is ~1e-7 s, far coarser than a nanosecond clock resolution.
    loop = VirtualTimeLoop(start=1_000_000_000.0)
    try:
        loop.run_until_complete(asyncio.sleep(1.5))
        assert loop.time() == 1_000_000_001.5
    finally:
        loop.close()


def test_concurrent_sleeps_wake_in_deadline_order_at_exact_times() -> None:
    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        events: list[tuple[float, str]] = []

        async def sleeper(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            events.append((loop.time(), name))

        await asyncio.gather(
            sleeper("c", 30.0),
            sleeper("a", 0.5),
            sleeper("d", 7200.0),
            sleeper("b", 2.25),
        )
        return events

    assert run_guarded(lambda: run_virtual(main())) == [
        (0.5, "a"),
        (2.25, "b"),
        (30.0, "c"),
        (7200.0, "d"),
    ]


def test_wait_for_times_out_at_virtual_deadline() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        never_set = asyncio.Event()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(never_set.wait(), timeout=5)
        return loop.time()

    assert run_guarded(lambda: run_virtual(main())) == 5.0


def test_call_later_and_call_at_ordering() -> None:
    async def main() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[float, str]] = []
        done = loop.create_future()

        def record(name: str) -> None:
            fired.append((loop.time(), name))

        loop.call_later(3.0, record, "three")
        loop.call_later(1.0, record, "one")
        loop.call_at(2.0, record, "two")
        # Same deadline: asyncio breaks ties in scheduling order.
        loop.call_later(1.0, record, "one-again")
        cancelled = loop.call_later(1.5, record, "cancelled")
        cancelled.cancel()
        loop.call_later(4.0, done.set_result, None)
        await done
        return fired

    assert run_guarded(lambda: run_virtual(main())) == [
        (1.0, "one"),
        (1.0, "one-again"),
        (2.0, "two"),
        (3.0, "three"),
    ]


def test_run_in_executor_does_not_let_virtual_time_jump() -> None:
    def blocking() -> str:
        time.sleep(0.05)
        return "done"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sleeper = asyncio.create_task(asyncio.sleep(1000))
        assert await loop.run_in_executor(None, blocking) == "done"
        assert not sleeper.done()
        assert loop.time() == 0.0
        assert isinstance(loop, VirtualTimeLoop)
        assert loop.external_pending == 0
        await sleeper
        assert loop.time() == 1000.0

    run_guarded(lambda: run_virtual(main()))


def test_to_thread_works() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        result = await asyncio.to_thread(lambda: sum(range(10)))
        return result, loop.time()

    assert run_guarded(lambda: run_virtual(main())) == (45, 0.0)


def test_external_work_hold_blocks_time_until_released_from_another_thread() -> None:
    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        waiter: asyncio.Future[str] = loop.create_future()
        timer = asyncio.create_task(asyncio.sleep(60))

        def backend() -> None:
            time.sleep(0.05)
            loop.call_soon_threadsafe(waiter.set_result, "woken")
            loop.release_external()

        loop.hold_external()
        threading.Thread(target=backend).start()
        result = await waiter
        assert not timer.done()
        now = loop.time()
        await timer
        return result, now

    assert run_guarded(lambda: run_virtual(main())) == ("woken", 0.0)


def test_external_work_context_manager_and_unbalanced_release() -> None:
    loop = VirtualTimeLoop()
    try:
        with loop.external_work():
            assert loop.external_pending == 1
        assert loop.external_pending == 0
        with pytest.raises(RuntimeError, match="no external work pending"):
            loop.release_external()
    finally:
        loop.close()


def test_deadlock_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(VirtualTimeDeadlockError, match="can never complete"):
        run_guarded(lambda: run_virtual(main()))


def test_deadlock_error_is_a_runtime_error() -> None:
    assert issubclass(VirtualTimeDeadlockError, RuntimeError)


def test_virtual_clock_reports_epoch_plus_elapsed_with_offset_and_drift() -> None:
    async def main() -> list[int]:
        clock = current_clock()
        readings = [clock.now_ms()]
        await asyncio.sleep(2.5)
        readings.append(clock.now_ms())
        clock.offset_ms = -300
        readings.append(clock.now_ms())
        clock.drift = 0.01
        readings.append(clock.now_ms())
        return readings

    epoch = 1_600_000_000_000
    assert run_guarded(lambda: run_virtual(main(), epoch_ms=epoch)) == [
        epoch,
        epoch + 2500,
        epoch + 2500 - 300,
        epoch + 2525 - 300,
    ]


def test_virtual_clock_constructor_and_protocol() -> None:
    loop = VirtualTimeLoop(start=10.0)
    try:
        clock = VirtualClock(loop, epoch_ms=1000, offset_ms=7, drift=-0.5)
        assert isinstance(clock, Clock)
        assert clock.now_ms() == 1000 + 7 + 5000
        assert loop.clock.now_ms() == DEFAULT_EPOCH_MS + 10_000
    finally:
        loop.close()


def test_current_clock_outside_virtual_loop_raises() -> None:
    async def main() -> None:
        current_clock()

    with pytest.raises(RuntimeError, match="VirtualTimeLoop"):
        asyncio.run(main())


def test_manual_clock() -> None:
    clock = ManualClock(1000)
    assert isinstance(clock, Clock)
    assert clock.now_ms() == 1000
    clock.advance(250)
    assert clock.now_ms() == 1250
    clock.set(1250)
    clock.set(2000)
    assert clock.now_ms() == 2000
    with pytest.raises(ValueError, match="backwards"):
        clock.set(1999)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.now_ms() == 2000
    assert ManualClock().now_ms() == DEFAULT_EPOCH_MS


def test_run_virtual_cleans_up_leftover_tasks() -> None:
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(10**9)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> str:
        asyncio.create_task(forever())  # noqa: RUF006 - left running on purpose
        await asyncio.sleep(1)
        return "ok"

    assert run_guarded(lambda: run_virtual(main())) == "ok"
    assert cancelled == [True]


def test_same_seed_gives_same_virtual_history() -> None:
    def program(seed: int) -> list[tuple[float, str]]:
        async def main() -> list[tuple[float, str]]:
            loop = asyncio.get_running_loop()
            rng = random.Random(seed)
            history: list[tuple[float, str]] = []

            async def worker(name: str) -> None:
                for step in range(5):
                    await asyncio.sleep(rng.uniform(0.0, 10.0))
                    history.append((loop.time(), f"{name}:{step}"))

            await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
            return history

        return run_virtual(main())

    first = run_guarded(lambda: program(42))
    second = run_guarded(lambda: program(42))
    assert len(first) == 20
    assert first == second
    assert [t for t, _ in first] == sorted(t for t, _ in first)
