"""Operator calls on a whole queue, on Redis (``corral.engine.storage.OperatorStorage``)."""

from __future__ import annotations

from corral.backends.redis.core import RedisCore, reaching


class QueueOps(RedisCore):
    """Calls an operator makes on a queue."""

    @reaching
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from the queue."""
        await self._scripts.run("set_paused", self.keys(queue), ["1" if paused else "0"])
