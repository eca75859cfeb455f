"""Flows shared by corral and the real Node BullMQ (pinned in package.json) on one Redis.

A flow added by either side is run by the other: children by one side's workers, the parent by
the other's, each reading the children's results with its own getters. Both sides store the
same layout (``parentKey``, the ``parent`` JSON with its failure flag, the parent's
``:dependencies``, ``:processed``, ``:failed`` and ``:unsuccessful``), compared here byte for
byte with what Node BullMQ stores for the same flow under another prefix.

Real time, real Node processes, as in test_bullmq_interop.py; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
import redis
from node_bullmq import Node, Record, node_scripts, poll, require_node

from corral.backends.redis import RedisBackend
from corral.engine import FlowProducer, Job, Queue, Worker
from corral.engine.flow_producer import JobNode

pytestmark = [pytest.mark.redis, pytest.mark.interop]

PQ, CQ1, CQ2 = "pq", "cq1", "cq2"
SCENARIO_TIMEOUT = 90


def node_of(
    name: str, queue: str, data: Any, job_id: str, *children: dict[str, Any], **opts: bool
) -> dict[str, Any]:
    """A flow node with a chosen id (corral's format), its options and children."""
    flow = {"name": name, "queue_name": queue, "data": data, "opts": {"job_id": job_id, **opts}}
    return {**flow, "children": list(children)} if children else flow


#: A parent in pq over children in two queues, each parent option on some child; A is itself a
#: parent (of G). The "bad" children fail for good (one attempt); the others complete.
FLOW = node_of(
    "assemble",
    PQ,
    {"doc": "report"},
    "P",
    node_of("section", CQ1, {"n": 1}, "A", node_of("figure", CQ2, {"n": 7}, "G")),
    node_of("page", CQ2, {"n": 2}, "B", fail_parent_on_failure=True),
    node_of("page", CQ1, {"n": 3}, "C", continue_parent_on_failure=True),
    node_of("bad", CQ2, {"n": 4}, "D", ignore_dependency_on_failure=True),
    node_of("bad", CQ1, {"n": 5}, "E", remove_dependency_on_failure=True),
)
#: A parent whose fail_parent_on_failure child X fails while Y (in a queue nobody serves) waits.
FPOF_FLOW = node_of(
    "parent",
    PQ,
    None,
    "P",
    node_of("bad", CQ1, 1, "X", fail_parent_on_failure=True),
    node_of("idle", CQ2, 2, "Y"),
)

_CAMEL = {
    "job_id": "jobId",
    "fail_parent_on_failure": "failParentOnFailure",
    "continue_parent_on_failure": "continueParentOnFailure",
    "ignore_dependency_on_failure": "ignoreDependencyOnFailure",
    "remove_dependency_on_failure": "removeDependencyOnFailure",
}


def to_node(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The same flow in Node BullMQ's FlowProducer format."""
    node: dict[str, Any] = {
        "name": flow["name"],
        "queueName": flow["queue_name"],
        "data": flow.get("data"),
        "opts": {_CAMEL[name]: value for name, value in flow.get("opts", {}).items()},
    }
    if flow.get("children"):
        node["children"] = [to_node(child) for child in flow["children"]]
    return node


def shape(tree: Mapping[str, Any] | JobNode) -> dict[str, Any]:
    """A flow tree as ``{id, queue, children?}`` with children sorted by id (getFlow reads them
    from sets and hashes, so their order is the store's)."""
    if isinstance(tree, JobNode):
        out: dict[str, Any] = {"id": tree.job.id, "queue": tree.job.queue_name}
        children = [shape(child) for child in tree.children or []]
    else:
        out = {"id": tree["id"], "queue": tree["queue"]}
        children = [shape(child) for child in tree.get("children") or []]
    if children:
        out["children"] = sorted(children, key=lambda child: child["id"])
    return out


@pytest.fixture(scope="module")
def node() -> str:
    return require_node()


Body = Callable[[RedisBackend, Node], Awaitable[None]]


def run(redis_url: str, node: str, *scenarios: tuple[str, Body]) -> None:
    """Run each ``(prefix, body)`` in turn on one real-time loop, bounded in time."""

    async def all_of_them() -> None:
        for prefix, body in scenarios:
            backend = RedisBackend.from_url(redis_url, prefix=prefix)
            try:
                async with node_scripts(node, url=redis_url, prefix=prefix, queue=PQ) as scripts:
                    await body(backend, scripts)
            finally:
                await backend.close()

    asyncio.run(asyncio.wait_for(all_of_them(), SCENARIO_TIMEOUT))


def jkey(prefix: str, queue: str, job_id: str) -> str:
    return f"{prefix}:{queue}:{job_id}"


async def corral_child(job: Job) -> Any:
    """corral's processor for the children: "bad" jobs fail; a parent returns its children's
    values too."""
    if job.name == "bad":
        raise ValueError(f"bad {job.id}")
    result: dict[str, Any] = {"by": "corral", "name": job.name, "echo": job.data}
    if job.name == "section":
        result["children"] = await job.get_children_values()
    return result


async def run_corral_worker(
    backend: RedisBackend, queue: str, processor: Callable[[Job], Awaitable[Any]], count: int
) -> list[tuple[str, str]]:
    """Run a corral worker on ``queue`` until ``count`` attempts finished; their (id, outcome)."""
    finished: list[tuple[str, str]] = []
    worker = Worker(queue, processor, backend, drain_delay=300)
    worker.on("completed", lambda job, result: finished.append((job.id, "completed")))
    worker.on("failed", lambda job, error: finished.append((job.id, f"failed: {error}")))
    task = asyncio.create_task(worker.run())
    try:
        await poll(lambda: task.done() or len(finished) >= count, 30, f"{count} jobs on {queue}")
    finally:
        await worker.close()
        await task
    return finished


async def node_read(scripts: Node, *jobs: tuple[str, str]) -> dict[str, Record]:
    """Node BullMQ's view of jobs ``(queue, id)``: state, parent fields, children getters."""
    reader = await scripts.run("flow", read=[{"queue": q, "id": i} for q, i in jobs])
    return {record["id"]: record for record in reader.events("job")}


def expected_values(prefix: str, by: str, g_result: Any) -> dict[str, Any]:
    """P's children values after FLOW ran with its children processed by ``by``."""

    def result(name: str, data: Any) -> dict[str, Any]:
        if by == "corral":
            return {"by": "corral", "name": name, "echo": data}
        return {"by": "node", "name": name, "echo": data, "attemptsMade": 0, "children": {}}

    return {
        jkey(prefix, CQ1, "A"): {
            **result("section", {"n": 1}),
            "children": {jkey(prefix, CQ2, "G"): g_result},
        },
        jkey(prefix, CQ2, "B"): result("page", {"n": 2}),
        jkey(prefix, CQ1, "C"): result("page", {"n": 3}),
    }


# ------------------------------------------------------------------- Node flow, corral children


def test_node_flow_runs_its_children_on_corral_and_its_parent_on_node(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """Node's FlowProducer adds FLOW; corral workers run the children (a middle parent reads
    its child's value with get_children_values); the parent waits until the last child that
    counts is done, then a Node worker completes it, and both sides read the same children
    values, ignored failures and dependencies."""

    async def body(backend: RedisBackend, scripts: Node) -> None:
        added = await scripts.run("flow", flows=[to_node(FLOW)])
        (tree,) = (await added.wait_event("added"))["trees"]
        producer = FlowProducer(backend)
        corral_tree = await producer.get_flow("P", PQ)
        assert corral_tree is not None
        assert shape(corral_tree) == shape(tree)
        assert await Queue(PQ, backend).get_job_state("P") == "waiting-children"
        assert await Queue(CQ1, backend).get_job_state("A") == "waiting-children"
        b = await Queue(CQ2, backend).get_job("B")
        assert b is not None
        assert b.parent == {"id": "P", "queueKey": f"{key_prefix}:{PQ}", "fpof": True}
        assert b.opts.parent is not None
        assert b.opts.parent.flag == "fpof"

        done = await run_corral_worker(backend, CQ2, corral_child, 3)
        assert sorted(done) == [("B", "completed"), ("D", "failed: bad D"), ("G", "completed")]
        # A (its only child done) is released in its own queue; P still waits for A, C, E.
        views = await node_read(scripts, (PQ, "P"), (CQ1, "A"))
        assert (views["P"]["state"], views["A"]["state"]) == ("waiting-children", "waiting")
        g_result = {"by": "corral", "name": "figure", "echo": {"n": 7}}
        assert views["A"]["childrenValues"] == {jkey(key_prefix, CQ2, "G"): g_result}
        assert sorted(views["P"]["dependencies"]["unprocessed"]) == [
            jkey(key_prefix, CQ1, job_id) for job_id in ("A", "C", "E")
        ]

        done = await run_corral_worker(backend, CQ1, corral_child, 3)
        assert sorted(done) == [("A", "completed"), ("C", "completed"), ("E", "failed: bad E")]
        views = await node_read(scripts, (PQ, "P"))
        assert views["P"]["state"] == "waiting"

        worker = await scripts.run("worker", queue=PQ, count=1, readChildren=True)
        (seen,) = worker.events("children")
        expected = expected_values(key_prefix, "corral", g_result)
        ignored = {jkey(key_prefix, CQ2, "D"): "bad D"}
        assert seen["values"] == expected
        assert seen["ignored"] == ignored
        assert seen["dependencies"] == {
            "processed": expected,
            "unprocessed": [],
            "ignored": ignored,
            "failed": [],
        }
        parent = await Queue(PQ, backend).get_job("P")
        assert parent is not None
        assert await Queue(PQ, backend).get_job_state("P") == "completed"
        assert parent.return_value["children"] == expected
        assert await parent.get_children_values() == expected
        assert await parent.get_ignored_children_failures() == ignored
        assert await parent.get_dependencies() == seen["dependencies"]

    run(redis_url, node, (key_prefix, body))


# ------------------------------------------------------------------- corral flow, Node children


def test_corral_flow_runs_its_children_on_node_and_its_parent_on_corral(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """corral's FlowProducer adds FLOW; Node workers run the children; a corral worker runs the
    parent, reading the values Node's children returned; Node reads the same values back, and
    Node's getFlow and corral's get_flow give the same tree."""

    async def body(backend: RedisBackend, scripts: Node) -> None:
        producer = FlowProducer(backend)
        await producer.add(FLOW)
        views = await node_read(scripts, (PQ, "P"), (CQ1, "A"), (CQ2, "D"))
        assert (views["P"]["state"], views["A"]["state"]) == (
            "waiting-children",
            "waiting-children",
        )
        assert views["D"]["parent"] == {"id": "P", "queueKey": f"{key_prefix}:{PQ}", "idof": True}
        assert views["D"]["parentKey"] == jkey(key_prefix, PQ, "P")
        assert views["P"]["counts"] == {"processed": 0, "unprocessed": 5, "ignored": 0, "failed": 0}

        common = {"readChildren": True, "failAttempts": {"bad": 1}, "count": 3}
        cq2 = await scripts.run("worker", queue=CQ2, **common)
        assert sorted(r["id"] for r in cq2.events("completed")) == ["B", "G"]
        cq1 = await scripts.run("worker", queue=CQ1, **common)
        assert [r["id"] for r in cq1.events("failed")] == ["E"]
        g_result = {
            "by": "node",
            "name": "figure",
            "echo": {"n": 7},
            "attemptsMade": 0,
            "children": {},
        }
        (a_seen,) = [r for r in cq1.events("children") if r["id"] == "A"]
        assert a_seen["values"] == {jkey(key_prefix, CQ2, "G"): g_result}

        expected = expected_values(key_prefix, "node", g_result)
        ignored = {jkey(key_prefix, CQ2, "D"): "node attempt 1 failed"}
        seen: list[tuple[Any, Any, Any, Any]] = []

        async def parent(job: Job) -> str:
            seen.append(
                (
                    await job.get_children_values(),
                    await job.get_ignored_children_failures(),
                    await job.get_dependencies(),
                    await job.get_dependencies_count(),
                )
            )
            return "assembled"

        assert await run_corral_worker(backend, PQ, parent, 1) == [("P", "completed")]
        values, corral_ignored, dependencies, counts = seen[0]
        assert values == expected
        assert corral_ignored == ignored
        assert dependencies == {
            "processed": expected,
            "unprocessed": [],
            "ignored": ignored,
            "failed": [],
        }
        assert counts == {"processed": 3, "unprocessed": 0, "ignored": 1, "failed": 0}

        reader = await scripts.run(
            "flow", read=[{"queue": PQ, "id": "P"}], getFlow={"queueName": PQ, "id": "P"}
        )
        (view,) = reader.events("job")
        assert (view["state"], view["returnvalue"]) == ("completed", "assembled")
        assert view["childrenValues"] == expected
        assert view["ignored"] == ignored
        assert view["counts"] == counts
        corral_tree = await producer.get_flow("P", PQ)
        assert corral_tree is not None
        (node_tree,) = [r["tree"] for r in reader.events("flow")]
        assert shape(node_tree) == shape(corral_tree)
        assert [c["id"] for c in shape(corral_tree)["children"]] == ["A", "B", "C", "D"]

    run(redis_url, node, (key_prefix, body))


# ------------------------------------------------------------------- fail_parent_on_failure


def stored(redis_url: str, prefix: str, *keys: str) -> dict[str, Any]:
    """The keys (``<queue>:<id>...`` under ``prefix``) as read from Redis, with ``prefix``
    written ``<p>`` in names and values so that two runs under two prefixes compare."""

    def plain(text: str) -> str:
        return text.replace(prefix, "<p>")

    out: dict[str, Any] = {}
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        for key in keys:
            full = f"{prefix}:{key}"
            kind = client.type(full)
            value: Any
            if kind == "hash":
                value = {plain(f): plain(v) for f, v in client.hgetall(full).items()}
            elif kind == "set":
                value = sorted(plain(member) for member in client.smembers(full))
            elif kind == "zset":
                value = [plain(member) for member in client.zrange(full, 0, -1)]
            elif kind == "list":
                value = client.lrange(full, 0, -1)
            elif kind == "stream":
                value = [
                    {f: plain(v) for f, v in fields.items()} for _, fields in client.xrange(full)
                ]
            else:
                value = None if kind == "none" else client.get(full)
            out[key] = (kind, value)
    return out


#: The parent's fields that record its fate (timestamps and lock tokens differ run to run).
_FATE = ("failedReason", "atm", "ats", "defa", "finishedOn", "returnvalue")


def fpof_snapshot(redis_url: str, prefix: str) -> dict[str, Any]:
    found = stored(
        redis_url,
        prefix,
        f"{PQ}:P",
        f"{PQ}:P:dependencies",
        f"{PQ}:P:unsuccessful",
        f"{PQ}:P:failed",
        f"{PQ}:P:processed",
        f"{PQ}:failed",
        f"{PQ}:waiting-children",
        f"{PQ}:wait",
        f"{PQ}:events",
        f"{CQ1}:failed",
    )
    _, parent = found.pop(f"{PQ}:P")
    found["parent fate"] = {f: parent[f] if f == "failedReason" else (f in parent) for f in _FATE}
    found["parent counters"] = (parent.get("atm"), parent.get("ats"))
    _, events = found.pop(f"{PQ}:events")
    found["parent events"] = [
        {
            f: v
            for f, v in event.items()
            if f in ("event", "jobId", "prev", "failedReason", "attemptsMade")
        }
        for event in events
    ]
    return found


def test_fail_parent_on_failure_fails_the_parent_as_node_does(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """A fail_parent_on_failure child failing for good releases its parent at once (another
    child still pending), marked to fail, and the next worker to take the parent fails it with
    "child <key> failed". Three casts give the same stored outcome and parent events: all Node
    (the reference), all corral, and Node's flow with corral failing the child and Node
    failing the parent."""

    async def all_node(backend: RedisBackend, scripts: Node) -> None:
        await scripts.run("flow", flows=[to_node(FPOF_FLOW)])
        await scripts.run("worker", queue=CQ1, count=1, failAttempts={"bad": 1})
        await scripts.run("worker", queue=PQ, count=1)

    async def all_corral(backend: RedisBackend, scripts: Node) -> None:
        await FlowProducer(backend).add(FPOF_FLOW)
        assert await run_corral_worker(backend, CQ1, corral_child, 1) == [("X", "failed: bad X")]
        assert await Queue(PQ, backend).get_job_state("P") == "waiting"

        async def never(job: Job) -> None:
            raise AssertionError("a parent whose fpof child failed must not run")

        failed = await run_corral_worker(backend, PQ, never, 1)
        assert failed == [("P", f"failed: child {jkey(key_prefix + ':corral', CQ1, 'X')} failed")]

    async def mixed(backend: RedisBackend, scripts: Node) -> None:
        await scripts.run("flow", flows=[to_node(FPOF_FLOW)])
        assert await run_corral_worker(backend, CQ1, corral_child, 1) == [("X", "failed: bad X")]
        view = (await node_read(scripts, (PQ, "P")))["P"]
        assert view["state"] == "waiting"
        assert view["dependencies"]["failed"] == [jkey(key_prefix + ":mixed", CQ1, "X")]
        worker = await scripts.run("worker", queue=PQ, count=1)
        assert [r["reason"] for r in worker.events("failed")] == [
            f"child {jkey(key_prefix + ':mixed', CQ1, 'X')} failed"
        ]
        assert worker.events("processing") == []

    casts = {"node": all_node, "corral": all_corral, "mixed": mixed}
    run(redis_url, node, *((f"{key_prefix}:{name}", body) for name, body in casts.items()))
    reference = fpof_snapshot(redis_url, f"{key_prefix}:node")
    assert reference["parent fate"]["failedReason"] == "child <p>:cq1:X failed"
    assert reference[f"{PQ}:P:dependencies"] == ("set", ["<p>:cq2:Y"])
    for name in ("corral", "mixed"):
        snapshot = fpof_snapshot(redis_url, f"{key_prefix}:{name}")
        # (the Node worker in "mixed" failed X with its own reason; corral's says "bad X")
        assert snapshot == reference, name


# ------------------------------------------------------------------- the stored layout


#: Job hash fields that hold times, per-run lock tokens or corral's finish records.
_VOLATILE = ("timestamp", "processedOn", "finishedOn", "pb", "stacktrace")
#: Queue keys of workers' bookkeeping, not of flows (README, differences from BullMQ).
_WORKERS_KEYS = (":meta", ":marker", ":stalled-check")
_FLOW_OPTS = ("jobId", "parent", "fpof", "cpof", "idof", "rdof")


def layout(redis_url: str, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (``<p>`` for the prefix), as the flow left it. Left out:
    the queues' ``meta`` (Node's Queue writes ``opts.maxLenEvents`` there, flows or not), the
    workers' ``marker`` and ``stalled-check``, times, stack traces, and corral's
    ``fin:<token>`` finish records; ``opts`` is kept to its flow options (corral encodes its
    other options its own way, README)."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        keys = [key[len(prefix) + 1 :] for key in client.scan_iter(match=f"{prefix}:*")]
        # (waiting-children is scored by the parent's timestamp on both sides)
        for queue in (PQ, CQ1):
            for member, score in client.zrange(
                f"{prefix}:{queue}:waiting-children", 0, -1, withscores=True
            ):
                assert int(score) == int(
                    client.hget(f"{prefix}:{queue}:{member}", "timestamp") or -1
                )
    found = stored(redis_url, prefix, *sorted(k for k in keys if not k.endswith(_WORKERS_KEYS)))
    for key, (kind, value) in found.items():
        if kind == "hash" and "opts" in value:
            opts = json.loads(value["opts"])
            value["opts"] = {name: opts[name] for name in _FLOW_OPTS if name in opts}
            for field in [f for f in value if f in _VOLATILE or f.startswith("fin:")]:
                del value[field]
        if kind == "stream":
            found[key] = (
                kind,
                [
                    e
                    for e in value
                    if e["event"] in ("added", "waiting", "waiting-children", "completed", "failed")
                ],
            )
    return found


def test_corral_stores_a_flow_as_node_bullmq_does(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """The same FLOW added and run by Node BullMQ under one prefix and by corral under another
    leaves the same keys with the same bytes: each child's ``parentKey`` and ``parent`` JSON
    (with its flag), the parents' ``:dependencies``, ``:processed`` (the children's return
    values as stored JSON), ``:failed`` and ``:unsuccessful``, the waiting-children sets, and
    the flow's events."""
    after_add: dict[str, dict[str, Any]] = {}

    async def by_node(backend: RedisBackend, scripts: Node) -> None:
        await scripts.run("flow", flows=[to_node(FLOW)])
        after_add["node"] = layout(redis_url, f"{key_prefix}:node")
        for queue in (CQ2, CQ1):
            await scripts.run(
                "worker", queue=queue, count=3, echoData=True, failAttempts={"bad": 1}
            )

    async def by_corral(backend: RedisBackend, scripts: Node) -> None:
        await FlowProducer(backend).add(FLOW)
        after_add["corral"] = layout(redis_url, f"{key_prefix}:corral")

        async def echo(job: Job) -> Any:
            if job.name == "bad":
                raise RuntimeError("node attempt 1 failed")  # (Node's worker's text)
            return job.data

        for queue in (CQ2, CQ1):
            await run_corral_worker(backend, queue, echo, 3)

    run(redis_url, node, (f"{key_prefix}:node", by_node), (f"{key_prefix}:corral", by_corral))
    assert after_add["corral"] == after_add["node"]
    assert after_add["node"]["cq2:B"][1]["parent"] == '{"id":"P","queueKey":"<p>:pq","fpof":true}'
    node_run, corral_run = (
        layout(redis_url, f"{key_prefix}:node"),
        layout(redis_url, f"{key_prefix}:corral"),
    )
    assert node_run["pq:P:processed"] == (
        "hash",
        {"<p>:cq1:A": '{"n":1}', "<p>:cq2:B": '{"n":2}', "<p>:cq1:C": '{"n":3}'},
    )
    assert node_run["pq:P:failed"] == ("hash", {"<p>:cq2:D": "node attempt 1 failed"})
    assert node_run["cq1:A:processed"] == ("hash", {"<p>:cq2:G": '{"n":7}'})
    differ = {
        k: (node_run.get(k), corral_run.get(k))
        for k in set(node_run) | set(corral_run)
        if node_run.get(k) != corral_run.get(k)
    }
    assert differ == {}
