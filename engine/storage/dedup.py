"""Deduplication keys: read and release ``de:<id>`` (the add-time logic rides in ``add_jobs``,
which must decide atomically with the add; see :mod:`corral.engine.deduplication`)."""

from __future__ import annotations

from typing import Protocol


class DedupStorage(Protocol):
    """Read and release deduplication keys (BullMQ's ``de:<id>``)."""

    async def get_deduplication_job_id(self, queue: str, dedup_id: str) -> str | None:
        """The id of the job holding ``dedup_id`` (the value of ``de:<id>``), or None."""
        ...

    async def remove_deduplication_key(self, queue: str, dedup_id: str) -> int:
        """Delete ``de:<id>`` whoever holds it (BullMQ's ``removeDeduplicationKey``): the
        number of keys deleted (0 or 1). A job parked by ``keep_last_if_active`` stays in
        ``dn:<id>`` and is still stored when its owner finishes."""
        ...
