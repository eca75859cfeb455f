"""Operator calls on one job, on the memory backend (``corral.engine.storage.OperatorStorage``):
none moves a job that holds a lock."""

from __future__ import annotations

from corral.backends.memory import parents
from corral.backends.memory.dedup import DedupOps
from corral.backends.memory.store import QueueStore
from corral.engine.errors import ResultCode
from corral.engine.job import decode_opts
from corral.engine.states import JobState, Transition

# The field a retry clears besides finishedOn and processedOn, per finished state.
_OUTCOME_FIELD = {JobState.COMPLETED: "returnvalue", JobState.FAILED: "failedReason"}


class JobOps(DedupOps):
    """Calls an operator makes on one job."""

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            if store.states.get(job_id) is None:
                return ResultCode.MISSING_JOB
            # A parent goes with its children, in every queue (BullMQ's removeChildren).
            doomed = [(queue, store, job_id)]
            if store.flows:
                doomed = parents.removal_order(self, queue, store, job_id)
            # The planted bug "remove-locked-job" (core.PLANTABLE_BUGS) skips the lock check.
            locked = any(self._lock_of(s, i) is not None for _, s, i in doomed)
            if locked and "remove-locked-job" not in self.planted_bugs:
                return ResultCode.JOB_LOCKED
            if self._is_current_iteration(store, job_id):
                return ResultCode.SCHEDULER_JOB
            for _, s, i in doomed:  # (no child removed below may release a parent going too)
                s.flows.pop(i, None)
            for where, s, i in doomed:
                self._remove_one(where, s, i)
            return ResultCode.OK

    def _remove_one(self, queue: str, store: QueueStore, job_id: str) -> None:
        state = store.states[job_id]
        self._take_out(store, state, [job_id])
        self._delete_job(queue, store, job_id, Transition.REMOVE)
        self._emit(store, ("removed", "jobId", job_id, "prev", state.value))

    def _requeue(
        self,
        queue: str,
        store: QueueStore,
        job_id: str,
        plain: Transition,
        prioritized: Transition,
        *,
        front: bool,
    ) -> None:
        """Put a job taken out of its place back to be fetched: prioritized when its priority
        is > 0 (``prioritized``), else into wait, at the front when ``front`` (``plain``)."""
        priority = int(store.jobs[job_id].get("priority") or 0)
        if priority:
            self._move(queue, store, job_id, prioritized)
            self._push_prioritized(store, job_id, priority)
        else:
            self._move(queue, store, job_id, plain)
            self._push_wait(store, job_id, front=front)

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
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            if store.states.get(job_id) is not state or not state.is_terminal:
                return ResultCode.NOT_IN_STATE
            store.zset(state).remove(job_id)
            cleared = ["finishedOn", "processedOn", _OUTCOME_FIELD[state]]
            if reset_attempts_made:
                cleared.append("atm")
            if reset_attempts_started:
                cleared.append("ats")
            for name in cleared:
                fields.pop(name, None)
            if "parentKey" in fields:  # (flows: pending in its parent again)
                parents.child_retried(self, queue, job_id, fields, state)
            lifo = decode_opts(fields.get("opts") or "{}").lifo
            self._requeue(
                queue,
                store,
                job_id,
                Transition.REPROCESS,
                Transition.REPROCESS_PRIORITIZED,
                front=lifo,
            )
            self._emit(store, ("waiting", "jobId", job_id, "prev", state.value))
            return ResultCode.OK

    async def promote_job(self, queue: str, job_id: str, now: int) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            # As BullMQ's promote: a job that is not in delayed (or not at all) is NOT_IN_STATE.
            if store.states.get(job_id) is not JobState.DELAYED:
                return ResultCode.NOT_IN_STATE
            store.delayed.remove(job_id)
            store.jobs[job_id]["delay"] = "0"
            self._requeue(
                queue,
                store,
                job_id,
                Transition.PROMOTE,
                Transition.PROMOTE_PRIORITIZED,
                front=False,
            )
            self._emit(store, ("waiting", "jobId", job_id, "prev", "delayed"))
            return ResultCode.OK

    async def update_data(self, queue: str, job_id: str, data: str) -> ResultCode:
        with self._mutex:
            fields = self._store(queue).jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            fields["data"] = data
            return ResultCode.OK

    async def change_priority(
        self, queue: str, job_id: str, priority: int, lifo: bool
    ) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            fields["priority"] = str(priority)
            state = store.states.get(job_id)
            if state is JobState.WAITING:
                store.wait.remove(job_id)
            elif state is JobState.PRIORITIZED:
                store.prioritized.remove(job_id)
            else:  # delayed, active, finished: only the field changes (BullMQ)
                return ResultCode.OK
            if not priority:
                self._move(queue, store, job_id, Transition.CHANGE_PRIORITY_TO_WAIT)
                self._push_wait(store, job_id, front=lifo)
            elif lifo:
                # BullMQ: the front of its priority class (score priority·2^32), no marker.
                self._move(queue, store, job_id, Transition.CHANGE_PRIORITY)
                store.prioritized.add(job_id, priority * 2**32)
            else:
                self._move(queue, store, job_id, Transition.CHANGE_PRIORITY)
                self._push_prioritized(store, job_id, priority)
            return ResultCode.OK

    async def change_delay(self, queue: str, job_id: str, delay: int, now: int) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            if store.states.get(job_id) is not JobState.DELAYED:
                return ResultCode.NOT_IN_STATE
            store.delayed.remove(job_id)
            fields["delay"] = str(delay)
            self._move(queue, store, job_id, Transition.CHANGE_DELAY)
            due = now + delay
            self._push_delayed(store, job_id, due)
            self._emit(store, ("delayed", "jobId", job_id, "delay", str(due)))
            return ResultCode.OK

    async def add_log(self, queue: str, job_id: str, row: str, keep_logs: int | None) -> int | None:
        with self._mutex:
            store = self._store(queue)
            if job_id not in store.jobs:
                return None
            rows = store.logs.setdefault(job_id, [])
            rows.append(row)
            if keep_logs:  # (0 or None: keep every row, as BullMQ's falsy keepLogs)
                del rows[:-keep_logs]
            return len(rows)
