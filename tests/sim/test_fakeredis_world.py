"""The simulator on the Redis backend over fakeredis (``World(..., backend="fakeredis")``).

The store is the production RedisBackend (its Lua scripts, pipeline and blocking waits) on an
in-process fakeredis server whose clock is the store's virtual clock. Each seed must give the
same trace every time, and the very trace the memory backend gives: the two backends make the
same moves, return the same results and wake blocked workers alike, so every event and every
random draw of a run happens identically. Planted bugs are compiled into the Lua scripts and
must be caught on the same seeds as in the memory backend (the flows bugs in the flows
scenario, whose trees span three queues).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.backends.memory import PLANTABLE_BUGS
from corral.backends.redis.scripts import PLANTABLE_BUGS as LUA_PLANTABLE_BUGS
from corral.cli import main
from corral.sim.scenario import SCENARIOS, FaultMix, JobSpec, Scenario
from corral.sim.world import RunResult, World, run

#: stall-recipes, cut down: 60 jobs, 3 virtual minutes of faults.
SMALL = SCENARIOS["stall-recipes"].with_changes(
    name="small-stalls",
    jobs=JobSpec(count=60, arrival_ms=60_000),
    duration_ms=180_000,
    liveness_budget_ms=300_000,
)
#: With store restarts (data loss) and forced shutdowns among the faults.
RESTARTS = SMALL.with_changes(
    name="small-restarts",
    mix=FaultMix(kinds=("crash", "shutdown", "asymmetric", "store-restart"), faults_per_minute=3),
)
ZERO = SCENARIOS["max-stalled-0"].with_changes(
    jobs=JobSpec(count=60, arrival_ms=60_000), duration_ms=180_000, liveness_budget_ms=300_000
)


def comparable(result: RunResult) -> dict[str, Any]:
    summary = result.to_json()
    del summary["wall_seconds"], summary["backend"]
    return summary


@pytest.fixture(scope="module")
def small_seed_2() -> RunResult:
    return run(SMALL, 2, backend="fakeredis")


def test_runs_on_the_redis_backend(small_seed_2: RunResult) -> None:
    assert small_seed_2.backend == "fakeredis"
    assert small_seed_2.ok, small_seed_2.violations
    assert small_seed_2.stalls_recovered > 0  # the seed exercises the stalled checker
    assert small_seed_2.completed + small_seed_2.failed == small_seed_2.jobs


def test_same_seed_twice_gives_the_same_trace_on_fakeredis(small_seed_2: RunResult) -> None:
    again = run(SMALL, 2, backend="fakeredis")
    assert [e.line() for e in again.trace] == [e.line() for e in small_seed_2.trace]
    assert comparable(again) == comparable(small_seed_2)


@pytest.mark.parametrize(
    ("scenario", "seed"),
    [(SCENARIOS["calm"], 1), (SMALL, 2), (SMALL, 5), (ZERO, 3), (RESTARTS, 1), (RESTARTS, 4)],
    ids=lambda value: getattr(value, "name", str(value)),
)
def test_fakeredis_gives_the_memory_backends_trace(scenario: Scenario, seed: int) -> None:
    memory = run(scenario, seed)
    fakeredis = run(scenario, seed, backend="fakeredis")
    assert [e.line() for e in fakeredis.trace] == [e.line() for e in memory.trace]
    assert comparable(fakeredis) == comparable(memory)


def test_store_restarts_are_exercised() -> None:
    result = run(RESTARTS, 4, backend="fakeredis")
    assert any(fault.kind == "store-restart" for fault in result.faults)
    assert result.ok, result.violations


def test_hash_does_not_depend_on_the_interpreter_hash_seed(
    small_seed_2: RunResult, tmp_path: Path
) -> None:
    code = (
        "from corral.sim.scenario import SCENARIOS, JobSpec\n"
        "from corral.sim.world import run\n"
        "small = SCENARIOS['stall-recipes'].with_changes(name='small-stalls', "
        "jobs=JobSpec(count=60, arrival_ms=60_000), duration_ms=180_000, "
        "liveness_budget_ms=300_000)\n"
        "print(run(small, 2, backend='fakeredis').trace_hash)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "321"},
        cwd=tmp_path,  # not the repository root: its corral/ would shadow the package
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == small_seed_2.trace_hash


def test_the_lua_scripts_can_plant_every_bug_the_memory_backend_can() -> None:
    assert frozenset(PLANTABLE_BUGS) == LUA_PLANTABLE_BUGS


@pytest.mark.parametrize(
    ("bug", "seed"),
    [
        ("lose-stalled-mark", 1),
        ("no-stall-limit", 2),
        ("renew-without-owner", 1),
        ("skip-token-check", 2),
    ],
)
def test_planted_bug_in_lua_is_caught_like_in_the_memory_backend(bug: str, seed: int) -> None:
    assert_caught_like_memory(SMALL, bug, seed)
    assert run(SMALL, seed, backend="fakeredis").ok  # the bug's doing


def assert_caught_like_memory(scenario: Scenario, bug: str, seed: int) -> None:
    """The bug planted in the Lua scripts breaks an invariant at ``seed``, with the memory
    backend's violations and trace when the same bug is planted there."""
    plant = frozenset({bug})
    fakeredis = run(scenario, seed, plant=plant, backend="fakeredis")
    assert not fakeredis.ok
    assert fakeredis.violations
    assert fakeredis.planted == [bug]
    memory = run(scenario, seed, plant=plant)
    assert fakeredis.violations == memory.violations
    assert fakeredis.trace_hash == memory.trace_hash


FLOWS = SCENARIOS["flows"]


@pytest.mark.parametrize(
    ("bug", "seed"),
    [
        ("flow-release-before-record", 1),
        ("flow-stale-pending-count", 1),
        ("flow-fpof-continues", 1),
    ],
)
def test_planted_flows_bug_in_lua_is_caught_like_in_the_memory_backend(
    bug: str, seed: int, clean_flows: dict[int, RunResult]
) -> None:
    assert_caught_like_memory(FLOWS, bug, seed)
    if seed not in clean_flows:
        clean_flows[seed] = run(FLOWS, seed, backend="fakeredis")
    assert clean_flows[seed].ok  # the bug's doing


@pytest.fixture(scope="module")
def clean_flows() -> dict[int, RunResult]:
    """Flows seeds run on fakeredis without a bug (each run once for the module)."""
    return {}


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backend 'valkey'"):
        World(SMALL, 1, backend="valkey")


def test_cli_runs_a_seed_on_fakeredis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--backend", "fakeredis", "--scenario", "calm", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "backend fakeredis" in out
    assert "seed 2: ok  jobs=200 completed=200" in out
    assert f"trace={run(SCENARIOS['calm'], 2).trace_hash}" in out  # the memory backend's
    assert "replay: corral sim --scenario calm --seed 2 --backend fakeredis" in out
    assert "time compression" in out
