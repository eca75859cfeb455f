"""Job schedulers on the memory backend (``corral.engine.storage.SchedulerStorage``)."""

from __future__ import annotations

import json
from typing import Any

from corral.backends.memory.core import SCHEDULE_MOVES, MemoryCore
from corral.backends.memory.store import QueueStore
from corral.engine.errors import ResultCode
from corral.engine.job_schedulers import EVERY_SLOT_TRIES
from corral.engine.scheduling import every_next_millis, iteration_job_id
from corral.engine.states import JobState, Transition
from corral.engine.storage import SchedulerRecord, SchedulerUpsert, new_job


class SchedulerOps(MemoryCore):
    """Job schedulers: upsert, the next iteration on activation, removal and readers."""

    def _store_iteration(
        self,
        queue: str,
        store: QueueStore,
        scheduler_id: str,
        millis: int,
        name: str,
        data: str,
        opts: dict[str, Any],
        now: int,
    ) -> tuple[str, int]:
        """Store the iteration for slot ``millis`` (its id is free) and return ``(id, delay)``."""
        job_id = iteration_job_id(scheduler_id, millis)
        delay = max(0, millis - now)
        opts = {**opts, "jobId": job_id, "delay": delay, "timestamp": now}
        priority = int(opts.get("priority") or 0)
        store.id_counter += 1  # BullMQ counts every add, custom id or not
        encoded = json.dumps(opts, separators=(",", ":"))
        job = new_job(name, data, encoded, now, delay, priority, bool(opts.get("lifo")))
        ready = self._enqueue_new(queue, store, job, job_id, None, SCHEDULE_MOVES, scheduler_id)
        if ready and self._may_signal(store):
            self._signal(store)
        return job_id, delay

    def _unschedule(
        self, queue: str, store: QueueStore, job_id: str, states: tuple[JobState, ...]
    ) -> bool:
        """Drop a pending iteration if it is in one of ``states``."""
        state = store.states.get(job_id)
        if state is None or state not in states:
            return False
        self._take_out(store, state, [job_id])
        self._delete_job(queue, store, job_id, Transition.UNSCHEDULE)
        return True

    async def upsert_job_scheduler(
        self, queue: str, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        with self._mutex:
            store = self._store(queue)
            scheduler_id = upsert.scheduler_id
            old = store.schedulers.get(scheduler_id, {})
            prev = store.repeat.score(scheduler_id)
            opts = json.loads(upsert.job_opts)
            fields = dict(upsert.fields)
            every = int(fields["every"]) if "every" in fields else None
            offset = int(fields.get("offset") or opts.get("repeat", {}).get("offset") or 0)
            next_ms = upsert.next_millis
            new_offset = 0
            if every is not None:
                same_every = prev is not None and old.get("every") == str(every)
                next_ms, new_offset = every_next_millis(
                    prev if same_every else None,
                    every,
                    now,
                    offset,
                    int(fields["startDate"]) if "startDate" in fields else None,
                )
            assert next_ms is not None, "a pattern scheduler's upsert carries its first slot"
            removed = prev is not None and self._unschedule(
                queue,
                store,
                iteration_job_id(scheduler_id, prev),
                (JobState.DELAYED, JobState.PRIORITIZED, JobState.WAITING),
            )
            if every is not None:
                if removed and same_every:
                    assert prev is not None
                    next_ms = prev
                if "offset" not in fields:
                    kept = old.get("offset") if removed else None
                    fields["offset"] = kept or str(new_offset)
                for _ in range(EVERY_SLOT_TRIES):
                    if iteration_job_id(scheduler_id, next_ms) not in store.jobs:
                        break
                    next_ms += every
                else:
                    return ResultCode.SCHEDULER_SLOTS_TAKEN
            else:
                fields.setdefault("offset", "0")
                if iteration_job_id(scheduler_id, next_ms) in store.jobs:
                    return ResultCode.SCHEDULER_SLOT_TAKEN
            store.repeat.add(scheduler_id, next_ms)
            if upsert.template_data != "{}":
                fields["data"] = upsert.template_data
            if upsert.template_opts != "{}":
                fields["opts"] = upsert.template_opts
            fields["ic"] = old.get("ic", "1")
            store.schedulers[scheduler_id] = fields
            return self._store_iteration(
                queue,
                store,
                scheduler_id,
                next_ms,
                fields["name"],
                upsert.template_data,
                opts,
                now,
            )

    async def update_job_scheduler(
        self,
        queue: str,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        with self._mutex:
            store = self._store(queue)
            prev = store.repeat.score(scheduler_id)
            if prev is None:
                return None
            fields = store.schedulers.setdefault(scheduler_id, {})
            opts = json.loads(job_opts)
            every_text = fields.get("every") or opts.get("repeat", {}).get("every")
            if every_text:
                start = fields.get("startDate")
                next_millis, offset = every_next_millis(
                    prev,
                    int(every_text),
                    now,
                    int(fields.get("offset") or 0),
                    None if start is None else int(start),
                )
                fields.setdefault("offset", str(offset))
            guarded = "scheduler-no-guard" not in self.planted_bugs
            if next_millis is None or (
                guarded and producer_id != iteration_job_id(scheduler_id, prev)
            ):
                return None
            job_id = iteration_job_id(scheduler_id, next_millis)
            if job_id in store.jobs:
                self._emit(store, ("duplicated", "jobId", job_id))
                return None
            store.repeat.add(scheduler_id, next_millis)
            fields["ic"] = str(int(fields.get("ic") or 0) + 1)
            name = fields.get("name") or scheduler_id
            self._store_iteration(
                queue, store, scheduler_id, next_millis, name, fields.get("data") or "{}", opts, now
            )
            return job_id

    async def remove_job_scheduler(self, queue: str, scheduler_id: str, now: int) -> bool:
        with self._mutex:
            store = self._store(queue)
            prev = store.repeat.score(scheduler_id)
            if prev is not None:
                job_id = iteration_job_id(scheduler_id, prev)
                if self._unschedule(queue, store, job_id, (JobState.DELAYED,)):
                    self._emit(store, ("removed", "jobId", job_id, "prev", "delayed"))
            if not store.repeat.remove(scheduler_id):
                return False
            store.schedulers.pop(scheduler_id, None)
            return True

    def _record(self, store: QueueStore, scheduler_id: str) -> SchedulerRecord:
        return SchedulerRecord(
            scheduler_id,
            dict(store.schedulers.get(scheduler_id, {})),
            store.repeat.score(scheduler_id),
        )

    async def get_job_scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        with self._mutex:
            store = self._store(queue)
            if scheduler_id not in store.repeat and scheduler_id not in store.schedulers:
                return None
            return self._record(store, scheduler_id)

    async def get_job_schedulers(
        self, queue: str, start: int, end: int, asc: bool
    ) -> list[SchedulerRecord]:
        with self._mutex:
            store = self._store(queue)
            ids = store.repeat.range(start, end, desc=not asc)
            return [self._record(store, scheduler_id) for scheduler_id in ids]

    async def get_job_schedulers_count(self, queue: str) -> int:
        with self._mutex:
            return len(self._store(queue).repeat)
