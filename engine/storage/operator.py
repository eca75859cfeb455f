"""Calls an operator makes on jobs and queues (BullMQ's job and queue management).

None of them moves a job that holds a lock (rule 3 of :mod:`corral.engine.states`); each checks
where the job is and answers with BullMQ's code when it is elsewhere (``MISSING_JOB``,
``NOT_IN_STATE``, ``JOB_LOCKED``), changing nothing.
"""

from __future__ import annotations

from typing import Protocol

from corral.engine.errors import ResultCode


class OperatorStorage(Protocol):
    """Calls an operator makes on jobs and queues (never moving a job that holds a lock)."""

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        """Delete a job that holds no lock, from whatever state it is in (``REMOVE``)."""
        ...

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from the queue."""
        ...
