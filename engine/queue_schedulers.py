"""The Queue's job scheduler calls (BullMQ's ``upsertJobScheduler`` and its readers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from corral.engine.clock import Clock
from corral.engine.errors import InvalidArgumentError, JobSchedulerError, ResultCode
from corral.engine.inputs import check_utf8
from corral.engine.job_schedulers import Template, iteration_opts, scheduler_fields
from corral.engine.scheduling import pattern_next_millis, validate_repeat
from corral.engine.storage import SchedulerRecord, SchedulerUpsert, Storage


def _scheduler_id(scheduler_id: object) -> str:
    if not isinstance(scheduler_id, str) or not scheduler_id:
        raise InvalidArgumentError(
            f"job scheduler id must be a non-empty string, got {scheduler_id!r}"
        )
    if not scheduler_id.isascii():
        check_utf8(scheduler_id, "job scheduler id")
    return scheduler_id


def scheduler_view(record: SchedulerRecord) -> dict[str, Any]:
    """BullMQ's ``getJobScheduler`` shape, in snake_case: ``key``, ``name``, ``next``,
    ``iteration_count``, the repeat options that are set, and ``template`` (data, opts)."""
    fields = record.fields
    view: dict[str, Any] = {"key": record.scheduler_id, "name": fields.get("name")}
    if record.next_millis is not None:
        view["next"] = record.next_millis
    view["iteration_count"] = int(fields.get("ic") or 0)
    for field, key in (
        ("limit", "limit"),
        ("startDate", "start_date"),
        ("endDate", "end_date"),
        ("every", "every"),
        ("offset", "offset"),
    ):
        value = int(fields.get(field) or 0)
        if value:  # (only the set ones, as BullMQ: a pattern's stored offset "0" is not)
            view[key] = value
    for field in ("tz", "pattern"):
        if fields.get(field):
            view[field] = fields[field]
    view["template"] = {
        "data": json.loads(fields.get("data") or "{}"),
        "opts": json.loads(fields.get("opts") or "{}"),
    }
    return view


class QueueSchedulers:
    """Job scheduler calls of :class:`~corral.engine.queue.Queue` (mixed into it)."""

    name: str
    backend: Storage
    clock: Clock

    def _check_open(self) -> None:  # (the Queue's)
        raise NotImplementedError

    async def upsert_job_scheduler(
        self,
        scheduler_id: str,
        repeat: Mapping[str, Any],
        template: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Create or replace the scheduler ``scheduler_id``, which makes one job per slot.

        Args:
            scheduler_id: the scheduler's id (any non-empty string).
            repeat: ``every`` (ms) or ``pattern`` (cron, seconds first when it has 6 fields)
                with ``tz``; optional ``limit``, ``start_date``, ``end_date`` (epoch ms or
                aware datetimes), ``immediately`` (pattern only: run once now), ``offset``.
            template: the iterations' ``name`` (default: the scheduler id), ``data`` and
                ``opts`` (``Queue.add``'s options but ``job_id`` and ``delay``).

        Returns:
            The id of the scheduler's current iteration (``repeat:<id>:<slot ms>``), or None
            when a pattern has no slot left before ``end_date``.

        Raises:
            InvalidArgumentError: on invalid options (BullMQ's texts for the combinations it
                refuses); nothing is stored then.
            JobSchedulerError: when the slot's job id is taken (BullMQ's -10, -11).
        """
        self._check_open()
        scheduler_id = _scheduler_id(scheduler_id)
        if not isinstance(repeat, Mapping):
            raise InvalidArgumentError(f"repeat options must be a mapping, got {repeat!r}")
        now = self.clock.now_ms()
        template_opts = (template or {}).get("opts") if isinstance(template, Mapping) else None
        options = validate_repeat(
            repeat, now, template_opts if isinstance(template_opts, Mapping) else None
        )
        built = Template.build(scheduler_id, template)
        next_millis = None
        if options.pattern is not None:
            next_millis = pattern_next_millis(options, now, 0)
            if next_millis is None:
                return None
        opts = iteration_opts(json.loads(built.opts), scheduler_id, options, 1, next_millis)
        result = await self.backend.upsert_job_scheduler(
            self.name,
            SchedulerUpsert(
                scheduler_id,
                scheduler_fields(options, built.name),
                built.data,
                built.opts,
                json.dumps(opts, separators=(",", ":")),
                next_millis,
            ),
            now,
        )
        if isinstance(result, ResultCode):
            raise JobSchedulerError(result, scheduler_id, "addJobScheduler")
        return result[0]

    async def get_job_scheduler(self, scheduler_id: str) -> dict[str, Any] | None:
        """The scheduler (see :func:`scheduler_view`), or None."""
        self._check_open()
        record = await self.backend.get_job_scheduler(self.name, _scheduler_id(scheduler_id))
        return None if record is None else scheduler_view(record)

    async def get_job_schedulers(
        self, start: int = 0, end: int = -1, asc: bool = False
    ) -> list[dict[str, Any]]:
        """Schedulers by next slot, latest first unless ``asc`` (Redis range indexes)."""
        self._check_open()
        records = await self.backend.get_job_schedulers(self.name, start, end, asc)
        return [scheduler_view(record) for record in records if record.fields]

    async def get_job_schedulers_count(self) -> int:
        """How many schedulers the queue has."""
        self._check_open()
        return await self.backend.get_job_schedulers_count(self.name)

    async def remove_job_scheduler(self, scheduler_id: str) -> bool:
        """Delete a scheduler; its current iteration goes too if it is delayed (one already
        waiting still runs once). False if there was no such scheduler."""
        self._check_open()
        return await self.backend.remove_job_scheduler(
            self.name, _scheduler_id(scheduler_id), self.clock.now_ms()
        )
