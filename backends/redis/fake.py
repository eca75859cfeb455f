"""fakeredis as a faithful stand-in for Redis under a virtual clock (tests and the simulator).

:func:`virtual_fakeredis` patches fakeredis for the duration of a block:

* **Time.** The server's notion of time (key expiry for ``PX`` locks and the stalled-check
  throttle, PTTL, stream ids) follows a corral :class:`~corral.engine.clock.Clock` instead of
  the wall clock. fakeredis reads ``time.time()`` in three modules; they are given a stand-in
  ``time`` module.
* **Blocked commands of a closed connection.** When redis-py gives up on a blocking command (a
  worker cancelled while in BZPOPMIN) it disconnects; real Redis then forgets the command, but
  fakeredis keeps it waiting and lets it pop the next marker for nobody. The patch cancels it.
* **Blocked clients are served in the order they blocked**, as Redis serves them (and as the
  memory backend wakes its waiters). fakeredis keeps the wake-up callbacks of blocked clients in
  a set, whose order follows memory addresses: which of several blocked workers got the next
  marker varied from run to run. The patch wakes them first come, first served.
* **Speed** (no change in behaviour). fakeredis wakes every blocked client on every write to
  any key, even each write inside a script, and each wake-up costs the client a retry of its
  command; the patch wakes each client at most once per turn of its event loop. fakeredis
  compiles a script's Lua text again on every EVAL/EVALSHA, and collects all Lua garbage after
  each; the patch compiles each text once per server and collects every 100 scripts.

fakeredis stores expiries as float seconds, so a key set at ``t`` with ``PX d`` and looked at
exactly ``d`` ms later is alive or gone depending on float rounding. While patched, expiry is
judged at whole milliseconds with real Redis's rule (a key is gone once ``now > set_time + PX``),
and the clock reads the middle of its current millisecond so that the rounding of
``int(time * 1000)`` can never land on the previous one.

The patches are process-wide (fakeredis keeps these in module globals): use one clock at a
time. Needs the ``fakeredis`` package (a development dependency).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib
import math
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from corral.engine.clock import Clock

#: The fakeredis modules that read ``time.time()``.
_TIME_READERS = ("fakeredis._helpers", "fakeredis._socket._base", "fakeredis.model._stream")


def _clock_module(clock: Clock) -> types.ModuleType:
    """A stand-in for the ``time`` module whose ``time()`` reads ``clock``."""
    stand_in = types.ModuleType("time")
    stand_in.__dict__.update(
        {name: getattr(time, name) for name in dir(time) if not name.startswith("__")}
    )

    def now_s() -> float:
        return (clock.now_ms() + 0.5) / 1000

    def now_ns() -> int:
        return clock.now_ms() * 1_000_000 + 500_000

    stand_in.time = now_s  # type: ignore[attr-defined]
    stand_in.time_ns = now_ns  # type: ignore[attr-defined]
    return stand_in


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


def _expired(self: Any, item: Any) -> bool:
    return item.expireat is not None and _ms(self.time) > _ms(item.expireat)


def _remove_expired(self: Any) -> None:
    heap = self._expiry_heap
    now = _ms(self.time)
    while heap and _ms(heap[0][0]) < now:
        _, key = heapq.heappop(heap)
        item = self._dict.get(key)
        if item is not None and self.expired(item):
            del self._dict[key]


class _CoalescedWake:
    """A blocked client's wake-up, run at most once per turn of its event loop however often
    the server calls it (the client re-checks its keys once anyway)."""

    def __init__(self, callback: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        self._callback = callback
        self._loop = loop
        self._thread = threading.get_ident()
        self._pending = False

    def __call__(self) -> None:
        if self._pending:
            return
        self._pending = True
        if threading.get_ident() == self._thread:
            self._loop.call_soon(self._fire)
        else:
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._pending = False
        self._callback()


def _add_change_callback(self: Any, callback: Callable[[], None]) -> None:
    try:
        wake: Callable[[], None] = _CoalescedWake(callback, asyncio.get_running_loop())
    except RuntimeError:
        wake = callback
    self.__dict__.setdefault("corral_callbacks", {})[callback] = wake
    self._change_callbacks.add(callback)


def _remove_change_callback(self: Any, callback: Callable[[], None]) -> None:
    self.__dict__.get("corral_callbacks", {}).pop(callback, None)
    self._change_callbacks.remove(callback)


def _wake_all(self: Any) -> None:
    """Wake the blocked clients, longest blocked first."""
    self.condition.notify_all()
    ordered: dict[Callable[[], None], Callable[[], None]] = self.__dict__.get(
        "corral_callbacks", {}
    )
    for wake in list(ordered.values()):
        wake()
    for callback in list(self._change_callbacks):
        if callback not in ordered:  # registered before the patch
            callback()


class _CompilingRuntime:
    """A server's Lua runtime whose ``execute`` compiles each script text once, and runs the
    full garbage collection fakeredis asks for after every script only every so often (Lua's
    incremental collector runs anyway)."""

    _LIMIT = 256
    _GC_EVERY = 100

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._compiled: dict[Any, Any] = {}
        self._collections = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def execute(self, script: Any) -> Any:
        if script == "collectgarbage()":
            self._collections += 1
            if self._collections % self._GC_EVERY:
                return None
        function = self._compiled.get(script)
        if function is None:
            if len(self._compiled) >= self._LIMIT:
                self._compiled.clear()
            function = self._compiled[script] = self._runtime.compile(script)
        return function()


def _compiling(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``ScriptingCommandsMixin._get_server_runtime`` to cache compiled scripts."""

    def get_runtime(sock: Any, server: Any) -> Any:
        runtime = original(sock, server)
        if not isinstance(runtime, _CompilingRuntime):
            runtime = server._lua_runtime = _CompilingRuntime(runtime)
        return runtime

    return get_runtime


def _tracking_blocked(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap ``AsyncFakeSocket._async_blocking`` (the task serving a blocked command) so that the
    socket knows its task."""

    async def serve(sock: Any, *args: Any, **kwargs: Any) -> None:
        sock.corral_blocked_task = asyncio.current_task()
        try:
            await original(sock, *args, **kwargs)
        finally:
            sock.corral_blocked_task = None

    return serve


def _dropping_blocked(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap ``FakeBaseAsyncConnection.disconnect`` to cancel the connection's blocked command."""

    async def disconnect(connection: Any, *args: Any, **kwargs: Any) -> None:
        task = getattr(getattr(connection, "_sock", None), "corral_blocked_task", None)
        if task is not None:
            task.cancel()
        await original(connection, *args, **kwargs)

    return disconnect


@contextlib.contextmanager
def virtual_fakeredis(clock: Clock) -> Iterator[None]:
    """Within the block, every fakeredis server reads time from ``clock``, and a blocked command
    dies with its connection.

    Raises:
        ImportError: if fakeredis is not installed.
    """
    database = importlib.import_module("fakeredis._core._database").Database
    socket = importlib.import_module("fakeredis._socket._async").AsyncFakeSocket
    connection = importlib.import_module("fakeredis._clients._async").FakeBaseAsyncConnection
    scripting = importlib.import_module("fakeredis.commands_mixins.scripting_mixin")
    saved: list[tuple[object, str, object]] = []

    def patch(target: object, name: str, value: object) -> None:
        saved.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    try:
        stand_in = _clock_module(clock)
        for module_name in _TIME_READERS:
            patch(importlib.import_module(module_name), "time", stand_in)
        patch(database, "expired", _expired)
        patch(database, "_remove_expired", _remove_expired)
        patch(database, "add_change_callback", _add_change_callback)
        patch(database, "remove_change_callback", _remove_change_callback)
        patch(database, "wake_all", _wake_all)
        patch(socket, "_async_blocking", _tracking_blocked(socket._async_blocking))
        patch(connection, "disconnect", _dropping_blocked(connection.disconnect))
        mixin = scripting.ScriptingCommandsMixin
        patch(mixin, "_get_server_runtime", _compiling(mixin._get_server_runtime))
        yield
    finally:
        for target, name, value in reversed(saved):
            setattr(target, name, value)
