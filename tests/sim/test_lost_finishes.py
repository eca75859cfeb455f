"""Lost finish messages (issue 13, item 11): the ``lost-finishes`` scenario loses the request or
the reply of finishes for less than a lock's time, and nothing else. A worker sends its finish
again and the store answers a repeat like the first, so no processor runs twice on one attempt
and nothing is ever found stalled; a store whose finish is not idempotent is caught."""

from __future__ import annotations

import pytest

from corral.sim.scenario import SCENARIOS
from corral.sim.world import run

LOST = SCENARIOS["lost-finishes"]
SMALL = LOST.with_changes(name="small-lost-finishes", duration_ms=60_000)
BUDGET = 10


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lost_finishes_rerun_nothing(seed: int) -> None:
    result = run(LOST, seed)
    assert result.ok, result.violations[:3]
    assert result.faults
    assert {fault.kind for fault in result.faults} == {"finish-lost"}
    assert result.finishes_repeated > 0  # replies were lost after the store applied them
    assert (result.reruns, result.stalls_recovered, result.duplicate_completions) == (0, 0, 0)
    assert result.completed + result.failed == result.jobs


def test_a_finish_that_is_not_idempotent_is_caught_within_the_budget() -> None:
    plant = frozenset({"finish-not-idempotent"})
    failing = next(
        (r for seed in range(1, BUDGET + 1) if not (r := run(SMALL, seed, plant=plant)).ok), None
    )
    assert failing is not None, f"finish-not-idempotent survived seeds 1..{BUDGET}"
    assert any("was refused" in violation for violation in failing.violations)
    assert run(SMALL, failing.seed).ok  # the bug's doing


def test_the_lua_finish_is_idempotent_like_the_memory_backend() -> None:
    plant = frozenset({"finish-not-idempotent"})
    fixed = run(SMALL, 1, backend="fakeredis")
    assert fixed.ok, fixed.violations[:3]
    assert fixed.trace_hash == run(SMALL, 1).trace_hash
    planted = run(SMALL, 1, plant=plant, backend="fakeredis")
    assert not planted.ok
    assert planted.violations == run(SMALL, 1, plant=plant).violations
