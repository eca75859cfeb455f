"""A reference model of one queue's storage semantics, derived from the transition table.

:class:`QueueModel` is what a :class:`~corral.engine.storage.Storage` backend should do, written
for clarity rather than speed. It offers the same operations as the Storage protocol for one
queue, synchronously and without the ``queue`` argument (``model.fetch_next(request, now)``), and
returns the same typed results, so a test can apply one random operation to a backend and to the
model and compare what comes back (``tests/engine/test_state_machine.py`` does, and the
simulator reuses the model for its invariants).

How it is built, so that it can be trusted:

* Each job is one record holding its state, its hash fields as typed attributes, its lock and
  its stalled mark. There are no lists or sorted sets: every state has an *ordering key*, set
  when the job enters the state, and a state's ids are its jobs sorted by that key:

  ==============  =================================================================
  waiting         a place in line: front pushes take ever smaller numbers, back pushes
                  ever larger ones; the smallest is served next
  active          the activation number (newest last)
  prioritized     (priority, number of the push): lower priority first, FIFO per level
  delayed         (due ms, per-millisecond sequence, id), as BullMQ's ``due × 4096 + seq``
  completed       (finishedOn, id), as a sorted set scored by finish time
  failed          (finishedOn, id)
  waiting-        (timestamp, or the time it was moved there, 0, id), as a sorted set
  children
  ==============  =================================================================

* A job changes state only in :meth:`QueueModel._move`, which asks
  :func:`~corral.engine.states.next_state` for the target, so any move the table does not have
  raises :class:`~corral.engine.states.InvalidTransitionError`. Every move is recorded in
  :attr:`QueueModel.moves`.
* Leaving ``active`` drops the job's lock and stalled mark; nothing else touches them but
  fetching (sets the lock), lock extension and the stalled check.
* Lock and throttle expiry are judged by the *store's* clock (the injected ``clock``), like Redis
  TTLs; every timestamp written into a job, due times and promotion use the caller's ``now``.

Order of stalled recovery: BullMQ walks the ``stalled`` set in Redis's (unspecified) set order;
corral fixes it to activation order, oldest first, so each recovered job is pushed to the front
of wait in turn and the last one recovered is served first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Final

from corral.engine.clock import Clock
from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.job import JobOptions, KeepJobs
from corral.engine.policy import stall_limit_exceeded
from corral.engine.states import JobState, Transition, next_state
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
    RetryNow,
    StalledCheck,
    Storage,
    finish_field,
    finish_record,
)
from corral.sim.model_dedup import DedupModel
from corral.sim.model_flows import FlowModel
from corral.sim.model_limits import LimitsModel
from corral.sim.model_ops import OperatorModel
from corral.sim.model_schedulers import SchedulerModel

__all__ = [
    "MAX_DELAY_SEQUENCE",
    "PROMOTE_LIMIT",
    "TRIM_LIMIT",
    "JobView",
    "Move",
    "QueueModel",
    "Snapshot",
    "observe_storage",
    "redis_range",
]

#: How many due delayed jobs one operation promotes at most (BullMQ: 1,000).
PROMOTE_LIMIT: Final = 1000
#: How many finished jobs one retention pass deletes at most (BullMQ's ``keepJobs.limit``).
TRIM_LIMIT: Final = 1000
#: The highest per-millisecond sequence of a delayed job (BullMQ's score is ``due × 4096 + seq``).
MAX_DELAY_SEQUENCE: Final = 4095

#: An ordering key within a state (see the module docstring); unused parts are 0 and "".
OrderKey = tuple[int, int, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Move:
    """One state change: ``job_id`` went from ``source`` to ``target`` through ``transition``
    (``None`` is "not stored")."""

    job_id: str
    transition: Transition
    source: JobState | None
    target: JobState | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobView:
    """The fields of a job that every backend must agree on, parsed from its hash.

    ``None`` means the hash has no such field (BullMQ writes ``atm``, ``ats``, ``stc``, ... only
    when they first change).
    """

    state: JobState | None
    delay: int
    priority: int
    atm: int | None
    ats: int | None
    stc: int | None
    processed_on: int | None
    finished_on: int | None
    returnvalue: str | None
    failed_reason: str | None
    stacktrace: str | None
    progress: str | None
    pb: str | None
    data: str | None = None  # Job.update_data replaces it

    @classmethod
    def from_fields(cls, state: JobState | None, fields: dict[str, str]) -> JobView:
        """Read the view from a job's hash fields (as ``Storage.get_job`` returns them)."""

        def number(name: str) -> int | None:
            raw = fields.get(name)
            return None if raw is None else int(raw)

        return cls(
            state=state,
            delay=int(fields.get("delay") or 0),
            priority=int(fields.get("priority") or 0),
            atm=number("atm"),
            ats=number("ats"),
            stc=number("stc"),
            processed_on=number("processedOn"),
            finished_on=number("finishedOn"),
            returnvalue=fields.get("returnvalue"),
            failed_reason=fields.get("failedReason"),
            stacktrace=fields.get("stacktrace"),
            progress=fields.get("progress"),
            pb=fields.get("pb"),
            data=fields.get("data"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything observable about one queue through the Storage protocol's read operations.

    Attributes:
        ids: per state, the ids as ``get_job_ids(queue, state, 0, -1, asc=False)`` lists them.
        jobs: per job id (listed ones and any extra ids asked for), its view; None if it is gone.
        locks: the live lock of every job that holds one.
        stalled: the ids the last stalled check marked (and that are still marked).
        counts: ``get_counts``.
        paused: ``is_paused``.
    """

    ids: dict[JobState, list[str]]
    jobs: dict[str, JobView | None]
    locks: dict[str, LockInfo]
    stalled: frozenset[str]
    counts: dict[JobState, int]
    paused: bool


async def observe_storage(storage: Storage, queue: str, extra_ids: Iterable[str] = ()) -> Snapshot:
    """Read a backend's :class:`Snapshot` of ``queue`` through the Storage protocol only.

    Args:
        storage: any backend.
        queue: the queue to read.
        extra_ids: ids to report on even if no state lists them (e.g. every id ever added), so
            that a job that should be gone is seen to be gone.
    """
    ids = {state: await storage.get_job_ids(queue, state, 0, -1, False) for state in JobState}
    jobs: dict[str, JobView | None] = {}
    locks: dict[str, LockInfo] = {}
    stalled: set[str] = set()
    listed = [job_id for state in JobState for job_id in ids[state]]
    for job_id in dict.fromkeys([*listed, *extra_ids]):
        fields = await storage.get_job(queue, job_id)
        state = await storage.get_state(queue, job_id)
        jobs[job_id] = None if fields is None else JobView.from_fields(state, fields)
        lock = await storage.get_lock(queue, job_id)
        if lock is not None:
            locks[job_id] = lock
        if await storage.is_marked_stalled(queue, job_id):
            stalled.add(job_id)
    return Snapshot(
        ids=ids,
        jobs=jobs,
        locks=locks,
        stalled=frozenset(stalled),
        counts=await storage.get_counts(queue),
        paused=await storage.is_paused(queue),
    )


def redis_range(items: Sequence[str], start: int, end: int) -> list[str]:
    """``items[start..end]`` with Redis ``LRANGE``/``ZRANGE`` index rules: ``end`` inclusive,
    negative indexes counting from the end, out-of-range indexes clamped."""
    length = len(items)
    first = max(length + start, 0) if start < 0 else start
    last = min(length + end if end < 0 else end, length - 1)
    return list(items[first : last + 1]) if first <= last else []


@dataclasses.dataclass(eq=False)
class _Job:
    """One job of the model: where it is, its hash fields, its lock and its stalled mark."""

    id: str
    name: str
    data: str
    opts: str
    timestamp: int
    delay: int
    priority: int
    state: JobState | None = None  # None only before the job is added
    order: OrderKey = (0, 0, "")
    lock: tuple[str, int] | None = None  # (token, expiry on the store's clock)
    marked: bool = False  # in the ``stalled`` set
    atm: int | None = None
    ats: int | None = None
    stc: int | None = None
    processed_on: int | None = None
    finished_on: int | None = None
    pb: str | None = None
    returnvalue: str | None = None
    failed_reason: str | None = None
    stacktrace: str | None = None
    progress: str | None = None
    # Every finish applied: lock token -> (outcome kind, the job it fetched and that job's
    # token), so that the same finish sent again gets the same answer (the ``fin:`` fields).
    finishes: dict[str, tuple[str, tuple[str, str] | None]] = dataclasses.field(
        default_factory=dict
    )
    logs: list[str] = dataclasses.field(default_factory=list)  # the ``<job>:logs`` list
    # Fields only some jobs have: ``deid`` (deduplication), ``rjk`` (a scheduler's iteration).
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def options(self) -> JobOptions:
        """The job's stored options (``lifo``, ``removeOnFail``)."""
        raw = json.loads(self.opts or "{}")
        return JobOptions.from_json(raw if isinstance(raw, dict) else {})

    def fields(self) -> dict[str, str]:
        """The job's hash, as BullMQ stores it (absent fields are left out)."""
        always = {
            "name": self.name,
            "data": self.data,
            "opts": self.opts,
            "timestamp": str(self.timestamp),
            "delay": str(self.delay),
            "priority": str(self.priority),
        }
        optional = {
            "processedOn": self.processed_on,
            "pb": self.pb,
            "ats": self.ats,
            "atm": self.atm,
            "stc": self.stc,
            "finishedOn": self.finished_on,
            "returnvalue": self.returnvalue,
            "failedReason": self.failed_reason,
            "stacktrace": self.stacktrace,
            "progress": self.progress,
        }
        fields = always | {
            name: str(value) for name, value in optional.items() if value is not None
        }
        for token, (kind, fetched) in self.finishes.items():
            fields[finish_field(token)] = finish_record(kind, fetched)
        fields.update(self.extra)
        return fields


class QueueModel(OperatorModel, DedupModel, LimitsModel, SchedulerModel, FlowModel):
    """The reference semantics of one queue's storage (see the module docstring; the operator
    calls are in :mod:`corral.sim.model_ops`, deduplication, rate limits, job schedulers and
    flows in :mod:`corral.sim.model_dedup`, :mod:`corral.sim.model_limits`,
    :mod:`corral.sim.model_schedulers` and :mod:`corral.sim.model_flows`).

    Args:
        clock: the store's clock (``now_ms()``), which judges lock and throttle expiry. Share it
            with the backend under comparison.
        queue: the queue's name and ``prefix`` its key prefix (flows name jobs by their keys).
    """

    def __init__(self, clock: Clock, queue: str = "q", prefix: str = "bull") -> None:
        self.clock = clock
        #: Every state change so far, in order.
        self.moves: list[Move] = []
        self._jobs: dict[str, _Job] = {}
        self._paused = False
        self._stalled_check_until = 0  # the ``stalled-check`` key expires then (store clock)
        self._id_counter = 0  # BullMQ's ``id`` key: incremented by every add
        self._front = 0  # the last place in line given to a front push (decreasing)
        self._back = 0  # the last place in line given to a back push (increasing)
        self._activations = 0
        self._token_numbers = itertools.count(1)  # for fetches that send no lock token
        self._priority_counter = 0  # BullMQ's ``pc`` key
        self._init_dedup()
        self._init_limits()
        self._init_schedulers()
        self._init_flows(queue, prefix)

    # ------------------------------------------------------------------ moving jobs

    def _move(self, job: _Job, transition: Transition, order: OrderKey = (0, 0, "")) -> None:
        """Apply ``transition`` to ``job`` (the table decides the target) and give it ``order``
        within its new state. Leaving active drops the lock and the stalled mark; a deleted
        job is detached from its flow first (a parent the hard path deletes goes after it)."""
        source = job.state
        target = next_state(source, transition)
        orphan = None if target is not None else self._flow_deleted(job, transition)
        self.moves.append(Move(job.id, transition, source, target))
        if target is not JobState.ACTIVE:
            job.lock = None
            job.marked = False
        if target is None:
            del self._jobs[job.id]
            if orphan is not None:
                self._move(orphan, Transition.DELETE_PARENT)
                self._dedup_removed(orphan)
            return
        job.state = target
        job.order = order
        self._jobs[job.id] = job

    def _front_of_line(self) -> OrderKey:
        self._front -= 1
        return (self._front, 0, "")

    def _back_of_line(self) -> OrderKey:
        self._back += 1
        return (self._back, 0, "")

    def _priority_place(self, priority: int) -> OrderKey:
        self._priority_counter += 1
        return (priority, self._priority_counter, "")

    def _delayed_place(self, job_id: str, due_ms: int) -> OrderKey:
        """One more than the highest sequence used at ``due_ms``, capped; ties beyond the cap
        fall back to id order, as members of equal score in a sorted set do."""
        used = [job.order[1] for job in self._in(JobState.DELAYED) if job.order[0] == due_ms]
        sequence = min(max(used) + 1, MAX_DELAY_SEQUENCE) if used else 0
        return (due_ms, sequence, job_id)

    def _in(self, state: JobState) -> list[_Job]:
        """The jobs in ``state``, in ascending order (for waiting: the next one served first)."""
        return sorted(
            (job for job in self._jobs.values() if job.state is state), key=lambda job: job.order
        )

    def _live_lock(self, job: _Job) -> tuple[str, int] | None:
        if job.lock is not None and job.lock[1] > self.clock.now_ms():
            return job.lock
        return None

    def _owner_check(self, job_id: str, token: str) -> ResultCode:
        """BullMQ's checks before moving an active job, in its order."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        lock = self._live_lock(job)
        if lock is None:
            return ResultCode.MISSING_LOCK
        if lock[0] != token:
            return ResultCode.LOCK_MISMATCH
        if job.state is not JobState.ACTIVE:
            return ResultCode.NOT_IN_STATE
        return ResultCode.OK

    def _promote_due(self, now: int) -> None:
        """Move delayed jobs due by ``now`` to the back of wait or into prioritized."""
        due = [job for job in self._in(JobState.DELAYED) if job.order[0] <= now]
        for job in due[:PROMOTE_LIMIT]:
            job.delay = 0
            if job.priority:
                self._move(job, Transition.PROMOTE_PRIORITIZED, self._priority_place(job.priority))
            else:
                self._move(job, Transition.PROMOTE, self._back_of_line())

    def _fetch(self, request: FetchRequest, token: str, now: int) -> Fetched | int | None:
        """Activate the next ready job; None when there is none (or paused, or maxed); an int:
        the ms a rate limit holds fetches back."""
        self._promote_due(now)  # BullMQ's moveToActive promotes even while the queue is paused
        held_back, max_jobs = self._limit_gate(request)  # (before the pause, as BullMQ)
        if held_back:
            return held_back
        if self._paused or self._maxed():
            return None
        ready = self._in(JobState.WAITING) or self._in(JobState.PRIORITIZED)
        if not ready:
            return None
        job = ready[0]
        self._activations += 1
        self._move(job, Transition.FETCH, (self._activations, 0, ""))
        job.lock = (token, self.clock.now_ms() + request.lock_duration)
        job.processed_on = now
        job.ats = (job.ats or 0) + 1
        if request.worker_name is not None:
            job.pb = request.worker_name
        self._count_activation(request, max_jobs, job)
        return Fetched(job.id, job.fields(), token)

    def _trim(self, state: JobState, keep: KeepJobs, now: int) -> None:
        """Retention: delete finished jobs older than ``keep.age_ms``, then the oldest beyond
        ``keep.count``; at most :data:`TRIM_LIMIT` in all."""
        finished = self._in(state)
        doomed: list[_Job] = []
        if keep.age_ms is not None:
            doomed = [job for job in finished if job.order[0] <= now - keep.age_ms][:TRIM_LIMIT]
            finished = finished[len(doomed) :]
        if keep.count is not None:
            excess = min(len(finished) - keep.count, TRIM_LIMIT - len(doomed))
            doomed += finished[: max(excess, 0)]
        for job in doomed:
            self._move(job, Transition.TRIM)

    def _fail(self, job: _Job, reason: str, keep: KeepJobs, now: int) -> None:
        job.failed_reason = reason
        job.finished_on = now
        job.extra.pop("defa", None)
        self._move(job, Transition.FAIL, (now, 0, job.id))
        self._child_failed(job, reason, now)  # (before retention, which may delete the child)
        self._trim(JobState.FAILED, keep, now)
        self._dedup_finished(job, now)

    def _apply(self, job: _Job, outcome: Outcome, now: int) -> None:
        """Finish the attempt of an active job whose lock the caller holds."""
        job.atm = (job.atm or 0) + 1
        if isinstance(outcome, Complete):
            job.returnvalue = outcome.return_value
            job.finished_on = now
            self._move(job, Transition.COMPLETE, (now, 0, job.id))
            self._child_completed(job, now)
            self._trim(JobState.COMPLETED, outcome.keep, now)
            self._dedup_finished(job, now)
            return
        job.stacktrace = outcome.stacktrace
        if isinstance(outcome, Fail):
            self._fail(job, outcome.reason, outcome.keep, now)
            return
        job.failed_reason = outcome.reason
        if isinstance(outcome, RetryLater):
            job.delay = outcome.delay_ms
            due = now + outcome.delay_ms
            self._move(job, Transition.RETRY_LATER, self._delayed_place(job.id, due))
            return
        assert isinstance(outcome, RetryNow)
        self._promote_due(now)  # BullMQ's retryJob promotes first, then pushes the job
        if job.priority:
            self._move(job, Transition.RETRY_PRIORITIZED, self._priority_place(job.priority))
        else:
            place = self._front_of_line() if job.options.lifo else self._back_of_line()
            self._move(job, Transition.RETRY, place)

    # ------------------------------------------------------------------ Storage operations

    def add_jobs(self, jobs: Sequence[NewJob]) -> AddResult:
        """Store new jobs in order; an existing custom id is left alone and reported."""
        result = AddResult([], [])
        for new in jobs:
            self._id_counter += 1
            job_id = new[7] or str(self._id_counter)
            if job_id in self._jobs:
                result.job_ids.append(job_id)
                result.created.append(False)
                continue
            owner, dedup_id = self._deduplicate(new, job_id)
            if owner is not None:  # (deduplicated: the add answers with the holder's id)
                result.job_ids.append(owner)
                result.created.append(False)
                continue
            self._store_new(new, job_id, dedup_id)
            result.job_ids.append(job_id)
            result.created.append(True)
        return result

    def _store_new(self, new: NewJob, job_id: str, dedup_id: str | None) -> None:
        """Store an added job and place it (``ADD``, ``ADD_PRIORITIZED``, ``ADD_DELAYED``)."""
        name, data, opts, timestamp, delay, priority, lifo, _ = new
        job = _Job(job_id, name, data, opts, timestamp, delay, priority)
        if dedup_id is not None:
            job.extra["deid"] = dedup_id
        if delay > 0:
            due = timestamp + delay
            self._move(job, Transition.ADD_DELAYED, self._delayed_place(job_id, due))
        elif priority:
            self._move(job, Transition.ADD_PRIORITIZED, self._priority_place(priority))
        else:
            place = self._front_of_line() if lifo else self._back_of_line()
            self._move(job, Transition.ADD, place)

    def fetch_next(self, request: FetchRequest, now: int) -> FetchResult:
        """Promote due delayed jobs, then activate the front of wait, else the first prioritized
        job, under the request's lock token. Nothing while paused (promotion still happens);
        else the next due time when nothing is ready."""
        fetched = self._fetch(request, request.lock_token(self._token_numbers), now)
        if isinstance(fetched, int):
            return FetchResult(None, rate_limit_ms=fetched)
        if fetched is not None or self._paused or self._maxed():
            return FetchResult(fetched)
        delayed = self._in(JobState.DELAYED)
        return FetchResult(None, delayed[0].order[0] if delayed else None)

    def finish(
        self,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        """Apply an outcome to an active job whose lock ``token`` holds (else change nothing and
        say why), then fetch the next job if asked."""
        next_token = None if fetch is None else fetch.lock_token(self._token_numbers)
        refused = self._parent_refusal(job_id) if isinstance(outcome, Complete) else None
        if refused is not None:  # (before the lock, as BullMQ's moveToFinished)
            return refused
        code = self._owner_check(job_id, token)
        if code is not ResultCode.OK:
            repeated = self._repeated_finish(job_id, token, outcome, fetch)
            return code if repeated is None else repeated
        job = self._jobs[job_id]
        kind = OUTCOME_KINDS[type(outcome)]
        job.finishes[token] = (kind, None)
        self._apply(job, outcome, now)
        if fetch is None or next_token is None:
            return code
        fetched = self._fetch(fetch, next_token, now)
        if not isinstance(fetched, Fetched):  # (none ready, or held back by a limit)
            return code
        job.finishes[token] = (kind, (fetched.job_id, fetched.token))
        return fetched

    def _repeated_finish(
        self, job_id: str, token: str, outcome: Outcome, fetch: FetchRequest | None
    ) -> FinishResult | None:
        """A finish already applied with this token and this kind of outcome, sent again (its
        reply was lost): nothing changes, the answer is ``OK`` or, when asked to fetch, the job
        the first one fetched if that job still holds the lock it got (re-armed as a fresh
        fetch's). None when it is no such repeat."""
        job = self._jobs.get(job_id)
        first = None if job is None else job.finishes.get(token)
        if first is None or first[0] != OUTCOME_KINDS[type(outcome)]:
            return None
        if fetch is None or first[1] is None:
            return ResultCode.OK
        next_id, next_token = first[1]
        fetched = self._jobs.get(next_id)
        lock = None if fetched is None else self._live_lock(fetched)
        if fetched is None or lock is None or lock[0] != next_token:
            return ResultCode.OK
        fetched.lock = (next_token, self.clock.now_ms() + fetch.lock_duration)
        return Fetched(next_id, fetched.fields(), next_token)

    def extend_locks(self, locks: Sequence[tuple[str, str]], lock_duration: int) -> list[str]:
        """Re-arm each live lock that still holds its token and unmark the job; return the ids
        tokens whose lock was gone or taken."""
        lost = []
        for job_id, token in locks:
            job = self._jobs.get(job_id)
            lock = None if job is None else self._live_lock(job)
            if job is None or lock is None or lock[0] != token:
                lost.append(token)
                continue
            job.lock = (token, self.clock.now_ms() + lock_duration)
            job.marked = False
        return lost

    def release(self, job_id: str, token: str, now: int) -> ResultCode:
        """Give an owned active job back: front of wait, no attempt or stall counted."""
        code = self._owner_check(job_id, token)
        if code is ResultCode.OK:
            self._move(self._jobs[job_id], Transition.RELEASE, self._front_of_line())
        return code

    def check_stalled(
        self, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        """The two-phase stalled check, throttled by the ``stalled-check`` key."""
        if self._stalled_check_until > self.clock.now_ms():
            return StalledCheck(ran=False, recovered=[], failed=[])
        self._stalled_check_until = self.clock.now_ms() + stalled_interval
        recovered: list[str] = []
        failed: list[str] = []
        # Phase 2: every job marked last time whose lock is gone, in activation order.
        marked = [job for job in self._in(JobState.ACTIVE) if job.marked]
        for job in marked:
            job.marked = False
            if self._live_lock(job) is not None:
                continue
            job.stc = (job.stc or 0) + 1
            # A live scheduler's iteration is never failed for stalling (BullMQ 6.7).
            if stall_limit_exceeded(job.stc, max_stalled_count) and not self._scheduled(job):
                self._fail(job, STALLED_LIMIT_REASON, job.options.remove_on_fail, now)
                failed.append(job.id)
            else:
                self._move(job, Transition.RECOVER_STALLED, self._front_of_line())
                recovered.append(job.id)
        # Phase 1: mark every active job.
        for job in self._in(JobState.ACTIVE):
            job.marked = True
        return StalledCheck(ran=True, recovered=recovered, failed=failed)

    def update_progress(self, job_id: str, progress: str) -> ResultCode:
        """Store a job's progress."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        job.progress = progress
        return ResultCode.OK

    def remove(self, job_id: str) -> ResultCode:
        """Delete a job and its descendants, none of which may hold a live lock, from any
        state."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        doomed = self._removal_order(job)
        if any(self._live_lock(each) is not None for each in doomed):
            return ResultCode.JOB_LOCKED
        if self._is_current_iteration(job):
            return ResultCode.SCHEDULER_JOB
        self._remove_tree(doomed)
        return ResultCode.OK

    def set_paused(self, paused: bool) -> None:
        """Pause or resume fetching."""
        self._paused = paused

    def is_paused(self) -> bool:
        """Whether the queue is paused."""
        return self._paused

    # ------------------------------------------------------------------ reads

    def get_job(self, job_id: str) -> dict[str, str] | None:
        """The job's hash fields, or None."""
        job = self._jobs.get(job_id)
        return None if job is None else job.fields()

    def get_state(self, job_id: str) -> JobState | None:
        """Where the job is, or None."""
        job = self._jobs.get(job_id)
        return None if job is None else job.state

    def get_counts(self) -> dict[JobState, int]:
        """The number of jobs in each state."""
        return {state: len(self._in(state)) for state in JobState}

    def get_job_ids(self, state: JobState, start: int, end: int, asc: bool) -> list[str]:
        """A Redis-style range of the ids in ``state``. Ascending is each state's own order
        (for waiting: the next job served first); ``asc=False`` is newest first (for waiting:
        the back of the line first)."""
        ascending = [job.id for job in self._in(state)]
        return redis_range(ascending if asc else ascending[::-1], start, end)

    def get_lock(self, job_id: str) -> LockInfo | None:
        """The job's live lock and its milliseconds left, or None."""
        job = self._jobs.get(job_id)
        lock = None if job is None else self._live_lock(job)
        return None if lock is None else LockInfo(lock[0], lock[1] - self.clock.now_ms())

    def is_marked_stalled(self, job_id: str) -> bool:
        """Whether the last stalled check marked the job (and nothing unmarked it since)."""
        job = self._jobs.get(job_id)
        return job is not None and job.marked

    def observe(self, extra_ids: Iterable[str] = ()) -> Snapshot:
        """The model's :class:`Snapshot`, to compare with :func:`observe_storage` of a backend."""
        ids = {state: self.get_job_ids(state, 0, -1, False) for state in JobState}
        listed = [job_id for state in JobState for job_id in ids[state]]
        jobs: dict[str, JobView | None] = {}
        locks: dict[str, LockInfo] = {}
        for job_id in dict.fromkeys([*listed, *extra_ids]):
            fields = self.get_job(job_id)
            state = self.get_state(job_id)
            jobs[job_id] = None if fields is None else JobView.from_fields(state, fields)
            lock = self.get_lock(job_id)
            if lock is not None:
                locks[job_id] = lock
        return Snapshot(
            ids=ids,
            jobs=jobs,
            locks=locks,
            stalled=frozenset(job_id for job_id in listed if self.is_marked_stalled(job_id)),
            counts=self.get_counts(),
            paused=self._paused,
        )
