"""Operator calls on a whole queue, on Redis (``corral.engine.storage.OperatorStorage``): one
Lua script each (``lua/<operation>.lua``) over BullMQ's keys."""

from __future__ import annotations

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text
from corral.engine.states import JobState
from corral.engine.storage import ObliterateResult

_MOVABLE_TO_WAIT = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.DELAYED})


class QueueOps(RedisCore):
    """Calls an operator makes on a queue."""

    @reaching
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from the queue."""
        await self._scripts.run("set_paused", self.keys(queue), ["1" if paused else "0"])

    @reaching
    async def move_jobs_to_wait(
        self, queue: str, state: JobState, count: int, timestamp: int, now: int
    ) -> bool:
        """Move finished or delayed jobs to the back of wait (``REPROCESS`` / ``PROMOTE``)."""
        if state not in _MOVABLE_TO_WAIT:
            raise ValueError(f"move_jobs_to_wait moves completed, failed or delayed jobs: {state}")
        full = await self._scripts.run(
            "move_jobs_to_wait", self.keys(queue), [count, timestamp, state.value]
        )
        return bool(full)

    @reaching
    async def clean(self, queue: str, state: JobState, timestamp: int, limit: int) -> list[str]:
        """Delete old jobs of one state (``CLEAN``); return their ids."""
        ids = await self._scripts.run("clean", self.keys(queue), [timestamp, limit, state.value])
        return [as_text(job_id) for job_id in ids]

    @reaching
    async def drain(self, queue: str, delayed: bool) -> None:
        """Delete every job not yet started (``DRAIN``)."""
        await self._scripts.run("drain", self.keys(queue), ["1" if delayed else "0"])

    @reaching
    async def obliterate(self, queue: str, count: int, force: bool) -> ObliterateResult:
        """Delete up to ``count`` jobs of a paused queue, then all of it (``OBLITERATE``)."""
        code = await self._scripts.run(
            "obliterate", self.keys(queue), [count, "1" if force else "0"]
        )
        return ObliterateResult(int(code))

    @reaching
    async def trim_events(self, queue: str, max_length: int) -> int:
        """Trim the event stream to about ``max_length`` entries (``XTRIM MAXLEN ~``)."""
        return int(await self._scripts.run("trim_events", self.keys(queue), [max_length]))
