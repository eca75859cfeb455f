"""The reference model of job schedulers (``bullmq-features.md`` §1.5–§1.8).

:class:`SchedulerModel` is a mixin of :class:`corral.sim.model.QueueModel`. The scripts' steps
(``addJobScheduler``, ``updateJobScheduler``, ``removeJobScheduler``) are written out here from
the reference; the timing policy (an ``every`` scheduler's next slot) is the engine's
:func:`corral.engine.scheduling.every_next_millis`, which has its own tests.

* ``repeat`` is ``_repeat`` (scheduler id -> the slot of its current iteration), each
  scheduler's hash ``_schedulers[id]``; an iteration is an ordinary job with id
  ``repeat:<id>:<slot>`` and the extra field ``rjk``.
* The current iteration of a live scheduler is protected: ``remove`` refuses it (-8), the
  stalled check never fails it for stalling (§1.8).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from corral.engine.errors import ResultCode
from corral.engine.job_schedulers import EVERY_SLOT_TRIES
from corral.engine.scheduling import every_next_millis, iteration_job_id
from corral.engine.states import JobState, Transition
from corral.engine.storage import SchedulerRecord, SchedulerUpsert

if TYPE_CHECKING:
    from corral.sim.model import OrderKey, _Job

#: Where an upsert may still drop a scheduler's current iteration (not active or finished).
_PENDING = (JobState.DELAYED, JobState.PRIORITIZED, JobState.WAITING)


class SchedulerModel:
    """Job schedulers (see the module docstring)."""

    if TYPE_CHECKING:  # provided by QueueModel
        _jobs: dict[str, _Job]
        _id_counter: int

        def _move(self, job: _Job, transition: Transition, order: OrderKey = ...) -> None: ...
        def _front_of_line(self) -> OrderKey: ...
        def _back_of_line(self) -> OrderKey: ...
        def _priority_place(self, priority: int) -> OrderKey: ...
        def _delayed_place(self, job_id: str, due_ms: int) -> OrderKey: ...

    def _init_schedulers(self) -> None:
        self._repeat: dict[str, int] = {}
        self._schedulers: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ the rules on jobs

    def _scheduled(self, job: _Job) -> bool:
        """Whether ``job`` is an iteration of a scheduler that still exists."""
        scheduler_id = job.extra.get("rjk")
        return scheduler_id is not None and (
            scheduler_id in self._repeat or scheduler_id in self._schedulers
        )

    def _is_current_iteration(self, job: _Job) -> bool:
        """BullMQ's ``isJobSchedulerJob``: ``job`` is its scheduler's current iteration."""
        scheduler_id = job.extra.get("rjk")
        slot = None if scheduler_id is None else self._repeat.get(scheduler_id)
        return slot is not None and job.id == iteration_job_id(scheduler_id or "", slot)

    def _store_iteration(
        self,
        scheduler_id: str,
        millis: int,
        name: str,
        data: str,
        opts: dict[str, Any],
        now: int,
    ) -> tuple[str, int]:
        """``addJobFromScheduler``: store the iteration of slot ``millis``; ``(id, delay)``."""
        from corral.sim.model import _Job  # a cycle at import time

        job_id = iteration_job_id(scheduler_id, millis)
        delay = max(0, millis - now)
        opts = {**opts, "jobId": job_id, "delay": delay, "timestamp": now}
        priority = int(opts.get("priority") or 0)
        self._id_counter += 1  # (the id counter counts every add)
        encoded = json.dumps(opts, separators=(",", ":"))
        job = _Job(job_id, name, data, encoded, now, delay, priority)
        job.extra["rjk"] = scheduler_id
        if delay > 0:
            self._move(job, Transition.SCHEDULE_DELAYED, self._delayed_place(job_id, millis))
        elif priority:
            self._move(job, Transition.SCHEDULE_PRIORITIZED, self._priority_place(priority))
        else:
            front = bool(opts.get("lifo"))
            place = self._front_of_line() if front else self._back_of_line()
            self._move(job, Transition.SCHEDULE, place)
        return job_id, delay

    def _drop_pending(self, job_id: str, states: tuple[JobState, ...]) -> bool:
        """Delete a scheduler's pending iteration if it is in one of ``states``."""
        job = self._jobs.get(job_id)
        if job is None or job.state not in states:
            return False
        self._move(job, Transition.UNSCHEDULE)
        return True

    # ------------------------------------------------------------------ SchedulerStorage

    def upsert_job_scheduler(
        self, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        """``addJobScheduler``: create or replace the scheduler and store its iteration."""
        scheduler_id = upsert.scheduler_id
        old = self._schedulers.get(scheduler_id, {})
        prev = self._repeat.get(scheduler_id)
        opts = json.loads(upsert.job_opts)
        fields = dict(upsert.fields)
        every = int(fields["every"]) if "every" in fields else None
        offset = int(fields.get("offset") or opts.get("repeat", {}).get("offset") or 0)
        next_millis = upsert.next_millis
        new_offset = 0
        same_every = False
        if every is not None:
            # A changed interval starts afresh, as a new scheduler.
            same_every = prev is not None and old.get("every") == str(every)
            start = int(fields["startDate"]) if "startDate" in fields else None
            next_millis, new_offset = every_next_millis(
                prev if same_every else None, every, now, offset, start
            )
        assert next_millis is not None, "a pattern scheduler's upsert carries its first slot"
        removed = prev is not None and self._drop_pending(
            iteration_job_id(scheduler_id, prev), _PENDING
        )
        if every is not None:
            if removed and same_every and prev is not None:
                next_millis = prev  # (the same slot: its job is replaced in place)
            if "offset" not in fields:
                kept = old.get("offset") if removed else None
                fields["offset"] = kept or str(new_offset)
            for _ in range(EVERY_SLOT_TRIES):
                if iteration_job_id(scheduler_id, next_millis) not in self._jobs:
                    break
                next_millis += every
            else:
                return ResultCode.SCHEDULER_SLOTS_TAKEN
        else:
            fields.setdefault("offset", "0")
            if iteration_job_id(scheduler_id, next_millis) in self._jobs:
                return ResultCode.SCHEDULER_SLOT_TAKEN
        self._repeat[scheduler_id] = next_millis
        if upsert.template_data != "{}":
            fields["data"] = upsert.template_data
        if upsert.template_opts != "{}":
            fields["opts"] = upsert.template_opts
        fields["ic"] = old.get("ic", "1")
        self._schedulers[scheduler_id] = fields
        return self._store_iteration(
            scheduler_id, next_millis, fields["name"], upsert.template_data, opts, now
        )

    def update_job_scheduler(
        self,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        """``updateJobScheduler``: the next iteration after ``producer_id`` was activated, only
        if that is the scheduler's current iteration (the producer guard) and the slot's job id
        is free."""
        prev = self._repeat.get(scheduler_id)
        if prev is None:
            return None
        fields = self._schedulers.setdefault(scheduler_id, {})
        opts = json.loads(job_opts)
        every = fields.get("every") or opts.get("repeat", {}).get("every")
        if every:
            start = fields.get("startDate")
            next_millis, offset = every_next_millis(
                prev,
                int(every),
                now,
                int(fields.get("offset") or 0),
                None if start is None else int(start),
            )
            fields.setdefault("offset", str(offset))
        if next_millis is None or producer_id != iteration_job_id(scheduler_id, prev):
            return None
        job_id = iteration_job_id(scheduler_id, next_millis)
        if job_id in self._jobs:
            return None
        self._repeat[scheduler_id] = next_millis
        fields["ic"] = str(int(fields.get("ic") or 0) + 1)
        name = fields.get("name") or scheduler_id
        data = fields.get("data") or "{}"
        self._store_iteration(scheduler_id, next_millis, name, data, opts, now)
        return job_id

    def remove_job_scheduler(self, scheduler_id: str, now: int) -> bool:
        """``removeJobScheduler``: drop a delayed current iteration, then the scheduler."""
        prev = self._repeat.get(scheduler_id)
        if prev is not None:
            self._drop_pending(iteration_job_id(scheduler_id, prev), (JobState.DELAYED,))
        if self._repeat.pop(scheduler_id, None) is None:
            return False
        self._schedulers.pop(scheduler_id, None)
        return True

    def _scheduler_record(self, scheduler_id: str) -> SchedulerRecord:
        return SchedulerRecord(
            scheduler_id,
            dict(self._schedulers.get(scheduler_id, {})),
            self._repeat.get(scheduler_id),
        )

    def get_job_scheduler(self, scheduler_id: str) -> SchedulerRecord | None:
        """The scheduler's hash and slot, or None."""
        if scheduler_id not in self._repeat and scheduler_id not in self._schedulers:
            return None
        return self._scheduler_record(scheduler_id)

    def get_job_schedulers(self, start: int, end: int, asc: bool) -> list[SchedulerRecord]:
        """``ZRANGE``/``ZREVRANGE repeat start end``: by slot, ties by id."""
        from corral.sim.model import redis_range  # a cycle at import time

        ascending = sorted(self._repeat, key=lambda member: (self._repeat[member], member))
        ids = redis_range(ascending if asc else ascending[::-1], start, end)
        return [self._scheduler_record(scheduler_id) for scheduler_id in ids]

    def get_job_schedulers_count(self) -> int:
        """``ZCARD repeat``."""
        return len(self._repeat)
