"""Conformance: flows as Node BullMQ users know them. A flow's jobs are stored level by level, as
Node BullMQ's FlowProducer stores them (its nodes are queued breadth-first across the whole
flow), so a queue serves a flow's jobs in the same order whichever side added it; a queue's
``qualified_name`` is the key a child names its parent's queue by."""

from __future__ import annotations

import random

from corral.engine import FlowProducer, Queue
from corral.engine.storage import FetchRequest, Storage
from corral.sim.loop import VirtualClock

Q = "q"


async def test_a_flow_is_stored_level_by_level(backend: Storage, clock: VirtualClock) -> None:
    # R over A (over A1, A2) and B (over B1); every node in one queue.
    leaf = {"name": "leaf", "queue_name": Q}
    tree = await FlowProducer(backend, clock=clock, rng=random.Random(3)).add(
        {
            "name": "root",
            "queue_name": Q,
            "opts": {"job_id": "R"},
            "children": [
                {
                    "name": "mid",
                    "queue_name": Q,
                    "opts": {"job_id": "A"},
                    "children": [
                        {**leaf, "opts": {"job_id": "A1"}},
                        {**leaf, "opts": {"job_id": "A2"}},
                    ],
                },
                {
                    "name": "mid",
                    "queue_name": Q,
                    "opts": {"job_id": "B"},
                    "children": [{**leaf, "opts": {"job_id": "B1"}}],
                },
                {**leaf, "opts": {"job_id": "C"}},
            ],
        }
    )
    assert [child.job.id for child in tree.children or []] == ["A", "B", "C"]
    events = await backend.get_events(Q)
    assert [e.fields["jobId"] for e in events if e.name == "added"] == [
        "R",
        "A",
        "B",
        "C",
        "A1",
        "A2",
        "B1",
    ]
    served = []
    for n in range(4):
        fetched = await backend.fetch_next(Q, FetchRequest(f"t{n}", 30_000), clock.now_ms())
        assert fetched.job is not None
        served.append(fetched.job.job_id)
    assert served == ["C", "A1", "A2", "B1"]
    assert await Queue(Q, backend).get_job_state("A") == "waiting-children"


async def test_bulk_flows_are_stored_level_by_level_across_flows(
    backend: Storage, clock: VirtualClock
) -> None:
    flows = [
        {
            "name": "root",
            "queue_name": Q,
            "opts": {"job_id": root},
            "children": [{"name": "leaf", "queue_name": Q, "opts": {"job_id": f"{root}1"}}],
        }
        for root in ("X", "Y")
    ]
    trees = await FlowProducer(backend, clock=clock).add_bulk(flows)
    assert [[c.job.id for c in t.children or []] for t in trees] == [["X1"], ["Y1"]]
    events = await backend.get_events(Q)
    assert [e.fields["jobId"] for e in events if e.name == "added"] == ["X", "Y", "X1", "Y1"]


async def test_qualified_name_is_the_queue_key_a_child_names_its_parent_by(
    backend: Storage, clock: VirtualClock
) -> None:
    parents, children = Queue("parents", backend, clock=clock), Queue("kids", backend, clock=clock)
    assert parents.qualified_name.endswith(":parents")
    parent = await parents.add("p", None)
    child = await children.add("c", None, parent={"id": parent.id, "queue": parents.qualified_name})
    assert child.parent_key == f"{parents.qualified_name}:{parent.id}"
    stored = await parents.get_job(parent.id)
    assert stored is not None
    assert (await stored.get_dependencies())["unprocessed"] == [
        f"{children.qualified_name}:{child.id}"
    ]
