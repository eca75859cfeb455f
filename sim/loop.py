"""A virtual-time asyncio event loop and the clocks that read it.

:class:`VirtualTimeLoop` is a normal selector event loop except for its notion of time: ``time()``
returns a virtual clock that only moves when the loop has nothing else to do, and then jumps
straight to the next scheduled timer instead of sleeping. ``asyncio.sleep(3600)`` therefore
returns at once in real time with ``loop.time()`` exactly 3600 seconds later, and a program whose
only source of waiting is the loop produces the same sequence of virtual timestamps on every run.

Work that happens outside the loop (executor threads, or another thread that will wake a waiter)
is *external work*. While any is pending the loop blocks on its real selector in real time without
moving virtual time, so a thread that takes 50 ms of real time takes zero virtual time and does not
let timers fire early. If the loop is idle with no timers and no external work it can never make
progress again; rather than hang forever it raises :class:`VirtualTimeDeadlockError`.

:class:`VirtualClock` adapts a loop's virtual time to the engine's
:class:`corral.engine.clock.Clock` protocol (milliseconds since the Unix epoch, with settable skew
for the simulator), and :class:`ManualClock` is a hand-driven clock for pure unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import selectors
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = [
    "DEFAULT_EPOCH_MS",
    "ManualClock",
    "VirtualClock",
    "VirtualTimeDeadlockError",
    "VirtualTimeLoop",
    "current_clock",
    "run_virtual",
]

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")

DEFAULT_EPOCH_MS = 1_700_000_000_000
"""The wall-clock time (ms since the Unix epoch) that virtual time 0.0 maps to by default."""

# The stock loop uses the monotonic clock's resolution (1 ns on Linux); pinning it keeps timer
# firing identical across machines.
_MIN_CLOCK_RESOLUTION = 1e-9


class VirtualTimeDeadlockError(RuntimeError):
    """Raised when a virtual-time loop is idle with no timers and no pending external work."""


class DelegatingSelector(selectors.BaseSelector):
    """A selector that hands everything to a real one; subclasses change only ``select``."""

    def __init__(self, inner: selectors.BaseSelector) -> None:
        self._inner = inner

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._inner.select(timeout)


class _VirtualSelector(DelegatingSelector):
    """Delegates to a real selector but turns "sleep until the next timer" into a time jump."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        super().__init__(inner)
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # Always give real I/O (including the self-pipe) a chance first, so events that are
        # already there are handled before virtual time moves.
        events = self._inner.select(0)
        if events or timeout == 0:
            return events
        if self._loop.external_pending > 0:
            # Whoever finishes the external work wakes us through the self-pipe
            # (call_soon_threadsafe or release_external), so an unbounded wait is safe.
            return self._inner.select(None)
        if timeout is None:
            raise VirtualTimeDeadlockError(
                "virtual-time loop is idle with no timers and no pending external work: "
                "the awaited operation can never complete"
            )
        self._loop._jump_to_next_timer(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock is virtual and jumps to the next timer when idle.

    Virtual time never goes backwards and never moves while callbacks are ready or external work
    is pending. Real I/O still works, but waiting for it is not external work: if the only thing
    the program waits on is a socket and a timer is scheduled, virtual time jumps to the timer.
    Wrap such waits in :meth:`external_work` to keep the loop blocking in real time instead.

    Attributes:
        clock: A :class:`VirtualClock` reading this loop, as returned by :func:`current_clock`.
    """

    # Set by BaseEventLoop.__init__; typeshed does not declare these private attributes.
    _scheduled: list[asyncio.TimerHandle]
    _write_to_self: Callable[[], None]

    def __init__(self, start: float = 0.0, *, epoch_ms: int = DEFAULT_EPOCH_MS) -> None:
        """Create the loop.

        Args:
            start: The initial value of ``time()``, in virtual seconds.
            epoch_ms: The wall-clock milliseconds that virtual time 0.0 maps to in :attr:`clock`.
        """
        self._now = float(start)
        self._external = 0
        self._external_lock = threading.Lock()
        super().__init__(_VirtualSelector(selectors.DefaultSelector(), self))
        # Callbacks take zero virtual time, so debug mode's slow-callback check can only misfire.
        self.slow_callback_duration = math.inf
        self.clock = VirtualClock(self, epoch_ms=epoch_ms)

    # BaseEventLoop.__init__ assigns the real clock's resolution; a property with an ignoring
    # setter lets us override it. _run_once fires timers whose deadline is before
    # time() + resolution, so the resolution must be big enough that the addition is not lost to
    # float rounding at large virtual times, or a timer due at exactly time() would never fire.
    @property
    def _clock_resolution(self) -> float:
        return max(_MIN_CLOCK_RESOLUTION, math.ulp(self._now))

    @_clock_resolution.setter
    def _clock_resolution(self, value: float) -> None:
        pass

    def time(self) -> float:
        """Return the current virtual time in seconds."""
        return self._now

    @property
    def external_pending(self) -> int:
        """The number of outstanding units of external work (executor jobs and holds)."""
        return self._external

    def hold_external(self) -> None:
        """Mark one unit of external work as pending.

        While any is pending, an idle loop blocks in real time instead of advancing virtual time.
        Call this from the loop's thread *before* handing work to another thread; calling it from
        the other thread races with the loop deciding to jump ahead. Each call must be matched by
        one :meth:`release_external`.
        """
        with self._external_lock:
            self._external += 1

    def release_external(self) -> None:
        """Mark one unit of external work as finished. Safe to call from any thread.

        Raises:
            RuntimeError: If no external work is pending.
        """
        with self._external_lock:
            if self._external <= 0:
                raise RuntimeError("release_external() called with no external work pending")
            self._external -= 1
            now_idle = self._external == 0
        if now_idle:
            # The loop may be blocked in a real-time select waiting for us; wake it so it can go
            # back to jumping virtual time.
            self._write_to_self()

    @contextlib.contextmanager
    def external_work(self) -> Iterator[None]:
        """Hold external work for the duration of a ``with`` block."""
        self.hold_external()
        try:
            yield
        finally:
            self.release_external()

    def run_in_executor(
        self,
        executor: Executor | None,
        func: Callable[[*_Ts], T],
        *args: *_Ts,
    ) -> asyncio.Future[T]:
        """Run ``func`` in an executor, counting it as external work until its result arrives.

        Same contract as :meth:`asyncio.AbstractEventLoop.run_in_executor`; ``asyncio.to_thread``
        goes through here too.
        """
        future = super().run_in_executor(executor, func, *args)
        self.hold_external()
        # Release on the asyncio future, not the concurrent one: the latter completes in the
        # worker thread before the result reaches the loop, and releasing then would let the loop
        # jump virtual time while the result is still in flight.
        future.add_done_callback(self._release_executor_job)
        return future

    def _release_executor_job(self, _future: asyncio.Future[Any]) -> None:
        self.release_external()

    if sys.version_info >= (3, 12):

        async def shutdown_default_executor(self, timeout: float | None = None) -> None:
            """Shut down the default executor; the shutdown thread counts as external work."""
            with self.external_work():
                await super().shutdown_default_executor(timeout)

    else:

        async def shutdown_default_executor(self) -> None:
            """Shut down the default executor; the shutdown thread counts as external work."""
            with self.external_work():
                await super().shutdown_default_executor()

    def _jump_to_next_timer(self, timeout: float) -> None:
        # Use the earliest timer's own deadline rather than now + timeout: the subtraction and
        # re-addition can round, and select timeouts are capped at a day.
        target = self._scheduled[0].when() if self._scheduled else self._now + timeout
        self._now = max(self._now, target)


class VirtualClock:
    """A :class:`corral.engine.clock.Clock` that reads an event loop's virtual time.

    ``now_ms() == epoch_ms + offset_ms + round(loop.time() * 1000 * (1 + drift))``.

    Attributes:
        epoch_ms: The wall-clock milliseconds that loop time 0.0 maps to.
        offset_ms: A constant skew added to every reading (simulated clock offset).
        drift: A rate error; 0.001 makes this clock run 0.1 % fast. Changing it mid-run rescales
            all elapsed time, so the reading can jump (even backwards).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        offset_ms: int = 0,
        drift: float = 0.0,
    ) -> None:
        """Create a clock reading ``loop.time()``.

        Args:
            loop: The loop whose ``time()`` is read (normally a :class:`VirtualTimeLoop`).
            epoch_ms: The wall-clock milliseconds that loop time 0.0 maps to.
            offset_ms: The initial constant skew in milliseconds.
            drift: The initial rate error (fractional; 0.0 is a perfect clock).
        """
        self._loop = loop
        self.epoch_ms = epoch_ms
        self.offset_ms = offset_ms
        self.drift = drift

    def now_ms(self) -> int:
        """Return the skewed virtual wall-clock time in whole milliseconds."""
        return self.epoch_ms + self.offset_ms + round(self._loop.time() * 1000 * (1 + self.drift))


class ManualClock:
    """A clock that only moves when told to, for unit tests that need no event loop."""

    def __init__(self, start_ms: int = DEFAULT_EPOCH_MS) -> None:
        """Create the clock.

        Args:
            start_ms: The initial reading in milliseconds since the Unix epoch.
        """
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """Return the current reading in milliseconds."""
        return self._now_ms

    def set(self, ms: int) -> None:
        """Set the reading.

        Raises:
            ValueError: If ``ms`` is earlier than the current reading.
        """
        if ms < self._now_ms:
            raise ValueError(f"ManualClock cannot go backwards: {ms} < {self._now_ms}")
        self._now_ms = ms

    def advance(self, ms: int) -> None:
        """Move the reading forward by ``ms`` milliseconds.

        Raises:
            ValueError: If ``ms`` is negative.
        """
        if ms < 0:
            raise ValueError(f"ManualClock cannot go backwards: advance({ms})")
        self._now_ms += ms


def current_clock() -> VirtualClock:
    """Return the :class:`VirtualClock` of the running :class:`VirtualTimeLoop`.

    Raises:
        RuntimeError: If no loop is running or the running loop is not a virtual-time loop.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise RuntimeError("current_clock() needs a running VirtualTimeLoop")
    return loop.clock


def run_virtual(
    main: Coroutine[Any, Any, T],
    *,
    epoch_ms: int = DEFAULT_EPOCH_MS,
    loop: VirtualTimeLoop | None = None,
) -> T:
    """Run a coroutine to completion on a fresh :class:`VirtualTimeLoop` and return its result.

    Like :func:`asyncio.run`: afterwards leftover tasks are cancelled, async generators and the
    default executor are shut down, and the loop is closed. The loop is not installed as the
    thread's current event loop.

    Args:
        main: The coroutine to run.
        epoch_ms: The wall-clock milliseconds that virtual time 0.0 maps to in the loop's clock.
        loop: A fresh loop to run on (one is made when not given); it is closed afterwards.

    Returns:
        Whatever ``main`` returns.

    Raises:
        RuntimeError: If called while an event loop is running in this thread.
        VirtualTimeDeadlockError: If the program waits on something that can never happen.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        main.close()
        raise RuntimeError("run_virtual() cannot be called from a running event loop")
    if loop is None:
        loop = VirtualTimeLoop(epoch_ms=epoch_ms)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    # Mirrors asyncio.runners._cancel_all_tasks, which is private.
    to_cancel = asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during run_virtual() shutdown",
                    "exception": exc,
                    "task": task,
                }
            )
