"""QueueEvents: the global events of a queue, from every process that touches it.

A Worker's ``on(...)`` hears what *that* worker does. QueueEvents hears what every producer,
worker and checker of the queue did, because it reads the queue's event log (BullMQ's ``events``
stream on Redis, so it also hears Node BullMQ processes, and they hear us). Events arrive in log
order, each once, through ``on(name, handler)`` callbacks while :meth:`QueueEvents.run` runs, or
by iterating ``async for event in queue_events``.

A listener that starts late can ask for the events after a given id (``last_event_id="0-0"`` for
the whole retained log); by default it hears the events logged after it started. After a storage
error (a Redis disconnect) it resumes from the last id it delivered, so nothing is skipped that
the log still holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Final

from corral.engine.events import EventEmitter, Handler
from corral.engine.job import Duration, duration_ms, validate_queue_name
from corral.engine.storage import Storage

#: The event names BullMQ writes to a queue's log; iteration also yields any newer ones.
QUEUE_EVENT_NAMES: Final = frozenset(
    {
        "added",
        "waiting",
        "active",
        "progress",
        "delayed",
        "completed",
        "failed",
        "stalled",
        "removed",
        "drained",
        "paused",
        "resumed",
        "duplicated",
        "retries-exhausted",
        "waiting-children",
        "deduplicated",
        "cleaned",
    }
)
#: Besides the queue's events: ``error(error, None)`` and ``closed()``.
_OWN_EVENTS: Final = frozenset({"error", "closed"})


@dataclasses.dataclass(frozen=True, slots=True)
class QueueEvent:
    """One event of the queue's log.

    Attributes:
        id: the log id (Redis stream id ``"<ms>-<seq>"``); pass it as ``last_event_id`` to
            resume after this event.
        name: ``completed``, ``failed``, ``waiting``, ...
        fields: BullMQ's fields: ``jobId``, ``prev``, ``returnvalue`` (JSON), ``failedReason``,
            ``delay``, ``data``, ``name``, ...
    """

    id: str
    name: str
    fields: dict[str, str]

    @property
    def job_id(self) -> str | None:
        """The job the event is about, if any."""
        return self.fields.get("jobId")


class QueueEvents:
    """Delivers the events every process of a queue produces.

    Args:
        queue_name: the queue to listen to.
        backend: the queue's storage.
        last_event_id: deliver the events after this id; ``None`` (default) for those logged
            after the listener starts, ``"0-0"`` for everything the log still holds.
        block: longest single wait for new events, in ms.
        retry_delay: pause after a storage error before reading again, in ms.
    """

    def __init__(
        self,
        queue_name: str,
        backend: Storage,
        *,
        last_event_id: str | None = None,
        block: Duration = 10_000,
        retry_delay: Duration = 1_000,
    ) -> None:
        self.queue_name = validate_queue_name(queue_name)
        self.backend = backend
        self.last_event_id = last_event_id
        self.block = duration_ms(block, "block", allow_zero=False)
        self.retry_delay = duration_ms(retry_delay, "retry_delay", allow_zero=False)
        self._events = EventEmitter(QUEUE_EVENT_NAMES | _OWN_EVENTS)
        self._closing = False
        self._reader: asyncio.Task[object] | None = None

    def on(self, event: str, handler: Handler) -> Handler:
        """Register ``handler(event: QueueEvent)`` for a queue event name, or
        ``error(error, None)`` / ``closed()``."""
        return self._events.on(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Unregister a handler."""
        self._events.off(event, handler)

    def __aiter__(self) -> AsyncIterator[QueueEvent]:
        return self.events()

    async def events(self) -> AsyncIterator[QueueEvent]:
        """Yield events in log order until :meth:`close`; storage errors are reported as
        ``error`` and reading resumes after the last delivered event."""
        await self.wait_until_ready()
        assert self.last_event_id is not None
        while not self._closing:
            try:
                batch = await self.backend.wait_for_events(
                    self.queue_name, self.last_event_id, self.block
                )
            except asyncio.CancelledError:
                if self._closing:
                    return
                raise
            except Exception as exc:
                self._events.emit("error", exc, None)
                await asyncio.sleep(self.retry_delay / 1000)
                continue
            for stored in batch:
                self.last_event_id = stored.id
                yield QueueEvent(stored.id, stored.name, stored.fields)
                if self._closing:
                    return

    async def wait_until_ready(self) -> None:
        """Fix where delivery starts (the end of the log now, unless ``last_event_id`` was
        given): every event logged after this returns is delivered (BullMQ's
        ``waitUntilReady``; ``job.wait_until_finished`` calls it before reading the job)."""
        if self.last_event_id is None:
            last = await self.backend.last_event_id(self.queue_name)
            if self.last_event_id is None:  # (the earlier of two concurrent reads wins)
                self.last_event_id = last

    async def run(self) -> None:
        """Dispatch events to the ``on`` handlers until :meth:`close`."""
        self._reader = asyncio.current_task()
        try:
            async for event in self.events():
                self._events.emit(event.name, event)
        finally:
            self._reader = None
            self._events.emit("closed")

    async def close(self) -> None:
        """Stop delivering: :meth:`run` returns and iterations end."""
        self._closing = True
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
