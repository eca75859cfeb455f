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
priority and delay, logs, move jobs to wait, clean, drain, obliterate, counts per priority), and
(:class:`StorageAgreement`) issue 15's concerns: adds in every deduplication mode, worker
limiters, manual and global rate limits, global concurrency, ``move_to_wait``, and job
schedulers (upsert, the next iteration at each activation with its producer guard, removal,
readers); the invariant also compares the dedup keys, the rate-limit window, the ``meta``
limits and the schedulers. Fetched jobs' ``opts`` are compared as JSON objects (Lua's cjson
orders a scheduler iteration's keys its own way).
Both also draw issue 16's flows (the rules of :mod:`machine_flows`): trees of up to three
levels and four children per node with random parent options (``fail_parent_on_failure``,
``continue_parent_on_failure``, ``ignore_dependency_on_failure``,
``remove_dependency_on_failure``), roots added under existing (or missing) jobs, leaves
re-using existing ids, children added under a running job which then waits for them
(``move_to_waiting_children``) or delays itself (``move_to_delayed``), ``work`` (fetch and
finish, so that children complete or fail and release their parents), detaching a child
(``remove_child_dependency``) and reading a parent's dependencies; removing, retrying,
cleaning, draining and obliterating flow jobs are the rules above. The invariant also compares
every flow job's parent records (pending, processed, ignored and failed children) and flow
fields (``parentKey``, ``parent``, ``defa``). ``test_state_machine_flows`` runs the flow rules
with the core rules only, so that they are drawn often, on memory and on fakeredis.
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

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from machine_flows import FlowRules
from machine_support import (
    DEDUP_IDS,
    MAX_SAFE_INTEGER,
    META,
    QUEUE,
    SCHEDULER_IDS,
    JobSpec,
    Lease,
    canonical,
    dedup_specs,
    drive,
    job_specs,
    leases,
    lock_durations,
    milliseconds,
    outcomes,
    repeats,
    stalled_intervals,
    tamper,
    tampering,
    worker_limiters,
)

from corral.backends.memory import MemoryBackend
from corral.backends.redis.fake import virtual_fakeredis
from corral.engine.errors import ResultCode
from corral.engine.job_schedulers import Template, iteration_opts, scheduler_fields
from corral.engine.queue_operations import CLEAN_STATES
from corral.engine.scheduler_iterations import next_iteration_request
from corral.engine.scheduling import pattern_next_millis, validate_repeat
from corral.engine.states import JobState, Transition
from corral.engine.storage import (
    Fetched,
    FetchRequest,
    Outcome,
    SchedulerUpsert,
    next_job,
)
from corral.sim.fakeredis_store import FakeRedisStore
from corral.sim.loop import ManualClock
from corral.sim.model import Move, QueueModel, observe_storage


class CoreAgreement(RuleBasedStateMachine):
    """The backends and the model receive the same operations and must agree: the core job
    flow and the operator calls (:class:`StorageAgreement` adds issue 15's concerns)."""

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
            name: canonical(drive(getattr(backend, operation)(*args, **kwargs)))
            for name, backend in self.backends.items()
        }
        expected = results["memory"]
        for name, got in results.items():
            assert got == expected, f"{operation}: {name} returned {got!r}, memory {expected!r}"
        return expected

    def now(self) -> int:
        return self.clock.now_ms() + self.client_skew

    def request(
        self,
        lock_duration: int,
        named: bool,
        minted: bool,
        limiter: tuple[int, int] | None = None,
    ) -> FetchRequest:
        """A request with a token of the test's own, or one asking each store to mint it."""
        name = "w1" if named else None
        if minted:
            return FetchRequest(None, lock_duration, name, token_prefix="minted:", limiter=limiter)
        self.tokens += 1
        return FetchRequest(f"token-{self.tokens}", lock_duration, name, limiter=limiter)

    def remember(self, fetched: Fetched | None) -> None:
        """Keep the lease, and make the next iteration of a scheduler's job as the worker
        does at activation (``updateJobScheduler``, with the producer guard)."""
        if fetched is None:
            return
        self.leases.append(Lease(fetched.job_id, fetched.token))
        self.next_iteration(fetched.job_id, fetched.fields)

    def next_iteration(self, job_id: str, fields: Mapping[str, str] | None) -> None:
        """What a worker does after activating ``job_id``: ask its scheduler, if it has one,
        for the next iteration."""
        request = None if fields is None else next_iteration_request(fields, self.now())
        if request is None:
            return
        scheduler_id, next_millis, opts = request
        args = (scheduler_id, job_id, next_millis, opts, self.now())
        got = self.call("update_job_scheduler", QUEUE, *args)
        assert got == self.model.update_job_scheduler(*args)
        if got is not None:
            self.known_ids.add(got)

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

    @rule(
        lock_duration=lock_durations,
        named=st.booleans(),
        minted=st.booleans(),
        limiter=worker_limiters,
    )
    def fetch_next(
        self,
        lock_duration: int,
        named: bool,
        minted: bool,
        limiter: tuple[int, int] | None = None,
    ) -> None:
        request = self.request(lock_duration, named, minted, limiter)
        got = self.call("fetch_next", QUEUE, request, self.now())
        assert got == canonical(self.model.fetch_next(request, self.now()))
        self.remember(got.job)

    @precondition(has_leases)
    @rule(
        lease=leases(),
        how=tampering,
        outcome=outcomes,
        fetch_next=st.booleans(),
        lock_duration=lock_durations,
        minted=st.booleans(),
        limiter=worker_limiters,
    )
    def finish(
        self,
        lease: Lease,
        how: str,
        outcome: Outcome,
        fetch_next: bool,
        lock_duration: int,
        minted: bool,
        limiter: tuple[int, int] | None,
    ) -> None:
        job_id, token = tamper(lease, how)
        request = self.request(lock_duration, False, minted, limiter) if fetch_next else None
        got = self.call("finish", QUEUE, job_id, token, outcome, self.now(), request)
        assert got == canonical(self.model.finish(job_id, token, outcome, self.now(), request))
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
        # The new concerns' state: dedup keys, the rate-limit window, the limit settings,
        # the job schedulers.
        for dedup_id in DEDUP_IDS:
            got = self.call("get_deduplication_job_id", QUEUE, dedup_id)
            assert got == self.model.get_deduplication_job_id(dedup_id), dedup_id
        assert self.call("get_rate_limit_ttl", QUEUE, None) == self.model.get_rate_limit_ttl(None)
        assert self.call("get_queue_meta", QUEUE, META) == self.model.get_queue_meta(META)
        got = self.call("get_job_schedulers", QUEUE, 0, -1, True)
        assert got == self.model.get_job_schedulers(0, -1, True)
        if self.fakeredis is not None:
            self.call("get_events", QUEUE)  # identical on both, stream ids included


class StorageAgreement(FlowRules, CoreAgreement):
    """:class:`CoreAgreement` plus issue 15's concerns: adds with every deduplication mode,
    rate limits and global concurrency (worker limiters on fetches, manual limits, the global
    settings, ``move_to_wait``), and job schedulers (upsert, the next iteration at every
    activation with the producer guard, a second activation, removal, the readers). Kept in a
    subclass so that the planted bugs of the core are searched for as before."""

    job_ids = CoreAgreement.job_ids
    has_leases = CoreAgreement.has_leases
    #: How many entries beyond ``max_length`` a backend's ``trim_events`` may keep.
    event_slack: Mapping[str, int] = {"memory": 0}

    # ------------------------------------------------------------------ deduplication

    @rule(target=job_ids, specs=st.lists(dedup_specs, min_size=1, max_size=3))
    def add_deduplicated(self, specs: list[JobSpec]) -> object:
        """Adds with the ``deduplication`` option, every mode, on two dedup ids."""
        return self.add(specs)

    @rule(dedup_id=st.sampled_from(DEDUP_IDS))
    def remove_deduplication_key(self, dedup_id: str) -> None:
        got = self.call("remove_deduplication_key", QUEUE, dedup_id)
        assert got == self.model.remove_deduplication_key(dedup_id)

    # ------------------------------------------------------------------ rate limits

    @rule(ttl=st.sampled_from([1, 1_000, 5_000]))
    def rate_limit(self, ttl: int) -> None:
        self.call("set_rate_limit", QUEUE, ttl)
        self.model.set_rate_limit(ttl)

    @rule(max_jobs=st.sampled_from([None, 1, 2, 5]))
    def get_rate_limit_ttl(self, max_jobs: int | None) -> None:
        got = self.call("get_rate_limit_ttl", QUEUE, max_jobs)
        assert got == self.model.get_rate_limit_ttl(max_jobs)

    @rule()
    def remove_rate_limit_key(self) -> None:
        assert self.call("remove_rate_limit_key", QUEUE) == self.model.remove_rate_limit_key()

    @rule(
        fields=st.sampled_from(
            [
                {"max": 1, "duration": 1_000},
                {"max": 2, "duration": 3_000},
                {"concurrency": 1},
                {"concurrency": 2},
            ]
        )
    )
    def set_queue_meta(self, fields: dict[str, int]) -> None:
        """``set_global_rate_limit`` (both fields, as the Queue sets them) or
        ``set_global_concurrency``."""
        self.call("set_queue_meta", QUEUE, fields)
        self.model.set_queue_meta(fields)

    @rule(names=st.sampled_from([("max", "duration"), ("concurrency",)]))
    def remove_queue_meta(self, names: tuple[str, ...]) -> None:
        self.call("remove_queue_meta", QUEUE, names)
        self.model.remove_queue_meta(names)

    @precondition(has_leases)
    @rule(lease=leases(), how=tampering)
    def move_to_wait(self, lease: Lease, how: str) -> None:
        """A processor raised ``RateLimitError``."""
        job_id, token = tamper(lease, how)
        got = self.call("move_to_wait", QUEUE, job_id, token)
        assert got == self.model.move_to_wait(job_id, token)

    # ------------------------------------------------------------------ the event log

    @rule(max_length=st.sampled_from([0, 1, 2, 5, 20]))
    def trim_events(self, max_length: int) -> None:
        """``Queue.trim_events``: the memory backend trims exactly, Redis whole stream nodes
        (``XTRIM MAXLEN ~``, as BullMQ's ``trimEvents``). Each keeps its newest entries in
        order, ``max_length`` of them (all when it had fewer) and at most a node's worth less
        one more (:attr:`event_slack`), and says how many it removed. The model keeps no event
        log; the invariant compares the backends' logs."""
        for name, backend in self.backends.items():
            before = drive(backend.get_events(QUEUE, None, 100_000))
            removed = drive(backend.trim_events(QUEUE, max_length))
            after = drive(backend.get_events(QUEUE, None, 100_000))
            assert removed == len(before) - len(after), name
            assert after == before[removed:], f"{name}: not the newest entries, in order"
            kept = min(max_length, len(before))
            assert kept <= len(after) <= kept + self.event_slack.get(name, 0), (name, len(after))

    # ------------------------------------------------------------------ job schedulers

    @rule(
        scheduler_id=st.sampled_from(SCHEDULER_IDS),
        repeat=repeats,
        priority=st.sampled_from([0, 0, 2]),
        data=st.sampled_from([None, {"s": 1}]),
    )
    def upsert_job_scheduler(
        self, scheduler_id: str, repeat: dict[str, Any], priority: int, data: object
    ) -> None:
        """``Queue.upsert_job_scheduler``'s store call, built as the Queue builds it."""
        now = self.now()
        repeat = {
            key: now + value if key == "start_date" else value for key, value in repeat.items()
        }
        options = validate_repeat(repeat, now)
        template: dict[str, Any] = {"opts": {"priority": priority} if priority else {}}
        if data is not None:
            template["data"] = data
        built = Template.build(scheduler_id, template)
        next_millis = None
        if options.pattern is not None:
            next_millis = pattern_next_millis(options, now, 0)
            if next_millis is None:
                return
        opts = iteration_opts(json.loads(built.opts), scheduler_id, options, 1, next_millis)
        upsert = SchedulerUpsert(
            scheduler_id,
            scheduler_fields(options, built.name),
            built.data,
            built.opts,
            json.dumps(opts, separators=(",", ":")),
            next_millis,
        )
        got = self.call("upsert_job_scheduler", QUEUE, upsert, now)
        assert got == self.model.upsert_job_scheduler(upsert, now)
        if not isinstance(got, ResultCode):
            self.known_ids.add(got[0])

    @precondition(has_leases)
    @rule(lease=leases())
    def activate_again(self, lease: Lease) -> None:
        """The producer guard: a second activation of a job (a retry, a stall, a repeated
        call) asks for the next iteration again; only the current iteration may make one."""
        self.next_iteration(lease.job_id, self.model.get_job(lease.job_id))

    @rule(scheduler_id=st.sampled_from(SCHEDULER_IDS))
    def remove_job_scheduler(self, scheduler_id: str) -> None:
        got = self.call("remove_job_scheduler", QUEUE, scheduler_id, self.now())
        assert got == self.model.remove_job_scheduler(scheduler_id, self.now())

    @rule(
        start=st.integers(-2, 2),
        end=st.integers(-2, 2),
        asc=st.booleans(),
        scheduler_id=st.sampled_from(SCHEDULER_IDS),
    )
    def read_schedulers(self, start: int, end: int, asc: bool, scheduler_id: str) -> None:
        got = self.call("get_job_schedulers", QUEUE, start, end, asc)
        assert got == self.model.get_job_schedulers(start, end, asc)
        got_one = self.call("get_job_scheduler", QUEUE, scheduler_id)
        assert got_one == self.model.get_job_scheduler(scheduler_id)
        count = self.call("get_job_schedulers_count", QUEUE)
        assert count == self.model.get_job_schedulers_count()


StorageAgreement.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestStorageAgreement = StorageAgreement.TestCase


class ThreeWayAgreement(StorageAgreement):
    """The memory backend, the Redis backend on fakeredis and the model, in lockstep."""

    with_redis = True
    lock_duration_choices = (2, 5_000, 30_000, 30_000)
    stalled_interval_choices = (2, 2, 1_000, 30_000)
    #: One entry per stream node, so that ``XTRIM ~`` (which drops whole nodes) trims exactly
    #: and the backends' event logs stay equal after a trim (the invariant compares them).
    event_slack: Mapping[str, int] = {"memory": 0, "fakeredis": 0}

    def __init__(self) -> None:
        super().__init__()
        assert self.fakeredis is not None
        config = self.fakeredis.client.config_set("stream-node-max-entries", 1)
        self.fakeredis.run(config)  # (before any entry: nodes are packed as entries come)


# fakeredis makes each step some 30 times slower than the memory backend alone.
ThreeWayAgreement.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestThreeWayAgreement = ThreeWayAgreement.TestCase
