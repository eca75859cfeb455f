"""Operator calls on one job, on the memory backend (``corral.engine.storage.OperatorStorage``):
none moves a job that holds a lock."""

from __future__ import annotations

from corral.backends.memory.core import MemoryCore
from corral.engine.errors import ResultCode
from corral.engine.states import JobState, Transition


class JobOps(MemoryCore):
    """Calls an operator makes on one job."""

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            state = store.states.get(job_id)
            if state is None:
                return ResultCode.MISSING_JOB
            # The planted bug "remove-locked-job" (core.PLANTABLE_BUGS) skips the lock check.
            locked = self._lock_of(store, job_id) is not None
            if locked and "remove-locked-job" not in self.planted_bugs:
                return ResultCode.JOB_LOCKED
            if state is JobState.WAITING:
                store.wait.remove(job_id)
            elif state is JobState.ACTIVE:
                del store.active[job_id]
            else:
                store.zset(state).remove(job_id)
            self._delete_job(queue, store, job_id, Transition.REMOVE)
            self._emit(store, ("removed", "jobId", job_id, "prev", state.value))
            return ResultCode.OK
