"""Standalone StalledChecker processes in the simulator (issue 6): a checker is a process like
any other, and when the workers run no stalled checks of their own it alone recovers what a
crashed worker leaves behind."""

from __future__ import annotations

from corral.sim.campaign import run_seed
from corral.sim.scenario import SCENARIOS, Fault, JobSpec, Scenario, WorkerSettings, WorkShape

L = 10_000  # lock_duration
S = 5_000  # stalled_interval


def crash_of_the_owner(checkers: int, *more: Fault) -> Scenario:
    """Two workers that never check for stalls; w0 takes the one job and dies at 2 s."""
    return Scenario(
        name="checker-hand",
        description="a crash recovered by a standalone checker",
        workers=2,
        checkers=checkers,
        settings=WorkerSettings(
            concurrency=1, lock_duration=L, stalled_interval=S, skip_stalled_check=True
        ),
        jobs=JobSpec(count=1, arrival_ms=0, attempts=1, priority_fraction=0, delayed_fraction=0),
        work=WorkShape(min_ms=8_000, max_ms=8_000, error_probability=0, block_probability=0),
        duration_ms=60_000,
        liveness_budget_ms=60_000,
        mix=None,
        timeline=(Fault("crash", "w0", 2_000, 100_000), *more),
        latency_ms=(1.0, 1.0),
    )


def test_the_checker_alone_recovers_a_crashed_workers_job() -> None:
    result = run_seed(crash_of_the_owner(checkers=1), 1)
    assert result.ok, result.violations
    assert (result.completed, result.stalls_recovered, result.re_executions) == (1, 1, 1)
    checks = [e for e in result.trace if e.kind == "stall-check"]
    assert checks, "the checker ran no checks"
    assert {e.process for e in checks} == {"c0"}  # the workers run none
    recovering = [e for e in checks if "recovered=1" in e.detail]
    # The lock (taken at 1 ms) expires at 10 001; the checker's checks reach the store at
    # 5 003, 10 005, ...: the one at 10 005 finds it marked and unlocked.
    assert [e.t_ms for e in recovering] == [10_005.0]


def test_without_a_checker_nobody_recovers_it() -> None:
    """The same crash with no checker process: the job stays active with no lock until the
    liveness budget runs out, and the run reports it lost."""
    result = run_seed(crash_of_the_owner(checkers=0), 1)
    assert not result.ok
    assert result.lost == 1
    assert "liveness" in result.violations[0]


def test_a_crashed_checker_is_replaced_and_recovery_goes_on() -> None:
    scenario = crash_of_the_owner(1, Fault("crash", "c0", 3_000, 20_000))
    result = run_seed(scenario, 1)
    assert result.ok, result.violations
    starts = [e.process for e in result.trace if e.kind == "start"]
    assert "c0.1" in starts  # the replacement checker process
    recovering = [e for e in result.trace if e.kind == "stall-check" and "recovered=1" in e.detail]
    assert [e.process for e in recovering] == ["c0.1"]
    assert recovering[0].t_ms > 23_000  # only after the replacement started


def test_checker_only_scenario_campaign_holds_every_invariant() -> None:
    for seed in range(1, 6):
        result = run_seed(SCENARIOS["checker-only"], seed)
        assert result.ok, (seed, result.violations)
        assert result.jobs == result.completed + result.failed
