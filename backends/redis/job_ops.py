"""Operator calls on one job, on Redis (``corral.engine.storage.OperatorStorage``): none moves a
job that holds a lock."""

from __future__ import annotations

from corral.backends.redis.core import RedisCore, reaching
from corral.engine.errors import ResultCode


class JobOps(RedisCore):
    """Calls an operator makes on one job."""

    @reaching
    async def remove(self, queue: str, job_id: str) -> ResultCode:
        """Delete a job that holds no lock (``REMOVE``)."""
        return ResultCode(await self._scripts.run("remove", self.keys(queue), [job_id]))
