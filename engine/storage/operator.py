"""Calls an operator makes on jobs and queues (BullMQ's job and queue management).

None of them moves a job that holds a lock (rule 3 of :mod:`corral.engine.states`); each checks
where the job is and answers with BullMQ's code when it is elsewhere (``MISSING_JOB``,
``NOT_IN_STATE``, ``JOB_LOCKED``), changing nothing.
"""

from __future__ import annotations

from typing import Protocol

from corral.engine.errors import ResultCode
from corral.engine.states import JobState
from corral.engine.storage.records import ObliterateResult


class OperatorStorage(Protocol):
    """Calls an operator makes on jobs and queues (never moving a job that holds a lock)."""

    # ------------------------------------------------------------------ one job

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        """Delete a job that holds no lock, from whatever state it is in (``REMOVE``)."""
        ...

    async def retry_job(
        self,
        queue: str,
        job_id: str,
        state: JobState,
        *,
        reset_attempts_made: bool,
        reset_attempts_started: bool,
        now: int,
    ) -> ResultCode:
        """Move a job that finished in ``state`` (completed or failed) back to wait, at the front
        when its ``lifo`` option says so, or to prioritized when its priority is > 0
        (``REPROCESS`` / ``REPROCESS_PRIORITIZED``, BullMQ's ``reprocessJob``): clears
        ``finishedOn``, ``processedOn`` and ``returnvalue`` or ``failedReason`` (and ``atm`` /
        ``ats`` when asked), logs ``waiting`` with ``prev`` ``state``. ``MISSING_JOB`` or
        ``NOT_IN_STATE`` otherwise."""
        ...

    async def promote_job(self, queue: str, job_id: str, now: int) -> ResultCode:
        """Make a delayed job ready now (``PROMOTE`` / ``PROMOTE_PRIORITIZED``), ``delay``
        set to 0, event ``waiting`` with ``prev`` ``delayed``; ``NOT_IN_STATE`` if it is not
        delayed."""
        ...

    async def update_data(self, queue: str, job_id: str, data: str) -> ResultCode:
        """Replace a job's data (JSON), in any state, lock or not; ``MISSING_JOB``."""
        ...

    async def change_priority(
        self, queue: str, job_id: str, priority: int, lifo: bool
    ) -> ResultCode:
        """Set a job's priority; a waiting or prioritized job is re-queued by it
        (``CHANGE_PRIORITY`` / ``CHANGE_PRIORITY_TO_WAIT``), a job elsewhere only gets the
        field. ``MISSING_JOB``."""
        ...

    async def change_delay(self, queue: str, job_id: str, delay: int, now: int) -> ResultCode:
        """Re-schedule a delayed job to ``now + delay`` (``CHANGE_DELAY``), event ``delayed``;
        ``MISSING_JOB``, or ``NOT_IN_STATE`` if it is not delayed."""
        ...

    async def add_log(self, queue: str, job_id: str, row: str, keep_logs: int | None) -> int | None:
        """Append a row to the job's log, keeping the last ``keep_logs`` rows when given;
        return the number of rows kept, or None if the job does not exist."""
        ...

    # ------------------------------------------------------------------ the queue

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from the queue."""
        ...

    async def move_jobs_to_wait(
        self, queue: str, state: JobState, count: int, timestamp: int, now: int
    ) -> bool:
        """BullMQ's ``moveJobsToWait`` (``Queue.retry_jobs`` from completed or failed,
        ``Queue.promote_jobs`` from delayed): up to ``count`` jobs of ``state`` scored at or
        before ``timestamp`` go to the left of wait whatever their priority (``REPROCESS`` /
        ``PROMOTE``), each with a ``waiting`` event; return True when the batch was full (more
        may remain)."""
        ...

    async def clean(self, queue: str, state: JobState, timestamp: int, limit: int) -> list[str]:
        """Delete up to ``limit`` (0: no limit) jobs of ``state`` whose time (see BullMQ's
        ``cleanJobsInSet``) is at or before ``timestamp`` (``CLEAN``; active jobs only when
        their lock is gone); one ``cleaned`` event with the count; return the deleted ids."""
        ...

    async def drain(self, queue: str, delayed: bool) -> None:
        """Delete every waiting and prioritized job, and the delayed ones when ``delayed``
        (``DRAIN``); active and finished jobs stay. No event, as BullMQ."""
        ...

    async def obliterate(self, queue: str, count: int, force: bool) -> ObliterateResult:
        """Delete up to ``count`` jobs of a paused queue (``OBLITERATE``), and once none are left
        every key of the queue; refuses a queue that is not paused, or one with active jobs
        unless ``force``."""
        ...

    async def trim_events(self, queue: str, max_length: int) -> int:
        """Trim the event log to about ``max_length`` entries; return how many were removed."""
        ...
