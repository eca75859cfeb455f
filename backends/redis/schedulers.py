"""Job schedulers on Redis, in BullMQ's layout (``corral.engine.storage.SchedulerStorage``)."""

from __future__ import annotations

import json

from corral.backends.redis.core import RedisCore, reaching
from corral.backends.redis.server import as_text
from corral.engine.errors import ResultCode
from corral.engine.storage import SchedulerRecord, SchedulerUpsert


class SchedulerOps(RedisCore):
    """Job schedulers: upsert, the next iteration on activation, removal and readers."""

    @reaching
    async def upsert_job_scheduler(
        self, queue: str, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        """Create or replace a scheduler and store its current iteration."""
        args: list[str | int] = [
            upsert.scheduler_id,
            "" if upsert.next_millis is None else upsert.next_millis,
            json.dumps(upsert.fields),
            upsert.template_data,
            upsert.template_opts,
            upsert.job_opts,
            now,
        ]
        raw = await self._scripts.run("add_job_scheduler", self.keys(queue), args)
        if isinstance(raw, int):
            return ResultCode(raw)
        return as_text(raw[0]), int(raw[1])

    @reaching
    async def update_job_scheduler(
        self,
        queue: str,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        """Store the next iteration after ``producer_id`` was activated (guarded)."""
        args: list[str | int] = [
            scheduler_id,
            producer_id,
            "" if next_millis is None else next_millis,
            job_opts,
            now,
        ]
        raw = await self._scripts.run("update_job_scheduler", self.keys(queue), args)
        return None if raw is None else as_text(raw)

    @reaching
    async def remove_job_scheduler(self, queue: str, scheduler_id: str, now: int) -> bool:
        """Delete a scheduler, and its current iteration if delayed."""
        raw = await self._scripts.run("remove_job_scheduler", self.keys(queue), [scheduler_id])
        return bool(raw == 1)

    async def _scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        keys = self.keys(queue)
        score = await self._commands.call("ZSCORE", keys.key("repeat"), scheduler_id)
        raw = await self._commands.call("HGETALL", keys.base + "repeat:" + scheduler_id)
        if score is None and not raw:
            return None
        fields = {as_text(k): as_text(v) for k, v in raw.items()} if raw else {}
        return SchedulerRecord(
            scheduler_id, fields, None if score is None else int(float(as_text(score)))
        )

    @reaching
    async def get_job_scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        """One scheduler, or None."""
        return await self._scheduler(queue, scheduler_id)

    @reaching
    async def get_job_schedulers(
        self, queue: str, start: int, end: int, asc: bool
    ) -> list[SchedulerRecord]:
        """Schedulers by their next slot."""
        command = "ZRANGE" if asc else "ZREVRANGE"
        ids = await self._commands.call(command, self.keys(queue).key("repeat"), start, end)
        records = [await self._scheduler(queue, as_text(i)) for i in ids]
        return [record for record in records if record is not None]

    @reaching
    async def get_job_schedulers_count(self, queue: str) -> int:
        """How many schedulers the queue has."""
        return int(await self._commands.call("ZCARD", self.keys(queue).key("repeat")))
