"""Job schedulers in the store: upsert, the next iteration, removal and readers.

The store keeps BullMQ's layout: the ``repeat`` sorted set (scheduler id scored by the slot of
its current iteration), a hash per scheduler, and each iteration as an ordinary job whose id is
``repeat:<scheduler id>:<slot millis>`` and whose hash holds ``rjk`` (the scheduler id). The
policy (options, the cron slot, the iteration's options) is the engine's
(:mod:`corral.engine.job_schedulers`); ``every`` slots are computed inside the store, as BullMQ
computes them inside Redis, from the store's record of the previous slot.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from corral.engine.errors import ResultCode


@dataclasses.dataclass(slots=True)
class SchedulerUpsert:
    """What ``upsert_job_scheduler`` stores.

    Attributes:
        scheduler_id: the scheduler's id.
        fields: the scheduler hash's option fields (``name``, ``every`` or ``pattern``, ...).
        template_data: the iterations' data (JSON).
        template_opts: the template's options (JSON, BullMQ's names), stored in the hash.
        job_opts: the first iteration's ``opts`` (JSON) without ``jobId``, ``delay`` and
            ``timestamp``, which the store sets.
        next_millis: the first slot of a pattern scheduler; None for ``every`` (the store
            computes it).
    """

    scheduler_id: str
    fields: dict[str, str]
    template_data: str
    template_opts: str
    job_opts: str
    next_millis: int | None


@dataclasses.dataclass(slots=True)
class SchedulerRecord:
    """A stored scheduler: its id, hash fields and the slot of its current iteration."""

    scheduler_id: str
    fields: dict[str, str]
    next_millis: int | None


class SchedulerStorage(Protocol):
    """Job schedulers: each owns one future job, and makes the next when that one starts."""

    async def upsert_job_scheduler(
        self, queue: str, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        """Create or replace a scheduler and store its current iteration (``SCHEDULE*``),
        dropping a pending one it had (``UNSCHEDULE``; an active or finished one stays).
        Returns ``(job id, delay)``, or ``SCHEDULER_SLOT_TAKEN`` / ``SCHEDULER_SLOTS_TAKEN``
        when the slot's job id is taken: the scheduler is then left as it was, but (as in
        BullMQ) its pending iteration may already have been dropped."""
        ...

    async def update_job_scheduler(
        self,
        queue: str,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        """Store the next iteration after ``producer_id`` was activated (``SCHEDULE*``), only
        if that job is the scheduler's current iteration (so a retry, a stall or a second
        worker never makes one twice) and the slot's id is free. Returns the new job's id."""
        ...

    async def remove_job_scheduler(self, queue: str, scheduler_id: str, now: int) -> bool:
        """Delete a scheduler, and its current iteration if that is delayed (``UNSCHEDULE``).
        False if there was no such scheduler."""
        ...

    async def get_job_scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        """One scheduler, or None."""
        ...

    async def get_job_schedulers(
        self, queue: str, start: int, end: int, asc: bool
    ) -> list[SchedulerRecord]:
        """Schedulers ordered by their next slot (``start``/``end`` as Redis ranges)."""
        ...

    async def get_job_schedulers_count(self, queue: str) -> int:
        """How many schedulers the queue has."""
        ...
