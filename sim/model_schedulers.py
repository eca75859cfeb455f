"""The reference model of job schedulers (``bullmq-features.md`` §1.5–§1.8).

:class:`SchedulerModel` is a mixin of :class:`corral.sim.model.QueueModel`. It does not replay
the scripts' steps: each scheduler is one record (:class:`_Scheduler`: the hash its last upsert
wrote, the slot of its current iteration, how many iterations workers made), and each call
says what the next slot *is*, from the scheduler's options and its current slot, with the
model's own arithmetic (:func:`_every_first`, :func:`_every_after`: no engine scheduling code):

* an ``every`` schedule runs on the grid ``phase + k * every`` (the phase: the ``offset``
  given, else that of its first run); its first run is at ``start_date`` (if later than now),
  else at the next grid slot when an offset was given, else now; each next run is ``every``
  after the current one unless that has passed, then the grid's slot after now (missed slots
  are skipped). An upsert of the same interval while the current iteration is still pending
  keeps its slot (the job is replaced in place); a taken slot moves the first run one period
  on, at most :data:`EVERY_SLOT_TRIES` times.
* a ``pattern`` schedule's slots are computed by the caller (the Queue, the worker) and only
  checked for a free job id here.
* Only the current iteration's activation makes the next one (the producer guard), and only
  while the scheduler exists and the next slot's job id is free.

An iteration is an ordinary job with id ``repeat:<id>:<slot>`` and the extra field ``rjk``.
The current iteration of a live scheduler is protected: ``remove`` refuses it (-8), the stalled
check never fails it for stalling (§1.8).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from corral.engine.errors import ResultCode
from corral.engine.job_schedulers import EVERY_SLOT_TRIES
from corral.engine.scheduling import iteration_job_id
from corral.engine.states import JobState, Transition
from corral.engine.storage import SchedulerRecord, SchedulerUpsert

if TYPE_CHECKING:
    from corral.sim.model import OrderKey, _Job

#: Where an upsert may still drop a scheduler's current iteration (not active or finished).
_PENDING = (JobState.DELAYED, JobState.PRIORITIZED, JobState.WAITING)


@dataclasses.dataclass
class _Scheduler:
    """One job scheduler.

    Attributes:
        hash: its stored fields (BullMQ's ``repeat:<id>`` hash) but the iteration count.
        slot: the time of its current iteration (its score in ``repeat``).
        by_workers: iterations made by activations since it was created (``ic`` is one more:
            the upserts' iteration counts once however often it is upserted).
    """

    hash: dict[str, str]
    slot: int
    by_workers: int = 0

    def fields(self) -> dict[str, str]:
        """The stored hash, ``ic`` included."""
        return {**self.hash, "ic": str(self.by_workers + 1)}


def _grid_slot(now: int, every: int, phase: int) -> int:
    """The slot of the ``every``-long period holding ``now`` at ``phase`` into it, or the
    next period's when that is not after ``now`` (BullMQ's alignment)."""
    period_start = now - now % every
    slot = period_start + phase
    return slot if slot > now else slot + every


def _every_first(now: int, every: int, phase: int, start: int | None) -> int:
    """A new ``every`` schedule's first slot."""
    if start is not None:
        return max(start, now)
    return _grid_slot(now, every, phase) if phase > 0 else now


def _every_after(current: int, every: int, phase: int, now: int) -> int:
    """The slot after ``current``: one period later, unless that has passed already."""
    following = current + every
    return following if following >= now else _grid_slot(now, every, phase)


def _int(text: object) -> int | None:
    return None if text in (None, "") else int(str(text))


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
        self._scheduler_records: dict[str, _Scheduler] = {}

    # ------------------------------------------------------------------ the rules on jobs

    def _scheduled(self, job: _Job) -> bool:
        """Whether ``job`` is an iteration of a scheduler that still exists."""
        return job.extra.get("rjk") in self._scheduler_records

    def _is_current_iteration(self, job: _Job) -> bool:
        """BullMQ's ``isJobSchedulerJob``: ``job`` is its scheduler's current iteration."""
        record = self._scheduler_records.get(job.extra.get("rjk") or "")
        return record is not None and job.id == iteration_job_id(job.extra["rjk"], record.slot)

    def _schedulers_by_slot(self) -> list[str]:
        """The scheduler ids in ``repeat`` order (by slot, ties by id)."""
        records = self._scheduler_records
        return sorted(records, key=lambda scheduler_id: (records[scheduler_id].slot, scheduler_id))

    def _forget_schedulers(self, scheduler_ids: list[str] | None = None) -> None:
        """Delete these schedulers (all of them by default; their iterations stay)."""
        if scheduler_ids is None:
            self._scheduler_records.clear()
        for scheduler_id in scheduler_ids or ():
            del self._scheduler_records[scheduler_id]

    def _taken(self, scheduler_id: str, slot: int) -> bool:
        return iteration_job_id(scheduler_id, slot) in self._jobs

    def _add_iteration(
        self, scheduler_id: str, slot: int, record: _Scheduler, opts: dict[str, Any], now: int
    ) -> tuple[str, int]:
        """Make the iteration due at ``slot`` (``addJobFromScheduler``): a job named and with
        the data of the scheduler, delayed until the slot or enqueued now; ``(id, delay)``."""
        from corral.sim.model import _Job  # a cycle at import time

        job_id = iteration_job_id(scheduler_id, slot)
        delay = max(0, slot - now)
        opts = {**opts, "jobId": job_id, "delay": delay, "timestamp": now}
        name = record.hash.get("name") or scheduler_id
        data = record.hash.get("data") or "{}"
        priority = int(opts.get("priority") or 0)
        job = _Job(
            job_id, name, data, json.dumps(opts, separators=(",", ":")), now, delay, priority
        )
        job.extra["rjk"] = scheduler_id
        self._id_counter += 1  # (the id counter counts every add)
        if delay:
            self._move(job, Transition.SCHEDULE_DELAYED, self._delayed_place(job_id, slot))
        elif priority:
            self._move(job, Transition.SCHEDULE_PRIORITIZED, self._priority_place(priority))
        elif opts.get("lifo"):
            self._move(job, Transition.SCHEDULE, self._front_of_line())
        else:
            self._move(job, Transition.SCHEDULE, self._back_of_line())
        record.slot = slot
        return job_id, delay

    def _drop_current(self, scheduler_id: str, states: tuple[JobState, ...]) -> bool:
        """Delete the scheduler's current iteration if it is in one of ``states``."""
        record = self._scheduler_records.get(scheduler_id)
        job = (
            None if record is None else self._jobs.get(iteration_job_id(scheduler_id, record.slot))
        )
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
        old = self._scheduler_records.get(scheduler_id)
        opts = json.loads(upsert.job_opts)
        new_hash = dict(upsert.fields)
        every = _int(new_hash.get("every"))
        # A pending current iteration is dropped (an active or finished one stays).
        replaced = self._drop_current(scheduler_id, _PENDING)
        if every is None:
            assert upsert.next_millis is not None, "a pattern's upsert carries its first slot"
            slot = upsert.next_millis
            if self._taken(scheduler_id, slot):
                return ResultCode.SCHEDULER_SLOT_TAKEN
            new_hash.setdefault("offset", "0")
        else:
            given = _int(new_hash.get("offset")) or _int(opts.get("repeat", {}).get("offset"))
            same = old is not None and old.hash.get("every") == str(every)
            if old is not None and same:
                computed = _every_after(old.slot, every, given or 0, now)
            else:  # a new schedule, or a changed interval, which starts afresh
                computed = _every_first(now, every, given or 0, _int(new_hash.get("startDate")))
            # A replaced pending iteration of the same interval keeps its slot (and job id).
            slot = old.slot if old is not None and same and replaced else computed
            if "offset" not in new_hash:
                # The schedule's phase: the replaced scheduler's, else that of the slot
                # computed (BullMQ stores it so: updates follow it).
                kept = old.hash.get("offset") if old is not None and replaced else None
                new_hash["offset"] = kept or str(computed % every)
            free = [
                candidate
                for candidate in range(slot, slot + EVERY_SLOT_TRIES * every, every)
                if not self._taken(scheduler_id, candidate)
            ]
            if not free:
                return ResultCode.SCHEDULER_SLOTS_TAKEN
            slot = free[0]
        if upsert.template_data != "{}":
            new_hash["data"] = upsert.template_data
        if upsert.template_opts != "{}":
            new_hash["opts"] = upsert.template_opts
        record = _Scheduler(new_hash, slot, old.by_workers if old is not None else 0)
        self._scheduler_records[scheduler_id] = record
        return self._add_iteration(scheduler_id, slot, record, opts, now)

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
        record = self._scheduler_records.get(scheduler_id)
        if record is None or producer_id != iteration_job_id(scheduler_id, record.slot):
            return None
        opts = json.loads(job_opts)
        every = _int(record.hash.get("every")) or _int(opts.get("repeat", {}).get("every"))
        if every:
            phase = _int(record.hash.get("offset")) or 0
            next_millis = _every_after(record.slot, every, phase, now)
        if next_millis is None or self._taken(scheduler_id, next_millis):
            return None
        record.by_workers += 1
        return self._add_iteration(scheduler_id, next_millis, record, opts, now)[0]

    def remove_job_scheduler(self, scheduler_id: str, now: int) -> bool:
        """``removeJobScheduler``: drop a delayed current iteration, then the scheduler."""
        self._drop_current(scheduler_id, (JobState.DELAYED,))
        return self._scheduler_records.pop(scheduler_id, None) is not None

    def _scheduler_record(self, scheduler_id: str) -> SchedulerRecord:
        record = self._scheduler_records[scheduler_id]
        return SchedulerRecord(scheduler_id, record.fields(), record.slot)

    def get_job_scheduler(self, scheduler_id: str) -> SchedulerRecord | None:
        """The scheduler's hash and slot, or None."""
        if scheduler_id not in self._scheduler_records:
            return None
        return self._scheduler_record(scheduler_id)

    def get_job_schedulers(self, start: int, end: int, asc: bool) -> list[SchedulerRecord]:
        """``ZRANGE``/``ZREVRANGE repeat start end``: by slot, ties by id."""
        from corral.sim.model import redis_range  # a cycle at import time

        ascending = self._schedulers_by_slot()
        ids = redis_range(ascending if asc else ascending[::-1], start, end)
        return [self._scheduler_record(scheduler_id) for scheduler_id in ids]

    def get_job_schedulers_count(self) -> int:
        """``ZCARD repeat``."""
        return len(self._scheduler_records)
