"""The core job flow: add, fetch, finish, lock renewal, release, the stalled check, progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from corral.engine.errors import ResultCode
from corral.engine.storage.records import (
    AddResult,
    FetchRequest,
    FetchResult,
    FinishResult,
    NewJob,
    Outcome,
    StalledCheck,
)


class JobFlowStorage(Protocol):
    """The core job flow: add, fetch, finish, lock renewal, release, the stalled check, progress."""

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        """Store new jobs (all-or-nothing), in order: ``ADD``, ``ADD_PRIORITIZED`` or
        ``ADD_DELAYED``. An existing custom id is left untouched and reported not created."""
        ...

    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        """Promote due delayed jobs, then take the next job (wait first, then prioritized) and
        lock it with ``request``'s token, or one the store mints (see :class:`FetchRequest`),
        for ``request.lock_duration`` ms (``FETCH``): sets ``processedOn``, ``ats`` + 1,
        ``pb``. Returns nothing while the queue is paused."""
        ...

    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        """Apply an attempt's outcome to an active job whose lock ``token`` holds: release the
        lock, ``atm`` + 1, move it (``COMPLETE``/``FAIL``/``RETRY_LATER``/``RETRY``), apply
        retention. On a lock or state mismatch nothing changes and the code says why. With
        ``fetch`` the next job is fetched in the same atomic step and returned in place of
        ``OK`` (see :data:`FinishResult`)."""
        ...

    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        """Re-arm each ``(job_id, token)`` lock that still holds that token and unmark it as
        stalled; return the *tokens* whose lock was gone or taken (a worker can hold two tokens
        for one job id: a lost run and a new one). An expired lock is never re-made."""
        ...

    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        """Give an active job back (``RELEASE``): drop its lock and put it at the front of wait,
        without counting a stall or an attempt."""
        ...

    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        """One two-phase stalled check, throttled by the ``stalled-check`` key (PX
        ``stalled_interval``): recover the jobs marked last time whose lock is gone
        (``RECOVER_STALLED``, or ``FAIL`` when ``stc > max_stalled_count``), then mark every
        active job."""
        ...

    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        """Store a job's progress (JSON) and log a ``progress`` event."""
        ...
