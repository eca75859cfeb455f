"""Operator calls on one job, on the memory backend (``corral.engine.storage.OperatorStorage``):
none moves a job that holds a lock."""

from __future__ import annotations

from corral.backends.memory.core import MemoryCore
from corral.engine.errors import ResultCode
from corral.engine.scheduling import iteration_job_id
from corral.engine.states import JobState, Transition


class JobOps(MemoryCore):
    """Calls an operator makes on one job."""

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            state = store.states.get(job_id)
            if state is None:
                return ResultCode.MISSING_JOB
            if self._lock_of(store, job_id) is not None:
                return ResultCode.JOB_LOCKED
            scheduler_id = store.jobs[job_id].get("rjk")
            if scheduler_id is not None:
                slot = store.repeat.score(scheduler_id)
                if slot is not None and job_id == iteration_job_id(scheduler_id, slot):
                    return ResultCode.SCHEDULER_JOB
            if state is JobState.WAITING:
                store.wait.remove(job_id)
            elif state is JobState.ACTIVE:
                del store.active[job_id]
            else:
                store.zset(state).remove(job_id)
            self._delete_job(queue, store, job_id, Transition.REMOVE)
            self._emit(store, ("removed", "jobId", job_id, "prev", state.value))
            return ResultCode.OK
