"""Rate limits and global concurrency on Redis (``corral.engine.storage.LimitStorage``): the
``limiter`` key and the ``meta`` fields ``max``, ``duration``, ``concurrency``, as BullMQ 6.7
keeps them, so that Node workers and corral's share one limit."""

from __future__ import annotations

from typing import Any

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text
from corral.engine.errors import ResultCode
from corral.engine.limits import MANUAL_LIMIT_COUNT


class LimitOps(RedisCore):
    """The limiter window, the limit settings, and giving a rate-limited job back."""

    async def _settings(self, queue: str, *args: str | int) -> Any:
        return await self._scripts.run("limit_settings", self.keys(queue), list(args))

    @reaching
    async def set_rate_limit(self, queue: str, ttl_ms: int) -> None:
        """``SET limiter <MAX_SAFE_INTEGER> PX ttl`` (BullMQ's ``rateLimit``)."""
        await self._settings(queue, "rate_limit", MANUAL_LIMIT_COUNT, ttl_ms)

    @reaching
    async def get_rate_limit_ttl(self, queue: str, max_jobs: int | None) -> int:
        """The window's TTL as BullMQ's ``getRateLimitTtl`` reports it."""
        return int(await self._settings(queue, "ttl", max_jobs or 0))

    @reaching
    async def remove_rate_limit_key(self, queue: str) -> int:
        """``DEL limiter``, then wake a waiting worker if jobs are ready."""
        return int(await self._settings(queue, "remove_window"))

    @reaching
    async def set_queue_meta(self, queue: str, fields: dict[str, int]) -> None:
        """``HSET meta``, then wake a waiting worker if jobs are ready."""
        flat: list[str | int] = []
        for name, value in fields.items():
            flat += [name, value]
        await self._settings(queue, "set_meta", *flat)

    @reaching
    async def get_queue_meta(self, queue: str, names: tuple[str, ...]) -> list[str | None]:
        """``HMGET meta``."""
        raw = await self._settings(queue, "get_meta", *names)
        assert isinstance(raw, list)
        return [None if value is None else as_text(value) for value in raw]

    @reaching
    async def remove_queue_meta(self, queue: str, names: tuple[str, ...]) -> None:
        """``HDEL meta``, then wake a waiting worker if jobs are ready."""
        await self._settings(queue, "del_meta", *names)

    @reaching
    async def move_to_wait(self, queue: str, job_id: str, token: str) -> tuple[ResultCode, int]:
        """Give a rate-limited job back (``RATE_LIMITED``); the code and the window's TTL."""
        raw = await self._scripts.run("move_to_wait", self.keys(queue), [job_id, token])
        return ResultCode(raw[0]), int(raw[1])
