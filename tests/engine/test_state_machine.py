"""The backends checked against the reference model and each other, operation by operation.

A Hypothesis ``RuleBasedStateMachine`` (the pattern of Hypothesis's own database agreement
tests) applies the same random Storage operations to the backends and to
:class:`corral.sim.model.QueueModel`, sharing one hand-driven clock:

- :class:`StorageAgreement`: the :class:`MemoryBackend` and the model (many examples, fast;
  the planted-bug tests below run it);
- :class:`ThreeWayAgreement`: the same rules on the memory backend, the Redis backend on
  fakeredis (its Lua scripts, loaded with a transition log; key expiry on the shared clock via
  ``virtual_fakeredis``) and the model.

The rules draw the core job flow and the operator calls (retry, promote, update data, change
priority and delay, logs, move jobs to wait, clean, drain, obliterate, counts per priority).
Every call's result must be identical on every backend and equal to the model's. After every
step an invariant compares everything observable through the Storage protocol (ids per state in
order, job fields, locks, stalled marks, counts, paused): identical across the backends and
equal to the model's view; the events of the two backends (ids included) must be identical too.
It also compares the state changes each side made (the memory backend's transition listener,
the Redis scripts' transition log, the model's moves) and runs each backend's structural
``check()`` (for Redis: ``corral.backends.redis.checks`` plus agreement with the log).

The memory backend's coroutines never suspend (only ``wait_for_work`` awaits, and it is not
used here), and neither do :class:`~corral.sim.fakeredis_store.FakeRedisStore`'s (it runs each
call to completion on its own loop), so :func:`drive` runs each one with a single ``send``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, NamedTuple, TypeVar

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import corral.backends.memory.job_flow as memory_job_flow
from corral.backends.memory import MemoryBackend
from corral.backends.redis.fake import virtual_fakeredis
from corral.engine.errors import ResultCode
from corral.engine.job import JobOptions, KeepJobs, encode_json
from corral.engine.queue_operations import CLEAN_STATES
from corral.engine.states import JobState, Transition
from corral.engine.storage import (
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    NewJob,
    Outcome,
    RetryLater,
    RetryNow,
    new_job,
    next_job,
)
from corral.sim.fakeredis_store import FakeRedisStore
from corral.sim.loop import ManualClock
from corral.sim.model import Move, QueueModel, observe_storage

T = TypeVar("T")
QUEUE = "q"
#: JavaScript's Number.MAX_SAFE_INTEGER: a time after every score (delayed scores are ms × 4096).
MAX_SAFE_INTEGER = 2**53 - 1


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending; return its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise AssertionError("a backend operation suspended: only wait_for_work may await")


class Lease(NamedTuple):
    """A (job id, token) pair handed out by a fetch; the machine keeps it after it goes stale."""

    job_id: str
    token: str


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What to add; the timestamp is the client's ``now`` when the rule runs."""

    priority: int
    delay: int
    lifo: bool
    job_id: str | None
    remove_on_fail: KeepJobs

    def new_job(self, now: int) -> NewJob:
        opts = JobOptions(
            delay=self.delay,
            priority=self.priority,
            lifo=self.lifo,
            job_id=self.job_id,
            remove_on_fail=self.remove_on_fail,
        )
        return new_job(
            name="job",
            data="{}",
            opts=encode_json(opts.to_json(), "opts"),
            timestamp=now,
            delay=self.delay,
            priority=self.priority,
            lifo=self.lifo,
            job_id=self.job_id,
        )


keeps = st.just(KeepJobs()) | st.builds(
    KeepJobs,
    count=st.none() | st.integers(0, 2),
    age_ms=st.none() | st.sampled_from([0, 1_000, 10_000]),
)
job_specs = st.builds(
    JobSpec,
    priority=st.sampled_from([0, 0, 1, 2, 3]),
    delay=st.one_of(st.just(0), st.just(0), st.integers(1, 3_000)),
    lifo=st.booleans(),
    job_id=st.none() | st.sampled_from(["a", "b", "c"]),  # few names: duplicates happen
    remove_on_fail=keeps,
)
outcomes = st.one_of(
    st.builds(Complete, return_value=st.sampled_from(["1", '"ok"']), keep=keeps),
    st.builds(Fail, reason=st.just("boom"), stacktrace=st.just('["trace"]'), keep=keeps),
    st.builds(RetryLater, delay_ms=st.integers(0, 3_000), reason=st.just("later")),
    st.builds(RetryNow, reason=st.just("again")),
)
#: A lock or stalled-check throttle of 1 ms lives 2 ms on Redis (``PX 1``; see the Redis
#: backend's docs), so the machines with Redis start at 2 ms; the memory backend gets 1 ms too.
lock_durations = st.runner().flatmap(lambda machine: st.sampled_from(machine.lock_duration_choices))
stalled_intervals = st.runner().flatmap(
    lambda machine: st.sampled_from(machine.stalled_interval_choices)
)
#: How a rule uses a lease: as held, with a token nobody holds, or on a job that never existed.
tampering = st.sampled_from(["as-held"] * 4 + ["wrong-token", "unknown-job"])
milliseconds = st.sampled_from([1, 999, 1_000, 5_000, 30_000]) | st.integers(0, 40_000)


def leases() -> st.SearchStrategy[Lease]:
    """A lease the model says is still held (mostly, when there is one), else any lease
    handed out so far: most of those are stale (finished, released, expired or re-fetched)."""

    def choose(machine: StorageAgreement) -> st.SearchStrategy[Lease]:
        every = st.sampled_from(machine.leases)
        held = [lease for lease in machine.leases if machine.holds(lease)]
        return st.sampled_from(held) | st.sampled_from(held) | every if held else every

    return st.runner().flatmap(choose)


def tamper(lease: Lease, how: str) -> Lease:
    if how == "wrong-token":
        return Lease(lease.job_id, "not-a-token")
    if how == "unknown-job":
        return Lease("never-added", lease.token)
    return lease


class StorageAgreement(RuleBasedStateMachine):
    """The backends and the model receive the same operations and must agree."""

    job_ids = Bundle("job_ids")
    #: Also run every operation on the Redis backend over fakeredis.
    with_redis = False
    lock_duration_choices: tuple[int, ...] = (1, 5_000, 30_000, 30_000)
    stalled_interval_choices: tuple[int, ...] = (1, 1, 1_000, 30_000)

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.model = QueueModel(self.clock)
        memory_backend = MemoryBackend(clock=self.clock)
        self.backends: dict[str, MemoryBackend | FakeRedisStore] = {"memory": memory_backend}
        self.fakeredis: FakeRedisStore | None = None
        self._unpatch: Callable[[], object] | None = None
        if self.with_redis:
            patch = virtual_fakeredis(self.clock)
            patch.__enter__()
            self._unpatch = functools.partial(patch.__exit__, None, None, None)
            self.fakeredis = self.backends["fakeredis"] = FakeRedisStore()
        self.moves: dict[str, list[Move]] = {}
        for name, backend in self.backends.items():
            self.moves[name] = []
            backend.transition_listener = functools.partial(self._record, name)
        self.client_skew = 0  # the callers' clock runs this far ahead of the store's
        self.tokens = 0
        self.leases: list[Lease] = []
        self.known_ids: set[str] = set()

    def teardown(self) -> None:
        if self.fakeredis is not None:
            self.fakeredis.shut()
            self.fakeredis.loop.close()
        if self._unpatch is not None:
            self._unpatch()

    def _record(
        self,
        backend: str,
        queue: str,
        job_id: str,
        transition: Transition,
        source: JobState | None,
        target: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        self.moves[backend].append(Move(job_id, transition, source, target))

    def call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Apply one Storage call to every backend; the results must be identical."""
        results = {
            name: drive(getattr(backend, operation)(*args, **kwargs))
            for name, backend in self.backends.items()
        }
        expected = results["memory"]
        for name, got in results.items():
            assert got == expected, f"{operation}: {name} returned {got!r}, memory {expected!r}"
        return expected

    def now(self) -> int:
        return self.clock.now_ms() + self.client_skew

    def request(self, lock_duration: int, named: bool, minted: bool) -> FetchRequest:
        """A request with a token of the test's own, or one asking each store to mint it."""
        name = "w1" if named else None
        if minted:
            return FetchRequest(None, lock_duration, name, token_prefix="minted:")
        self.tokens += 1
        return FetchRequest(f"token-{self.tokens}", lock_duration, name)

    def remember(self, fetched: Fetched | None) -> None:
        if fetched is not None:
            self.leases.append(Lease(fetched.job_id, fetched.token))

    def holds(self, lease: Lease) -> bool:
        lock = self.model.get_lock(lease.job_id)
        return lock is not None and lock.token == lease.token

    def has_leases(self) -> bool:
        return bool(self.leases)

    # ------------------------------------------------------------------ operations

    @initialize(
        target=job_ids,
        specs=st.lists(job_specs, min_size=1, max_size=5),
        fetches=st.integers(0, 3),
        lock_duration=lock_durations,
    )
    def start(self, specs: list[JobSpec], fetches: int, lock_duration: int) -> object:
        """Begin with some jobs, some of them active, so every example has work to do."""
        added = self.add(specs)
        for _ in range(fetches):
            self.fetch_next(lock_duration, named=False, minted=False)
        return added

    @rule(target=job_ids, specs=st.lists(job_specs, min_size=1, max_size=3))
    def add(self, specs: list[JobSpec]) -> object:
        jobs = [spec.new_job(self.now()) for spec in specs]
        got = self.call("add_jobs", QUEUE, jobs)
        assert got == self.model.add_jobs(jobs)
        ids = [job_id for job_id, created in zip(got.job_ids, got.created, strict=True) if created]
        self.known_ids.update(ids)
        return multiple(*ids)

    @rule(lock_duration=lock_durations, named=st.booleans(), minted=st.booleans())
    def fetch_next(self, lock_duration: int, named: bool, minted: bool) -> None:
        request = self.request(lock_duration, named, minted)
        got = self.call("fetch_next", QUEUE, request, self.now())
        assert got == self.model.fetch_next(request, self.now())
        self.remember(got.job)

    @precondition(has_leases)
    @rule(
        lease=leases(),
        how=tampering,
        outcome=outcomes,
        fetch_next=st.booleans(),
        lock_duration=lock_durations,
        minted=st.booleans(),
    )
    def finish(
        self,
        lease: Lease,
        how: str,
        outcome: Outcome,
        fetch_next: bool,
        lock_duration: int,
        minted: bool,
    ) -> None:
        job_id, token = tamper(lease, how)
        request = self.request(lock_duration, False, minted) if fetch_next else None
        got = self.call("finish", QUEUE, job_id, token, outcome, self.now(), request)
        assert got == self.model.finish(job_id, token, outcome, self.now(), request)
        self.remember(next_job(got))

    @precondition(has_leases)
    @rule(
        picked=st.lists(st.tuples(leases(), tampering), min_size=1, max_size=3),
        lock_duration=lock_durations,
    )
    def extend_locks(self, picked: list[tuple[Lease, str]], lock_duration: int) -> None:
        locks = [tamper(lease, how) for lease, how in picked]
        got = self.call("extend_locks", QUEUE, locks, lock_duration)
        assert got == self.model.extend_locks(locks, lock_duration)

    @precondition(has_leases)
    @rule(lease=leases(), how=tampering)
    def release(self, lease: Lease, how: str) -> None:
        job_id, token = tamper(lease, how)
        got = self.call("release", QUEUE, job_id, token, self.now())
        assert got == self.model.release(job_id, token, self.now())

    @rule(
        # None: the checker's own period, as its timer waits (a second check that runs while
        # the locks marked by the first are still live is the case that matters most).
        wait=st.sampled_from([0, 1, 1, 1_000, 30_000, 40_000, None]),
        max_stalled_count=st.integers(0, 2),
        interval=stalled_intervals,
    )
    def check_stalled(self, wait: int | None, max_stalled_count: int, interval: int) -> None:
        """A stalled checker wakes up ``wait`` ms later (checks need time between them)."""
        self.clock.advance(interval if wait is None else wait)
        kwargs = {
            "max_stalled_count": max_stalled_count,
            "stalled_interval": interval,
            "now": self.now(),
        }
        got = self.call("check_stalled", QUEUE, **kwargs)
        assert got == self.model.check_stalled(**kwargs)

    @rule(job_id=job_ids | st.just("never-added"))
    def remove(self, job_id: str) -> None:
        assert self.call("remove", QUEUE, job_id) == self.model.remove(job_id)

    @rule(job_id=job_ids | st.just("never-added"), progress=st.sampled_from(["1", "50"]))
    def update_progress(self, job_id: str, progress: str) -> None:
        got = self.call("update_progress", QUEUE, job_id, progress)
        assert got == self.model.update_progress(job_id, progress)

    @rule(paused=st.sampled_from([True, False, False, False]))
    def set_paused(self, paused: bool) -> None:
        self.call("set_paused", QUEUE, paused)
        self.model.set_paused(paused)

    @rule(ms=milliseconds)
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(skew=st.sampled_from([0, 0, -1_500, 2_500]))
    def skew_client_clock(self, skew: int) -> None:
        self.client_skew = skew

    @rule(
        state=st.sampled_from(JobState),
        start=st.integers(-4, 4),
        end=st.integers(-4, 4),
        asc=st.booleans(),
    )
    def read_range(self, state: JobState, start: int, end: int, asc: bool) -> None:
        got = self.call("get_job_ids", QUEUE, state, start, end, asc)
        assert got == self.model.get_job_ids(state, start, end, asc)

    # ------------------------------------------------------------------ operator calls

    @rule(
        job_id=job_ids | st.just("never-added"),
        state=st.sampled_from([JobState.FAILED, JobState.COMPLETED]),
        reset_attempts_made=st.booleans(),
        reset_attempts_started=st.booleans(),
    )
    def retry_job(
        self,
        job_id: str,
        state: JobState,
        reset_attempts_made: bool,
        reset_attempts_started: bool,
    ) -> None:
        kwargs = {
            "reset_attempts_made": reset_attempts_made,
            "reset_attempts_started": reset_attempts_started,
            "now": self.now(),
        }
        got = self.call("retry_job", QUEUE, job_id, state, **kwargs)
        assert got == self.model.retry_job(job_id, state, **kwargs)

    @rule(job_id=job_ids | st.just("never-added"))
    def promote_job(self, job_id: str) -> None:
        got = self.call("promote_job", QUEUE, job_id, self.now())
        assert got == self.model.promote_job(job_id, self.now())

    @rule(job_id=job_ids | st.just("never-added"), data=st.sampled_from(['{"v":1}', "[2]"]))
    def update_data(self, job_id: str, data: str) -> None:
        got = self.call("update_data", QUEUE, job_id, data)
        assert got == self.model.update_data(job_id, data)

    @rule(
        job_id=job_ids | st.just("never-added"),
        priority=st.sampled_from([0, 1, 2, 3]),
        lifo=st.booleans(),
    )
    def change_priority(self, job_id: str, priority: int, lifo: bool) -> None:
        got = self.call("change_priority", QUEUE, job_id, priority, lifo)
        assert got == self.model.change_priority(job_id, priority, lifo)

    @rule(job_id=job_ids | st.just("never-added"), delay=st.sampled_from([0, 1, 1_000, 5_000]))
    def change_delay(self, job_id: str, delay: int) -> None:
        got = self.call("change_delay", QUEUE, job_id, delay, self.now())
        assert got == self.model.change_delay(job_id, delay, self.now())

    @rule(
        job_id=job_ids | st.just("never-added"),
        row=st.sampled_from(["a", "b"]),
        keep_logs=st.sampled_from([None, None, 1, 2]),
    )
    def add_log(self, job_id: str, row: str, keep_logs: int | None) -> None:
        got = self.call("add_log", QUEUE, job_id, row, keep_logs)
        assert got == self.model.add_log(job_id, row, keep_logs)

    @rule(
        job_id=job_ids | st.just("never-added"),
        start=st.integers(-3, 3),
        end=st.integers(-3, 3),
        asc=st.booleans(),
    )
    def get_job_logs(self, job_id: str, start: int, end: int, asc: bool) -> None:
        got = self.call("get_job_logs", QUEUE, job_id, start, end, asc)
        assert got == self.model.get_job_logs(job_id, start, end, asc)

    @rule(
        state=st.sampled_from([JobState.FAILED, JobState.COMPLETED, JobState.DELAYED]),
        count=st.integers(1, 3),
        until=st.sampled_from(["now", "past", "all"]),
    )
    def move_jobs_to_wait(self, state: JobState, count: int, until: str) -> None:
        """``Queue.retry_jobs`` (finished jobs up to a time) and ``Queue.promote_jobs``
        (delayed jobs, all of them: BullMQ passes ``Number.MAX_VALUE``)."""
        timestamp = {"now": self.now(), "past": self.now() - 1_000, "all": MAX_SAFE_INTEGER}
        args = (state, count, timestamp[until], self.now())
        got = self.call("move_jobs_to_wait", QUEUE, *args)
        assert got == self.model.move_jobs_to_wait(*args)

    @rule(
        # (the states Queue.clean accepts: waiting-children is not one, as BullMQ's)
        state=st.sampled_from(sorted(set(CLEAN_STATES.values()), key=list(JobState).index)),
        grace=st.sampled_from([0, 0, 1_000, 60_000]),
        limit=st.integers(0, 3),
    )
    def clean(self, state: JobState, grace: int, limit: int) -> None:
        timestamp = self.now() - grace
        got = self.call("clean", QUEUE, state, timestamp, limit)
        assert got == self.model.clean(state, timestamp, limit)

    @rule(delayed=st.booleans())
    def drain(self, delayed: bool) -> None:
        self.call("drain", QUEUE, delayed)
        self.model.drain(delayed)

    @rule(count=st.integers(1, 6), force=st.booleans())
    def obliterate(self, count: int, force: bool) -> None:
        got = self.call("obliterate", QUEUE, count, force)
        assert got == self.model.obliterate(count, force)

    @rule(priorities=st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=3, unique=True))
    def get_counts_per_priority(self, priorities: list[int]) -> None:
        got = self.call("get_counts_per_priority", QUEUE, priorities)
        assert got == self.model.get_counts_per_priority(priorities)

    # ------------------------------------------------------------------ after every step

    @invariant()
    def agree(self) -> None:
        views = {}
        for name, backend in self.backends.items():
            backend.check()
            views[name] = drive(observe_storage(backend, QUEUE, self.known_ids))
        for name, view in views.items():
            assert view == views["memory"], f"{name}: the observable state differs from memory's"
            assert self.moves[name] == self.moves["memory"], f"{name}: the moves differ"
        assert views["memory"] == self.model.observe(self.known_ids)
        assert self.moves["memory"] == self.model.moves
        if self.fakeredis is not None:
            self.call("get_events", QUEUE)  # identical on both, stream ids included


StorageAgreement.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestStorageAgreement = StorageAgreement.TestCase


class ThreeWayAgreement(StorageAgreement):
    """The memory backend, the Redis backend on fakeredis and the model, in lockstep."""

    with_redis = True
    lock_duration_choices = (2, 5_000, 30_000, 30_000)
    stalled_interval_choices = (2, 2, 1_000, 30_000)


# fakeredis makes each step some 30 times slower than the memory backend alone.
ThreeWayAgreement.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestThreeWayAgreement = ThreeWayAgreement.TestCase


# ---------------------------------------------------------------------- the check can fail


def _finish_ignores_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """finish() accepts a lock held under another token."""
    check_owner = MemoryBackend._check_owner

    def sloppy(self: MemoryBackend, store: Any, job_id: str, token: str) -> ResultCode:
        code = check_owner(self, store, job_id, token)
        return ResultCode.OK if code is ResultCode.LOCK_MISMATCH else code

    monkeypatch.setattr(MemoryBackend, "_check_owner", sloppy)


def _stall_check_ignores_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_stalled() recovers marked jobs whose lock is still live."""
    check_stalled = MemoryBackend.check_stalled

    async def blind(self: MemoryBackend, queue: str, **kwargs: Any) -> Any:
        self._lock_of = lambda store, job_id: None  # type: ignore[method-assign]
        try:
            return await check_stalled(self, queue, **kwargs)
        finally:
            del self._lock_of

    monkeypatch.setattr(MemoryBackend, "check_stalled", blind)


def _stall_limit_not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall limit fails a job at ``stc == max_stalled_count`` instead of above it."""
    monkeypatch.setattr(memory_job_flow, "stall_limit_exceeded", lambda stc, limit: stc >= limit)


def _remove_ignores_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """remove() deletes a job whose lock is held (the planted bug ``remove-locked-job``)."""
    init = MemoryBackend.__init__

    def planted(self: MemoryBackend, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.planted_bugs = frozenset({"remove-locked-job"})

    monkeypatch.setattr(MemoryBackend, "__init__", planted)


def _clean_ignores_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """clean() deletes active jobs whose lock is still live (rule 3 broken by an operator
    call on a whole state)."""
    clean = MemoryBackend.clean

    async def blind(self: MemoryBackend, *args: Any) -> Any:
        self._lock_of = lambda store, job_id: None  # type: ignore[method-assign]
        try:
            return await clean(self, *args)
        finally:
            del self._lock_of

    monkeypatch.setattr(MemoryBackend, "clean", blind)


@pytest.mark.parametrize(
    "plant",
    [
        _finish_ignores_token,
        _stall_check_ignores_locks,
        _stall_limit_not_strict,
        _remove_ignores_lock,
        _clean_ignores_locks,
    ],
)
def test_planted_bug_is_caught(
    monkeypatch: pytest.MonkeyPatch, plant: Callable[[pytest.MonkeyPatch], None]
) -> None:
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            StorageAgreement,
            settings=settings(
                # The search stops at the first failure, so a generous budget costs nothing
                # while the bug is found, and keeps it found when a refactor shifts the
                # derandomized search (each bug is now found within the first 200 examples).
                max_examples=1000,
                stateful_step_count=50,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                print_blob=False,
            ),
        )
