"""Operator calls on a whole queue, on the memory backend
(``corral.engine.storage.OperatorStorage``).

Jobs move only through :meth:`MemoryCore._move` (the transition table); none of these calls
touches a job that holds a lock, except ``obliterate`` with ``force``.
"""

from __future__ import annotations

import collections
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

#: The order in which obliterate empties a queue (BullMQ's), after the active jobs.
_OBLITERATE_ORDER = (
    JobState.DELAYED,
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
            if moved and not store.paused:
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
                self._hard_delete(queue, store, job_id, Transition.CLEAN)
            self._emit(store, ("cleaned", "count", str(len(doomed))))
            return doomed

    def _dated_before(
        self, store: QueueStore, state: JobState, timestamp: int, limit: int
    ) -> list[str]:
        """The ids of ``state`` (a list's oldest ``limit`` entries, or all of a set's) dated at
        or before ``timestamp``, at most ``limit`` of them (0: no limit); active jobs only when
        their lock is gone."""
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
            date = job_date(store.jobs[job_id], dates)
            if date is None or date <= timestamp:
                doomed.append(job_id)
        return doomed

    @staticmethod
    def _take_out(store: QueueStore, state: JobState, job_ids: list[str]) -> None:
        """Take the ids out of the structure of ``state`` (not of the state index)."""
        if not job_ids:
            return
        if state is JobState.WAITING:
            gone = set(job_ids)
            store.wait = collections.deque(i for i in store.wait if i not in gone)
        elif state is JobState.ACTIVE:
            for job_id in job_ids:
                del store.active[job_id]
        else:
            zset = store.zset(state)
            for job_id in job_ids:
                zset.remove(job_id)

    async def drain(self, queue: str, delayed: bool) -> None:
        with self._mutex:
            store = self._store(queue)
            states = [JobState.WAITING, JobState.PRIORITIZED]
            if delayed:
                states.append(JobState.DELAYED)
            for state in states:
                doomed = list(store.wait) if state is JobState.WAITING else list(store.zset(state))
                self._take_out(store, state, doomed)
                for job_id in doomed:
                    self._hard_delete(queue, store, job_id, Transition.DRAIN)

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
                if state is JobState.ACTIVE:
                    doomed = active
                elif state is JobState.WAITING:
                    doomed = list(store.wait)[-budget:][::-1]
                else:
                    doomed = store.zset(state).range(0, budget - 1)
                self._take_out(store, state, doomed)
                for job_id in doomed:
                    if job_id in store.jobs:  # (not deleted with a child already)
                        self._hard_delete(queue, store, job_id, Transition.OBLITERATE)
                budget -= len(doomed)
                if budget <= 0:
                    return ObliterateResult.MORE
            # Nothing of the queue is left: its counters, marks, events and meta go too. The
            # blocked workers and event listeners stay with the fresh store.
            fresh = QueueStore(waiters=store.waiters, event_waiters=store.event_waiters)
            self._queues[queue] = fresh
            return ObliterateResult.DONE

    def _hard_delete(self, queue: str, store: QueueStore, job_id: str, how: Transition) -> None:
        """Delete a job taken out of its structure as BullMQ's clean, drain and obliterate do:
        its deduplication key released, and a parent in this queue that waited for it alone
        deleted with it (``DELETE_PARENT``), and so on up the tree."""
        doomed: str | None = job_id
        while doomed is not None:
            dedup_id = store.jobs[doomed].get("deid")
            parent_id = self._delete_job(queue, store, doomed, how, hard=True)
            if dedup_id is not None:
                self._dedup_removed(store, dedup_id, doomed)
            doomed, how = parent_id, Transition.DELETE_PARENT

    async def trim_events(self, queue: str, max_length: int) -> int:
        with self._mutex:
            events = self._store(queue).events
            removed = max(len(events) - max_length, 0)
            for _ in range(removed):
                events.popleft()
            return removed
