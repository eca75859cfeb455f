"""Deduplication on the memory backend: the add-time step ``add_jobs`` runs for a job with a
``deduplication`` option, the release of ``de:<id>`` when its owner finishes or is removed, and
the ``corral.engine.storage.DedupStorage`` calls. The decisions are
:mod:`corral.engine.deduplication`'s; this module applies them to the store."""

from __future__ import annotations

import json
from typing import Final

from corral.backends.memory.core import MemoryCore
from corral.backends.memory.store import QueueStore
from corral.engine.deduplication import (
    Action,
    Deduplication,
    Owner,
    decide,
    releases_on_finish,
    replaced_key_ttl,
    reschedules,
)
from corral.engine.states import JobState, Transition
from corral.engine.storage.records import NewJob, new_job

_DELAYED_STATE: Final = "delayed"


class DedupOps(MemoryCore):
    """Deduplication keys (``de:<id>``) and parked jobs (``dn:<id>``)."""

    # ----------------------------------------------------------------- helpers (lock held)

    def _claim(self, store: QueueStore, dedup_id: str, job_id: str, ttl: int | None) -> None:
        store.dedup[dedup_id] = (job_id, None if ttl is None else self._mutex.now + ttl)

    def _deduplicate(
        self, queue: str, store: QueueStore, job: NewJob, job_id: str
    ) -> tuple[str | None, str | None]:
        """The deduplication step of adding ``job`` as ``job_id``: ``(owner, None)`` when the
        add is dropped (it returns the owner's id), else ``(None, dedup id)`` once the key is
        claimed for the new job (``(None, None)``: the job has no deduplication option)."""
        raw = json.loads(job[2])
        option = Deduplication.from_json(raw.get("de") if isinstance(raw, dict) else None)
        if option is None:
            return None, None
        dedup_id = option.id
        key = self._dedup_key(store, dedup_id)
        owner = None
        if key is not None:
            owner = Owner(key[0], store.states.get(key[0]), key[1] is not None)
        if "dedup-ignores-owner" in self.planted_bugs:
            owner = None
        action = decide(option, owner)
        if action is Action.CLAIM or action is Action.RECOVER:
            if action is Action.RECOVER:
                store.dedup_next.pop(dedup_id, None)
            self._claim(store, dedup_id, job_id, option.key_ttl)
            return None, dedup_id
        assert owner is not None  # (every other action has one)
        if action is Action.REPLACE:
            self._take_out(store, JobState.DELAYED, [owner.job_id])
            self._delete_job(queue, store, owner.job_id, Transition.DEBOUNCE)
            self._emit(
                store,
                ("removed", "jobId", owner.job_id, "prev", _DELAYED_STATE),
                _deduplicated(job_id, dedup_id, owner.job_id),
            )
            store.dedup_next.pop(dedup_id, None)
            keep_ttl, ttl = replaced_key_ttl(option)
            if keep_ttl and key is not None:
                store.dedup[dedup_id] = (job_id, key[1])
            else:
                self._claim(store, dedup_id, job_id, ttl)
            return None, dedup_id
        if action is Action.PARK:
            name, data, opts = job[0], job[1], job[2]
            parked = {"name": name, "data": data, "opts": opts}
            if job[7] is not None:
                parked["jid"] = job[7]
            store.dedup_next[dedup_id] = parked
            store.dedup[dedup_id] = (owner.job_id, None)
        elif action is Action.EXTEND:
            self._claim(store, dedup_id, owner.job_id, option.key_ttl)
        if action is not Action.IGNORE:
            self._emit(store, _deduplicated(owner.job_id, dedup_id, job_id))
        if reschedules(option, action, owner):
            delay = job[4]
            due = job[3] + delay
            store.delayed.remove(owner.job_id)
            store.jobs[owner.job_id]["delay"] = str(delay)
            self._move(queue, store, owner.job_id, Transition.RESCHEDULE)
            self._push_delayed(store, owner.job_id, due)
            self._emit(store, ("delayed", "jobId", owner.job_id, "delay", str(due)))
        return owner.job_id, None

    def _dedup_finished(
        self, queue: str, store: QueueStore, dedup_id: str, job_id: str, now: int
    ) -> None:
        """A job holding ``deid`` completed or failed for good: release its key (unless the key
        has a TTL or another owner), then store the job parked in ``dn:<id>``, if any."""
        key = self._dedup_key(store, dedup_id)
        if key is not None and releases_on_finish(key[0], key[1] is not None, job_id):
            del store.dedup[dedup_id]
        parked = store.dedup_next.pop(dedup_id, None)
        if parked is None:
            return
        store.id_counter += 1  # (always, as BullMQ: the counter stays monotonic)
        next_id = parked.get("jid") or str(store.id_counter)
        if next_id in store.jobs:
            return
        raw = json.loads(parked["opts"])
        option = Deduplication.from_json(raw.get("de"))
        self._claim(store, dedup_id, next_id, None if option is None else option.key_ttl)
        job = new_job(
            parked["name"],
            parked["data"],
            parked["opts"],
            now,
            int(raw.get("delay") or 0),
            int(raw.get("priority") or 0),
            raw.get("lifo") is True,
            next_id,
        )
        if self._enqueue_new(queue, store, job, next_id, dedup_id) and self._may_signal(store):
            self._signal(store)

    # ----------------------------------------------------------------- DedupStorage

    async def get_deduplication_job_id(self, queue: str, dedup_id: str) -> str | None:
        with self._mutex:
            key = self._dedup_key(self._store(queue), dedup_id)
            return None if key is None else key[0]

    async def remove_deduplication_key(self, queue: str, dedup_id: str) -> int:
        with self._mutex:
            store = self._store(queue)
            if self._dedup_key(store, dedup_id) is None:
                return 0
            del store.dedup[dedup_id]
            return 1


def _deduplicated(job_id: str, dedup_id: str, other_id: str) -> tuple[str, ...]:
    return (
        "deduplicated",
        "jobId",
        job_id,
        "deduplicationId",
        dedup_id,
        "deduplicatedJobId",
        other_id,
    )
