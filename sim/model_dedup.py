"""The reference model of deduplication (BullMQ 6.7's ``deduplication`` job option).

:class:`DedupModel` is a mixin of :class:`corral.sim.model.QueueModel`. It is written from
``bullmq-features.md`` §4 directly, step by step in the scripts' order, and deliberately does
not call :func:`corral.engine.deduplication.decide` (which the backends use): the machine in
``tests/engine/test_state_machine.py`` then checks that policy against the reference.

* ``de:<id>`` is ``_dedup[id] = (owner id, expiry on the store's clock or None)``; a key past its
  expiry is gone, as a Redis key with a PX TTL.
* ``dn:<id>`` (the job parked by ``keep_last_if_active``) is ``_dedup_next[id] = (name, data,
  opts, custom id or None)``.
* Release: a job finishing for good deletes a key it owns that has no TTL (a key with a TTL is
  left to expire: throttle outlives its job), then stores the parked job if there is one;
  ``remove`` deletes ``de`` and ``dn`` if the job owns the key. Retries and the stalled
  recovery keep the key; a job failed by the stall limit releases it like any final failure.
  ``clean``, ``drain`` and ``obliterate`` release nothing (see :mod:`corral.sim.model_ops`;
  corral's backends agree, the reference is ambiguous between BullMQ versions).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from corral.engine.deduplication import Deduplication
from corral.engine.states import JobState, Transition

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.storage import NewJob
    from corral.sim.model import OrderKey, _Job

#: A parked job: ``(name, data, opts, custom id or None)``.
Parked = tuple[str, str, str, "str | None"]


class DedupModel:
    """Deduplication keys and parked jobs (see the module docstring)."""

    if TYPE_CHECKING:  # provided by QueueModel
        clock: Clock
        _jobs: dict[str, _Job]
        _id_counter: int

        def _move(self, job: _Job, transition: Transition, order: OrderKey = ...) -> None: ...
        def _delayed_place(self, job_id: str, due_ms: int) -> OrderKey: ...
        def _store_new(self, new: NewJob, job_id: str, dedup_id: str | None) -> None: ...
        def _delayed_place_except(self, job: _Job, due_ms: int) -> OrderKey: ...

    def _init_dedup(self) -> None:
        self._dedup: dict[str, tuple[str, int | None]] = {}
        self._dedup_next: dict[str, Parked] = {}

    # ------------------------------------------------------------------ the keys

    def _dedup_key(self, dedup_id: str) -> tuple[str, int | None] | None:
        """``de:<id>`` as (owner, expiry), None if it does not exist (or expired)."""
        key = self._dedup.get(dedup_id)
        if key is not None and key[1] is not None and key[1] <= self.clock.now_ms():
            del self._dedup[dedup_id]
            return None
        return key

    def _set_key(self, dedup_id: str, owner: str, ttl: int | None) -> None:
        """``SET de:<id> owner [PX ttl]``."""
        self._dedup[dedup_id] = (owner, None if ttl is None else self.clock.now_ms() + ttl)

    def _claim_ttl(self, option: Deduplication) -> int | None:
        """The TTL a claim sets: a plain ``SET`` with ``keep_last_if_active``, else the ttl."""
        return None if option.keep_last_if_active else option.ttl

    def _stale(self, key: tuple[str, int | None]) -> bool:
        """Stale recovery's test: the key has no TTL and its owner's hash is gone."""
        return key[1] is None and key[0] not in self._jobs

    def _park(self, option: Deduplication, dedup_id: str, owner: str, new: NewJob) -> bool:
        """``storeDeduplicatedNextJob``: with ``keep_last_if_active`` and an active owner, park
        the new job (latest wins) and drop the key's TTL. Whether it did."""
        job = self._jobs.get(owner)
        if not option.keep_last_if_active or job is None or job.state is not JobState.ACTIVE:
            return False
        self._dedup_next[dedup_id] = (new[0], new[1], new[2], new[7])
        self._dedup[dedup_id] = (owner, None)  # PERSIST
        return True

    # ------------------------------------------------------------------ adding

    def _deduplicate(self, new: NewJob, job_id: str) -> tuple[str | None, str | None]:
        """The add-time step for a job about to be stored as ``job_id``: ``(owner, None)`` when
        the add is dropped (it answers with the owner's id), else ``(None, dedup id or None)``
        once the key is claimed for the new job."""
        raw = json.loads(new[2])
        option = Deduplication.from_json(raw.get("de") if isinstance(raw, dict) else None)
        if option is None:
            return None, None
        dedup_id = option.id
        key = self._dedup_key(dedup_id)
        if key is None:
            self._set_key(dedup_id, job_id, self._claim_ttl(option))
            return None, dedup_id
        owner = key[0]
        if option.replace:
            current = self._jobs.get(owner)
            if current is not None and current.state is JobState.DELAYED:
                # Debounce: the delayed owner is removed and the key re-pointed.
                self._move(current, Transition.DEBOUNCE)
                self._dedup_next.pop(dedup_id, None)
                if option.keep_last_if_active:
                    self._set_key(dedup_id, job_id, None)
                elif option.ttl is not None and not option.extend:
                    self._dedup[dedup_id] = (job_id, key[1])  # KEEPTTL
                else:
                    self._set_key(dedup_id, job_id, option.ttl)
                return None, dedup_id
            if self._stale(key):
                return self._recover(option, dedup_id, job_id)
            self._park(option, dedup_id, owner, new)
            return owner, None  # (no event unless parked)
        if self._stale(key):
            return self._recover(option, dedup_id, job_id)
        if not self._park(option, dedup_id, owner, new):
            if option.ttl is not None and option.extend:
                self._set_key(dedup_id, owner, self._claim_ttl(option))
            self._reschedule(option, owner, new)
        return owner, None

    def _recover(
        self, option: Deduplication, dedup_id: str, job_id: str
    ) -> tuple[str | None, str | None]:
        """Stale recovery: drop ``de``/``dn`` and claim the id for the new job."""
        self._dedup_next.pop(dedup_id, None)
        self._set_key(dedup_id, job_id, self._claim_ttl(option))
        return None, dedup_id

    def _reschedule(self, option: Deduplication, owner: str, new: NewJob) -> None:
        """``reschedule``: a delayed owner becomes due ``delay`` ms after the add's timestamp."""
        job = self._jobs.get(owner)
        if not option.reschedule or job is None or job.state is not JobState.DELAYED:
            return
        delay = new[4]
        job.delay = delay
        self._move(job, Transition.RESCHEDULE, self._delayed_place_except(job, new[3] + delay))

    # ------------------------------------------------------------------ release

    def _dedup_finished(self, job: _Job, now: int) -> None:
        """``job`` completed or failed for good: release its key, then store a parked job."""
        dedup_id = job.extra.get("deid")
        if dedup_id is None:
            return
        key = self._dedup_key(dedup_id)
        if key is not None and key[1] is None and key[0] == job.id:
            del self._dedup[dedup_id]
        parked = self._dedup_next.pop(dedup_id, None)
        if parked is None:
            return
        self._id_counter += 1  # (always, as BullMQ: the counter stays monotonic)
        name, data, opts, custom_id = parked
        next_id = custom_id or str(self._id_counter)
        if next_id in self._jobs:
            return
        raw = json.loads(opts)
        option = Deduplication.from_json(raw.get("de"))
        self._set_key(dedup_id, next_id, None if option is None else self._claim_ttl(option))
        delay = int(raw.get("delay") or 0)
        priority = int(raw.get("priority") or 0)
        lifo = raw.get("lifo") is True
        self._store_new((name, data, opts, now, delay, priority, lifo, next_id), next_id, dedup_id)

    def _dedup_removed(self, job: _Job) -> None:
        """``job`` was removed: release ``de``/``dn`` if it owns the key."""
        dedup_id = job.extra.get("deid")
        if dedup_id is None:
            return
        key = self._dedup_key(dedup_id)
        if key is not None and key[0] == job.id:
            del self._dedup[dedup_id]
            self._dedup_next.pop(dedup_id, None)

    # ------------------------------------------------------------------ the DedupStorage calls

    def get_deduplication_job_id(self, dedup_id: str) -> str | None:
        """``GET de:<id>``."""
        key = self._dedup_key(dedup_id)
        return None if key is None else key[0]

    def remove_deduplication_key(self, dedup_id: str) -> int:
        """``DEL de:<id>`` (a parked job stays)."""
        if self._dedup_key(dedup_id) is None:
            return 0
        del self._dedup[dedup_id]
        return 1

    def parked_job(self, dedup_id: str) -> Parked | None:
        """The job parked in ``dn:<id>``, or None (for the simulator's checks)."""
        return self._dedup_next.get(dedup_id)
