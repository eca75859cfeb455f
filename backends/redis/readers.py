"""Readers on Redis: what a caller can read of a queue and its jobs."""

from __future__ import annotations

from collections.abc import Sequence

from redis import exceptions as redis_errors

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text
from corral.engine.states import JobState
from corral.engine.storage import LockInfo


class ReaderOps(RedisCore):
    """Readers on Redis: what a caller can read of a queue and its jobs."""

    @reaching
    async def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused (``meta.paused``)."""
        return bool(await self._commands.call("HEXISTS", self.keys(queue).meta, "paused"))

    @reaching
    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        """The job's hash fields, or None (also when the key holds no hash: an id such as
        ``"7:lock"`` names another key, never a job, as on the memory backend)."""
        try:
            raw = await self._commands.call("HGETALL", self.keys(queue).job(job_id))
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            return None
        return {as_text(k): as_text(v) for k, v in raw.items()} if raw else None

    @reaching
    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        """Where the job is, or None."""
        raw = await self._scripts.run("get_state", self.keys(queue), [job_id])
        return None if raw is None else JobState(as_text(raw))

    @reaching
    async def get_counts(self, queue: str) -> dict[JobState, int]:
        """The number of jobs in each state."""
        sizes = await self._scripts.run("get_counts", self.keys(queue), [])
        states = (
            JobState.WAITING,
            JobState.PRIORITIZED,
            JobState.DELAYED,
            JobState.ACTIVE,
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.WAITING_CHILDREN,
        )
        return {state: int(size) for state, size in zip(states, sizes, strict=True)}

    @reaching
    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        """A range of the ids in one state; descending (``asc=False``) is newest first."""
        keys = self.keys(queue)
        if state in (JobState.WAITING, JobState.ACTIVE):
            key = keys.wait if state is JobState.WAITING else keys.active
            if not asc:  # the left end of both lists is the newest
                return [as_text(i) for i in await self._commands.call("LRANGE", key, start, end)]
            # Index i counted from the oldest end is index -(i + 1) from the left; Redis clamps
            # the mirrored range exactly as it would the original one.
            ids = await self._commands.call("LRANGE", key, -(end + 1), -(start + 1))
            return [as_text(i) for i in reversed(ids)]
        command = "ZRANGE" if asc else "ZREVRANGE"
        ids = await self._commands.call(command, keys.key(state.value), start, end)
        return [as_text(i) for i in ids]

    @reaching
    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        """The job's lock and the milliseconds until it is gone, or None."""
        raw = await self._scripts.run("get_lock", self.keys(queue), [job_id])
        if not raw:
            return None
        token, pttl = as_text(raw[0]), int(raw[1])
        return LockInfo(token, pttl + 1 if pttl >= 0 else pttl)

    @reaching
    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        """Whether the last stalled check marked the job."""
        return bool(await self._commands.call("SISMEMBER", self.keys(queue).stalled, job_id))

    @reaching
    async def get_job_logs(
        self, queue: str, job_id: str, start: int, end: int, asc: bool
    ) -> tuple[list[str], int]:
        """A range of the job's log rows and their number, read at one instant (as BullMQ's
        MULTI of LRANGE and LLEN)."""
        if asc:
            first, last = start, end
        else:  # the range counted from the newest row, read oldest first and reversed
            first, last = -(end + 1), -(start + 1)
        rows, count = await self._scripts.run(
            "get_job_logs", self.keys(queue), [job_id, first, last]
        )
        texts = [as_text(row) for row in rows]
        return (texts if asc else texts[::-1]), int(count)

    @reaching
    async def get_counts_per_priority(
        self, queue: str, priorities: Sequence[int]
    ) -> dict[int, int]:
        """How many jobs wait at each priority (0: the wait list)."""
        wanted = list(dict.fromkeys(priorities))
        if not wanted:
            return {}
        counts = await self._scripts.run("get_counts_per_priority", self.keys(queue), wanted)
        return {priority: int(n) for priority, n in zip(wanted, counts, strict=True)}
