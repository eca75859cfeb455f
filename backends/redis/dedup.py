"""Deduplication keys on Redis (``corral.engine.storage.DedupStorage``): BullMQ's
``<prefix>:<queue>:de:<id>``. The add-time step and the releases run inside the scripts that
add, finish and remove jobs (``lua/includes/dedup.lua``)."""

from __future__ import annotations

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text


class DedupOps(RedisCore):
    """Read and release deduplication keys."""

    @reaching
    async def get_deduplication_job_id(self, queue: str, dedup_id: str) -> str | None:
        """``GET de:<id>``: the id of the job holding ``dedup_id``, or None."""
        raw = await self._commands.call("GET", self.keys(queue).base + "de:" + dedup_id)
        return None if raw is None else as_text(raw)

    @reaching
    async def remove_deduplication_key(self, queue: str, dedup_id: str) -> int:
        """``DEL de:<id>``: the number of keys deleted."""
        return int(await self._commands.call("DEL", self.keys(queue).base + "de:" + dedup_id))
