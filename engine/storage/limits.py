"""Rate limits and global concurrency: the queue's ``limiter`` window counter and the ``meta``
fields ``max``, ``duration`` and ``concurrency`` (see :mod:`corral.engine.limits`).

Fetching applies them (``fetch_next`` and the fetch of ``finish`` take the worker's limiter in
their :class:`~corral.engine.storage.records.FetchRequest`); these calls set, read and clear
them, and move a rate-limited job back to wait.
"""

from __future__ import annotations

from typing import Protocol

from corral.engine.errors import ResultCode


class LimitStorage(Protocol):
    """The queue's rate limits and global concurrency."""

    async def set_rate_limit(self, queue: str, ttl_ms: int) -> None:
        """Fill the window counter for ``ttl_ms`` ms (``Queue.rate_limit``): fetches that
        apply a maximum get nothing until it expires."""
        ...

    async def get_rate_limit_ttl(self, queue: str, max_jobs: int | None) -> int:
        """The window's remaining TTL if the counter reached ``max_jobs`` (else ``meta.max``);
        0 below it; with no maximum at all the raw PTTL (-2 no window, -1 no TTL)."""
        ...

    async def remove_rate_limit_key(self, queue: str) -> int:
        """Delete the window counter (1 if it existed, else 0) and wake a waiting worker."""
        ...

    async def set_queue_meta(self, queue: str, fields: dict[str, int]) -> None:
        """Set ``meta`` fields (``max``/``duration``/``concurrency``) and wake a waiting
        worker (a raised or new limit may let one fetch)."""
        ...

    async def get_queue_meta(self, queue: str, names: tuple[str, ...]) -> list[str | None]:
        """The raw ``meta`` fields ``names`` (None where absent)."""
        ...

    async def remove_queue_meta(self, queue: str, names: tuple[str, ...]) -> None:
        """Delete ``meta`` fields and wake a waiting worker (a removed limit frees it)."""
        ...

    async def move_to_wait(self, queue: str, job_id: str, token: str) -> tuple[ResultCode, int]:
        """Give a rate-limited job back (``RATE_LIMITED``/``RATE_LIMITED_PRIORITIZED``): lock
        checked and dropped, front of wait (or of its priority), no attempt counted. Returns
        the code and the window's remaining TTL (0 if none)."""
        ...
