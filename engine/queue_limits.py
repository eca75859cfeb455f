"""The Queue's rate-limit and global-concurrency calls (a mixin of :class:`~corral.engine.queue.
Queue`; the rules are :mod:`corral.engine.limits`'s, the state the store's ``limiter`` key and
``meta`` fields, shared with Node BullMQ)."""

from __future__ import annotations

from corral.engine.job import Duration
from corral.engine.limits import positive_int, window_ms
from corral.engine.storage import Storage

_RATE_FIELDS = ("max", "duration")
_CONCURRENCY_FIELDS = ("concurrency",)


class QueueLimits:
    """Rate limits and global concurrency of one queue."""

    name: str
    backend: Storage

    def _check_open(self) -> None:  # (Queue's)
        raise NotImplementedError

    async def rate_limit(self, expire_time: Duration) -> None:
        """Hold back every fetch that applies a maximum (a worker ``limiter`` or the global
        rate limit) for ``expire_time`` ms: BullMQ's ``rateLimit``. Workers without any
        maximum are not held back (as in BullMQ). Raise :class:`RateLimitError` from the
        processor afterwards to put the current job back without using an attempt."""
        self._check_open()
        await self.backend.set_rate_limit(self.name, window_ms(expire_time, "expire_time"))

    async def get_rate_limit_ttl(self, max_jobs: int | None = None) -> int:
        """Milliseconds left in the rate-limit window if its count reached ``max_jobs`` (or
        the global ``max``), else 0; with no maximum at all the raw TTL (-2: no window,
        -1: a window without TTL), as BullMQ's ``getRateLimitTtl``."""
        self._check_open()
        if max_jobs is not None:
            max_jobs = positive_int(max_jobs, "max_jobs")
        return await self.backend.get_rate_limit_ttl(self.name, max_jobs)

    async def remove_rate_limit_key(self) -> int:
        """Delete the rate-limit window (1 if there was one, else 0); waiting workers fetch at
        once."""
        self._check_open()
        return await self.backend.remove_rate_limit_key(self.name)

    async def set_global_rate_limit(self, max: int, duration: Duration) -> None:
        """At most ``max`` jobs start per ``duration`` ms across all workers (``meta`` fields
        ``max``/``duration``). Its ``max`` beats a worker ``limiter``'s, but a worker
        ``limiter``'s ``duration`` beats its ``duration`` (BullMQ's precedence)."""
        self._check_open()
        fields = {
            "max": positive_int(max, "max"),
            "duration": window_ms(duration, "duration"),
        }
        await self.backend.set_queue_meta(self.name, fields)

    async def get_global_rate_limit(self) -> dict[str, int] | None:
        """``{"max": n, "duration": ms}``, or None when no global rate limit is set."""
        self._check_open()
        raw_max, raw_duration = await self.backend.get_queue_meta(self.name, _RATE_FIELDS)
        if raw_max is None:
            return None
        return {"max": int(raw_max), "duration": int(raw_duration or 0)}

    async def remove_global_rate_limit(self) -> None:
        """Remove the global rate limit; waiting workers fetch at once."""
        self._check_open()
        await self.backend.remove_queue_meta(self.name, _RATE_FIELDS)

    async def set_global_concurrency(self, concurrency: int) -> None:
        """At most ``concurrency`` jobs active at once across all workers (``meta`` field
        ``concurrency``); a worker's own ``concurrency`` never raises it."""
        self._check_open()
        value = positive_int(concurrency, "concurrency")
        await self.backend.set_queue_meta(self.name, {"concurrency": value})

    async def get_global_concurrency(self) -> int | None:
        """The global concurrency, or None when not set."""
        self._check_open()
        (raw,) = await self.backend.get_queue_meta(self.name, _CONCURRENCY_FIELDS)
        return None if raw is None else int(raw)

    async def remove_global_concurrency(self) -> None:
        """Remove the global concurrency; waiting workers fetch at once."""
        self._check_open()
        await self.backend.remove_queue_meta(self.name, _CONCURRENCY_FIELDS)
