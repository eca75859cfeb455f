"""The operator calls and readers of a :class:`~corral.engine.queue.Queue` beyond adding and
inspecting single jobs: BullMQ's queue management (``retryJobs``, ``promoteJobs``, ``clean``,
``drain``, ``obliterate``, ``trimEvents``), its counts and list readers, and ``getWorkers``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from corral.engine.errors import CorralError, InvalidArgumentError
from corral.engine.job import MAX_PRIORITY, Duration, Job, duration_ms
from corral.engine.states import JobState
from corral.engine.storage import ObliterateResult

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.storage import Storage

#: BullMQ's most jobs deleted by one ``cleanJobsInSet`` call.
CLEAN_BATCH: Final = 10_000
#: A score above every delayed job's: ``promote_jobs`` moves them all (BullMQ's
#: ``Number.MAX_VALUE``; this one is exact as a Lua double).
ALL_SCORES: Final = 2**63

#: BullMQ's texts for obliterate's refusals.
NOT_PAUSED_TEXT: Final = "Cannot obliterate non-paused queue"
ACTIVE_JOBS_TEXT: Final = "Cannot obliterate queue with active jobs"

#: The state names ``clean`` takes (BullMQ's, including its aliases for the wait list).
CLEAN_STATES: Final = {
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "delayed": JobState.DELAYED,
    "prioritized": JobState.PRIORITIZED,
    "active": JobState.ACTIVE,
    "wait": JobState.WAITING,
    "waiting": JobState.WAITING,
    "paused": JobState.WAITING,
}

#: The states ``count`` adds up: the jobs still to be processed (BullMQ's ``count``).
_PENDING = (JobState.WAITING, JobState.DELAYED, JobState.PRIORITIZED)


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return value


def clean_state(state: str | JobState) -> JobState:
    """The state ``clean`` deletes from, from BullMQ's names (``"wait"``, ``"waiting"`` and
    ``"paused"`` all name the wait list).

    Raises:
        InvalidArgumentError: naming the accepted names.
    """
    found = CLEAN_STATES.get(str(state))
    if found is None:
        raise InvalidArgumentError(
            f"cannot clean state {state!r}; expected one of {', '.join(CLEAN_STATES)}"
        )
    return found


class QueueOperations:
    """BullMQ's queue management and readers, mixed into :class:`~corral.engine.queue.Queue`."""

    name: str
    backend: Storage
    clock: Clock

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

        async def get_jobs(
            self,
            states: str | JobState | Sequence[str | JobState] | None = None,
            start: int = 0,
            end: int = -1,
            *,
            asc: bool = False,
        ) -> list[Job]: ...

        async def get_job_counts(self, *states: str | JobState) -> dict[str, int]: ...

        async def pause(self) -> None: ...

    # ------------------------------------------------------------------ moving many jobs

    async def retry_jobs(
        self, state: str = "failed", count: int = 1000, timestamp: int | None = None
    ) -> None:
        """Move every completed or failed job that finished at or before ``timestamp`` (now
        when None) to the back of wait, ``count`` per store call, whatever its priority (as
        BullMQ's ``retryJobs``); each move logs ``waiting`` with ``prev``. The attempt counters
        are kept.

        Raises:
            InvalidArgumentError: for another state, or a count below 1.
        """
        self._check_open()
        if state not in ("completed", "failed"):
            raise InvalidArgumentError(
                f"retry_jobs retries 'completed' or 'failed' jobs, not {state!r}"
            )
        _positive(count, "count")
        at = self.clock.now_ms() if timestamp is None else timestamp
        if isinstance(at, bool) or not isinstance(at, int):
            raise InvalidArgumentError(f"timestamp must be milliseconds, got {timestamp!r}")
        while await self.backend.move_jobs_to_wait(
            self.name, JobState(state), count, at, self.clock.now_ms()
        ):
            pass

    async def promote_jobs(self, count: int = 1000) -> None:
        """Make every delayed job ready now, ``count`` per store call: each goes to the back
        of wait whatever its priority, with a ``waiting`` event (as BullMQ's ``promoteJobs``).

        Raises:
            InvalidArgumentError: for a count below 1.
        """
        self._check_open()
        _positive(count, "count")
        while await self.backend.move_jobs_to_wait(
            self.name, JobState.DELAYED, count, ALL_SCORES, self.clock.now_ms()
        ):
            pass

    # ------------------------------------------------------------------ deleting jobs

    async def clean(
        self, grace: Duration, limit: int, state: str | JobState = "completed"
    ) -> list[str]:
        """Delete jobs of ``state`` older than ``grace`` (BullMQ's ``clean``): finished jobs by
        their finish time, others by their first of finish, start and creation times. Active
        jobs go only once their lock is gone. ``limit`` (0: no limit) caps how many go; the
        store is asked for at most 10,000 per call. Each call logs one ``cleaned`` event with
        its count.

        Returns:
            The deleted ids.

        Raises:
            InvalidArgumentError: for an unknown state, a negative grace or limit.
        """
        self._check_open()
        target = clean_state(state)
        timestamp = self.clock.now_ms() - duration_ms(grace, "grace")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentError(f"limit must be 0 (no limit) or more, got {limit!r}")
        deleted: list[str] = []
        while True:
            wanted = CLEAN_BATCH if not limit else min(CLEAN_BATCH, limit - len(deleted))
            ids = await self.backend.clean(self.name, target, timestamp, wanted)
            deleted.extend(ids)
            if len(ids) < wanted or (limit and len(deleted) >= limit):
                return deleted

    async def drain(self, delayed: bool = False) -> None:
        """Delete every waiting and prioritized job, and the delayed ones when ``delayed``
        (BullMQ's ``drain``). Active and finished jobs stay; no event is logged."""
        self._check_open()
        await self.backend.drain(self.name, bool(delayed))

    async def obliterate(self, force: bool = False, count: int = 1000) -> None:
        """Delete the queue and every job in it (BullMQ's ``obliterate``): pauses it first,
        then deletes ``count`` jobs per store call and, at the end, every key of the queue.

        Raises:
            CorralError: "Cannot obliterate queue with active jobs" when jobs are running and
                ``force`` is not set (nothing is deleted), or "Cannot obliterate non-paused
                queue" if someone resumed the queue meanwhile.
        """
        self._check_open()
        _positive(count, "count")
        await self.pause()
        while True:
            result = await self.backend.obliterate(self.name, count, bool(force))
            if result is ObliterateResult.NOT_PAUSED:
                raise CorralError(NOT_PAUSED_TEXT)
            if result is ObliterateResult.ACTIVE_JOBS:
                raise CorralError(ACTIVE_JOBS_TEXT)
            if result is ObliterateResult.DONE:
                return

    async def trim_events(self, max_length: int) -> int:
        """Trim the event log to about ``max_length`` entries (Redis keeps whole stream nodes,
        so a few more may stay); return how many were removed."""
        self._check_open()
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0:
            raise InvalidArgumentError(f"max_length must be 0 or more, got {max_length!r}")
        return await self.backend.trim_events(self.name, max_length)

    # ------------------------------------------------------------------ counts

    async def get_counts_per_priority(self, priorities: Iterable[int]) -> dict[int, int]:
        """How many jobs wait at each priority: 0 counts the wait list, ``p`` > 0 the
        prioritized jobs of priority ``p`` (BullMQ's ``getCountsPerPriority``)."""
        self._check_open()
        wanted = list(priorities)
        for priority in wanted:
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise InvalidArgumentError(f"priorities are integers, got {priority!r}")
            if not 0 <= priority <= MAX_PRIORITY:
                raise InvalidArgumentError(
                    f"priority must be between 0 and {MAX_PRIORITY}, got {priority}"
                )
        return await self.backend.get_counts_per_priority(self.name, wanted)

    async def get_job_count(self, *states: str | JobState) -> int:
        """The number of jobs in the given states, all states when none are named (BullMQ's
        ``getJobCountByTypes``)."""
        return sum((await self.get_job_counts(*states)).values())

    async def count(self) -> int:
        """The number of jobs still to be processed: waiting, prioritized and delayed (BullMQ's
        ``count``)."""
        return await self.get_job_count(*_PENDING)

    async def get_waiting_count(self) -> int:
        """The number of waiting jobs."""
        return await self.get_job_count(JobState.WAITING)

    async def get_prioritized_count(self) -> int:
        """The number of prioritized jobs."""
        return await self.get_job_count(JobState.PRIORITIZED)

    async def get_delayed_count(self) -> int:
        """The number of delayed jobs."""
        return await self.get_job_count(JobState.DELAYED)

    async def get_active_count(self) -> int:
        """The number of active jobs."""
        return await self.get_job_count(JobState.ACTIVE)

    async def get_completed_count(self) -> int:
        """The number of completed jobs."""
        return await self.get_job_count(JobState.COMPLETED)

    async def get_failed_count(self) -> int:
        """The number of failed jobs."""
        return await self.get_job_count(JobState.FAILED)

    # ------------------------------------------------------------------ list readers

    async def get_waiting(self, start: int = 0, end: int = -1, *, asc: bool = True) -> list[Job]:
        """Waiting jobs by index range, oldest first by default (BullMQ's ``getWaiting``)."""
        return await self.get_jobs(JobState.WAITING, start, end, asc=asc)

    async def get_prioritized(
        self, start: int = 0, end: int = -1, *, asc: bool = True
    ) -> list[Job]:
        """Prioritized jobs, next served first by default (BullMQ's ``getPrioritized``)."""
        return await self.get_jobs(JobState.PRIORITIZED, start, end, asc=asc)

    async def get_delayed(self, start: int = 0, end: int = -1, *, asc: bool = True) -> list[Job]:
        """Delayed jobs, soonest due first by default (BullMQ's ``getDelayed``)."""
        return await self.get_jobs(JobState.DELAYED, start, end, asc=asc)

    async def get_active(self, start: int = 0, end: int = -1, *, asc: bool = True) -> list[Job]:
        """Active jobs, longest running first by default (BullMQ's ``getActive``)."""
        return await self.get_jobs(JobState.ACTIVE, start, end, asc=asc)

    async def get_completed(self, start: int = 0, end: int = -1, *, asc: bool = False) -> list[Job]:
        """Completed jobs, newest first by default (BullMQ's ``getCompleted``)."""
        return await self.get_jobs(JobState.COMPLETED, start, end, asc=asc)

    async def get_failed(self, start: int = 0, end: int = -1, *, asc: bool = False) -> list[Job]:
        """Failed jobs, newest first by default (BullMQ's ``getFailed``)."""
        return await self.get_jobs(JobState.FAILED, start, end, asc=asc)

    # ------------------------------------------------------------------ workers

    async def get_workers(self) -> list[dict[str, str]]:
        """The workers serving this queue, as BullMQ's ``getWorkers``: on Redis the ``CLIENT
        LIST`` entries of their connections (``name`` is the queue's name, ``rawname`` the
        connection's), so Node workers are listed too."""
        self._check_open()
        return await self.backend.get_workers(self.name)

    async def get_workers_count(self) -> int:
        """The number of workers serving this queue (BullMQ's ``getWorkersCount``)."""
        return len(await self.get_workers())
