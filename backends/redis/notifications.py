"""The queue's event stream and its work marker on Redis."""

from __future__ import annotations

from typing import Any

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text
from corral.engine.storage import StoredEvent

#: Shortest BZPOPMIN block (seconds): 0 would mean "forever".
_MIN_BLOCK_S = 0.001


class NotificationOps(RedisCore):
    """The queue's event stream and its work marker on Redis."""

    @reaching
    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        """Events after stream id ``after`` (from the start when None), oldest first."""
        start = "-"
        if after is not None:
            ms, _, seq = after.partition("-")
            start = f"{int(ms)}-{int(seq or 0) + 1}"
        entries = await self._commands.call(
            "XRANGE", self.keys(queue).events, start, "+", "COUNT", count
        )
        return _stream_events(entries)

    @reaching
    async def last_event_id(self, queue: str) -> str:
        """The newest stream id of the queue's events, or ``"0-0"``."""
        newest = await self._commands.call(
            "XREVRANGE", self.keys(queue).events, "+", "-", "COUNT", 1
        )
        return as_text(newest[0][0]) if newest else "0-0"

    @reaching
    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        """Events after stream id ``after``, blocking (XREAD BLOCK) up to ``timeout_ms``."""
        key = self.keys(queue).events
        reply: Any = await self._blocking.xread({key: after}, count=count, block=max(timeout_ms, 1))
        return [event for _stream, entries in reply or () for event in _stream_events(entries)]

    @reaching
    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        """Block on the queue's marker (BZPOPMIN) and consume it; False after ``timeout_ms``.
        A registered worker blocks on its own named connection (see ``register_worker``)."""
        timeout = max(timeout_ms / 1000, _MIN_BLOCK_S)
        client = self._work_client(queue, registration)
        return await client.bzpopmin(self.keys(queue).marker, timeout) is not None


def _stream_events(entries: Any) -> list[StoredEvent]:
    """Decode stream entries ``[(id, {field: value})]``; the ``event`` field is the name."""
    events = []
    for entry_id, raw in entries:
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        name = fields.pop("event", "")
        events.append(StoredEvent(as_text(entry_id), name, fields))
    return events
