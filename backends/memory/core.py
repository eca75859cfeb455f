"""The memory backend's common ground: the store's state and the helpers every concern uses."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from corral.backends.memory import parents
from corral.backends.memory.store import (
    PROMOTE_LIMIT,
    TRIM_LIMIT,
    OperationLock,
    QueueStore,
    delayed_score,
    priority_score,
    resolve_waiter,
)
from corral.engine.clock import Clock, SystemClock
from corral.engine.deduplication import releases_on_remove
from corral.engine.errors import ResultCode
from corral.engine.job import KeepJobs
from corral.engine.limits import is_maxed
from corral.engine.scheduling import iteration_job_id
from corral.engine.states import MOVES_BY_VALUE, JobState, Transition, invalid_transition
from corral.engine.storage.records import NewJob, hash_fields

#: Bugs the simulator can plant to prove that it catches them; never active unless asked for.
PLANTABLE_BUGS: Final = {
    "skip-token-check": "finishing a job ignores the lock token",
    "renew-without-owner": "lock renewal ignores the lock token",
    "lose-stalled-mark": "the stalled check never re-marks active jobs",
    "no-stall-limit": "max_stalled_count is ignored",
    "finish-not-idempotent": "a finish sent again after its reply was lost is refused",
    "dedup-ignores-owner": "an add claims a deduplication id without checking its holder",
    "no-shared-limiter": "activations are never counted in the queue's rate-limit window",
    "ignore-global-concurrency": "fetches ignore the queue's global concurrency",
    "scheduler-no-guard": "a scheduler makes a next iteration for any activation of its jobs",
    "remove-locked-job": "remove deletes a job whose lock is held (an operator call moves a "
    "running job)",
    "flow-release-before-record": "a last child releases its parent before its result is recorded",
    "flow-stale-pending-count": "the last-child check reads a pending count from before the child",
    "flow-fpof-continues": "a fail_parent_on_failure child failing releases its parent unfailed",
}

#: ``(queue, job_id, transition, source, target, job_fields)``, called inside the operation.
TransitionListener = Callable[
    [str, str, Transition, JobState | None, JobState | None, Mapping[str, str]], None
]


# Enum members read for every job, looked up once: on Python 3.11 an attribute of an Enum class
# goes through the metaclass's __getattr__ hook, which costs more than the rest of a move.
_OK: Final = ResultCode.OK
_ADD: Final = Transition.ADD
_ADD_PRIORITIZED: Final = Transition.ADD_PRIORITIZED
_ADD_DELAYED: Final = Transition.ADD_DELAYED

#: The transitions that place a new job, by where it goes: (wait, prioritized, delayed).
PlacingMoves = tuple[Transition, Transition, Transition]
#: An add's (``_enqueue_new``'s default).
ADD_MOVES: Final[PlacingMoves] = (_ADD, _ADD_PRIORITIZED, _ADD_DELAYED)
#: A job scheduler's iteration's.
SCHEDULE_MOVES: Final[PlacingMoves] = (
    Transition.SCHEDULE,
    Transition.SCHEDULE_PRIORITIZED,
    Transition.SCHEDULE_DELAYED,
)

#: The deletions that leave the job's deduplication key alone (every other one releases it, as
#: BullMQ's removal paths): retention (BullMQ's removeJob without the release: the owner has
#: finished, and a key with a TTL must outlive it) and DEBOUNCE (the key passes to the new job).
_KEEPS_DEDUP_KEY: Final = frozenset({Transition.TRIM, Transition.DEBOUNCE})


class MemoryCore:
    """What every operation of the memory backend stands on: the queues, the operation lock, and
    the moves, signals and events every concern makes (always called with the lock held)."""

    #: Every job field this store holds was written by corral's own API (it has no other
    #: producer, unlike a Redis shared with Node services), so a worker need not check that a
    #: job's ``data`` and ``opts`` decode before running it (see ``corral.engine.job_decoding``).
    holds_only_encoded_fields: Final = True

    def __init__(
        self, clock: Clock | None = None, *, token_numbers: Iterator[int] | None = None
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._queues: dict[str, QueueStore] = {}
        self._mutex = OperationLock(self, self._serve_waiters)
        #: Each blocked ``wait_for_work`` waiter -> when it blocked (an ordinal), for serving.
        self._blocked_since: dict[asyncio.Future[bool], int] = {}
        self._block_numbers = itertools.count()
        #: Called on every state change; the simulator records transitions through it.
        self.transition_listener: TransitionListener | None = None
        #: Deliberate bugs for the simulator's self-test (see PLANTABLE_BUGS); empty otherwise.
        self.planted_bugs: frozenset[str] = frozenset()
        self._token_numbers = itertools.count(1) if token_numbers is None else token_numbers
        #: queue -> registration -> (client name, registered at ms): the workers concern.
        self._workers: dict[str, dict[str, tuple[str, int]]] = {}
        self._worker_numbers = itertools.count(1)

    def _store(self, queue: str) -> QueueStore:
        store = self._queues.get(queue)
        if store is None:
            store = self._queues[queue] = QueueStore()
        return store

    # ----------------------------------------------------------------- helpers (lock held)

    def _move(
        self, queue: str, store: QueueStore, job_id: str, transition: Transition
    ) -> JobState | None:
        """Record a transition of ``job_id`` in the state index after checking it against the
        table; the caller has already moved the id between structures."""
        source = store.states.get(job_id)
        try:  # next_state(), inlined: this runs for every move of every job
            target = MOVES_BY_VALUE[transition._value_][source]
        except KeyError:
            raise invalid_transition(source, transition) from None
        if target is None:
            store.states.pop(job_id, None)
        else:
            store.states[job_id] = target
        if self.transition_listener is not None:
            self.transition_listener(
                queue, job_id, transition, source, target, store.jobs.get(job_id, {})
            )
        return target

    def _emit(self, store: QueueStore, entry: tuple[str, ...], *more: tuple[str, ...]) -> None:
        """Log events, each given as its name followed by alternating field names and values,
        as XADD takes them (the log is written several times per job and seldom read: a tuple
        costs a fraction of a dict, which is only built when the event is read). One call logs
        all the events of one step, in order."""
        ms = self._mutex.now
        if ms > store.last_event_ms:
            store.last_event_ms = ms
            seq = 0
        else:  # the same millisecond (or a clock that stepped back): the next sequence numbers
            ms = store.last_event_ms
            seq = store.last_event_seq + 1
        # One flat tuple per entry: it outlives many collections, and a nested one would be a
        # second object for the garbage collector to traverse.
        events = store.events
        events.append((ms, seq) + entry)  # noqa: RUF005 - unpacking builds a list on 3.11
        for later in more:
            seq += 1
            events.append((ms, seq) + later)  # noqa: RUF005
        store.last_event_seq = seq
        while store.event_waiters:  # every listener wants every event
            waiter = store.event_waiters.popleft()
            if not waiter.done():
                resolve_waiter(waiter)

    def _signal(self, store: QueueStore, member: str = "0", score: int = 0) -> None:
        """Set the marker. Blocked waiters are served when the operation ends."""
        current = store.marker.get(member)
        if current is None or score < current:
            store.marker[member] = score
        if store.waiters:
            self._mutex.marked.append(store)

    def _serve_waiters(self, marked: list[QueueStore]) -> None:
        """At the end of each operation: give each marker member to one blocked waiter, longest
        waiting first, as Redis serves the clients blocked in BZPOPMIN after each command or
        script (several signals within one operation set one member and wake one waiter).

        An operation that signals several queues (a flow's) serves their waiters longest waiting
        first across those queues, as fakeredis under ``virtual_fakeredis`` wakes its blocked
        clients: the simulator's two stores then wake workers in the same order (real Redis
        goes key by key in the order they were signalled; nothing a worker does depends on
        which of two queues' workers is woken first)."""
        stores = list(dict.fromkeys(marked))
        marked.clear()
        order = self._blocked_since
        while True:
            best = None
            for store in stores:
                while store.waiters and store.waiters[0].done():  # (timed out or cancelled)
                    store.waiters.popleft()
                if (
                    store.marker
                    and store.waiters
                    and (best is None or order[store.waiters[0]] < order[best.waiters[0]])
                ):
                    best = store
            if best is None:
                return
            self._consume_marker(best)
            resolve_waiter(best.waiters.popleft())

    @staticmethod
    def _consume_marker(store: QueueStore) -> bool:
        if not store.marker:
            return False
        store.marker.pop(min(store.marker, key=store.marker.__getitem__))
        return True

    def _lock_of(self, store: QueueStore, job_id: str) -> tuple[str, int] | None:
        """The job's unexpired lock; an expired one is deleted on sight, as Redis would."""
        lock = store.locks.get(job_id)
        if lock is not None and lock[1] <= self._mutex.now:
            del store.locks[job_id]
            return None
        return lock

    def _check_owner(self, store: QueueStore, job_id: str, token: str) -> ResultCode:
        if job_id not in store.jobs:
            return ResultCode.MISSING_JOB
        lock = self._lock_of(store, job_id)
        if "skip-token-check" in self.planted_bugs and job_id in store.active:
            return _OK
        if lock is None:
            return ResultCode.MISSING_LOCK
        if lock[0] != token:
            return ResultCode.LOCK_MISMATCH
        if job_id not in store.active:
            return ResultCode.NOT_IN_STATE
        return _OK

    def _take_from_active(self, store: QueueStore, job_id: str) -> None:
        del store.active[job_id]
        store.locks.pop(job_id, None)
        store.stalled.pop(job_id, None)

    def _push_wait(self, store: QueueStore, job_id: str, *, front: bool) -> None:
        # The right end is served next, so "front of the line" is an append on the right.
        if front:
            store.wait.append(job_id)
        else:
            store.wait.appendleft(job_id)
        if self._may_signal(store):
            self._signal(store)

    def _push_prioritized(self, store: QueueStore, job_id: str, priority: int) -> None:
        store.priority_counter += 1
        store.prioritized.add(job_id, priority_score(priority, store.priority_counter))
        if self._may_signal(store):
            self._signal(store)

    @staticmethod
    def _may_signal(store: QueueStore) -> bool:
        """Whether a job made ready sets the marker: not while the queue is paused or its
        global concurrency is reached (BullMQ's isQueuePausedOrMaxed, which every add,
        promotion, retry and recovery consults: no worker could take the job anyway)."""
        if store.paused:
            return False
        concurrency = store.limit_meta.get("concurrency")
        return concurrency is None or not is_maxed(concurrency, len(store.active))

    def _push_delayed(self, store: QueueStore, job_id: str, due_ms: int) -> None:
        low = delayed_score(due_ms, 0)
        highest = store.delayed.max_score_between(low, low + 4095)
        sequence = 0 if highest is None else min(highest - low + 1, 4095)
        store.delayed.add(job_id, low + sequence)
        if not store.paused:
            self._signal(store, "1", due_ms)

    def _promote_due(self, queue: str, store: QueueStore, now: int) -> None:
        for job_id in store.delayed.pop_up_to(delayed_score(now + 1, 0) - 1, PROMOTE_LIMIT):
            fields = store.jobs[job_id]
            fields["delay"] = "0"
            priority = int(fields.get("priority") or 0)
            if priority:
                self._move(queue, store, job_id, Transition.PROMOTE_PRIORITIZED)
                self._push_prioritized(store, job_id, priority)
            else:
                self._move(queue, store, job_id, Transition.PROMOTE)
                self._push_wait(store, job_id, front=False)
            self._emit(store, ("waiting", "jobId", job_id, "prev", "delayed"))

    def _enqueue_new(
        self,
        queue: str,
        store: QueueStore,
        job: NewJob,
        job_id: str,
        dedup_id: str | None,
        moves: PlacingMoves = ADD_MOVES,
        scheduler_id: str | None = None,
    ) -> bool:
        """Store a new job and place it (``moves``: into wait, prioritized or delayed) with its
        events; True if it is ready to fetch. ``dedup_id`` and ``scheduler_id`` are stored as
        the fields ``deid`` and ``rjk``. The caller signals ready jobs (once per batch: a wait
        push here does not)."""
        name, _, _, timestamp, delay, priority, lifo, _ = job
        fields = store.jobs[job_id] = hash_fields(job)
        if dedup_id is not None:
            fields["deid"] = dedup_id
        if scheduler_id is not None:
            fields["rjk"] = scheduler_id
        to_wait, to_prioritized, to_delayed = moves
        added = ("added", "jobId", job_id, "name", name)
        if delay > 0:
            self._move(queue, store, job_id, to_delayed)
            due = timestamp + delay
            self._push_delayed(store, job_id, due)
            self._emit(store, added, ("delayed", "jobId", job_id, "delay", str(due)))
            return False
        if priority:
            self._move(queue, store, job_id, to_prioritized)
            self._push_prioritized(store, job_id, priority)
        else:
            self._move(queue, store, job_id, to_wait)
            # (_push_wait without its signal, which is sent once for the batch)
            if lifo:
                store.wait.append(job_id)
            else:
                store.wait.appendleft(job_id)
        self._emit(store, added, ("waiting", "jobId", job_id))
        return True

    # ----------------------------------------------------------------- removal (lock held)

    def _delete_job(
        self, queue: str, store: QueueStore, job_id: str, how: Transition, *, hard: bool = False
    ) -> None:
        """Transition ``how`` of a job already taken out of its structure: delete its hash,
        lock, stalled mark and logs, release its deduplication key (see ``_KEEPS_DEDUP_KEY``)
        and detach it from its flow (see :func:`parents.forget`). With ``hard`` (BullMQ's hard
        path: clean, drain, obliterate) a parent in this queue left with no pending child is
        deleted after it the same way (``DELETE_PARENT``, no event), and so on up the tree.
        Every removal path goes through here."""
        doomed: str | None = job_id
        while doomed is not None:
            fields = store.jobs[doomed]
            dedup_id = fields.get("deid")
            orphan = None
            if store.flows or "parentKey" in fields:  # (flows: detach, drop children)
                orphan = parents.forget(self, queue, store, doomed, self._mutex.now, hard=hard)
            self._move(queue, store, doomed, how)
            del store.jobs[doomed]
            store.locks.pop(doomed, None)
            store.stalled.pop(doomed, None)
            store.logs.pop(doomed, None)
            if dedup_id is not None and how not in _KEEPS_DEDUP_KEY:
                self._dedup_removed(store, dedup_id, doomed)
            doomed, how = orphan, Transition.DELETE_PARENT

    @staticmethod
    def _take_out(store: QueueStore, state: JobState, job_ids: list[str]) -> None:
        """Take the ids out of the structure of ``state`` (not of the state index)."""
        if not job_ids:
            return
        if state is JobState.WAITING:
            if len(job_ids) == 1:
                store.wait.remove(job_ids[0])
            else:
                gone = set(job_ids)
                store.wait = collections.deque(i for i in store.wait if i not in gone)
        elif state is JobState.ACTIVE:
            for job_id in job_ids:
                del store.active[job_id]
        else:
            zset = store.zset(state)
            for job_id in job_ids:
                zset.remove(job_id)

    @staticmethod
    def _is_current_iteration(store: QueueStore, job_id: str) -> bool:
        """Whether the job is its scheduler's current iteration (``repeat:<rjk>:<score of rjk
        in repeat>``): remove refuses it, clean and drain skip it, or the schedule would stop
        (BullMQ's isJobSchedulerJob)."""
        scheduler_id = store.jobs[job_id].get("rjk")
        if scheduler_id is None:
            return False
        slot = store.repeat.score(scheduler_id)
        return slot is not None and job_id == iteration_job_id(scheduler_id, slot)

    def _dedup_key(self, store: QueueStore, dedup_id: str) -> tuple[str, int | None] | None:
        """``de:<id>`` as (owner, expiry), or None; an expired key is deleted on sight."""
        key = store.dedup.get(dedup_id)
        if key is not None and key[1] is not None and key[1] <= self._mutex.now:
            del store.dedup[dedup_id]
            return None
        return key

    def _dedup_removed(self, store: QueueStore, dedup_id: str, job_id: str) -> None:
        """A job holding ``deid`` was removed: release ``de``/``dn`` if it owns the key."""
        key = self._dedup_key(store, dedup_id)
        if key is not None and releases_on_remove(key[0], job_id):
            del store.dedup[dedup_id]
            store.dedup_next.pop(dedup_id, None)

    def _trim(
        self, queue: str, store: QueueStore, state: JobState, keep: KeepJobs, now: int
    ) -> None:
        if keep.keeps_all:
            return
        finished = store.zset(state)
        doomed: list[str] = []
        if keep.age_ms is not None:
            doomed = finished.pop_up_to(now - keep.age_ms, TRIM_LIMIT)
        if keep.count is not None:
            excess = min(len(finished) - keep.count, TRIM_LIMIT - len(doomed))
            if excess > 0:
                doomed.extend(finished.range(0, excess - 1))
                for job_id in doomed[-excess:]:
                    finished.remove(job_id)
        for job_id in doomed:
            self._delete_job(queue, store, job_id, Transition.TRIM)

    def _finish_failed(
        self, queue: str, store: QueueStore, job_id: str, reason: str, keep: KeepJobs, now: int
    ) -> None:
        fields = store.jobs[job_id]
        fields["failedReason"] = reason
        fields["finishedOn"] = str(now)
        fields.pop("defa", None)
        self._move(queue, store, job_id, Transition.FAIL)
        store.failed.add(job_id, now)
        self._emit(store, ("failed", "jobId", job_id, "failedReason", reason, "prev", "active"))
        if "parentKey" in fields:  # (flows: in the same step, before retention)
            parents.child_failed(self, queue, job_id, fields, reason, now)
        self._trim(queue, store, JobState.FAILED, keep, now)
