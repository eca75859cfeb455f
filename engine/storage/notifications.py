"""The queue's event log and its work marker: reading them and waiting on them."""

from __future__ import annotations

from typing import Protocol

from corral.engine.storage.records import StoredEvent


class NotificationStorage(Protocol):
    """The queue's event log and its work marker: reading them and waiting on them."""

    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        """Events logged after id ``after`` (from the start when None), oldest first."""
        ...

    async def last_event_id(self, queue: str) -> str:
        """The id of the newest logged event, or ``"0-0"`` when the log is empty."""
        ...

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        """Events logged after id ``after``, waiting up to ``timeout_ms`` for the first one
        (Redis ``XREAD BLOCK``); an empty list after the timeout."""
        ...

    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        """Wait until the queue's marker is set (jobs ready, resumed, a delayed job added) and
        consume it; return False after ``timeout_ms`` without one. ``registration`` is the
        waiting worker's (:meth:`~corral.engine.storage.workers.WorkerStorage.register_worker`):
        on Redis it blocks on that worker's named connection, as BullMQ's workers do."""
        ...
