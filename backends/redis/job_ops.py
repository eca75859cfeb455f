"""Operator calls on one job, on Redis (``corral.engine.storage.OperatorStorage``): none moves a
job that holds a lock."""

from __future__ import annotations

from corral.backends.redis.core import RedisCore, reaching
from corral.engine.errors import ResultCode
from corral.engine.states import JobState


def _flag(value: bool) -> str:
    return "1" if value else "0"


class JobOps(RedisCore):
    """Calls an operator makes on one job."""

    @reaching
    async def remove(self, queue: str, job_id: str) -> ResultCode:
        """Delete a job that holds no lock (``REMOVE``)."""
        return ResultCode(await self._scripts.run("remove", self.keys(queue), [job_id]))

    @reaching
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
        """A finished job back to wait or prioritized (``REPROCESS*``, BullMQ's reprocessJob)."""
        args = [job_id, state.value, _flag(reset_attempts_made), _flag(reset_attempts_started)]
        return ResultCode(await self._scripts.run("retry_job", self.keys(queue), args))

    @reaching
    async def promote_job(self, queue: str, job_id: str, now: int) -> ResultCode:
        """A delayed job made ready now (``PROMOTE*``, BullMQ's promote)."""
        return ResultCode(await self._scripts.run("promote_job", self.keys(queue), [job_id]))

    @reaching
    async def update_data(self, queue: str, job_id: str, data: str) -> ResultCode:
        """Replace a job's data (BullMQ's updateData)."""
        return ResultCode(await self._scripts.run("update_data", self.keys(queue), [job_id, data]))

    @reaching
    async def change_priority(
        self, queue: str, job_id: str, priority: int, lifo: bool
    ) -> ResultCode:
        """Set a job's priority, re-queueing it when it waits (``CHANGE_PRIORITY*``)."""
        args: list[str | int] = [job_id, priority, _flag(lifo)]
        return ResultCode(await self._scripts.run("change_priority", self.keys(queue), args))

    @reaching
    async def change_delay(self, queue: str, job_id: str, delay: int, now: int) -> ResultCode:
        """Re-schedule a delayed job to ``now + delay`` (``CHANGE_DELAY``)."""
        args: list[str | int] = [job_id, delay, now]
        return ResultCode(await self._scripts.run("change_delay", self.keys(queue), args))

    @reaching
    async def add_log(self, queue: str, job_id: str, row: str, keep_logs: int | None) -> int | None:
        """Append a row to the job's log (BullMQ's addLog); None if the job does not exist."""
        args = [job_id, row, "" if keep_logs is None else keep_logs]
        count = int(await self._scripts.run("add_log", self.keys(queue), args))
        return None if count < 0 else count
