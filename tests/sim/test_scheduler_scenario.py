"""The ``scheduler`` scenario: job schedulers under crashes, blocks, partitions, lost replies
and clock skew keep making each due iteration exactly once, and the scheduler oracle catches a
store that makes iterations without the producer guard."""

from __future__ import annotations

import pytest

from corral.sim.campaign import run_seed
from corral.sim.invariants import SchedulerOracle
from corral.sim.scenario import SCENARIOS
from corral.sim.world import World

SCENARIO = SCENARIOS["scheduler"]


@pytest.mark.parametrize("backend", ["memory", "fakeredis"])
def test_scheduler_scenario_holds_its_invariants(backend: str) -> None:
    for seed in range(1, 4):
        result = World(SCENARIO, seed, backend=backend).run()
        assert result.ok, (seed, result.violations[:3])
        # 40 plain jobs, 40 "tick" and 12 "slow" iterations, and "until"'s up to its end date.
        assert result.jobs >= 40 + 40 + 12 + 200_000 // 7_000
        assert result.completed + result.failed == result.jobs


def test_a_scheduler_survives_crashes_of_the_makers_of_its_iterations() -> None:
    crashed = 0
    for seed in range(1, 30):
        world = World(SCENARIO, seed)
        result = world.run()
        assert result.ok, (seed, result.violations[:3])
        crashed += "crash" in result.enabled_kinds
    assert crashed  # the seeds did crash processes


def test_the_scheduler_guard_bug_is_caught_within_200_seeds() -> None:
    plant = frozenset({"scheduler-no-guard"})
    for seed in range(1, 201):
        result = run_seed(SCENARIO, seed, plant=plant)
        if not result.ok:
            break
    else:
        pytest.fail("the planted scheduler bug survived 200 seeds")
    assert any("made twice" in v or "made by the activation" in v for v in result.violations)
    assert run_seed(SCENARIO, result.seed).ok  # the same seed passes without the bug


def test_the_oracle_sees_skipped_and_extra_iterations() -> None:
    violations: list[str] = []
    oracle = SchedulerOracle({"s": (1000, 3, None)}, violations)

    class Upsert:
        scheduler_id = "s"

    oracle.on_op("upsert_job_scheduler", ("q", Upsert(), 5000), ("repeat:s:5000", 0))
    oracle.on_op(
        "update_job_scheduler", ("q", "s", "repeat:s:5000", None, "{}", 5000), "repeat:s:6000"
    )
    assert violations == []
    # Skipped a slot although its maker ran in time.
    oracle.on_op(
        "update_job_scheduler", ("q", "s", "repeat:s:6000", None, "{}", 6000), "repeat:s:8000"
    )
    assert any("skipped" in v for v in violations)
    # A second iteration from the same activation, past the limit too.
    oracle.on_op(
        "update_job_scheduler", ("q", "s", "repeat:s:6000", None, "{}", 6000), "repeat:s:9000"
    )
    assert any("made twice" in v for v in violations)
    assert any("past its limit" in v for v in violations)
