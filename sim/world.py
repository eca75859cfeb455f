"""The simulated world: processes, the store, the network, faults, and the two phases of a run.

One world clock. The store runs on its own :class:`SimLoop` with the world clock; each worker
process runs the production :class:`~corral.engine.worker.Worker` unchanged on its own SimLoop,
with its own (possibly skewed) clock, seeded randomness, a simulated processor, and a
:class:`~corral.sim.network.Connection` as its backend. The world repeatedly picks the earliest
due item — a network message or a loop with work — moves time there and runs it, then checks the
invariants. Faults are events on the same timeline.

A run has two phases. *Safety*: faults at full rate for ``scenario.duration_ms``; every event is
followed by the invariant checks. *Liveness*: every fault is healed (partitions end, blocked loops
resume, dead workers are replaced) and every job that was added must reach completed or failed
within ``scenario.liveness_budget_ms``; the rest are reported as lost.

Determinism: every random draw comes from a ``random.Random`` seeded from the run's seed and a
purpose (faults, network, jobs, each process's work), nothing reads real time except the
``wall_seconds`` statistic, and ties between events are broken by insertion order.

The store is a :class:`~corral.backends.memory.MemoryBackend` on the store's clock, or (``backend=
"fakeredis"``) the Redis backend over an in-process fakeredis server whose key expiry follows the
store's clock (:class:`~corral.sim.fakeredis_store.FakeRedisStore`). Either way each storage call
is one atomic step of the store loop; the fakeredis server's own loop (where its blocked waits
time out) is stepped as part of the store, so both backends give the same event sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import hashlib
import heapq
import itertools
import logging
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from corral.backends.memory import MemoryBackend, TransitionListener
from corral.engine.checker import StalledChecker
from corral.engine.flow_producer import FlowProducer
from corral.engine.job import Job
from corral.engine.limits import Limiter
from corral.engine.queue import Queue
from corral.engine.states import JobState, Transition
from corral.engine.storage import Storage, next_job, result_code
from corral.engine.worker import Worker
from corral.sim.flow_trees import draw_flow
from corral.sim.flow_watch import FlowWatch
from corral.sim.invariants import COVERAGE_GOALS, LimitWatch, Oracle
from corral.sim.loop import DEFAULT_EPOCH_MS, VirtualClock
from corral.sim.network import Connection, SimulatedConnectionError
from corral.sim.operator import Operator
from corral.sim.scenario import (
    WINDOW_FAULTS,
    Fault,
    Scenario,
    SchedulerSpec,
    draw_faults,
    slot_count,
    slot_label,
    slot_of,
)
from corral.sim.scheduler_watch import SchedulerOracle
from corral.sim.simloop import SimLoop
from corral.sim.trace import RunResult, TraceEvent

if TYPE_CHECKING:
    from corral.sim.fakeredis_store import FakeRedisStore

QUEUE = "sim"

#: The stores a world can run on.
BACKENDS = ("memory", "fakeredis")


class SimulatedJobError(Exception):
    """What a simulated processor raises when the scenario says this attempt fails."""


@dataclasses.dataclass
class Process:
    """One simulated OS process."""

    name: str
    slot: int | None
    loop: SimLoop
    clock: VirtualClock
    alive: bool = True
    blocked_until: float = 0.0
    worker: Worker | None = None
    #: Closes the process's program with force (a Worker's forced close, a checker's close).
    close: Callable[[], Awaitable[None]] | None = None


class World:
    """One simulated run of a scenario with one seed.

    Args:
        scenario: what to simulate.
        seed: the run's seed; the same seed gives the same trace.
        faults: an explicit fault timeline replacing the scenario's (used when shrinking).
        plant: names of bugs to plant in the store (see ``PLANTABLE_BUGS``; on fakeredis
            they are compiled into the Lua scripts).
        backend: ``"memory"`` or ``"fakeredis"`` (see :data:`BACKENDS`).
        full_check_every: run the store's full ``check()`` after every n-th state-changing
            operation (1: after each); the others are followed by ``check_jobs`` on the jobs
            they touched, which also covers every queue-wide size and lock invariant.
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        *,
        faults: tuple[Fault, ...] | None = None,
        plant: frozenset[str] = frozenset(),
        full_check_every: int = 50,
        backend: str = "memory",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        # With an explicit timeline (shrinking) the seed's other draws stay as they were, and
        # so do the enabled kinds: clock skew has no timeline entry of its own.
        self.scenario = scenario
        self.seed = seed
        self.plant = plant
        self.backend_name = backend
        self.full_check_every = full_check_every
        self._ops = 0
        self.now = 0.0  # world time, seconds
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._events = 0
        drawn, enabled = draw_faults(scenario, self._rng("faults"))
        self.faults = drawn if faults is None else faults
        self.enabled_kinds = (
            enabled if faults is None else {f.kind for f in faults} | (enabled & {"skew"})
        )
        self._net_rng = self._rng("network")
        self._skew_rng = self._rng("skew")
        self.trace: list[TraceEvent] = []
        self.processes: dict[str, Process] = {}
        self._slots: dict[int, Process] = {}
        self._generations: dict[int, int] = {}
        self._lane_clock: dict[tuple[str, str, str], float] = {}
        self._windows: dict[
            str, dict[str, tuple[float, float]]
        ] = {}  # slot -> kind -> (until, amount)
        self._healed = False
        self._producer_done = False
        self._operators: dict[int, Operator] = {}  # the latest operator of each slot
        self.store_loop = SimLoop(self._now)
        #: The run's start on the wall clocks, and the job schedulers the producer upserts.
        self.epoch_ms, self.schedulers = DEFAULT_EPOCH_MS, scenario.schedulers
        if scenario.cron is not None:
            self.epoch_ms, drawn_cron = scenario.cron.draw(self._rng("cron"))
            self.schedulers += drawn_cron
        self.store_clock = VirtualClock(self.store_loop, epoch_ms=self.epoch_ms)
        # The fakeredis server's loop: part of the store, shared by the servers of a restart.
        self.server_loop = SimLoop(self._now) if backend == "fakeredis" else None
        self.oracle = Oracle(
            scenario.settings.max_stalled_count,
            self._is_alive,
            expect_no_reruns=scenario.expect_no_reruns,
            schedulers=[spec.scheduler_id for spec in self.schedulers],
        )
        self.scheduler_oracle = SchedulerOracle(
            self.schedulers, self.epoch_ms, self.oracle.violations
        )
        # Lock-token numbers outlive a store restart, as a Redis client outlives its server:
        # the workers keep running, and a token they were given must never come back.
        self._token_numbers = itertools.count(1)
        self.backend: MemoryBackend | FakeRedisStore = self._new_backend()
        #: The queue each job was last seen moving in (flows span several queues).
        self._job_queues: dict[str, str] = {}
        if scenario.flows is not None:
            self.oracle.flows = FlowWatch(self.oracle.violations.append, self._processed_of)
        if scenario.settings.limiter is not None or scenario.global_concurrency is not None:
            self.oracle.limits = LimitWatch(
                scenario.settings.limiter, scenario.global_concurrency, self.store_clock.now_ms
            )

    # ------------------------------------------------------------------ plumbing

    def _rng(self, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{purpose}")

    def _now(self) -> float:
        return self.now

    def _at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (t, next(self._sequence), action))

    def record(self, process: str, kind: str, job: str = "", detail: str = "") -> None:
        """Append a trace event at the current world time."""
        self.trace.append(TraceEvent(round(self.now * 1000, 3), process, kind, job, detail))

    def _is_alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.alive

    def _new_backend(self) -> MemoryBackend | FakeRedisStore:
        listener: TransitionListener = self._on_transition
        if self.server_loop is not None:
            store = _fakeredis_store()(
                self._now,
                planted_bugs=self.plant,
                loop=self.server_loop,
                token_numbers=self._token_numbers,
            )
            store.transition_listener = listener
            return store
        backend = MemoryBackend(clock=self.store_clock, token_numbers=self._token_numbers)
        backend.planted_bugs = self.plant
        backend.transition_listener = listener
        return backend

    def _processed_of(self, queue: str, job_id: str) -> Mapping[str, str]:
        return self.backend.parent_processed(queue, job_id)

    def _connect(self, process: str) -> Storage:
        """A process's link to the store. It carries every Storage call but the worker
        registry's (``register_worker``, ``get_workers``): ``corral.engine.worker_presence``
        leaves a worker unlisted on a store without them, so a simulated worker's start costs
        no extra round trip and the hand-written timelines keep their timings."""
        return cast(Storage, Connection(self, process, self.scenario.command_timeout_ms))

    def _queue_of(self, slot: int) -> str:
        """The queue a process slot serves: the world's queue, or with flows their queues in
        turn."""
        flows = self.scenario.flows
        return QUEUE if flows is None else flows.queues[slot % len(flows.queues)]

    def _store_due(self) -> float | None:
        due = self.store_loop.next_due()
        if self.server_loop is not None:
            server_due = self.server_loop.next_due()
            if server_due is not None and (due is None or server_due < due):
                return server_due
        return due

    def _step_store(self) -> None:
        # One store event: its ready callbacks (each a whole storage call), then what is due on
        # the fakeredis server (blocked waits timing out), as the memory backend's one loop
        # runs its ready callbacks and then its due timers.
        self.store_loop.step()
        if self.server_loop is not None:
            due = self.server_loop.next_due()
            if due is not None and due <= self.now:
                self.server_loop.step()
                self.server_loop.settle()

    def _on_transition(
        self,
        queue: str,
        job_id: str,
        transition: Transition,
        source: JobState | None,
        target: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        self.oracle.on_transition(job_id, transition, source, target, fields)
        if queue != QUEUE:
            self._job_queues[job_id] = queue
        self.record("store", "transition", job_id, f"{transition.value} {source}->{target}")

    # ------------------------------------------------------------------ network

    def request(
        self, process: str, lane: str, op: str, args: tuple[Any, ...], timeout_ms: float
    ) -> asyncio.Future[Any]:
        """Send a storage call from ``process``; the future resolves with the store's reply."""
        proc = self.processes[process]
        future: asyncio.Future[Any] = proc.loop.create_future()
        timer = proc.loop.call_later(timeout_ms / 1000, _time_out, future, op, process)
        future.add_done_callback(lambda _: timer.cancel())
        delay = self._fate(proc, "request", op)
        if delay is None:
            self.record(process, "dropped", "", f"request {op}")
            return future
        at = self._in_order(process, lane, "up", self.now + delay)
        self._at(at, lambda: self._deliver_request(proc, lane, op, args, future))
        return future

    def _fate(self, proc: Process, direction: str, op: str) -> float | None:
        """Seconds a message takes, or None when it is lost."""
        windows = self._windows.get(self._label(proc.slot), {}) if proc.slot is not None else {}
        now = self.now
        if "partition" in windows and windows["partition"][0] > now:
            return None
        if direction == "reply" and "asymmetric" in windows and windows["asymmetric"][0] > now:
            return None
        # A finish's request is lost half the time (not applied), else its reply half the time
        # (applied): the worker cannot tell which.
        if (
            op == "finish"
            and "finish-lost" in windows
            and windows["finish-lost"][0] > now
            and (direction == "request") == (self._net_rng.random() < 0.5)
        ):
            return None
        low, high = self.scenario.latency_ms
        delay = self._net_rng.uniform(low, high)
        if "latency" in windows and windows["latency"][0] > now:
            delay += windows["latency"][1] * self._net_rng.random()
        return delay / 1000

    def _in_order(self, process: str, lane: str, direction: str, at: float) -> float:
        # One TCP connection per lane: messages never overtake each other.
        key = (process, lane, direction)
        at = max(at, self._lane_clock.get(key, 0.0))
        self._lane_clock[key] = at
        return at

    def _deliver_request(
        self, proc: Process, lane: str, op: str, args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        self.store_loop.create_task(self._execute(proc, lane, op, args, future))

    async def _execute(
        self, proc: Process, lane: str, op: str, args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> None:
        backend = self.backend
        self.oracle.begin_op()
        if op == "check_stalled":
            queue, max_stalled, interval, now = args
            result: Any = await backend.check_stalled(
                queue, max_stalled_count=max_stalled, stalled_interval=interval, now=now
            )
        elif op == "retry_job":
            queue, job_id, state, reset_made, reset_started, now = args
            result = await backend.retry_job(
                queue,
                job_id,
                state,
                reset_attempts_made=reset_made,
                reset_attempts_started=reset_started,
                now=now,
            )
        else:
            result = await getattr(backend, op)(*args)
        if backend is not self.backend:  # the store restarted while this call waited
            return
        store_now = self.store_clock.now_ms()
        touched = self.oracle.touched
        self.oracle.on_op(proc.name, op, args, result, store_now)
        self.scheduler_oracle.on_op(op, args, result)
        self.oracle.end_op(
            lambda job_id: backend.job_fields(self._job_queues.get(job_id, QUEUE), job_id)
        )
        self._trace_op(proc.name, op, args, result)
        if op not in _READ_ONLY:
            self._ops += 1
            try:
                if self.full_check_every and self._ops % self.full_check_every == 0:
                    backend.check()
                elif not self._job_queues:
                    backend.check_jobs(QUEUE, touched)
                else:
                    for queue in {self._job_queues.get(job_id, QUEUE) for job_id in touched}:
                        backend.check_jobs(queue, touched)
            except AssertionError as exc:
                self.oracle.violations.append(f"store check: {exc}")
        delay = self._fate(proc, "reply", op)
        if delay is None:
            self.record(proc.name, "reply-lost", "", op)
            return
        at = self._in_order(proc.name, lane, "down", self.now + delay)
        self._at(at, lambda: self._deliver_reply(proc, future, result))

    def _deliver_reply(self, proc: Process, future: asyncio.Future[Any], result: Any) -> None:
        if proc.alive and not future.done():
            future.set_result(result)

    def _trace_op(self, process: str, op: str, args: tuple[Any, ...], result: Any) -> None:
        if op == "fetch_next" and result.job is not None:
            request = args[1]
            self.record(
                process,
                "fetch",
                result.job.job_id,
                f"token={result.job.token} lock={request.lock_duration}",
            )
        elif op == "finish":
            job_id, token, outcome, fetch = args[1], args[2], args[3], args[5]
            self.record(
                process,
                "finish",
                job_id,
                f"{type(outcome).__name__} token={token} code={result_code(result).name}",
            )
            fetched = next_job(result)
            if fetch is not None and fetched is not None:
                self.record(
                    process,
                    "fetch",
                    fetched.job_id,
                    f"token={fetched.token} lock={fetch.lock_duration}",
                )
        elif op == "extend_locks":
            lost = set(result)
            for job_id, token in args[1]:
                kind = "renew-failed" if token in lost else "renew"
                self.record(process, kind, job_id, f"token={token} lock={args[2]}")
        elif op == "release":
            self.record(process, "release", args[1], f"token={args[2]} code={result.name}")
        elif op == "check_stalled" and result.ran:
            self.record(
                process,
                "stall-check",
                "",
                f"recovered={','.join(result.recovered)} failed={','.join(result.failed)}",
            )
        elif op == "upsert_job_scheduler" and isinstance(result, tuple):
            self.record(process, "schedule", result[0], f"scheduler={args[1].scheduler_id}")
        elif op == "update_job_scheduler" and result is not None:
            self.record(process, "schedule", result, f"scheduler={args[1]} by={args[2]}")
        elif op == "add_jobs":
            for job_id, created in zip(result.job_ids, result.created, strict=True):
                self.record(process, "add", job_id, f"created={created}")

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, slot: int | None) -> Process:
        loop = SimLoop(self._now)
        clock = VirtualClock(loop, epoch_ms=self.epoch_ms)
        if slot is not None and "skew" in self.enabled_kinds:
            clock.offset_ms = self._skew_rng.randint(-5_000, 5_000)
            clock.drift = self._skew_rng.uniform(-0.005, 0.005)
        process = Process(name, slot, loop, clock)
        self.processes[name] = process
        return process

    def _label(self, slot: int) -> str:
        return slot_label(self.scenario, slot)

    def _slot_of(self, label: str) -> int:
        return slot_of(self.scenario, label)

    def _start_process(self, slot: int) -> None:
        """Start the program of a slot, unless a live process holds it already."""
        current = self._slots.get(slot)
        if current is not None and current.alive:
            return
        generation = self._generations.get(slot, -1) + 1
        self._generations[slot] = generation
        label = self._label(slot)
        name = label if generation == 0 else f"{label}.{generation}"
        process = self._spawn(name, slot)
        self._slots[slot] = process
        if slot < self.scenario.workers:
            self._start_worker(process)
        elif slot < self.scenario.workers + self.scenario.checkers:
            self._start_checker(process)
        else:
            self._start_operator(process, slot)
        self.record(name, "start", "", f"offset={process.clock.offset_ms}ms")

    def _start_checker(self, process: Process) -> None:
        settings = self.scenario.settings
        checker = StalledChecker(
            self._queue_of(process.slot or 0),
            self._connect(process.name),
            stalled_interval=settings.stalled_interval,
            max_stalled_count=settings.max_stalled_count,
            clock=process.clock,
        )
        checker.on("error", lambda error, _: self._worker_error(process.name, error, None))
        process.close = checker.close
        process.loop.create_task(checker.run())

    def _start_operator(self, process: Process, slot: int) -> None:
        queue = Queue(
            QUEUE,
            self._connect(process.name),
            clock=process.clock,
        )
        operator = Operator(
            process.name,
            queue,
            self._rng(f"operator:{process.name}"),
            functools.partial(self.record, process.name),
            lambda: self._healed,
            lambda: self._producer_done,
            self.scenario.operator,
        )
        self._operators[slot] = operator
        process.close = queue.close
        process.loop.create_task(operator.run())

    def _start_worker(self, process: Process) -> None:
        name = process.name
        settings = self.scenario.settings
        assert process.slot is not None
        worker = Worker(
            self._queue_of(process.slot),
            self._processor(process),
            self._connect(name),
            concurrency=settings.concurrency,
            lock_duration=settings.lock_duration,
            lock_renew_time=settings.lock_renew_time,
            stalled_interval=settings.stalled_interval,
            max_stalled_count=settings.max_stalled_count,
            drain_delay=settings.drain_delay,
            skip_stalled_check=settings.skip_stalled_check,
            limiter=None if settings.limiter is None else Limiter(*settings.limiter),
            name=name,
            clock=process.clock,
            rng=self._rng(f"worker:{name}"),
        )
        worker.on(
            "lock_renewal_failed",
            lambda ids: self.record(name, "lock-lost", "", f"jobs={','.join(ids)}"),
        )
        worker.on(
            "loop_blocked",
            lambda ms, ids: self.record(name, "loop-blocked", "", f"{ms}ms jobs={','.join(ids)}"),
        )
        worker.on("error", lambda error, job: self._worker_error(name, error, job))
        process.worker = worker
        process.close = functools.partial(worker.close, force=True)
        process.loop.create_task(worker.run())

    def _worker_error(self, name: str, error: BaseException, job: Job | None) -> None:
        if not isinstance(error, SimulatedConnectionError):
            self.record(name, "error", "" if job is None else job.id, str(error))

    def _processor(self, process: Process) -> Callable[[Job], Any]:
        rng = self._rng(f"work:{process.name}")
        work = self.scenario.work

        async def simulated_work(job: Job) -> dict[str, str]:
            self.oracle.on_execution(job.id)
            self.record(process.name, "exec", job.id, f"token={job.token}")
            duration = rng.randint(work.min_ms, work.max_ms)
            if rng.random() < work.block_probability:
                self.block(process, rng.randint(work.block_min_ms, work.block_max_ms), "cpu")
                await asyncio.sleep(0)
            await asyncio.sleep(duration / 1000)
            if rng.random() < work.error_probability:
                raise SimulatedJobError(f"job {job.id} failed on {process.name}")
            return {"by": process.name}

        return simulated_work

    def block(self, process: Process, ms: int, why: str) -> None:
        """Stop stepping ``process`` for ``ms`` (a blocked event loop or a GC pause)."""
        until = self.now + ms / 1000
        if until > process.blocked_until:
            process.blocked_until = until
        self.record(process.name, "blocked", "", f"{why} for {ms}ms")

    def _start_producer(self) -> None:
        process = self._spawn("producer", None)
        queue = Queue(
            QUEUE,
            self._connect("producer"),
            clock=process.clock,
        )
        process.loop.create_task(self._produce(queue))

    async def _produce(self, queue: Queue) -> None:
        if self.scenario.flows is not None:
            await self._produce_flows(queue)
            return
        for scheduler in self.schedulers:
            await self._upsert(queue, scheduler)
        spec = self.scenario.jobs
        dedup_spec = self.scenario.dedup
        rng = self._rng("jobs")
        if self.scenario.global_concurrency is not None:
            await self._set_global_concurrency(queue, self.scenario.global_concurrency)
        for n in range(spec.count):
            due = spec.arrival_ms * n / max(1, spec.count) / 1000
            if due > self.now:
                await asyncio.sleep(due - self.now)
            priority = rng.randint(1, 10) if rng.random() < spec.priority_fraction else 0
            delay = rng.randint(1, spec.max_delay_ms) if rng.random() < spec.delayed_fraction else 0
            dedup = None
            if dedup_spec is not None and rng.random() < dedup_spec.fraction:
                dedup, delay = dedup_spec.option(rng.randrange(dedup_spec.ids))
            try:
                await queue.add(
                    "work",
                    {"n": n},
                    priority=priority,
                    delay=delay,
                    attempts=spec.attempts,
                    backoff={"type": "exponential", "delay": spec.backoff_ms},
                    deduplication=dedup,
                )
            except SimulatedConnectionError:
                self.record("producer", "add-failed", "", f"n={n}")
        self._producer_done = True

    async def _produce_flows(self, queue: Queue) -> None:
        """Add the scenario's flows, spread over the arrival window (a flow whose call times out
        is not sent again: it may or may not be stored, and the oracle follows what is)."""
        spec = self.scenario.flows
        assert spec is not None
        jobs = self.scenario.jobs
        rng = self._rng("flows")
        producer = FlowProducer(queue.backend, clock=queue.clock, rng=self._rng("flow-ids"))
        for n in range(spec.count):
            due = jobs.arrival_ms * n / max(1, spec.count) / 1000
            if due > self.now:
                await asyncio.sleep(due - self.now)
            try:
                await producer.add(draw_flow(spec, rng, n, jobs.attempts))
            except SimulatedConnectionError:
                self.record("producer", "add-failed", "", f"flow f{n}")
        self._producer_done = True

    async def _set_global_concurrency(self, queue: Queue, concurrency: int) -> None:
        # (before any job: the producer's link is not faulted, but a call may still time out)
        while True:
            try:
                await queue.set_global_concurrency(concurrency)
                return
            except SimulatedConnectionError:
                self.record("producer", "meta-failed", "", f"concurrency={concurrency}")

    async def _upsert(self, queue: Queue, spec: SchedulerSpec) -> None:
        """Upsert one scheduler, sending it again until a reply comes (a repeat after a lost
        reply replaces the pending first iteration in place)."""
        repeat = spec.repeat(self.epoch_ms)
        template = {"name": spec.scheduler_id, "opts": {"attempts": spec.attempts}}
        while True:
            try:
                await queue.upsert_job_scheduler(spec.scheduler_id, repeat, template)
                return
            except SimulatedConnectionError:
                self.record("producer", "upsert-failed", "", spec.scheduler_id)

    # ------------------------------------------------------------------ faults

    def _schedule_faults(self) -> None:
        for fault in self.faults:
            self._at(fault.at_ms / 1000, functools.partial(self._apply, fault))

    def _apply(self, fault: Fault) -> None:
        if self._healed:
            return
        if fault.kind == "store-restart":
            self.record("world", "fault", "", f"{fault.describe()} process=store")
            self.oracle.forget_store()
            self.backend = self._new_backend()
            return
        slot = self._slot_of(fault.target)
        process = self._slots.get(slot)
        holder = process.name if process is not None and process.alive else "-"
        self.record("world", "fault", "", f"{fault.describe()} process={holder}")
        if fault.kind in WINDOW_FAULTS:
            windows = self._windows.setdefault(fault.target, {})
            until = self.now + fault.duration_ms / 1000
            previous = windows.get(fault.kind, (0.0, 0.0))
            windows[fault.kind] = (max(until, previous[0]), max(fault.amount, previous[1]))
            return
        if process is None or not process.alive:
            return
        if fault.kind in ("block", "gc"):
            self.block(process, fault.duration_ms, fault.kind)
        elif fault.kind == "crash":
            process.alive = False
            self.record(process.name, "crash")
            self._at(self.now + fault.duration_ms / 1000, lambda: self._start_process(slot))
        elif fault.kind == "shutdown":
            process.loop.create_task(self._shutdown(process, fault.duration_ms))

    async def _shutdown(self, process: Process, pause_ms: int) -> None:
        assert process.close is not None
        self.record(process.name, "shutdown", "", "close(force=True)")
        await process.close()
        process.alive = False
        self.record(process.name, "exited")
        slot = process.slot
        assert slot is not None
        self._at(self.now + pause_ms / 1000, lambda: self._start_process(slot))

    def _heal(self) -> None:
        self._healed = True
        self.record("world", "heal", "", "faults end; liveness phase")
        self._windows.clear()
        for process in self.processes.values():
            process.blocked_until = min(process.blocked_until, self.now)
        for slot in range(slot_count(self.scenario)):
            self._start_process(slot)

    # ------------------------------------------------------------------ the run

    def _done(self) -> bool:
        # Runs always reach the liveness phase, so that healing and the replacement of dead
        # workers are exercised even when every job finished during the safety phase.
        return (
            self._healed
            and self._producer_done
            and not self.oracle.has_unfinished
            and all(operator.done for operator in self._operators.values())
        )

    def run(self) -> RunResult:
        """Run both phases and return the result."""
        with _quiet_loop_warnings():
            if self.server_loop is None:
                return self._run()
            from corral.backends.redis.fake import virtual_fakeredis

            with virtual_fakeredis(self.store_clock):
                return self._run()

    def _run(self) -> RunResult:
        started = time.perf_counter()
        self._start_producer()
        for slot in range(slot_count(self.scenario)):
            self._start_process(slot)
        self._schedule_faults()
        safety_end = self.scenario.duration_ms / 1000
        deadline = safety_end + self.scenario.liveness_budget_ms / 1000
        self._at(safety_end, self._heal)
        while not (self.oracle.violations or self._done()):
            heap_at = self._heap[0][0] if self._heap else math.inf
            best: SimLoop | None = None
            best_at = math.inf
            for process in self.processes.values():
                if not process.alive:
                    continue
                due = process.loop.next_due()
                if due is not None:
                    due = max(due, process.blocked_until)
                    if due < best_at:
                        best, best_at = process.loop, due
            store_due = self._store_due()
            if store_due is not None and store_due <= best_at:
                best, best_at = self.store_loop, store_due
            at = min(heap_at, best_at)
            if at > deadline or at == math.inf:
                break
            self.now = max(self.now, at)
            self._events += 1
            if heap_at <= best_at:
                heapq.heappop(self._heap)[2]()
            elif best is self.store_loop:
                self._step_store()
            else:
                assert best is not None
                best.step()
        try:
            self.backend.check()
        except AssertionError as exc:
            self.oracle.violations.append(f"store check at the end: {exc}")
        result = self._result(time.perf_counter() - started)
        self._dispose()
        return result

    def _dispose(self) -> None:
        """Throw the processes away without running their code again.

        The run is over: like kill -9 on everything, no task gets to run its ``finally``
        blocks on a live loop. Closing the suspended coroutines of closed loops makes Python
        report each one as unraisable, which is expected here and silenced.
        """
        loops = [self.store_loop, *(process.loop for process in self.processes.values())]
        if self.server_loop is not None:
            loops.append(self.server_loop)
        hook = sys.unraisablehook
        sys.unraisablehook = lambda _: None
        try:
            for loop in loops:
                loop.set_exception_handler(lambda _loop, _context: None)
                tasks = asyncio.all_tasks(loop)
                loop.close()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        task.get_coro().close()
            gc.collect()
        finally:
            sys.unraisablehook = hook

    def _result(self, wall: float) -> RunResult:
        oracle = self.oracle
        if not oracle.violations and not oracle.has_unfinished:
            self.scheduler_oracle.at_end()
            if oracle.flows is not None:
                oracle.flows.at_end(oracle.state_of)
        self.record("world", "end", "", f"events={self._events}")
        lost = oracle.unfinished()
        violations = list(oracle.violations)
        if lost and not violations:
            violations.append(
                f"liveness: {len(lost)} job(s) not completed or failed within the "
                f"{self.scenario.liveness_budget_ms} ms budget after healing: "
                + ", ".join(sorted(lost, key=_id_order)[:20])
            )
        undone = sorted(self._label(slot) for slot, op in self._operators.items() if not op.done)
        if undone and not violations:
            violations.append(f"liveness: operator {', '.join(undone)} did not obliterate")
        # An operator's final obliterate deletes every job: count each as it ended.
        states = [track.final_state for track in oracle.jobs.values()]
        executions = sum(track.executions for track in oracle.jobs.values())
        executed_jobs = sum(1 for track in oracle.jobs.values() if track.executions)
        digest = hashlib.sha256()
        for event in self.trace:
            digest.update(event.line().encode())
            digest.update(b"\n")
        return RunResult(
            scenario=self.scenario.name,
            seed=self.seed,
            jobs=len(oracle.jobs) + oracle.lost_to_store_restart,
            completed=states.count(JobState.COMPLETED),
            failed=states.count(JobState.FAILED),
            lost=len(lost),
            lost_to_store_restart=oracle.lost_to_store_restart,
            duplicate_completions=oracle.duplicate_completions,
            zombie_commits=oracle.zombie_commits,
            executions=executions,
            re_executions=executions - executed_jobs,
            reruns=oracle.reruns,
            finishes_repeated=oracle.finishes_repeated,
            removed_by_operator=oracle.removed_by_operator,
            removed_unfinished=oracle.removed_unfinished,
            stalls_recovered=oracle.stalls_recovered,
            virtual_seconds=self.now,
            wall_seconds=wall,
            events=self._events,
            trace_hash=digest.hexdigest()[:16],
            violations=violations,
            faults=list(self.faults),
            enabled_kinds=sorted(self.enabled_kinds),
            coverage={goal: oracle.coverage[goal] for goal in COVERAGE_GOALS},
            planted=sorted(self.plant),
            backend=self.backend_name,
            duration_ms=self.scenario.duration_ms,
            liveness_budget_ms=self.scenario.liveness_budget_ms,
            trace=self.trace,
        )


_READ_ONLY = frozenset(
    {
        "get_job",
        "get_state",
        "get_counts",
        "get_job_ids",
        "get_lock",
        "is_marked_stalled",
        "get_events",
        "is_paused",
        "wait_for_work",
        "last_event_id",
        "wait_for_events",
        "get_rate_limit_ttl",
        "get_queue_meta",
        "get_job_scheduler",
        "get_job_schedulers",
        "get_job_schedulers_count",
        "get_job_logs",
        "get_counts_per_priority",
        "get_workers",
    }
)


def _fakeredis_store() -> type[FakeRedisStore]:
    try:
        from corral.sim.fakeredis_store import FakeRedisStore
    except ImportError as exc:
        raise RuntimeError(
            f"the fakeredis backend needs the redis and fakeredis[lua] packages ({exc}); "
            "install corral's development extra: pip install 'corral[dev]'"
        ) from exc
    return FakeRedisStore


def _time_out(future: asyncio.Future[Any], op: str, process: str) -> None:
    if not future.done():
        future.set_exception(SimulatedConnectionError(f"{op} from {process}: no reply (timeout)"))


def _id_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)


def run(
    scenario: Scenario,
    seed: int,
    *,
    faults: tuple[Fault, ...] | None = None,
    plant: frozenset[str] = frozenset(),
    backend: str = "memory",
) -> RunResult:
    """Simulate ``scenario`` with ``seed`` on ``backend`` and return the result."""
    return World(scenario, seed, faults=faults, plant=plant, backend=backend).run()


__all__ = [
    "BACKENDS",
    "QUEUE",
    "Process",
    "RunResult",
    "SimulatedJobError",
    "TraceEvent",
    "World",
    "run",
]


@contextlib.contextmanager
def _quiet_loop_warnings() -> Iterator[None]:
    """Silence the workers' blocked-loop warnings during a run: blocking loops is what the
    simulator does on purpose, and the trace records each one (``loop-blocked``)."""
    logger = logging.getLogger("corral.worker")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(saved)
