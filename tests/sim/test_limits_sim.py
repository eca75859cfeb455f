"""The rate-limit and global-concurrency scenarios: they hold their invariants under swarm
faults on both store backends, drain, and catch a planted limiter bug each."""

from __future__ import annotations

import pytest

from corral.sim.scenario import SCENARIOS
from corral.sim.world import World, run

LIMIT_SCENARIOS = ("rate-limit", "global-concurrency")


@pytest.mark.parametrize("name", LIMIT_SCENARIOS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_limit_scenario_holds_and_drains_on_memory(name: str, seed: int) -> None:
    scenario = SCENARIOS[name]
    world = World(scenario, seed)
    result = world.run()
    assert result.ok, result.violations
    # Every job was added and ended completed or failed (liveness), none lost.
    assert result.jobs == scenario.jobs.count
    assert result.completed + result.failed == scenario.jobs.count
    # The limit was reached, so the invariant was put to the test (not vacuously true).
    watch = world.oracle.limits
    assert watch is not None
    if scenario.settings.limiter is not None:
        assert watch.fullest_window == scenario.settings.limiter[0]
    if scenario.global_concurrency is not None:
        assert watch.peak_active == scenario.global_concurrency


@pytest.mark.parametrize("name", LIMIT_SCENARIOS)
def test_limit_scenario_holds_on_fakeredis(name: str) -> None:
    scenario = SCENARIOS[name]
    result = run(scenario, 1, backend="fakeredis")
    assert result.ok, result.violations
    assert result.completed + result.failed == scenario.jobs.count


@pytest.mark.parametrize(
    ("name", "bug", "violation"),
    [
        ("rate-limit", "no-shared-limiter", "rate limit:"),
        ("global-concurrency", "ignore-global-concurrency", "global concurrency:"),
    ],
)
@pytest.mark.parametrize("backend", ["memory", "fakeredis"])
def test_planted_limit_bug_is_caught(name: str, bug: str, violation: str, backend: str) -> None:
    plant = frozenset({bug})
    for seed in range(1, 201):
        result = run(SCENARIOS[name], seed, plant=plant, backend=backend)
        if not result.ok:
            assert any(v.startswith(violation) for v in result.violations), result.violations
            return
    raise AssertionError(f"planted bug {bug!r} survived seeds 1..200 of {name} on {backend}")
