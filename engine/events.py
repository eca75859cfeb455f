"""A small event emitter for the local events of workers (and later queues and checkers).

Handlers are plain callables or coroutine functions. Plain handlers run inline; a coroutine
handler is scheduled as a task on the running loop, so a slow listener never blocks the worker.
An exception raised by a handler is reported to the ``error`` handlers (or logged when the failing
handler *is* an ``error`` handler), never propagated into the engine.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("corral")

Handler = Callable[..., Any]


class EventEmitter:
    """Dispatches named events to registered handlers; names are checked against a fixed set."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        # Every name has its list from the start, so a list handed out by ``listeners`` stays
        # the live one.
        self._handlers: dict[str, list[Handler]] = {name: [] for name in sorted(self._names)}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, name: str, handler: Handler) -> Handler:
        """Register ``handler`` for event ``name``; returns it, so this works as a decorator too.

        Raises:
            ValueError: if ``name`` is not an event this emitter produces.
        """
        if name not in self._names:
            close = difflib.get_close_matches(name, self._names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown event {name!r}{hint}; known events: {', '.join(sorted(self._names))}"
            )
        self._handlers[name].append(handler)
        return handler

    def off(self, name: str, handler: Handler) -> None:
        """Unregister a handler (no error if it was not registered)."""
        handlers = self._handlers.get(name)
        if handlers and handler in handlers:
            handlers.remove(handler)

    def has_listeners(self, name: str) -> bool:
        """Whether any handler is registered for ``name`` (lets hot paths skip building args)."""
        return bool(self._handlers.get(name))

    def listeners(self, name: str) -> list[Handler]:
        """The live list of ``name``'s handlers, updated in place by ``on`` and ``off``: a hot
        path can keep it and test it, instead of calling :meth:`has_listeners` every time.
        Do not modify it."""
        return self._handlers[name]

    def emit(self, name: str, *args: Any) -> None:
        """Call every handler of ``name`` with ``args``."""
        for handler in self._handlers.get(name, ()):
            try:
                result = handler(*args)
                if result is not None and inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._task_done)
            except Exception as exc:
                self._handler_failed(name, exc)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._handler_failed("?", exc)

    def _handler_failed(self, name: str, exc: BaseException) -> None:
        if name != "error" and self._handlers.get("error"):
            self.emit("error", exc, None)
        else:
            logger.error("event handler for %r raised", name, exc_info=exc)

    async def drain(self) -> None:
        """Wait for coroutine handlers still running."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
