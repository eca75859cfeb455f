"""MemoryBackend: the embedded, in-process Storage.

It keeps each queue in the same shapes as BullMQ's Redis layout — ``wait`` and ``active`` lists,
``prioritized``/``delayed``/``completed``/``failed`` sorted sets, the ``stalled`` set, a hash per
job, a lock per active job with an expiry, the ``stalled-check`` throttle, the ``id`` and ``pc``
counters, the ``marker`` and an event log — so that its observable behaviour can be compared with
the Redis backend's operation by operation.

Every operation runs under one lock and never awaits in the middle, so each is atomic both for
coroutines on any event loop (the simulator runs one loop per simulated process against one store)
and for threads (sync processors reporting progress). Lock and throttle expiries are judged by the
backend's own clock, like Redis TTLs; timestamps written into jobs are the callers' ``now``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from corral.backends.memory_checks import check_fields, check_queue, check_sizes, is_placed
from corral.backends.zset import ZSet, index_range
from corral.engine.clock import Clock, SystemClock
from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.job import KeepJobs, decode_opts, next_count
from corral.engine.policy import stall_limit_exceeded
from corral.engine.states import MOVES_BY_VALUE, JobState, Transition, invalid_transition
from corral.engine.storage import (
    OUTCOME_KINDS,
    AddResult,
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    FetchResult,
    FinishResult,
    LockInfo,
    NewJob,
    Outcome,
    RetryLater,
    StalledCheck,
    StoredEvent,
    finish_field,
    finish_record,
    hash_fields,
    parse_finish_record,
)

#: How many due delayed jobs one operation promotes at most (BullMQ: 1,000).
PROMOTE_LIMIT: Final = 1000
#: How many finished jobs one retention pass deletes at most (BullMQ's ``keepJobs.limit``).
TRIM_LIMIT: Final = 1000
#: Length of the event log (BullMQ's default ``maxLenEvents``).
MAX_EVENTS: Final = 10_000

#: Bugs the simulator can plant to prove that it catches them; never active unless asked for.
PLANTABLE_BUGS: Final = {
    "skip-token-check": "finishing a job ignores the lock token",
    "renew-without-owner": "lock renewal ignores the lock token",
    "lose-stalled-mark": "the stalled check never re-marks active jobs",
    "no-stall-limit": "max_stalled_count is ignored",
    "finish-not-idempotent": "a finish sent again after its reply was lost is refused",
}

#: ``(queue, job_id, transition, source, target, job_fields)``, called inside the operation.
TransitionListener = Callable[
    [str, str, Transition, JobState | None, JobState | None, Mapping[str, str]], None
]


# Enum members read for every job, looked up once: on Python 3.11 an attribute of an Enum class
# goes through the metaclass's __getattr__ hook, which costs more than the rest of a move.
_OK: Final = ResultCode.OK
# The record of a finish that fetched no job, per outcome type (one lookup per finish).
_PLAIN_FINISH_RECORDS: Final = {kind: finish_record(name) for kind, name in OUTCOME_KINDS.items()}
_ADD: Final = Transition.ADD
_FETCH: Final = Transition.FETCH
_COMPLETE: Final = Transition.COMPLETE
_COMPLETED: Final = JobState.COMPLETED


def delayed_score(due_ms: int, sequence: int) -> int:
    """BullMQ's delayed score: due time × 4096 plus a per-millisecond sequence."""
    return due_ms * 4096 + sequence


def priority_score(priority: int, counter: int) -> int:
    """BullMQ's prioritized score: priority × 2^32 plus the queue's counter."""
    return priority * 2**32 + (counter & 0xFFFFFFFF)


@dataclasses.dataclass(eq=False, slots=True)
class QueueStore:
    """One queue's structures. ``wait`` is a list with index 0 at the left (newest) end; jobs
    are taken from the right. ``active`` is an ordered dict standing for a list whose left end
    is the last inserted key. ``states`` indexes where each job is (checked by ``check()``)."""

    wait: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    active: dict[str, None] = dataclasses.field(default_factory=dict)
    prioritized: ZSet = dataclasses.field(default_factory=ZSet)
    delayed: ZSet = dataclasses.field(default_factory=ZSet)
    completed: ZSet = dataclasses.field(default_factory=ZSet)
    failed: ZSet = dataclasses.field(default_factory=ZSet)
    stalled: dict[str, None] = dataclasses.field(default_factory=dict)
    jobs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    states: dict[str, JobState] = dataclasses.field(default_factory=dict)
    locks: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    paused: bool = False
    stalled_check_until: int = 0
    id_counter: int = 0
    priority_counter: int = 0
    marker: dict[str, int] = dataclasses.field(default_factory=dict)
    waiters: collections.deque[asyncio.Future[bool]] = dataclasses.field(
        default_factory=collections.deque
    )
    # (ms, sequence, name, field, value, field, value, ...) — ints, then strings: StoredEvent
    # objects and their dicts are only built when the log is read.
    events: collections.deque[tuple[Any, ...]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=MAX_EVENTS)
    )
    last_event_ms: int = 0
    last_event_seq: int = 0
    event_waiters: collections.deque[asyncio.Future[bool]] = dataclasses.field(
        default_factory=collections.deque
    )

    def zset(self, state: JobState) -> ZSet:
        return {
            JobState.PRIORITIZED: self.prioritized,
            JobState.DELAYED: self.delayed,
            JobState.COMPLETED: self.completed,
            JobState.FAILED: self.failed,
        }[state]


class MemoryBackend:
    """In-process storage for any number of queues.

    Args:
        clock: the store's clock, used for lock and throttle expiry and event ids (the server
            clock, in Redis terms). Defaults to the system clock.
        token_numbers: the numbers of the lock tokens it mints (see ``FetchRequest``), which
            must never repeat. Defaults to a count of its own from 1; a store standing in for
            one that restarted takes the old one's, as a Redis client outlives its server.
    """

    #: Every job field this store holds was written by corral's own API (it has no other
    #: producer, unlike a Redis shared with Node services), so a worker need not check that a
    #: job's ``data`` and ``opts`` decode before running it (see ``corral.engine.job_decoding``).
    holds_only_encoded_fields: Final = True

    def __init__(
        self, clock: Clock | None = None, *, token_numbers: Iterator[int] | None = None
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._queues: dict[str, QueueStore] = {}
        self._mutex = _OperationLock(self, self._serve_waiters)
        #: Called on every state change; the simulator records transitions through it.
        self.transition_listener: TransitionListener | None = None
        #: Deliberate bugs for the simulator's self-test (see PLANTABLE_BUGS); empty otherwise.
        self.planted_bugs: frozenset[str] = frozenset()
        self._token_numbers = itertools.count(1) if token_numbers is None else token_numbers

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
                _resolve(waiter)

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
        script (several signals within one operation set one member and wake one waiter)."""
        while marked:
            store = marked.pop()
            while store.marker and store.waiters:
                waiter = store.waiters.popleft()
                if not waiter.done():
                    self._consume_marker(store)
                    _resolve(waiter)

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
        if not store.paused:
            self._signal(store)

    def _push_prioritized(self, store: QueueStore, job_id: str, priority: int) -> None:
        store.priority_counter += 1
        store.prioritized.add(job_id, priority_score(priority, store.priority_counter))
        if not store.paused:
            self._signal(store)

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

    def _fetch(
        self, queue: str, store: QueueStore, request: FetchRequest, token: str, now: int
    ) -> Fetched | None:
        """Take and lock the next ready job, or None (paused, or nothing ready)."""
        # As BullMQ's moveToActive: due delayed jobs are promoted even while the queue is paused.
        if store.delayed.scores:
            self._promote_due(queue, store, now)
        if store.paused:
            return None
        if store.wait:
            job_id = store.wait.pop()
        else:
            popped = store.prioritized.pop_min()
            if popped is None:
                return None
            job_id = popped
        self._move(queue, store, job_id, _FETCH)
        store.active[job_id] = None
        store.locks[job_id] = (token, self._mutex.now + request.lock_duration)
        fields = store.jobs[job_id]
        fields["processedOn"] = str(now)
        fields["ats"] = next_count(fields.get("ats"))
        if request.worker_name is not None:
            fields["pb"] = request.worker_name
        self._emit(store, ("active", "jobId", job_id, "prev", "waiting"))
        # More jobs are ready: the marker says so (unless it already does and nobody waits).
        if (store.wait or store.prioritized.scores) and (
            store.waiters or store.marker.get("0") != 0
        ):
            self._signal(store)
        return Fetched(job_id, dict(fields), token)

    def _delete_job(self, queue: str, store: QueueStore, job_id: str, how: Transition) -> None:
        self._move(queue, store, job_id, how)
        del store.jobs[job_id]
        store.locks.pop(job_id, None)
        store.stalled.pop(job_id, None)

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
        self._trim(queue, store, JobState.FAILED, keep, now)

    def _retry_now(self, queue: str, store: QueueStore, job_id: str, now: int) -> None:
        self._promote_due(queue, store, now)
        fields = store.jobs[job_id]
        priority = int(fields.get("priority") or 0)
        if priority:
            self._move(queue, store, job_id, Transition.RETRY_PRIORITIZED)
            self._push_prioritized(store, job_id, priority)
        else:
            self._move(queue, store, job_id, Transition.RETRY)
            lifo = decode_opts(fields.get("opts") or "{}").lifo
            self._push_wait(store, job_id, front=lifo)
        self._emit(store, ("waiting", "jobId", job_id, "prev", "active"))

    def _apply(
        self, queue: str, store: QueueStore, job_id: str, outcome: Outcome, now: int
    ) -> None:
        fields = store.jobs[job_id]
        # (_take_from_active, inlined: this runs once per job)
        del store.active[job_id]
        store.locks.pop(job_id, None)
        store.stalled.pop(job_id, None)
        fields["atm"] = next_count(fields.get("atm"))
        if isinstance(outcome, Complete):
            fields["returnvalue"] = outcome.return_value
            fields["finishedOn"] = str(now)
            self._move(queue, store, job_id, _COMPLETE)
            store.completed.add(job_id, now)
            self._emit(
                store,
                (
                    "completed",
                    "jobId",
                    job_id,
                    "returnvalue",
                    outcome.return_value,
                    "prev",
                    "active",
                ),
            )
            if not outcome.keep.keeps_all:
                self._trim(queue, store, _COMPLETED, outcome.keep, now)
        elif isinstance(outcome, Fail):
            fields["stacktrace"] = outcome.stacktrace
            try:
                attempts = decode_opts(fields.get("opts") or "{}").attempts
            except (TypeError, ValueError):  # options another producer wrote: as Lua's tonumber
                attempts = 0
            self._finish_failed(queue, store, job_id, outcome.reason, outcome.keep, now)
            if int(fields["atm"]) >= attempts:
                self._emit(
                    store, ("retries-exhausted", "jobId", job_id, "attemptsMade", fields["atm"])
                )
        else:
            fields["failedReason"] = outcome.reason
            fields["stacktrace"] = outcome.stacktrace
            if isinstance(outcome, RetryLater):
                due = now + outcome.delay_ms
                fields["delay"] = str(outcome.delay_ms)
                self._move(queue, store, job_id, Transition.RETRY_LATER)
                self._push_delayed(store, job_id, due)
                self._emit(store, ("delayed", "jobId", job_id, "delay", str(due)))
            else:
                self._retry_now(queue, store, job_id, now)
        if not store.active and not store.wait and not store.prioritized.scores:
            self._emit(store, ("drained",))

    # ----------------------------------------------------------------- Storage operations

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            job_ids: list[str] = []
            created: list[bool] = []
            ready = False  # a job became ready to fetch: waiters are signalled once, at the end
            try:
                for job in jobs:
                    name, _, _, timestamp, delay, priority, lifo, custom_id = job
                    store.id_counter += 1
                    job_id = custom_id or str(store.id_counter)
                    if job_id in store.jobs:
                        self._emit(store, ("duplicated", "jobId", job_id))
                        job_ids.append(job_id)
                        created.append(False)
                        continue
                    store.jobs[job_id] = hash_fields(job)
                    added = ("added", "jobId", job_id, "name", name)
                    if delay > 0:
                        self._move(queue, store, job_id, Transition.ADD_DELAYED)
                        due = timestamp + delay
                        self._push_delayed(store, job_id, due)
                        self._emit(store, added, ("delayed", "jobId", job_id, "delay", str(due)))
                    else:
                        if priority:
                            self._move(queue, store, job_id, Transition.ADD_PRIORITIZED)
                            self._push_prioritized(store, job_id, priority)
                        else:
                            self._move(queue, store, job_id, _ADD)
                            # (_push_wait without its signal, which is sent once for the batch)
                            if lifo:
                                store.wait.append(job_id)
                            else:
                                store.wait.appendleft(job_id)
                        ready = True
                        self._emit(store, added, ("waiting", "jobId", job_id))
                    job_ids.append(job_id)
                    created.append(True)
            finally:  # the jobs stored before an error are ready all the same
                if ready and not store.paused:
                    self._signal(store)
            return AddResult(job_ids, created)

    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            fetched = self._fetch(
                queue, store, request, request.lock_token(self._token_numbers), now
            )
            if fetched is not None or store.paused:
                return FetchResult(fetched)
            first = store.delayed.first()
            return FetchResult(None, None if first is None else first[0] // 4096)

    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            next_token = None if fetch is None else fetch.lock_token(self._token_numbers)
            lock = store.locks.get(job_id)
            # The owner's finish is recognised here; anything else gets _check_owner's verdict.
            if (
                lock is None
                or lock[0] != token
                or lock[1] <= self._mutex.now
                or job_id not in store.active
            ):
                code = self._check_owner(store, job_id, token)
                if code is not _OK:
                    repeated = self._repeated_finish(store, job_id, token, outcome, fetch)
                    return code if repeated is None else repeated
            record_field = finish_field(token)
            store.jobs[job_id][record_field] = _PLAIN_FINISH_RECORDS[type(outcome)]
            self._apply(queue, store, job_id, outcome, now)
            if fetch is None or next_token is None:  # (None together: the second is for mypy)
                return _OK
            fetched = self._fetch(queue, store, fetch, next_token, now)
            if fetched is None:
                return _OK
            fields = store.jobs.get(job_id)
            if fields is not None:  # (retention may have deleted it)
                kind = OUTCOME_KINDS[type(outcome)]
                fields[record_field] = finish_record(kind, (fetched.job_id, fetched.token))
            return fetched

    def _repeated_finish(
        self,
        store: QueueStore,
        job_id: str,
        token: str,
        outcome: Outcome,
        fetch: FetchRequest | None,
    ) -> FinishResult | None:
        """The answer to a finish already applied under ``token`` with this kind of outcome (its
        reply was lost): ``OK``, or the job it fetched if that still holds the lock it got (re-armed
        for ``fetch.lock_duration``, as a fresh fetch's); None if it is no such repeat."""
        fields = store.jobs.get(job_id)
        if fields is None or "finish-not-idempotent" in self.planted_bugs:
            return None
        record = fields.get(finish_field(token))
        if record is None:
            return None
        kind, fetched = parse_finish_record(record)
        if kind != OUTCOME_KINDS[type(outcome)]:
            return None
        if fetched is None or fetch is None:
            return _OK
        next_id, next_token = fetched
        lock = self._lock_of(store, next_id)
        if lock is None or lock[0] != next_token:
            return _OK
        store.locks[next_id] = (next_token, self._mutex.now + fetch.lock_duration)
        return Fetched(next_id, dict(store.jobs[next_id]), next_token)

    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        with self._mutex:
            store = self._store(queue)
            expires = self._mutex.now + lock_duration
            lost = []
            for job_id, token in locks:
                lock = self._lock_of(store, job_id)
                if "renew-without-owner" in self.planted_bugs and job_id in store.active:
                    lock = (token, 0)
                if lock is not None and lock[0] == token:
                    store.locks[job_id] = (token, expires)
                    store.stalled.pop(job_id, None)
                else:
                    lost.append(token)
            return lost

    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            code = self._check_owner(store, job_id, token)
            if code is ResultCode.OK:
                self._take_from_active(store, job_id)
                self._move(queue, store, job_id, Transition.RELEASE)
                self._push_wait(store, job_id, front=True)
                self._emit(store, ("waiting", "jobId", job_id, "prev", "active"))
            return code

    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        with self._mutex:
            store = self._store(queue)
            server_now = self._mutex.now
            if store.stalled_check_until > server_now:
                return StalledCheck(ran=False, recovered=[], failed=[])
            store.stalled_check_until = server_now + stalled_interval
            marked, store.stalled = store.stalled, {}
            recovered: list[str] = []
            failed: list[str] = []
            for job_id in marked:
                if self._lock_of(store, job_id) is not None or job_id not in store.active:
                    continue
                self._take_from_active(store, job_id)
                fields = store.jobs[job_id]
                stalled_counter = int(fields.get("stc") or 0) + 1
                fields["stc"] = str(stalled_counter)
                if stall_limit_exceeded(stalled_counter, max_stalled_count) and (
                    "no-stall-limit" not in self.planted_bugs
                ):
                    # BullMQ 6 reports every stall it finds, the one over the limit too.
                    self._emit(store, ("stalled", "jobId", job_id))
                    opts = decode_opts(fields.get("opts") or "{}")
                    self._finish_failed(
                        queue, store, job_id, STALLED_LIMIT_REASON, opts.remove_on_fail, now
                    )
                    failed.append(job_id)
                else:
                    self._move(queue, store, job_id, Transition.RECOVER_STALLED)
                    self._push_wait(store, job_id, front=True)
                    self._emit(
                        store,
                        ("waiting", "jobId", job_id, "prev", "active"),
                        ("stalled", "jobId", job_id),
                    )
                    recovered.append(job_id)
            if "lose-stalled-mark" not in self.planted_bugs:
                store.stalled = dict.fromkeys(store.active)
            return StalledCheck(ran=True, recovered=recovered, failed=failed)

    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            fields["progress"] = progress
            self._emit(store, ("progress", "jobId", job_id, "data", progress))
            return ResultCode.OK

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            state = store.states.get(job_id)
            if state is None:
                return ResultCode.MISSING_JOB
            if self._lock_of(store, job_id) is not None:
                return ResultCode.JOB_LOCKED
            if state is JobState.WAITING:
                store.wait.remove(job_id)
            elif state is JobState.ACTIVE:
                del store.active[job_id]
            else:
                store.zset(state).remove(job_id)
            self._delete_job(queue, store, job_id, Transition.REMOVE)
            self._emit(store, ("removed", "jobId", job_id, "prev", state.value))
            return ResultCode.OK

    async def set_paused(self, queue: str, paused: bool) -> None:
        with self._mutex:
            store = self._store(queue)
            if paused == store.paused:
                return
            store.paused = paused
            if paused:
                store.marker.clear()
                self._emit(store, ("paused",))
            else:
                if store.wait or store.prioritized:
                    self._signal(store)
                first = store.delayed.first()
                if first is not None:
                    self._signal(store, "1", first[0] // 4096)
                self._emit(store, ("resumed",))

    async def is_paused(self, queue: str) -> bool:
        with self._mutex:
            return self._store(queue).paused

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        with self._mutex:
            fields = self._store(queue).jobs.get(job_id)
            return None if fields is None else dict(fields)

    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        with self._mutex:
            return self._store(queue).states.get(job_id)

    async def get_counts(self, queue: str) -> dict[JobState, int]:
        with self._mutex:
            store = self._store(queue)
            return {
                JobState.WAITING: len(store.wait),
                JobState.PRIORITIZED: len(store.prioritized),
                JobState.DELAYED: len(store.delayed),
                JobState.ACTIVE: len(store.active),
                JobState.COMPLETED: len(store.completed),
                JobState.FAILED: len(store.failed),
            }

    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        with self._mutex:
            store = self._store(queue)
            if state is JobState.WAITING:
                newest_first = list(store.wait)
            elif state is JobState.ACTIVE:
                newest_first = list(reversed(store.active))
            else:
                return store.zset(state).range(start, end, desc=not asc)
            ordered = newest_first[::-1] if asc else newest_first
            return [ordered[i] for i in index_range(len(ordered), start, end)]

    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        with self._mutex:
            lock = self._lock_of(self._store(queue), job_id)
            return None if lock is None else LockInfo(lock[0], lock[1] - self._mutex.now)

    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        with self._mutex:
            return job_id in self._store(queue).stalled

    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        with self._mutex:
            events = self._store(queue).events
            after_key = (-1, -1) if after is None else _event_key(after)
            selected = []
            for entry in events:
                ms, seq, name = entry[0], entry[1], entry[2]
                if (ms, seq) > after_key:
                    pairs = dict(zip(entry[3::2], entry[4::2], strict=True))
                    selected.append(StoredEvent(f"{ms}-{seq}", name, pairs))
                    if len(selected) == count:
                        break
            return selected

    async def last_event_id(self, queue: str) -> str:
        with self._mutex:
            events = self._store(queue).events
            return f"{events[-1][0]}-{events[-1][1]}" if events else "0-0"

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        events = await self.get_events(queue, after, count)
        if events or timeout_ms <= 0:
            return events
        with self._mutex:
            store = self._store(queue)
            # Re-read under the lock: an event logged since the first read must not be missed.
            if store.events and (store.events[-1][0], store.events[-1][1]) > _event_key(after):
                waiter = None
            else:
                waiter = asyncio.get_running_loop().create_future()
                store.event_waiters.append(waiter)
        if waiter is not None:
            timer = waiter.get_loop().call_later(timeout_ms / 1000, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                with self._mutex:
                    if waiter in store.event_waiters:
                        store.event_waiters.remove(waiter)
        return await self.get_events(queue, after, count)

    async def wait_for_work(self, queue: str, timeout_ms: int) -> bool:
        with self._mutex:
            store = self._store(queue)
            if self._consume_marker(store):
                return True
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            store.waiters.append(waiter)
        timer = waiter.get_loop().call_later(timeout_ms / 1000, _expire, waiter)
        try:
            woken = await waiter
        except asyncio.CancelledError:
            with self._mutex:
                if waiter in store.waiters:
                    store.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and waiter.result():
                    self._signal(store)  # served, but nobody is left to act on it: pass it on
            raise
        finally:
            timer.cancel()
        if not woken:
            with self._mutex:
                if waiter in store.waiters:
                    store.waiters.remove(waiter)
        return woken

    async def close(self) -> None:
        """Nothing to release: the data stays for other users of this backend."""

    # ----------------------------------------------------------------- inspection

    def job_fields(self, queue: str, job_id: str) -> Mapping[str, str] | None:
        """The live hash of a job, without copying (for the simulator's oracle; do not modify)."""
        store = self._queues.get(queue)
        return None if store is None else store.jobs.get(job_id)

    def queues(self) -> list[str]:
        """Names of the queues this backend has seen."""
        with self._mutex:
            return list(self._queues)

    def check(self) -> None:
        """Assert every structural invariant of every queue.

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        with self._mutex:
            for name, store in self._queues.items():
                check_queue(name, store)

    def check_jobs(self, queue: str, job_ids: Iterable[str]) -> None:
        """A cheaper :meth:`check` for after one operation: the queue's global invariants (sizes,
        locks and stalled marks only on active jobs) plus the placement of the given jobs.

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        with self._mutex:
            store = self._queues.get(queue)
            if store is None:
                return
            check_sizes(queue, store)
            for job_id in job_ids:
                state = store.states.get(job_id)
                if state is None:
                    if job_id in store.jobs or job_id in store.locks:
                        raise AssertionError(f"queue {queue!r}: job {job_id} is stored unplaced")
                    continue
                if not is_placed(store, job_id, state):
                    raise AssertionError(f"queue {queue!r}: job {job_id} is not in {state}")
                check_fields(queue, store, job_id, state)


class _OperationLock:
    """The backend's re-entrant lock, and what lasts for one operation (its outermost hold).

    ``now`` is the store clock, read when the operation starts and frozen for all of it (as
    Redis 7 freezes time within a script): every lock expiry and event id an operation sets
    uses it. ``marked`` collects the queues whose marker was set while a worker waited, and
    ``serve(marked)`` runs when the operation ends, still under the lock. (Entered once per
    job: kept small.)
    """

    __slots__ = ("_backend", "_depth", "_lock", "_serve", "marked", "now")

    def __init__(self, backend: MemoryBackend, serve: Callable[[list[QueueStore]], None]) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._backend = backend
        self._serve = serve
        self.now = 0
        self.marked: list[QueueStore] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        if not self._depth:
            try:
                self.now = self._backend.clock.now_ms()
            except BaseException:
                self._lock.release()  # a failing clock must not leave the store locked
                raise
        self._depth += 1

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self._depth -= 1
        if self._depth:
            self._lock.release()
            return
        try:
            if self.marked:
                self._serve(self.marked)
        finally:
            self._lock.release()


def _resolve(waiter: asyncio.Future[bool]) -> None:
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        waiter.set_result(True)
    else:
        loop.call_soon_threadsafe(_set_if_pending, waiter, True)


def _set_if_pending(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _expire(waiter: asyncio.Future[bool]) -> None:
    _set_if_pending(waiter, False)


def _event_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)
