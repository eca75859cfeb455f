"""The ``scheduler`` scenario: job schedulers (``every`` and cron patterns) under crashes,
blocks, partitions, lost replies and clock skew keep making each due iteration exactly once, and
the scheduler oracle catches a store that makes iterations without the producer guard, or at
the wrong cron times."""

from __future__ import annotations

import random

import pytest

from corral.sim.campaign import run_seed
from corral.sim.scenario import SCENARIOS, SchedulerSpec
from corral.sim.scheduler_watch import SchedulerOracle
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


class Upsert:
    def __init__(self, scheduler_id: str) -> None:
        self.scheduler_id = scheduler_id


def upserted(oracle: SchedulerOracle, sid: str, now: int, slot: int) -> None:
    """Tell ``oracle`` the store answered an upsert of ``sid`` at ``now`` with ``slot``."""
    oracle.on_op("upsert_job_scheduler", ("q", Upsert(sid), now), (f"repeat:{sid}:{slot}", 0))


def made(oracle: SchedulerOracle, sid: str, producer: int, now: int, slot: int) -> None:
    """Tell ``oracle`` the activation of iteration ``producer`` made ``slot`` at ``now``."""
    args = ("q", sid, f"repeat:{sid}:{producer}", None, "{}", now)
    oracle.on_op("update_job_scheduler", args, f"repeat:{sid}:{slot}")


def test_the_oracle_sees_skipped_and_extra_iterations() -> None:
    violations: list[str] = []
    oracle = SchedulerOracle([SchedulerSpec("s", every=1000, limit=3)], 0, violations)
    upserted(oracle, "s", 5000, 5000)
    made(oracle, "s", 5000, 5000, 6000)
    assert violations == []
    # Skipped a slot although its maker ran in time.
    made(oracle, "s", 6000, 6000, 8000)
    assert any("skipped" in v for v in violations)
    # A second iteration from the same activation, past the limit too.
    made(oracle, "s", 6000, 6000, 9000)
    assert any("made twice" in v for v in violations)
    assert any("past its limit" in v for v in violations)


def test_the_oracle_knows_an_every_offset() -> None:
    violations: list[str] = []
    oracle = SchedulerOracle([SchedulerSpec("s", every=1000, offset=300)], 0, violations)
    upserted(oracle, "s", 5_500, 6_300)  # the first slot of phase 300 after the upsert
    made(oracle, "s", 6_300, 9_000, 9_300)  # missed slots skipped, the phase kept
    assert violations == []
    made(oracle, "s", 9_300, 9_400, 10_000)
    assert any("skipped or misplaced" in v and "10300" in v for v in violations)


def test_the_seeds_draw_cron_schedulers_and_daylight_saving_starts() -> None:
    cron = SCENARIO.cron
    assert cron is not None
    draws = [cron.draw(random.Random(seed)) for seed in range(40)]
    assert {start for start, _ in draws} == {start for start, _ in cron.starts}
    specs = [spec for _, drawn in draws for spec in drawn]
    assert all(spec.pattern and spec.tz for spec in specs)
    assert all(spec.limit is not None or spec.end_ms is not None for spec in specs)
    assert any(spec.immediately for spec in specs)
    assert any(spec.offset for spec in specs)


def test_the_oracle_follows_a_cron_pattern_across_a_fall_back() -> None:
    # New York, 2026-11-01: 02:00 EDT (06:00 UTC) becomes 01:00 EST; the hour repeats.
    start = 1_793_512_680_000  # 05:58:00 UTC, 01:58 EDT
    spec = SchedulerSpec("c", pattern="*/2 * * * * *", tz="America/New_York", end_ms=300_000)
    violations: list[str] = []
    oracle = SchedulerOracle([spec], start, violations)
    first = start + 117_500  # upserted at 01:59:57.5 EDT: due at 01:59:58 EDT
    upserted(oracle, "c", first, first + 500)
    # The next time is 01:00:00 EST, two seconds later, in the repeated hour.
    made(oracle, "c", first + 500, first + 600, first + 2_500)
    assert violations == []
    # A store that jumped over the repeated hour skipped its iterations.
    made(oracle, "c", first + 2_500, first + 2_600, first + 2_500 + 3_600_000)
    assert any("skipped" in v and "1793512802000" in v for v in violations)


def test_the_oracle_sees_a_cron_iteration_after_the_end_date() -> None:
    spec = SchedulerSpec("c", pattern="0/3 * * * * *", tz="UTC", end_ms=10_000, immediately=True)
    violations: list[str] = []
    oracle = SchedulerOracle([spec], 0, violations)
    upserted(oracle, "c", 1_234, 1_234)  # immediately: the first slot is the upsert's instant
    made(oracle, "c", 1_234, 1_300, 3_000)
    made(oracle, "c", 3_000, 3_000, 6_000)
    made(oracle, "c", 6_000, 6_100, 9_000)
    assert violations == []
    # The pattern's next time (12 s) is past the end date (10 s): nothing may be made.
    made(oracle, "c", 9_000, 9_000, 12_000)
    assert any("after its end date" in v for v in violations)
