"""The reference model of the operator calls (issue 14): retry, promote, update data, change
priority and delay, logs, move jobs to wait, clean, drain, obliterate.

:class:`OperatorModel` is a mixin of :class:`corral.sim.model.QueueModel` (kept apart so that each
module stays one concept); it uses the model's jobs, ordering keys and ``_move``, and follows
BullMQ 6.7's scripts as ``bullmq-features.md`` §5 describes them:

* Orders. A Redis list is read left to right (``LRANGE``), which for ``wait`` is the back of the
  line first and for ``active`` the newest activation first: the model's *descending* order. A
  sorted set is read by ascending score: the model's ascending order. Every call that walks
  several jobs walks them in the order the script does, so the moves it records come in the
  same order as the backends' transition logs.
* ``LPUSH wait`` is the back of the line, ``RPUSH wait`` the front (jobs are served from the
  right).
* Rule 3 of the transition table: nothing here moves a job that holds a live lock, except
  ``obliterate`` with ``force``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from corral.engine.errors import ResultCode
from corral.engine.states import JobState, Transition
from corral.engine.storage import ObliterateResult

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.sim.model import OrderKey, _Job

#: The states ``move_jobs_to_wait`` takes jobs from, and the transition each one's jobs take.
MOVE_TO_WAIT: Final = {
    JobState.COMPLETED: Transition.REPROCESS,
    JobState.FAILED: Transition.REPROCESS,
    JobState.DELAYED: Transition.PROMOTE,
}
#: The hash field a retry clears with ``finishedOn`` and ``processedOn``, per finished state.
_RESULT_FIELD: Final = {JobState.COMPLETED: "returnvalue", JobState.FAILED: "failed_reason"}


class OperatorModel:
    """The operator calls of :class:`~corral.sim.model.QueueModel` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by QueueModel
        clock: Clock
        _jobs: dict[str, _Job]
        _paused: bool
        _stalled_check_until: int
        _id_counter: int
        _priority_counter: int
        _meta: dict[str, str]

        def _move(self, job: _Job, transition: Transition, order: OrderKey = ...) -> None: ...
        def _front_of_line(self) -> OrderKey: ...
        def _back_of_line(self) -> OrderKey: ...
        def _priority_place(self, priority: int) -> OrderKey: ...
        def _in(self, state: JobState) -> list[_Job]: ...
        def _live_lock(self, job: _Job) -> tuple[str, int] | None: ...
        def _is_current_iteration(self, job: _Job) -> bool: ...
        def _schedulers_by_slot(self) -> list[str]: ...
        def _forget_schedulers(self, scheduler_ids: list[str] | None = None) -> None: ...
        def _dedup_removed(self, job: _Job) -> None: ...
        def _child_retried(self, child: _Job, state: JobState) -> None: ...

    # ------------------------------------------------------------------ one job

    def retry_job(
        self,
        job_id: str,
        state: JobState,
        *,
        reset_attempts_made: bool,
        reset_attempts_started: bool,
        now: int,
    ) -> ResultCode:
        """BullMQ's ``reprocessJob``: a job finished in ``state`` back to the back of wait (the
        front when ``lifo``), or to prioritized when its priority is > 0. Clears
        ``finishedOn``, ``processedOn`` and the result field of ``state``, and ``atm`` / ``ats``
        when asked; keeps ``stacktrace``, ``stc``, ``delay``, ``progress``, logs and ``pb``."""
        if not state.is_terminal:
            raise ValueError(f"retry_job: {state} is not a finished state")
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        if job.state is not state:
            return ResultCode.NOT_IN_STATE
        job.finished_on = None
        job.processed_on = None
        setattr(job, _RESULT_FIELD[state], None)
        if reset_attempts_made:
            job.atm = None
        if reset_attempts_started:
            job.ats = None
        self._child_retried(job, state)  # (flows: pending in its parent again)
        if job.priority:
            self._move(job, Transition.REPROCESS_PRIORITIZED, self._priority_place(job.priority))
        else:
            place = self._front_of_line() if job.options.lifo else self._back_of_line()
            self._move(job, Transition.REPROCESS, place)
        return ResultCode.OK

    def promote_job(self, job_id: str, now: int) -> ResultCode:
        """BullMQ's ``promote``: a delayed job to the back of wait (or into prioritized), its
        ``delay`` set to 0; ``NOT_IN_STATE`` for any other job, a missing one included (the
        script only tries to take it out of ``delayed``)."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.DELAYED:
            return ResultCode.NOT_IN_STATE
        job.delay = 0
        if job.priority:
            self._move(job, Transition.PROMOTE_PRIORITIZED, self._priority_place(job.priority))
        else:
            self._move(job, Transition.PROMOTE, self._back_of_line())
        return ResultCode.OK

    def update_data(self, job_id: str, data: str) -> ResultCode:
        """Replace a job's data, in any state, lock or not."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        job.data = data
        return ResultCode.OK

    def change_priority(self, job_id: str, priority: int, lifo: bool) -> ResultCode:
        """BullMQ's ``changePriority``: a waiting or prioritized job is taken out and queued
        again by its new priority (0: the back of wait, the front when ``lifo``; > 0: a fresh
        place in its level, or with ``lifo`` the score ``priority·2^32`` itself, ahead of its
        level); a job anywhere else only gets the field."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        job.priority = priority
        if job.state not in (JobState.WAITING, JobState.PRIORITIZED):
            return ResultCode.OK
        if priority == 0:
            place = self._front_of_line() if lifo else self._back_of_line()
            self._move(job, Transition.CHANGE_PRIORITY_TO_WAIT, place)
        elif lifo:
            # Equal scores order by member, as in a sorted set.
            self._move(job, Transition.CHANGE_PRIORITY, (priority, 0, job.id))
        else:
            self._move(job, Transition.CHANGE_PRIORITY, self._priority_place(priority))
        return ResultCode.OK

    def change_delay(self, job_id: str, delay: int, now: int) -> ResultCode:
        """BullMQ's ``changeDelay``: a delayed job becomes due ``delay`` ms after ``now`` (not
        after its add), its ``delay`` field set to ``delay``."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        if job.state is not JobState.DELAYED:
            return ResultCode.NOT_IN_STATE
        job.delay = delay
        self._move(job, Transition.CHANGE_DELAY, self._delayed_place_except(job, now + delay))
        return ResultCode.OK

    def _delayed_place_except(self, job: _Job, due_ms: int) -> OrderKey:
        """The model's ``_delayed_place`` with ``job`` itself left out (the script takes it out
        of ``delayed`` before it scores it again)."""
        from corral.sim.model import MAX_DELAY_SEQUENCE  # a cycle at import time

        used = [
            other.order[1]
            for other in self._in(JobState.DELAYED)
            if other is not job and other.order[0] == due_ms
        ]
        sequence = min(max(used) + 1, MAX_DELAY_SEQUENCE) if used else 0
        return (due_ms, sequence, job.id)

    def add_log(self, job_id: str, row: str, keep_logs: int | None) -> int | None:
        """BullMQ's ``addLog``: append ``row``; with ``keep_logs``, ``LTRIM -keep_logs -1`` (0
        keeps every row, as ``LTRIM 0 -1`` does) and return ``min(keep_logs, rows)``; else
        the number of rows. None if the job does not exist."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        job.logs.append(row)
        if keep_logs is None:
            return len(job.logs)
        if keep_logs > 0:
            del job.logs[:-keep_logs]
        return min(keep_logs, len(job.logs))

    def get_job_logs(self, job_id: str, start: int, end: int, asc: bool) -> tuple[list[str], int]:
        """``LRANGE logs start end`` (asc), or ``LRANGE logs -(end+1) -(start+1)`` reversed
        (newest first), and ``LLEN``; a missing job has no rows."""
        from corral.sim.model import redis_range  # a cycle at import time

        job = self._jobs.get(job_id)
        logs = [] if job is None else job.logs
        if asc:
            return redis_range(logs, start, end), len(logs)
        return redis_range(logs, -(end + 1), -(start + 1))[::-1], len(logs)

    # ------------------------------------------------------------------ the queue

    def move_jobs_to_wait(self, state: JobState, count: int, timestamp: int, now: int) -> bool:
        """BullMQ's ``moveJobsToWait``: the first ``count`` jobs of ``state`` scored 0 ..
        ``timestamp`` (finished jobs by ``finishedOn``, delayed ones by their raw score
        ``due·4096 + seq``) go to the back of wait in that order, whatever their priority;
        finished ones lose ``finishedOn``, ``processedOn`` and their result field (never
        ``atm`` / ``ats``), delayed ones keep their ``delay``. True when the batch was full."""
        transition = MOVE_TO_WAIT.get(state)
        if transition is None:
            raise ValueError(f"move_jobs_to_wait: cannot move jobs from {state}")
        chosen = [job for job in self._in(state) if 0 <= self._score(job) <= timestamp][:count]
        for job in chosen:
            if state.is_terminal:
                job.finished_on = None
                job.processed_on = None
                setattr(job, _RESULT_FIELD[state], None)
                self._child_retried(job, state)
            self._move(job, transition, self._back_of_line())
        return count - len(chosen) <= 0

    @staticmethod
    def _score(job: _Job) -> int:
        if job.state is JobState.DELAYED:
            return job.order[0] * 4096 + job.order[1]
        return job.order[0]

    def clean(self, state: JobState, timestamp: int, limit: int) -> list[str]:
        """BullMQ's ``cleanJobsInSet``: delete jobs of ``state`` whose time is at or before
        ``timestamp`` (or unknown), at most ``limit`` (0: no limit); return their ids.

        Finished jobs: the first ``limit`` by ``finishedOn`` up to ``timestamp``. Delayed and
        prioritized: the whole set in order, those whose ``processedOn`` (else ``timestamp``;
        prioritized: ``timestamp``) is old enough, until ``limit`` are deleted (a job delayed
        again by its own processor has a recent ``processedOn``). Waiting and active: the
        ``limit`` oldest entries of the list (the front of the line, the oldest activations),
        read from the list's left; their time is the first of ``finishedOn``, ``processedOn``,
        ``timestamp``; an active job is skipped while it holds a lock.
        """
        if state.is_terminal:
            jobs = [job for job in self._in(state) if job.order[0] <= timestamp]
            candidates = jobs[:limit] if limit > 0 else jobs
        elif state in (JobState.DELAYED, JobState.PRIORITIZED):
            candidates = self._in(state)  # (``ZRANGEBYSCORE 0 +inf``)
        else:
            listed = self._in(state)[::-1]  # LRANGE order
            candidates = listed[-limit:] if limit > 0 else listed
        deleted: list[str] = []
        for job in candidates:
            if 0 < limit <= len(deleted):
                break
            if not state.is_terminal:
                if state is JobState.ACTIVE and self._live_lock(job) is not None:
                    continue
                if self._is_current_iteration(job):  # its scheduler would stop (§5.4)
                    continue
                when = self._clean_time(job, state)
                if when is not None and when > timestamp:
                    continue
            deleted.append(job.id)
            self._move(job, Transition.CLEAN)
            self._dedup_removed(job)
        return deleted

    @staticmethod
    def _clean_time(job: _Job, state: JobState) -> int | None:
        if state is JobState.PRIORITIZED:
            return job.timestamp
        if state is JobState.DELAYED:
            return job.timestamp if job.processed_on is None else job.processed_on
        for when in (job.finished_on, job.processed_on, job.timestamp):
            if when is not None:
                return when
        return None

    def drain(self, delayed: bool) -> None:
        """BullMQ's ``drain``: delete every waiting job (the list read from its left), then the
        delayed ones when asked, then the prioritized ones (by score)."""
        doomed = self._in(JobState.WAITING)[::-1]
        if delayed:
            doomed += self._in(JobState.DELAYED)
        doomed += self._in(JobState.PRIORITIZED)
        for job in doomed:
            if self._is_current_iteration(job):  # its scheduler would stop (§5.5)
                continue
            self._move(job, Transition.DRAIN)
            self._dedup_removed(job)

    def obliterate(self, count: int, force: bool) -> ObliterateResult:
        """BullMQ's ``obliterate``: on a paused queue, delete up to ``count`` jobs: active
        (newest first; refused unless ``force``), delayed, completed, waiting (from the list's
        left), prioritized, failed, each step taking from the remaining budget and answering
        ``MORE`` when it is used up, then (corral's, not BullMQ's) the parents waiting for
        children; each step reads its jobs when it comes (a deleted child may have taken its
        waiting parent with it); with budget left, delete the queue's own keys (``meta``
        with its paused flag and global limits, the ``id`` and ``pc`` counters,
        ``stalled-check``, the job schedulers) and answer ``DONE``."""
        if not self._paused:
            return ObliterateResult.NOT_PAUSED
        budget = count
        active = self._in(JobState.ACTIVE)[::-1][: max(budget, 0)]
        if active and not force:
            return ObliterateResult.ACTIVE_JOBS
        steps: Sequence[JobState | None] = (
            JobState.ACTIVE,
            JobState.DELAYED,
            None,  # the job schedulers (after delayed, within the same budget, §5.6)
            JobState.COMPLETED,
            JobState.WAITING,
            JobState.PRIORITIZED,
            JobState.FAILED,
            JobState.WAITING_CHILDREN,
        )
        for state in steps:
            if state is None:
                doomed = self._schedulers_by_slot()[: max(budget, 0)]
                self._forget_schedulers(doomed)
                budget -= len(doomed)
                if budget <= 0:
                    return ObliterateResult.MORE
                continue
            if state is JobState.ACTIVE:
                taken = active
            else:
                listed = self._in(state)
                taken = (listed[::-1] if state is JobState.WAITING else listed)[: max(budget, 0)]
            for job in taken:
                if self._jobs.get(job.id) is job:  # (not deleted with a child already)
                    self._move(job, Transition.OBLITERATE)
                    self._dedup_removed(job)
            budget -= len(taken)
            if budget <= 0:
                return ObliterateResult.MORE
        self._paused = False
        self._stalled_check_until = 0
        self._id_counter = 0
        self._priority_counter = 0
        # ``meta`` (with the global limits) and every job scheduler go too (bullmq-features.md
        # §1.8); the ``limiter`` window and the dedup keys are not the queue's listed keys.
        self._meta.clear()
        self._forget_schedulers()
        return ObliterateResult.DONE

    # ------------------------------------------------------------------ reads

    def get_counts_per_priority(self, priorities: Sequence[int]) -> dict[int, int]:
        """Priority 0: the length of wait; ``p`` > 0: the prioritized jobs of priority ``p``."""
        counts = {}
        for priority in priorities:
            if priority == 0:
                counts[0] = len(self._in(JobState.WAITING))
            else:
                counts[priority] = sum(
                    1 for job in self._in(JobState.PRIORITIZED) if job.order[0] == priority
                )
        return counts
