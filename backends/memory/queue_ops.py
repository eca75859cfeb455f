"""Operator calls on a whole queue, on the memory backend
(``corral.engine.storage.OperatorStorage``).

Jobs move only through :meth:`MemoryCore._move` (the transition table); none of these calls
touches a job that holds a lock, except ``obliterate`` with ``force``.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.backends.memory import parents
from corral.backends.memory.dedup import DedupOps
from corral.backends.memory.store import QueueStore
from corral.engine.states import JobState, Transition
from corral.engine.storage import ObliterateResult

#: Which job field dates a job for ``clean``, first present wins (BullMQ's ``cleanJobsInSet``):
#: the finished sets are dated by their score instead.
_CLEAN_DATES = {
    JobState.WAITING: ("finishedOn", "processedOn", "timestamp"),
    JobState.ACTIVE: ("finishedOn", "processedOn", "timestamp"),
    JobState.DELAYED: ("processedOn", "timestamp"),
    JobState.PRIORITIZED: ("timestamp",),
}

#: The finish fields ``retry_jobs`` clears, by the state the job leaves.
_CLEARED_ON_RETRY = {
    JobState.COMPLETED: ("finishedOn", "processedOn", "returnvalue"),
    JobState.FAILED: ("finishedOn", "processedOn", "failedReason"),
    JobState.DELAYED: (),
}

#: The order in which obliterate empties a queue (BullMQ's), after the active jobs; None is
#: the job schedulers' step.
_OBLITERATE_ORDER = (
    JobState.DELAYED,
    None,
    JobState.COMPLETED,
    JobState.WAITING,
    JobState.PRIORITIZED,
    JobState.FAILED,
    # (not in BullMQ's list, which leaves parents waiting for children in other queues behind:
    # corral's obliterate leaves nothing of the queue)
    JobState.WAITING_CHILDREN,
)


def job_date(fields: dict[str, str], names: Iterable[str]) -> int | None:
    """The first of ``names`` present in a job hash, as an integer (None if none is)."""
    for name in names:
        value = fields.get(name)
        if value:
            try:
                return int(float(value))
            except ValueError:
                return None
    return None


class QueueOps(DedupOps):
    """Calls an operator makes on a queue."""

    async def set_paused(self, queue: str, paused: bool) -> None:
        with self._mutex:
            store = self._store(queue)
            if paused == store.paused:
                return
            store.paused = paused
            if paused:
                store.marker.clear()
                self._emit(store, ("paused",))
            else:
                if store.wait or store.prioritized:
                    self._signal(store)
                first = store.delayed.first()
                if first is not None:
                    self._signal(store, "1", first[0] // 4096)
                self._emit(store, ("resumed",))

    async def move_jobs_to_wait(
        self, queue: str, state: JobState, count: int, timestamp: int, now: int
    ) -> bool:
        cleared = _CLEARED_ON_RETRY.get(state)
        if cleared is None:
            raise ValueError(f"move_jobs_to_wait moves completed, failed or delayed jobs: {state}")
        how = Transition.PROMOTE if state is JobState.DELAYED else Transition.REPROCESS
        with self._mutex:
            store = self._store(queue)
            moved = store.zset(state).pop_up_to(timestamp, count)
            for job_id in moved:
                fields = store.jobs[job_id]
                for name in cleared:
                    fields.pop(name, None)
                if "parentKey" in fields and how is Transition.REPROCESS:
                    parents.child_retried(self, queue, job_id, fields, state)
                self._move(queue, store, job_id, how)
                # The back of the line whatever the priority, as BullMQ's moveJobsToWait.
                store.wait.appendleft(job_id)
                self._emit(store, ("waiting", "jobId", job_id, "prev", state.value))
            if moved and self._may_signal(store):
                self._signal(store)
            return count - len(moved) <= 0

    async def clean(self, queue: str, state: JobState, timestamp: int, limit: int) -> list[str]:
        with self._mutex:
            store = self._store(queue)
            if state.is_terminal:
                doomed = store.zset(state).pop_up_to(timestamp, limit or len(store.jobs))
            else:
                doomed = self._dated_before(store, state, timestamp, limit)
                self._take_out(store, state, doomed)
            for job_id in doomed:
                self._delete_job(queue, store, job_id, Transition.CLEAN, hard=True)
            self._emit(store, ("cleaned", "count", str(len(doomed))))
            return doomed

    def _dated_before(
        self, store: QueueStore, state: JobState, timestamp: int, limit: int
    ) -> list[str]:
        """The ids of ``state`` (a list's oldest ``limit`` entries, or all of a set's) dated at
        or before ``timestamp``, at most ``limit`` of them (0: no limit); active jobs only when
        their lock is gone, and never a job scheduler's current iteration."""
        if state is JobState.WAITING or state is JobState.ACTIVE:
            newest_first = list(store.wait) if state is JobState.WAITING else [*store.active][::-1]
            candidates = newest_first[-limit:] if limit else newest_first
        else:
            candidates = list(store.zset(state))
        dates = _CLEAN_DATES[state]
        doomed: list[str] = []
        for job_id in candidates:
            if limit and len(doomed) >= limit:
                break
            if state is JobState.ACTIVE and self._lock_of(store, job_id) is not None:
                continue
            if self._is_current_iteration(store, job_id):  # (or the schedule would stop)
                continue
            date = job_date(store.jobs[job_id], dates)
            if date is None or date <= timestamp:
                doomed.append(job_id)
        return doomed

    async def drain(self, queue: str, delayed: bool) -> None:
        with self._mutex:
            store = self._store(queue)
            # BullMQ's order: wait, then delayed (when asked), then prioritized.
            states = [JobState.WAITING]
            if delayed:
                states.append(JobState.DELAYED)
            states.append(JobState.PRIORITIZED)
            for state in states:
                ids = store.wait if state is JobState.WAITING else store.zset(state)
                # A scheduler's current iteration stays, or the schedule would stop (BullMQ).
                doomed = [i for i in ids if not self._is_current_iteration(store, i)]
                self._take_out(store, state, doomed)
                for job_id in doomed:
                    self._delete_job(queue, store, job_id, Transition.DRAIN, hard=True)

    async def obliterate(self, queue: str, count: int, force: bool) -> ObliterateResult:
        with self._mutex:
            store = self._store(queue)
            if not store.paused:
                return ObliterateResult.NOT_PAUSED
            active = [*store.active][::-1][:count]  # LRANGE active 0 count-1: newest first
            if active and not force:
                return ObliterateResult.ACTIVE_JOBS
            budget = count
            for state in (JobState.ACTIVE, *_OBLITERATE_ORDER):
                if state is None:
                    budget -= self._obliterate_schedulers(store, budget)
                    if budget <= 0:
                        return ObliterateResult.MORE
                    continue
                if state is JobState.ACTIVE:
                    doomed = active
                elif state is JobState.WAITING:
                    doomed = list(store.wait)[:budget]  # LRANGE wait 0 count-1: newest first
                else:
                    doomed = store.zset(state).range(0, budget - 1)
                self._take_out(store, state, doomed)
                for job_id in doomed:
                    if job_id in store.jobs:  # (not deleted with a child already)
                        self._delete_job(queue, store, job_id, Transition.OBLITERATE, hard=True)
                budget -= len(doomed)
                if budget <= 0:
                    return ObliterateResult.MORE
            # Nothing of the queue is left: its counters, marks, events and meta go too, as
            # BullMQ's. What BullMQ's obliterate leaves stays: the rate-limit window and the
            # deduplication keys (de:*, dn:*); so do the blocked workers and event listeners.
            self._queues[queue] = QueueStore(
                waiters=store.waiters,
                event_waiters=store.event_waiters,
                dedup=store.dedup,
                dedup_next=store.dedup_next,
                limiter_count=store.limiter_count,
                limiter_expires=store.limiter_expires,
            )
            return ObliterateResult.DONE

    @staticmethod
    def _obliterate_schedulers(store: QueueStore, budget: int) -> int:
        """Obliterate's scheduler step: delete up to ``budget`` job schedulers (their ``repeat``
        entry and hash; their iterations go with the jobs); return how many."""
        doomed = store.repeat.range(0, budget - 1)
        for scheduler_id in doomed:
            store.repeat.remove(scheduler_id)
            store.schedulers.pop(scheduler_id, None)
        return len(doomed)

    async def trim_events(self, queue: str, max_length: int) -> int:
        with self._mutex:
            events = self._store(queue).events
            removed = max(len(events) - max_length, 0)
            for _ in range(removed):
                events.popleft()
            return removed
