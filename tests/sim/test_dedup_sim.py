"""The simulator's dedup scenario: producers add jobs with dedup ids (simple, debounce,
keep_last_if_active) under swarm faults; the oracle's dedup watch holds on every seed, and
catches a planted bug that lets an add claim a dedup id without checking its holder."""

from __future__ import annotations

import pytest

from corral.engine.states import JobState
from corral.engine.storage import AddResult, new_job
from corral.sim.campaign import run_seed
from corral.sim.dedup_watch import DedupWatch
from corral.sim.scenario import SCENARIOS
from corral.sim.world import World

DEDUP = SCENARIOS["dedup"]
BUG = "dedup-ignores-owner"
BUDGET = 200


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_dedup_seed_holds_every_invariant(seed: int) -> None:
    world = World(DEDUP, seed)
    result = world.run()
    replay = f"corral sim --scenario dedup --seed {seed}"
    assert result.violations == [], replay
    assert result.ok, replay
    assert result.lost == 0, replay
    watch = world.oracle.dedup
    # The scenario reaches what it is about: dropped adds, debounces, parked jobs stored.
    assert watch.deduplicated > 0, replay
    assert watch.parked_stored > 0, replay
    assert all(not live for live in watch.live.values()), replay  # every id released


@pytest.mark.parametrize("seed", [1, 2])
def test_dedup_seed_holds_on_fakeredis(seed: int) -> None:
    result = run_seed(DEDUP, seed, backend="fakeredis")
    assert result.violations == [], f"corral sim --scenario dedup --seed {seed} (fakeredis)"
    assert result.ok


@pytest.mark.parametrize("backend", ["memory", "fakeredis"])
def test_planted_dedup_bug_is_caught_within_the_budget(backend: str) -> None:
    plant = frozenset({BUG})
    failing = None
    for seed in range(1, BUDGET + 1):
        result = run_seed(DEDUP, seed, plant=plant, backend=backend)
        if not result.ok:
            failing = result
            break
    assert failing is not None, f"planted bug {BUG!r} survived seeds 1..{BUDGET}"
    assert any("two live jobs hold it" in v for v in failing.violations), failing.violations
    assert run_seed(DEDUP, failing.seed, backend=backend).ok  # the bug's doing


# ---------------------------------------------------------------------------- the watch itself


def _fields(dedup_id: str, opts: str, data: str = "1") -> dict[str, str]:
    return {"deid": dedup_id, "opts": opts, "data": data}


SIMPLE = '{"de":{"id":"s"}}'
THROTTLE = '{"de":{"id":"t","ttl":1000}}'


def test_watch_flags_two_live_jobs_only_where_promised() -> None:
    found: list[str] = []
    watch = DedupWatch(found.append)
    watch.on_transition("1", None, JobState.WAITING, _fields("s", SIMPLE))
    watch.on_transition("2", None, JobState.WAITING, _fields("s", SIMPLE))
    assert found == ["dedup id s: two live jobs hold it at once (1, 2)"]
    found.clear()
    watch.on_transition("3", None, JobState.WAITING, _fields("t", THROTTLE))
    watch.on_transition("4", None, JobState.WAITING, _fields("t", THROTTLE))
    assert found == []  # a throttle's key may expire while its job lives
    watch.on_transition("1", JobState.WAITING, JobState.COMPLETED, _fields("s", SIMPLE))
    assert watch.live["s"] == {"2"}


def test_watch_flags_a_debounce_dropped_while_the_owner_is_delayed() -> None:
    found: list[str] = []
    watch = DedupWatch(found.append)
    opts = '{"de":{"id":"b","replace":true}}'
    job = new_job("w", "2", opts, 0, 100)
    watch.on_add([job], AddResult(["1"], [False]), lambda _: JobState.WAITING)
    assert found == []
    watch.on_add([job], AddResult(["1"], [False]), lambda _: JobState.DELAYED)
    assert len(found) == 1
    assert "still delayed" in found[0]


def test_watch_flags_a_parked_job_stored_with_older_data() -> None:
    found: list[str] = []
    watch = DedupWatch(found.append)
    opts = '{"de":{"id":"k","keepLastIfActive":true}}'
    watch.on_transition("1", None, JobState.WAITING, _fields("k", opts, "0"))
    for data in ("1", "2"):
        job = new_job("w", data, opts, 0)
        watch.on_add([job], AddResult(["1"], [False]), lambda _: JobState.ACTIVE)
    watch.on_transition("1", JobState.ACTIVE, JobState.COMPLETED, _fields("k", opts, "0"))
    watch.on_transition("5", None, JobState.WAITING, _fields("k", opts, "1"))
    assert found == [
        "job 5: stored for keep_last_if_active id k with data 1, but the last add parked 2"
    ]
