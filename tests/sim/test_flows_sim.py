"""The simulator's flows scenario: trees of jobs across queues with every parent option under
swarm faults; the oracle's flows watch holds on every seed, and each planted flows bug is
caught (the campaign test runs them for the whole budget; here each one's message). On
fakeredis (the Redis backend's Lua scripts) a seed gives the memory backend's very run."""

from __future__ import annotations

import random
from typing import Any

import pytest

from corral.engine.flows import ParentLink
from corral.engine.states import JobState, Transition
from corral.engine.storage import FlowAdded, FlowNode, new_job
from corral.sim.campaign import run_seed
from corral.sim.flow_trees import count_nodes, draw_flow
from corral.sim.flow_watch import FlowWatch, child_key
from corral.sim.scenario import SCENARIOS, FlowSpec
from corral.sim.world import World

FLOWS = SCENARIOS["flows"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_flows_seed_holds_every_invariant(seed: int) -> None:
    world = World(FLOWS, seed)
    result = world.run()
    replay = f"corral sim --scenario flows --seed {seed}"
    assert result.violations == [], replay
    assert result.ok, replay
    watch = world.oracle.flows
    assert watch is not None
    stats = watch.stats()
    # Every job ended, but for the parents BullMQ leaves waiting by design.
    waiting = watch.waiting_by_design(world.oracle.state_of)
    assert result.completed + result.failed + len(waiting) == result.jobs, replay
    # The scenario reaches what it is about: trees across queues, releases, early releases.
    assert stats["flows"] > 0
    assert stats["released"] >= stats["parents"] - stats["waiting_by_design"], replay
    assert {world._job_queues.get(job_id, "sim") for job_id in world.oracle.jobs} == set(
        FLOWS.flows.queues if FLOWS.flows else ()
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_flows_on_fakeredis_give_the_memory_backends_run(seed: int) -> None:
    """The Lua scripts (a flow across queues, a child's finish releasing a parent in another
    queue, ...) make the memory backend's moves, in its order, with its results."""
    world = World(FLOWS, seed, backend="fakeredis")
    result = world.run()
    replay = f"corral sim --scenario flows --seed {seed} --backend fakeredis"
    assert result.violations == [], replay
    assert result.ok, replay
    memory = run_seed(FLOWS, seed)
    assert [e.line() for e in result.trace] == [e.line() for e in memory.trace], replay
    assert result.trace_hash == memory.trace_hash
    watch = world.oracle.flows
    assert watch is not None
    assert watch.stats()["released"] > 0
    assert watch.stats()["released_early"] > 0


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        ("flow-release-before-record", "left waiting-children without the result of"),
        ("flow-stale-pending-count", "liveness:"),
        ("flow-fpof-continues", "completed although its fail_parent_on_failure child"),
    ],
)
def test_each_planted_flows_bug_breaks_its_invariant(bug: str, message: str) -> None:
    result = run_seed(FLOWS, 1, plant=frozenset({bug}))
    assert not result.ok
    assert any(message in violation for violation in result.violations), result.violations


# ---------------------------------------------------------------------------- the trees


def _depth(flow: dict[str, Any]) -> int:
    return 1 + max((_depth(child) for child in flow.get("children", ())), default=-1)


def _nodes(flow: dict[str, Any]) -> list[dict[str, Any]]:
    return [flow, *(node for child in flow.get("children", ()) for node in _nodes(child))]


def test_drawn_trees_keep_to_the_spec() -> None:
    spec = FlowSpec()
    rng = random.Random(5)
    flows = [draw_flow(spec, rng, n, 2) for n in range(200)]
    assert max(_depth(flow) for flow in flows) == spec.max_depth
    assert max(len(flow.get("children", ())) for flow in flows) == spec.max_fan_out
    nodes = [node for flow in flows for node in _nodes(flow)]
    assert len(nodes) == sum(count_nodes(flow) for flow in flows)
    ids = [node["opts"]["job_id"] for node in nodes]
    assert len(set(ids)) == len(ids)
    assert {node["queue_name"] for node in nodes} == set(spec.queues)
    options = {name for node in nodes for name in node["opts"] if name.endswith("_on_failure")}
    assert options == {option for option in spec.options if option}


# ---------------------------------------------------------------------------- the watch itself


def _watch(processed: dict[str, str]) -> tuple[FlowWatch, list[str]]:
    violations: list[str] = []
    watch = FlowWatch(violations.append, lambda queue, job_id: processed)
    parent = FlowNode("pq", new_job("p", "null", "{}", 0, job_id="P"), None, True)
    children = [
        FlowNode(
            "cq", new_job("c", "null", "{}", 0, job_id=c), ParentLink("bull:pq", "P", flag), False
        )
        for c, flag in (("A", ""), ("B", "fpof"))
    ]
    nodes = [parent, *children]
    watch.on_add_flow(nodes, FlowAdded(["P", "A", "B"], [True, True, True]))
    return watch, violations


def test_the_watch_flags_a_release_with_a_child_pending() -> None:
    watch, violations = _watch({})
    watch.on_transition("A", Transition.COMPLETE, JobState.ACTIVE, {})
    watch.on_transition("P", Transition.RELEASE_PARENT, JobState.WAITING_CHILDREN, {})
    assert any("1 child(ren) still pending (B)" in v for v in violations), violations
    assert any("without the result of A" in v for v in violations), violations


def test_the_watch_accepts_an_early_release_and_flags_the_parent_completing() -> None:
    watch, violations = _watch({child_key("cq", "A"): "1"})
    watch.on_transition("B", Transition.FAIL, JobState.ACTIVE, {"failedReason": "x"})
    watch.on_transition("P", Transition.RELEASE_PARENT, JobState.WAITING_CHILDREN, {})
    assert violations == []
    watch.on_transition("P", Transition.COMPLETE, JobState.ACTIVE, {})
    assert violations == ["parent P: completed although its fail_parent_on_failure child B failed"]
    watch.on_transition("P", Transition.RELEASE_PARENT, JobState.WAITING_CHILDREN, {})
    assert violations[-1] == "parent P: left waiting-children 2 times"


def test_the_watch_excuses_a_parent_waiting_for_a_failed_child_without_option() -> None:
    watch, violations = _watch({})
    watch.on_transition("A", Transition.FAIL, JobState.ACTIVE, {"failedReason": "x"})
    states = {"P": JobState.WAITING_CHILDREN}
    assert watch.waiting_by_design(states.get) == {"P"}
    watch.on_transition("P", Transition.FAIL, JobState.ACTIVE, {"failedReason": "child x failed"})
    assert violations == ["parent P: failed with 'child x failed', but no such child did"]
