"""What a caller can read of a queue and its jobs; none of them changes anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.engine.states import JobState
from corral.engine.storage.records import LockInfo


class ReaderStorage(Protocol):
    """What a caller can read of a queue and its jobs; none of them changes anything."""

    async def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused."""
        ...

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        """The job's hash fields, or None."""
        ...

    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        """Where the job is, or None if it does not exist."""
        ...

    async def get_counts(self, queue: str) -> dict[JobState, int]:
        """The number of jobs in each state."""
        ...

    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        """A range of the ids in one state (Redis range semantics: ``end`` inclusive, negative
        indexes count from the end). Descending order (``asc=False``) is newest first."""
        ...

    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        """The job's current lock, or None if it holds none."""
        ...

    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        """Whether the last stalled check marked the job (it is in the ``stalled`` set)."""
        ...

    async def get_job_logs(
        self, queue: str, job_id: str, start: int, end: int, asc: bool
    ) -> tuple[list[str], int]:
        """A range of the job's log rows (Redis range semantics, oldest first when ``asc``;
        ``asc=False`` ranges from the newest) and the number of rows in all."""
        ...

    async def get_counts_per_priority(
        self, queue: str, priorities: Sequence[int]
    ) -> dict[int, int]:
        """How many jobs wait at each priority: 0 counts the wait list, ``p`` > 0 the
        prioritized jobs of priority ``p`` (BullMQ's ``getCountsPerPriority``)."""
        ...
