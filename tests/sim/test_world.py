"""The simulated world: determinism, and hand-written fault timelines with exact virtual times.

The hand-written scenarios use a constant one-way network latency ``D`` (``latency_ms=(D, D)``),
one job of a fixed duration, two workers with ``concurrency=1`` and no swarm. Every expected time
below is derived from the rules, not read off a run:

* The producer's add, then w0's first stalled check, then w0's fetch all reach the store at ``D``
  (ties go in process order). That check runs before the job is active, so it marks nothing; w0
  holds the lock from ``D`` to ``D + L``. w1's first check, also at ``D``, is throttled.
* A worker's n-th stalled check reaches the store at ``n·S + (2n+1)·D`` (it sleeps ``S`` after
  each reply). From ``S + 3D`` on, w1's checks run whenever w0 is blocked, dead or cut off.
* The renewal timer ticks at every multiple of ``TICK`` = ``R/2`` (R = ``lock_renew_time`` = L/2),
  whatever becomes of the renewals: each tick sends its ``extend_locks`` call on its own task and
  never waits for an earlier call's reply. A tick renews the runs whose last renewal was *sent*
  (or which started) at least ``TICK`` ago: w0's run, started at ``2D``, is first due at tick 2
  and then at every tick, reaching the store at ``k·TICK + D``. A run is no longer renewed once
  its finish is sent (even while that call is in flight) or once a renewal found its lock lost.
* A job recovered at the store at ``t`` wakes w1's wait at once: reply at ``t + D``, fetch at the
  store at ``t + 2D``, processor starts at ``t + 3D``, and its finish lands ``WORK + D`` later.
* Every run lasts until the heal at ``DURATION`` (the simulator always reaches its liveness
  phase), so the stalled checks go on after the job completed: the last one before the heal is
  the ``LAST_CHECK``-th.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.sim.network import SimulatedConnectionError
from corral.sim.scenario import (
    SCENARIOS,
    Fault,
    JobSpec,
    Scenario,
    WorkerSettings,
    WorkShape,
)
from corral.sim.world import QUEUE, RunResult, TraceEvent, World, run

D = 1.0  # one-way network latency, ms
L = 10_000  # lock_duration
S = 5_000  # stalled_interval
TICK = L // 2 // 2  # renewal timer period: lock_renew_time / 2
WORK = 8_000  # processing time of the job
T0 = 2_000  # when the fault hits w0
DURATION = 60_000  # the safety phase: the heal comes at DURATION, and the run ends there
SEED = 1


BLOCKED_FOR = "after the event loop was blocked for"  # appended to a lost lock's error


def check_at(n: int) -> float:
    """When a worker's n-th stalled check reaches the store (its 0th is at ``D``)."""
    return n * S + (2 * n + 1) * D


LAST_CHECK = 11  # check_at(11) < DURATION < check_at(12)


def hand(*timeline: Fault, work_ms: int = WORK, command_timeout_ms: int = 10_000) -> Scenario:
    """Two workers, one job of ``work_ms``, constant latency and an explicit fault timeline."""
    return Scenario(
        name="hand",
        description="hand-written timeline",
        workers=2,
        settings=WorkerSettings(concurrency=1, lock_duration=L, stalled_interval=S),
        jobs=JobSpec(count=1, arrival_ms=0, attempts=1, priority_fraction=0, delayed_fraction=0),
        work=WorkShape(min_ms=work_ms, max_ms=work_ms, error_probability=0, block_probability=0),
        duration_ms=DURATION,
        liveness_budget_ms=60_000,
        mix=None,
        timeline=timeline,
        latency_ms=(D, D),
        command_timeout_ms=command_timeout_ms,
    )


class RecordingWorld(World):
    """A world that also keeps the connection errors the workers saw (the trace omits them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_errors: list[tuple[float, str, BaseException]] = []

    def _worker_error(self, name: str, error: BaseException, job: Any) -> None:
        self.worker_errors.append((self.now * 1000, name, error))
        super()._worker_error(name, error, job)


def simulate(scenario: Scenario) -> tuple[RecordingWorld, RunResult]:
    world = RecordingWorld(scenario, SEED)
    result = world.run()
    assert result.violations == [], result.violations
    assert result.ok
    return world, result


def find(result: RunResult, kind: str, *, process: str = "", has: str = "") -> list[TraceEvent]:
    return [
        e
        for e in result.trace
        if e.kind == kind and (not process or e.process == process) and has in e.detail
    ]


def times(events: list[TraceEvent]) -> list[float]:
    return [e.t_ms for e in events]


def at(expected: float) -> Any:
    """A virtual time in ms; the tolerance only absorbs float noise, not latency."""
    return pytest.approx(expected, abs=1e-3)


def ats(*expected: float) -> list[Any]:
    return [at(t) for t in expected]


def check_times(result: RunResult) -> list[tuple[str, float]]:
    return [(e.process, e.t_ms) for e in find(result, "stall-check")]


def errors_of(world: RecordingWorld, name: str) -> list[tuple[float, str]]:
    """The errors ``name`` saw as (ms, message), by time, then message (for the same instant)."""
    return sorted((round(t, 3), str(e)) for t, who, e in world.worker_errors if who == name)


def stc(world: World) -> str | None:
    fields = world.backend.job_fields(QUEUE, "1")
    assert fields is not None
    return fields.get("stc")


# ---------------------------------------------------------------------------- determinism


@pytest.fixture(scope="module")
def standard_seed_3() -> RunResult:
    return run(SCENARIOS["standard"], 3)


def test_same_seed_twice_gives_the_same_trace(standard_seed_3: RunResult) -> None:
    again = run(SCENARIOS["standard"], 3)
    assert again.trace_hash == standard_seed_3.trace_hash
    assert [e.line() for e in again.trace] == [e.line() for e in standard_seed_3.trace]
    first, second = standard_seed_3.to_json(), again.to_json()
    first.pop("wall_seconds")
    second.pop("wall_seconds")
    assert first == second
    assert len(standard_seed_3.faults) > 0  # the seed really exercises faults


def test_different_seeds_give_different_traces(standard_seed_3: RunResult) -> None:
    assert run(SCENARIOS["standard"], 4).trace_hash != standard_seed_3.trace_hash


def test_hash_does_not_depend_on_the_interpreter_hash_seed(
    standard_seed_3: RunResult, tmp_path: Path
) -> None:
    code = (
        "from corral.sim.scenario import SCENARIOS\n"
        "from corral.sim.world import run\n"
        "print(run(SCENARIOS['standard'], 3).trace_hash)\n"
    )
    # Not from the repository root: its corral/ folder would shadow the installed package.
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "123"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == standard_seed_3.trace_hash


def test_hand_written_scenario_is_deterministic() -> None:
    scenario = hand(Fault("block", "w0", T0, 12_000))
    assert run(scenario, SEED).trace_hash == run(scenario, SEED).trace_hash


# ---------------------------------------------------------------------------- hand-written


def test_crash_of_the_owner_recovers_the_job_at_the_expected_check() -> None:
    world, result = simulate(hand(Fault("crash", "w0", T0, 100_000)))
    assert times(find(result, "fetch", process="w0")) == ats(D)  # lock until D + L
    assert times(find(result, "crash", process="w0")) == ats(T0)
    # w1's check at S + 3D marks the job (lock live); the one at 2S + 5D finds it marked and
    # its lock (gone at D + L) expired. w1 goes on checking until the heal.
    assert check_at(LAST_CHECK) < DURATION < check_at(LAST_CHECK + 1)
    assert check_times(result) == [
        ("w0", at(D)),
        ("w1", at(S + 3 * D)),
        ("w1", at(2 * S + 5 * D)),
        ("w1", at(3 * S + 7 * D)),
    ] + [("w1", at(check_at(n))) for n in range(4, LAST_CHECK + 1)]
    recovered = find(result, "transition", has="recover_stalled")
    assert times(recovered) == ats(2 * S + 5 * D)
    assert D + L < 2 * S + 5 * D
    assert times(find(result, "stall-check", process="w1", has="recovered=1")) == ats(2 * S + 5 * D)
    assert times(find(result, "fetch", process="w1")) == ats(2 * S + 7 * D)
    completes = find(result, "transition", has="complete")
    assert times(completes) == ats(2 * S + 8 * D + WORK + D)
    assert find(result, "finish", process="w1", has="code=OK")[0].t_ms == at(18_009)
    assert stc(world) == "1"
    assert (result.completed, result.stalls_recovered, result.re_executions) == (1, 1, 1)
    assert result.duplicate_completions == 0
    assert result.coverage["stall_while_owner_alive"] == 0  # its owner was dead


def test_block_longer_than_the_lock_gets_the_late_finish_rejected() -> None:
    block = 12_000  # > L
    resume = T0 + block
    world, result = simulate(hand(Fault("block", "w0", T0, block)))
    assert times(find(result, "blocked", process="w0")) == ats(T0)
    # As after a crash: marked at S + 3D, recovered at 2S + 5D while w0 is alive but blocked.
    assert times(find(result, "transition", has="recover_stalled")) == ats(2 * S + 5 * D)
    assert times(find(result, "fetch", process="w1")) == ats(2 * S + 7 * D)
    assert resume > 2 * S + 7 * D
    # On resuming, w0's overdue timers fire in order: the renewal tick, the stalled check
    # (throttled by w1's), then the processor's sleep. The tick only starts its renewal on a
    # task of its own, which runs after the processor has sent its finish: the run is then no
    # longer renewed, so w0 sends no renewal at all, and learns of the lost lock from the
    # rejected finish alone (no "could not renew" besides it).
    assert find(result, "renew", process="w0") == []
    assert find(result, "renew-failed") == []
    late = find(result, "finish", process="w0")
    assert times(late) == ats(resume + D)
    assert "code=LOCK_MISMATCH" in late[0].detail
    # The worker's loop watch ticks every L/16 while the job runs (from 2D): the first tick the
    # block held back was due at 2D + 4·(L/16), and fired on resuming, before the finish.
    lag = T0 + block - (2 * D + 4 * (L // 16))
    blocked = find(result, "loop-blocked", process="w0")
    assert [(e.t_ms, e.job, e.detail) for e in blocked] == [(at(resume), "", f"{lag:.0f}ms jobs=1")]
    lost = f"Lock mismatch for job 1. Cmd moveToFinished from active, {BLOCKED_FOR} {lag:.0f} ms"
    errors = find(result, "error", process="w0")
    assert [(e.t_ms, e.detail) for e in errors] == [(at(resume + 2 * D), lost)]
    assert errors_of(world, "w0") == [(resume + 2 * D, lost)]
    assert find(result, "lock-lost") == []
    # w1's run starts at 2S + 8D, less than TICK before tick 5: it is renewed at ticks 6 and 7,
    # and finishes before tick 8.
    assert 5 * TICK - (2 * S + 8 * D) < TICK
    assert times(find(result, "renew", process="w1")) == ats(6 * TICK + D, 7 * TICK + D)
    assert times(find(result, "transition", has="complete")) == ats(2 * S + 8 * D + WORK + D)
    assert 7 * TICK < 2 * S + 8 * D + WORK < 8 * TICK
    assert (result.completed, result.executions, result.duplicate_completions) == (1, 2, 0)
    assert result.coverage["late_finish_rejected"] == 1
    assert result.coverage["stall_while_owner_alive"] == 1
    assert result.coverage["lock_renewal_failed"] == 0
    assert stc(world) == "1"


def test_block_shorter_than_the_lock_causes_no_stall() -> None:
    block = 5_000  # < L: the overdue renewal tick at T0 + block re-arms the lock in time
    _, result = simulate(hand(Fault("block", "w0", T0, block)))
    assert times(find(result, "renew", process="w0")) == ats(T0 + block + D)
    assert find(result, "transition", has="recover_stalled") == []
    # The sleep was due at 2D + WORK, after the block ended: the finish is on time.
    assert times(find(result, "finish", process="w0", has="code=OK")) == ats(2 * D + WORK + D)
    assert (result.completed, result.executions, result.stalls_recovered) == (1, 1, 0)


def test_asymmetric_partition_keeps_the_lock_alive() -> None:
    """Requests still arrive, only replies are lost: every renewal reaches the store and keeps
    the lock alive, so nothing stalls, and the owner's finish is applied although the owner
    never learns it. The owner only sees its calls time out."""
    timeout = 2_000  # < R/2: each renewal's call has timed out before the next tick
    work = 20_000
    window = 20_000  # > L, and the finish (at 2D + work) falls inside it
    world, result = simulate(
        hand(Fault("asymmetric", "w0", T0, window), work_ms=work, command_timeout_ms=timeout)
    )
    # Tick 2 is the first with a due lock; each renewal's reply is lost, which does not hold
    # the timer back: every tick renews, up to tick 8, before the finish is sent at 2D + work.
    assert 8 * TICK < 2 * D + work < 9 * TICK
    renewals = [k * TICK + D for k in range(2, 9)]
    assert times(find(result, "renew", process="w0")) == ats(*renewals)
    assert find(result, "renew-failed") == []
    assert times(find(result, "reply-lost", process="w0", has="extend_locks")) == ats(*renewals)
    # w0's check at S + 3D ran at the store too (reply lost); w1's later checks found the job's
    # lock alive (each renewal also clears its stalled mark). w0's own later checks land less
    # than S after one of w1's and are throttled.
    assert check_times(result) == [
        ("w0", at(D)),
        ("w0", at(S + 3 * D)),
    ] + [("w1", at(check_at(n))) for n in range(2, LAST_CHECK + 1)]
    assert find(result, "transition", has="recover_stalled") == []
    finish = find(result, "finish", process="w0")
    assert times(finish)[0] == at(2 * D + work + D)
    assert "code=OK" in finish[0].detail
    assert T0 < finish[0].t_ms < T0 + window
    assert times(find(result, "reply-lost", process="w0", has="finish")) == ats(2 * D + work + D)
    assert times(find(result, "transition", has="complete")) == ats(2 * D + work + D)
    # Its call timed out, so w0 sent the finish again after a back-off of 50 to 100 ms, once
    # the window had closed: the store answered it like the first and moved nothing.
    assert len(finish) == 2
    assert "code=OK" in finish[1].detail
    resent = finish[1].t_ms - (2 * D + work + timeout)
    assert 50 + D <= resent <= 100 + D
    assert result.finishes_repeated == 1
    assert (result.completed, result.executions, result.stalls_recovered) == (1, 1, 0)
    assert result.duplicate_completions == result.zombie_commits == 0
    assert find(result, "fetch", process="w1") == []
    assert find(result, "lock-lost") == []
    assert stc(world) is None
    # Every call w0 sent inside the window timed out: the renewals, its stalled checks (sent at
    # S + 2D, then S after each timeout) and the finish; nothing else went wrong.
    assert all(isinstance(e, SimulatedConnectionError) for _, _, e in world.worker_errors)
    expected = [(t - D + timeout, "extend_locks from w0: no reply (timeout)") for t in renewals]
    expected += [
        (n * S + 2 * D + n * timeout, "check_stalled from w0: no reply (timeout)")
        for n in (1, 2, 3)
    ]
    assert 3 * S + 2 * D + 2 * timeout < T0 + window < 4 * S + 2 * D + 3 * timeout
    expected.append((2 * D + work + timeout, "finish from w0: no reply (timeout)"))
    assert errors_of(world, "w0") == sorted(expected)


def test_asymmetric_partition_with_a_long_command_timeout_still_keeps_the_lock_alive() -> None:
    """The renewal timer does not wait for a renewal's reply: each tick sends its renewal on a
    task of its own. So with the default command timeout (10 s = L here, as in the stall-recipes
    scenario) the renewals whose replies are lost pile up in flight (the first times out only at
    tick 6), yet every tick still renews and the lock never lapses, exactly as with a short
    timeout. (While the timer awaited each reply, as BullMQ's lock extender awaits extendLocks,
    one lost reply held it for 10 s and the lock lapsed although every request reached the
    store.) The finish's reply is lost too, so that call stays in flight for 10 s: the run is not
    renewed meanwhile (its job is completed, a renewal could only fail), so w0 reports no
    renewal failure after its successful finish."""
    work, window, timeout = 20_000, 20_000, 10_000
    world, result = simulate(hand(Fault("asymmetric", "w0", T0, window), work_ms=work))
    assert 2 * TICK + timeout == 6 * TICK  # ticks 3 to 5 send while the first call still waits
    renewals = [k * TICK + D for k in range(2, 9)]  # the same as with a short timeout
    assert 8 * TICK < 2 * D + work < 9 * TICK
    assert times(find(result, "renew", process="w0")) == ats(*renewals)
    assert times(find(result, "reply-lost", process="w0", has="extend_locks")) == ats(*renewals)
    # The finish call is in flight from 2D + work to 2D + work + timeout: ticks 9 to 12 fall
    # inside it and send nothing.
    assert 2 * D + work < 9 * TICK < 12 * TICK < 2 * D + work + timeout
    assert find(result, "renew-failed") == []
    assert find(result, "lock-lost") == []
    assert find(result, "error", process="w0") == []
    # Each renewal clears the stalled mark w0's check at S + 3D set: w1's checks see the lock
    # alive; w0's later checks land less than S after one of w1's and are throttled.
    assert check_times(result) == [
        ("w0", at(D)),
        ("w0", at(S + 3 * D)),
    ] + [("w1", at(check_at(n))) for n in range(2, LAST_CHECK + 1)]
    assert find(result, "transition", has="recover_stalled") == []
    finish = find(result, "finish", process="w0")
    assert times(finish) == ats(2 * D + work + D)
    assert "code=OK" in finish[0].detail
    assert times(find(result, "reply-lost", process="w0", has="finish")) == ats(2 * D + work + D)
    assert times(find(result, "transition", has="complete")) == ats(2 * D + work + D)
    assert (result.completed, result.executions, result.stalls_recovered) == (1, 1, 0)
    assert result.duplicate_completions == result.zombie_commits == 0
    assert find(result, "fetch", process="w1") == []
    assert result.coverage["stall_while_owner_alive"] == 0
    assert result.coverage["lock_renewal_failed"] == 0
    assert stc(world) is None
    # w0 only sees its calls time out: the renewals, its checks sent at S + 2D and (S after the
    # first timeout) at 2S + 2D + timeout, and the finish.
    assert all(isinstance(e, SimulatedConnectionError) for _, _, e in world.worker_errors)
    expected = [(t - D + timeout, "extend_locks from w0: no reply (timeout)") for t in renewals]
    expected += [
        (S + 2 * D + timeout, "check_stalled from w0: no reply (timeout)"),
        (2 * S + 2 * D + 2 * timeout, "check_stalled from w0: no reply (timeout)"),
        (2 * D + work + timeout, "finish from w0: no reply (timeout)"),
    ]
    assert 2 * S + 2 * D + timeout < T0 + window < 3 * S + 2 * D + 2 * timeout
    assert errors_of(world, "w0") == sorted(expected)


def test_partition_longer_than_the_lock_gets_the_late_finish_rejected() -> None:
    """Requests are dropped: no renewal reaches the store, the lock expires and w1 recovers the
    job. The first renewal after the partition healed finds the lock taken, which w0 reports
    once; w0's processor ends after the partition healed and its finish is rejected."""
    partition = 12_000  # > L
    work = 15_000  # w0's processor ends at 2D + work, after the partition ends at T0 + partition
    timeout = 10_000  # the default command timeout
    world, result = simulate(hand(Fault("partition", "w0", T0, partition), work_ms=work))
    assert 2 * D + work > T0 + partition
    # The ticks do not wait for the dropped renewals: ticks 2 to 5 fall inside the partition.
    assert 5 * TICK < T0 + partition < 6 * TICK
    dropped = find(result, "dropped", process="w0")
    assert [(e.t_ms, e.detail) for e in dropped] == [
        (at(2 * TICK), "request extend_locks"),
        (at(S + 2 * D), "request check_stalled"),
        (at(3 * TICK), "request extend_locks"),
        (at(4 * TICK), "request extend_locks"),
        (at(5 * TICK), "request extend_locks"),
    ]
    assert find(result, "renew", process="w0") == []
    assert times(find(result, "transition", has="recover_stalled")) == ats(2 * S + 5 * D)
    assert times(find(result, "fetch", process="w1")) == ats(2 * S + 7 * D)
    # Tick 6 reaches the store after w1 took the job: the renewal fails. Its reply comes at
    # 6·TICK + 2D, the very instant w0's processor ends; the reply is handled first, so the
    # failure is reported (once) before the finish is sent, and the finish is rejected.
    assert times(find(result, "renew-failed", process="w0")) == ats(6 * TICK + D)
    assert 2 * D + work == 6 * TICK + 2 * D  # the processor ends as the reply arrives
    assert times(find(result, "lock-lost", process="w0")) == ats(6 * TICK + 2 * D)
    late = find(result, "finish", process="w0")
    assert times(late) == ats(2 * D + work + D)
    assert "code=LOCK_MISMATCH" in late[0].detail
    errors = find(result, "error", process="w0")
    assert [(e.t_ms, e.detail) for e in errors] == [
        (at(6 * TICK + 2 * D), "could not renew lock for job 1"),
        (at(2 * D + work + 2 * D), "Lock mismatch for job 1. Cmd moveToFinished from active"),
    ]
    assert times(find(result, "transition", has="complete")) == ats(2 * S + 8 * D + work + D)
    assert (result.completed, result.executions, result.duplicate_completions) == (1, 2, 0)
    assert result.coverage["late_finish_rejected"] == 1
    assert result.coverage["stall_while_owner_alive"] == 1
    assert result.coverage["lock_renewal_failed"] == 1
    assert stc(world) == "1"
    # Each dropped call timed out after the command timeout (10 s), the first at 2·TICK + 10 s.
    assert errors_of(world, "w0") == sorted(
        [(k * TICK + timeout, "extend_locks from w0: no reply (timeout)") for k in range(2, 6)]
        + [
            (S + 2 * D + timeout, "check_stalled from w0: no reply (timeout)"),
            (6 * TICK + 2 * D, "could not renew lock for job 1"),
            (2 * D + work + 2 * D, "Lock mismatch for job 1. Cmd moveToFinished from active"),
        ]
    )


def test_forced_shutdown_releases_the_job_at_once() -> None:
    world, result = simulate(hand(Fault("shutdown", "w0", T0, 100_000)))
    assert times(find(result, "shutdown", process="w0")) == ats(T0)
    release = find(result, "release", process="w0")
    assert times(release) == ats(T0 + D)
    assert "code=OK" in release[0].detail
    moved = find(result, "transition", has="release")
    assert [(e.t_ms, e.detail) for e in moved] == [(at(T0 + D), "release active->waiting")]
    assert times(find(result, "exited", process="w0")) == ats(T0 + 2 * D)
    # The release wakes w1's wait: its fetch lands 2D later, long before the lock
    # (D + L) would have expired, let alone before a stalled check could recover it.
    fetch = find(result, "fetch", process="w1")
    assert times(fetch) == ats(T0 + 3 * D)
    assert fetch[0].t_ms < D + L
    assert find(result, "transition", has="recover_stalled") == []
    assert times(find(result, "transition", has="complete")) == ats(T0 + 4 * D + WORK + D)
    assert (result.completed, result.executions, result.stalls_recovered) == (1, 2, 0)
    assert result.coverage["forced_close_requeue"] == 1
    assert stc(world) is None  # a release is not a stall
