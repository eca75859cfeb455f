"""Scenarios and faults as data, the swarm generator, and the standard set.

A :class:`Scenario` says who runs (worker processes and their settings), what work arrives (jobs,
their options, how long processing takes, how often it blocks the loop or raises), how long the
safety phase lasts, how long liveness may take, and which faults happen: either an explicit
timeline of :class:`Fault` records or a :class:`FaultMix` from which each seed draws its own
subset of fault kinds and rates (swarm testing, as in FoundationDB's BUGGIFY and TigerBeetle's
VOPR). Everything is plain frozen data so that a run is a pure function of (scenario, seed).
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from typing import Final

from corral.sim.loop import DEFAULT_EPOCH_MS

#: Fault kinds a swarm may draw. ``store-restart`` (data loss) is never drawn unless asked for.
FAULT_KINDS: Final = {
    "crash": "the worker process dies (kill -9) and a new one starts after a pause",
    "block": "the event loop is blocked by CPU work; overdue timers fire late",
    "gc": "a short stop-the-world pause",
    "partition": "requests between the process and the store are dropped",
    "asymmetric": "requests reach the store but replies are lost",
    "latency": "network latency spikes",
    "shutdown": "the worker is closed with force (jobs requeued) and restarted",
    "skew": "the process's wall clock is offset and drifts",
    "store-restart": "the store restarts without persistence (opt-in: loses data)",
    "finish-lost": "each finish's request or reply is lost (a store outage seen by finishes)",
}
#: The faults that last a window of time on one process's link to the store (the others
#: strike at an instant).
WINDOW_FAULTS: Final = ("partition", "asymmetric", "latency", "finish-lost")

DEFAULT_SWARM_KINDS: Final = (
    "crash",
    "block",
    "gc",
    "partition",
    "asymmetric",
    "latency",
    "shutdown",
    "skew",
)


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault on the timeline.

    Attributes:
        kind: one of :data:`FAULT_KINDS`.
        target: the process slot (``"w3"``: whichever worker process occupies slot 3 then;
            ``"c0"``: the standalone checker process of slot 0; ``"o0"``: the operator of
            slot 0), or ``"store"``.
        at_ms: start, in virtual ms from the start of the run.
        duration_ms: how long it lasts (for crash and shutdown: the pause before the
            replacement process starts).
        amount: kind-specific size (extra latency in ms for ``latency``).
    """

    kind: str
    target: str
    at_ms: int
    duration_ms: int
    amount: float = 0.0

    def describe(self) -> str:
        """One line, as printed in summaries and shrink results."""
        extra = f" +{self.amount:.0f}ms" if self.kind == "latency" else ""
        return f"{self.kind}@{self.target} t={self.at_ms}ms for {self.duration_ms}ms{extra}"


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """The settings every worker process of a scenario runs with."""

    concurrency: int = 2
    lock_duration: int = 30_000
    lock_renew_time: int | None = None
    stalled_interval: int = 30_000
    max_stalled_count: int = 1
    drain_delay: int = 5_000
    skip_stalled_check: bool = False
    #: The worker ``limiter`` ``(max, duration ms)``, or None.
    limiter: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """The jobs a producer adds: ``count`` jobs spread evenly over ``arrival_ms``."""

    count: int = 500
    arrival_ms: int = 120_000
    attempts: int = 3
    backoff_ms: int = 1_000
    priority_fraction: float = 0.2
    delayed_fraction: float = 0.1
    max_delay_ms: int = 30_000


@dataclasses.dataclass(frozen=True)
class WorkShape:
    """How simulated processors behave: uniform durations, some loop blocks, some errors."""

    min_ms: int = 50
    max_ms: int = 5_000
    block_probability: float = 0.0
    block_min_ms: int = 1_000
    block_max_ms: int = 60_000
    error_probability: float = 0.05


@dataclasses.dataclass(frozen=True)
class DedupSpec:
    """Deduplicated adds: a ``fraction`` of the jobs carry one of ``ids`` dedup ids, each id
    with one mode by its number: simple, debounce (``replace`` with a ``delay_ms`` delay) or
    ``keep_last_if_active``."""

    ids: int = 12
    fraction: float = 0.8
    delay_ms: int = 3_000

    def option(self, k: int) -> tuple[dict[str, object], int]:
        """The ``deduplication`` option of dedup id number ``k``, and the add's delay."""
        mode = k % 3
        if mode == 0:
            return {"id": f"s{k}"}, 0
        if mode == 1:
            return {"id": f"b{k}", "replace": True}, self.delay_ms
        return {"id": f"k{k}", "keep_last_if_active": True}, 0


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """Flows the producer adds instead of single jobs (see :mod:`corral.sim.flow_trees`):
    ``count`` trees spread over the arrival window, each node in one of ``queues`` (the first
    is the world's own queue), a root with 1 to ``max_fan_out`` children, nodes at most
    ``max_depth`` levels below the root, a node below the root having children of its own with
    probability ``nested_fraction`` (1 to ``inner_fan_out`` of them). Each child carries one of
    the parent options (or none), drawn evenly from ``options``."""

    count: int = 30
    queues: tuple[str, ...] = ("sim", "sim-b", "sim-c")
    max_fan_out: int = 20
    max_depth: int = 3
    nested_fraction: float = 0.3
    inner_fan_out: int = 4
    options: tuple[str, ...] = (
        "",
        "fail_parent_on_failure",
        "continue_parent_on_failure",
        "ignore_dependency_on_failure",
        "remove_dependency_on_failure",
    )


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    """A job scheduler the producer upserts when the run starts: ``every`` ms, or the cron
    ``pattern`` in zone ``tz``; at most ``limit`` iterations; ``end_ms``: its end date, in
    virtual ms from the start of the run; ``offset``: the phase of an ``every`` schedule
    (BullMQ stores and ignores it for a pattern); ``immediately``: a pattern's first run is
    at the upsert."""

    scheduler_id: str
    every: int | None = None
    limit: int | None = None
    end_ms: int | None = None
    attempts: int = 3
    pattern: str | None = None
    tz: str | None = None
    offset: int | None = None
    immediately: bool = False

    def repeat(self, epoch_ms: int) -> dict[str, object]:
        """The ``repeat`` options of ``Queue.upsert_job_scheduler`` for a run that starts at
        ``epoch_ms``."""
        fields: dict[str, object] = {
            "every": self.every,
            "pattern": self.pattern,
            "tz": self.tz,
            "limit": self.limit,
            "end_date": None if self.end_ms is None else epoch_ms + self.end_ms,
            "offset": self.offset,
        }
        repeat = {name: value for name, value in fields.items() if value is not None}
        if self.immediately:
            repeat["immediately"] = True
        return repeat


def _epoch_ms(iso: str) -> int:
    return int(datetime.datetime.fromisoformat(iso).timestamp() * 1000)


@dataclasses.dataclass(frozen=True)
class CronDraw:
    """Cron pattern schedulers each seed draws (``count`` of them), and the run's start.

    Each draws a seconds-field pattern (iterations are due every few virtual seconds), a zone,
    a ``limit`` and/or an end date (so that it stops within the run), sometimes ``immediately``
    and an ``offset`` (which a pattern ignores). The run starts at one of ``starts``: the
    simulator's usual epoch, or two minutes before a daylight-saving change of the zone paired
    with it, which the first drawn scheduler then uses: its times cross the change (the
    repeated hour of a fall-back and the skipped one of a spring-forward).
    """

    count: int = 2
    patterns: tuple[str, ...] = (
        "*/2 * * * * *",
        "0/3 * * * * *",
        "1-59/4 * * * * *",
        "*/5 */2 * * * *",
        "*/7 * * * * *",
    )
    zones: tuple[str, ...] = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata")
    starts: tuple[tuple[int, str | None], ...] = (
        (DEFAULT_EPOCH_MS, None),
        (_epoch_ms("2026-03-08T06:58:00+00:00"), "America/New_York"),  # 02:00 EST -> 03:00 EDT
        (_epoch_ms("2026-11-01T05:58:00+00:00"), "America/New_York"),  # 02:00 EDT -> 01:00 EST
        (_epoch_ms("2026-10-25T00:58:00+00:00"), "Europe/Paris"),  # 03:00 CEST -> 02:00 CET
    )

    def draw(self, rng: random.Random) -> tuple[int, tuple[SchedulerSpec, ...]]:
        """The run's start (epoch ms) and the drawn schedulers (ids ``cron0``, ``cron1``, ...)."""
        start, dst_zone = rng.choice(self.starts)
        specs = []
        for n in range(self.count):
            tz = dst_zone if n == 0 and dst_zone is not None else rng.choice(self.zones)
            limit = rng.randint(5, 60) if rng.random() < 0.7 else None
            end_ms = rng.randint(60_000, 240_000) if limit is None or rng.random() < 0.3 else None
            specs.append(
                SchedulerSpec(
                    f"cron{n}",
                    pattern=rng.choice(self.patterns),
                    tz=tz,
                    limit=limit,
                    end_ms=end_ms,
                    offset=rng.choice((None, None, 1_500)),
                    immediately=rng.random() < 0.3,
                )
            )
        return start, tuple(specs)


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    """How an operator behaves.

    Attributes:
        mean_gap_ms: the mean time between two actions (exponentially distributed).
        drain_weight: the relative frequency of ``drain`` (it deletes everything not yet
            started, so it is rare).
        pause_max_ms: the longest a pause lasts before the operator resumes the queue.
    """

    mean_gap_ms: int = 20_000
    drain_weight: float = 0.2
    pause_max_ms: int = 20_000


@dataclasses.dataclass(frozen=True)
class FaultMix:
    """A swarm: each seed enables a random non-empty subset of ``kinds`` at random rates."""

    kinds: tuple[str, ...] = DEFAULT_SWARM_KINDS
    faults_per_minute: float = 3.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A complete description of one simulated deployment and its faults."""

    name: str
    description: str
    workers: int = 8
    checkers: int = 0  # standalone StalledChecker processes (slots c0, c1, ...)
    operators: int = 0  # operator processes acting on the queue (slots o0, ...; sim/operator.py)
    operator: OperatorSettings = OperatorSettings()
    settings: WorkerSettings = WorkerSettings()
    jobs: JobSpec = JobSpec()
    work: WorkShape = WorkShape()
    duration_ms: int = 600_000
    liveness_budget_ms: int = 900_000
    mix: FaultMix | None = FaultMix()
    timeline: tuple[Fault, ...] = ()
    latency_ms: tuple[float, float] = (0.2, 2.0)
    command_timeout_ms: int = 10_000
    #: The faults cannot take a lock away (no crash, every outage shorter than the lock): a
    #: processor running again on an attempt, or a stall recovery, is then a violation.
    expect_no_reruns: bool = False
    #: Job schedulers the producer upserts at the start (their iterations are jobs too).
    schedulers: tuple[SchedulerSpec, ...] = ()
    #: Cron schedulers each seed draws besides, and its start (None: none, the usual epoch).
    cron: CronDraw | None = None
    #: Deduplicated adds (None: no job carries a dedup id).
    dedup: DedupSpec | None = None
    #: The queue's global concurrency, set before the first job is added (None: unset).
    global_concurrency: int | None = None
    #: Flows added instead of single jobs (None: no flows); workers serve its queues in turn.
    flows: FlowSpec | None = None

    def with_changes(self, **changes: object) -> Scenario:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _duration(kind: str, settings: WorkerSettings, rng: random.Random) -> tuple[int, float]:
    lock = settings.lock_duration
    if kind == "crash":
        return rng.randint(1_000, 120_000), 0.0
    if kind == "block":
        return rng.randint(1_000, 3 * lock), 0.0
    if kind == "gc":
        return rng.randint(50, 2_000), 0.0
    if kind in ("partition", "asymmetric"):
        return rng.randint(1_000, 2 * lock), 0.0
    if kind == "latency":
        return rng.randint(1_000, 60_000), float(rng.randint(50, 5_000))
    if kind == "shutdown":
        return rng.randint(0, 30_000), 0.0
    if kind == "store-restart":
        return 0, 0.0
    if kind == "finish-lost":
        # Up to a quarter of the lock: the finish is sent at least half a lock after the last
        # renewal, and its retries (one command timeout each) must land within the lock.
        return rng.randint(500, lock // 4), 0.0
    raise ValueError(f"unknown fault kind {kind!r}")


def draw_faults(scenario: Scenario, rng: random.Random) -> tuple[tuple[Fault, ...], set[str]]:
    """Draw a seed's fault timeline from the scenario's mix (or return its explicit timeline).

    Returns:
        The faults in time order, and the set of enabled kinds (``skew`` has no timeline
        entries: it changes the clocks of the processes instead).
    """
    if scenario.mix is None:
        kinds = {fault.kind for fault in scenario.timeline}
        return scenario.timeline, kinds
    pool = list(scenario.mix.kinds)
    enabled = set(rng.sample(pool, rng.randint(1, len(pool))))
    timed = sorted(kind for kind in enabled if kind != "skew")
    faults: list[Fault] = []
    minutes = scenario.duration_ms / 60_000
    for kind in timed:
        rate = scenario.mix.faults_per_minute / max(1, len(timed)) * rng.uniform(0.3, 2.0)
        count = _poisson(rate * minutes, rng)
        for _ in range(count):
            at = rng.randint(0, scenario.duration_ms - 1)
            target = "store" if kind == "store-restart" else _random_process(scenario, rng)
            duration, amount = _duration(kind, scenario.settings, rng)
            faults.append(Fault(kind, target, at, duration, amount))
    faults.sort(key=lambda f: (f.at_ms, f.kind, f.target))
    return tuple(faults), enabled


def _random_process(scenario: Scenario, rng: random.Random) -> str:
    return slot_label(scenario, rng.randrange(slot_count(scenario)))


def slot_count(scenario: Scenario) -> int:
    """How many process slots a scenario has: workers, then checkers, then operators."""
    return scenario.workers + scenario.checkers + scenario.operators


def slot_label(scenario: Scenario, slot: int) -> str:
    """Worker slots are w0, w1, ...; the standalone checkers' slots after them c0, c1, ...;
    the operators' after those o0, o1, ..."""
    if slot < scenario.workers:
        return f"w{slot}"
    if slot < scenario.workers + scenario.checkers:
        return f"c{slot - scenario.workers}"
    return f"o{slot - scenario.workers - scenario.checkers}"


def slot_of(scenario: Scenario, label: str) -> int:
    """The slot a label names (the inverse of :func:`slot_label`)."""
    index = int(label[1:])
    offset = {"w": 0, "c": scenario.workers, "o": scenario.workers + scenario.checkers}
    return offset[label[0]] + index


def _poisson(mean: float, rng: random.Random) -> int:
    # Knuth's method; the means here are small (tens at most).
    limit, count, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


STANDARD: Final = Scenario(
    name="standard",
    description=(
        "8 workers and an operator (retry, promote, change priority and delay, clean, drain, "
        "remove, pause; obliterate at the end), 500 jobs arriving over 9 minutes, 10 virtual "
        "minutes of swarm faults"
    ),
    jobs=JobSpec(count=500, arrival_ms=540_000),
    operators=1,
)

STALL_RECIPES: Final = Scenario(
    name="stall-recipes",
    description=(
        "the classic causes of stalls from the BullMQ issue tracker: CPU-bound processors that "
        "block the loop longer than lock_duration, crashed workers, lost connections"
    ),
    workers=4,
    settings=WorkerSettings(lock_duration=10_000, stalled_interval=10_000),
    jobs=JobSpec(count=200, arrival_ms=60_000),
    work=WorkShape(block_probability=0.1, block_min_ms=2_000, block_max_ms=30_000),
    mix=FaultMix(kinds=("crash", "block", "partition", "asymmetric"), faults_per_minute=4.0),
)

ZERO_STALLS: Final = Scenario(
    name="max-stalled-0",
    description="max_stalled_count=0: the first stall fails a job",
    workers=4,
    settings=WorkerSettings(lock_duration=5_000, stalled_interval=5_000, max_stalled_count=0),
    jobs=JobSpec(count=200, arrival_ms=60_000),
    work=WorkShape(block_probability=0.05, block_min_ms=2_000, block_max_ms=20_000),
    mix=FaultMix(kinds=("crash", "block", "asymmetric", "shutdown"), faults_per_minute=4.0),
)

CALM: Final = Scenario(
    name="calm",
    description="no faults at all: every job completes once, nothing stalls",
    workers=4,
    jobs=JobSpec(count=200, arrival_ms=30_000),
    work=WorkShape(error_probability=0.0),
    duration_ms=120_000,
    mix=None,
)

CHECKER_ONLY: Final = Scenario(
    name="checker-only",
    description=(
        "workers that run no stalled checks of their own, and one standalone StalledChecker "
        "process: it alone recovers what crashed workers leave behind (and crashes too)"
    ),
    workers=4,
    checkers=1,
    settings=WorkerSettings(lock_duration=10_000, stalled_interval=10_000, skip_stalled_check=True),
    jobs=JobSpec(count=200, arrival_ms=240_000),
    mix=FaultMix(kinds=("crash", "block", "partition", "shutdown"), faults_per_minute=3.0),
)

LOST_FINISHES: Final = Scenario(
    name="lost-finishes",
    description=(
        "finishes whose request or reply is lost for less than a lock's time, nothing else: "
        "a worker sends its finish again, so no processor runs twice and nothing stalls"
    ),
    workers=2,
    # Faster than 4 slots take them: finishes find the next job waiting and fetch it.
    jobs=JobSpec(count=300, arrival_ms=60_000),
    work=WorkShape(min_ms=50, max_ms=2_000),
    duration_ms=120_000,
    mix=FaultMix(kinds=("finish-lost",), faults_per_minute=6.0),
    command_timeout_ms=2_000,
    expect_no_reruns=True,
)

DEDUP: Final = Scenario(
    name="dedup",
    description=(
        "producers adding jobs with dedup ids (simple, debounce, keep_last_if_active) under "
        "swarm faults: one live job per id, debounce keeps the last data, at most one active "
        "and one parked job per keep_last_if_active id"
    ),
    workers=4,
    settings=WorkerSettings(lock_duration=10_000, stalled_interval=10_000),
    jobs=JobSpec(count=300, arrival_ms=120_000, delayed_fraction=0.0),
    duration_ms=180_000,
    dedup=DedupSpec(),
)

RATE_LIMIT: Final = Scenario(
    name="rate-limit",
    description=(
        "4 workers of concurrency 4 sharing a limiter of 5 jobs per second, under swarm faults: "
        "no fixed window by the store's clock holds more than 5 starts, and the queue drains"
    ),
    workers=4,
    settings=WorkerSettings(concurrency=4, limiter=(5, 1_000)),
    jobs=JobSpec(count=200, arrival_ms=20_000),
    work=WorkShape(min_ms=20, max_ms=500),
    duration_ms=120_000,
)

GLOBAL_CONCURRENCY: Final = Scenario(
    name="global-concurrency",
    description=(
        "4 workers of concurrency 3 under a global concurrency of 3, under swarm faults: never "
        "more than 3 jobs active at once, and the queue drains"
    ),
    workers=4,
    settings=WorkerSettings(concurrency=3, drain_delay=1_000),
    jobs=JobSpec(count=150, arrival_ms=20_000),
    work=WorkShape(min_ms=20, max_ms=1_000),
    duration_ms=120_000,
    global_concurrency=3,
)

SCHEDULERS: Final = Scenario(
    name="scheduler",
    description=(
        "job schedulers (every ms, one with an offset, and cron patterns drawn per seed in "
        "several zones, some seeds starting just before a daylight-saving change) under "
        "crashes, blocks, partitions, lost replies and clock skew: each due iteration is made "
        "exactly once, by whichever worker activates the one before"
    ),
    workers=4,
    settings=WorkerSettings(lock_duration=10_000, stalled_interval=10_000),
    jobs=JobSpec(count=40, arrival_ms=120_000),
    work=WorkShape(min_ms=50, max_ms=3_000),
    duration_ms=300_000,
    liveness_budget_ms=600_000,
    schedulers=(
        SchedulerSpec("tick", every=5_000, limit=40),
        SchedulerSpec("slow", every=17_000, limit=12, offset=4_000),
        SchedulerSpec("until", every=7_000, end_ms=200_000),
    ),
    cron=CronDraw(),
    mix=FaultMix(
        kinds=("crash", "block", "gc", "partition", "asymmetric", "shutdown", "skew"),
        faults_per_minute=4.0,
    ),
)

FLOWS: Final = Scenario(
    name="flows",
    description=(
        "trees of jobs across 3 queues (depth up to 3, fan-out up to 20, every parent option) "
        "under crashes, blocks, partitions, lost replies and clock skew: each parent leaves "
        "waiting-children once, when its children are done, with every child's result; a "
        "fail_parent_on_failure child failing fails its parent; no parent is left waiting"
    ),
    workers=6,
    settings=WorkerSettings(lock_duration=10_000, stalled_interval=10_000),
    # (jobs.count is unused: the flows are counted by FlowSpec.count)
    jobs=JobSpec(count=30, arrival_ms=150_000, attempts=2),
    work=WorkShape(min_ms=50, max_ms=2_000, error_probability=0.15),
    duration_ms=240_000,
    liveness_budget_ms=900_000,
    flows=FlowSpec(),
)

SCENARIOS: Final = {
    s.name: s
    for s in (
        STANDARD,
        STALL_RECIPES,
        ZERO_STALLS,
        CALM,
        CHECKER_ONLY,
        LOST_FINISHES,
        DEDUP,
        RATE_LIMIT,
        GLOBAL_CONCURRENCY,
        SCHEDULERS,
        FLOWS,
    )
}
