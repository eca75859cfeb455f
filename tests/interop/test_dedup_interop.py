"""Deduplication shared with Node BullMQ (pinned in package.json) on one Redis: a dedup id
claimed by one side is honoured by the other (simple mode, debounce, keep_last_if_active), and
the key is released when either side's worker finishes the owner. Real time, as in
test_bullmq_interop.py (whose World and run this module reuses)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from node_bullmq import require_node
from test_bullmq_interop import QUEUE, World, run

from corral.engine import Job, Worker
from corral.engine.storage import Complete, FetchRequest

pytestmark = [pytest.mark.redis, pytest.mark.interop]


@pytest.fixture(scope="module")
def node() -> str:
    return require_node()


async def deduplicated_events(world: World) -> list[dict[str, str]]:
    return [e.fields for e in await world.backend.get_events(QUEUE) if e.name == "deduplicated"]


def test_a_dedup_id_set_by_node_is_honoured_by_corral(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        [node_id] = await world.node.add(
            [{"name": "n", "data": {"by": "node"}, "opts": {"deduplication": {"id": "nd"}}}]
        )
        dropped = await world.queue.add("c", {"by": "corral"}, deduplication={"id": "nd"})
        assert dropped.id == node_id
        assert dropped.data == {"by": "node"}
        assert await world.queue.get_deduplication_job_id("nd") == node_id
        [event] = await deduplicated_events(world)
        assert event["jobId"] == node_id
        assert event["deduplicationId"] == "nd"
        assert (await world.job(node_id)).fields["deid"] == "nd"

        # A corral worker finishing Node's job releases Node's key.
        done: list[str] = []
        worker = Worker(QUEUE, lambda job: "ok", world.backend, drain_delay=500)
        worker.on("completed", lambda job, result: done.append(job.id))
        await world.run_worker(worker, lambda: done == [node_id], "node's job completed")
        assert await world.queue.get_deduplication_job_id("nd") is None
        fresh = await world.queue.add("c", {"by": "corral"}, deduplication={"id": "nd"})
        assert fresh.id != node_id
        assert await world.queue.get_job_state(fresh.id) == "waiting"

    run(body, redis_url, key_prefix, node)


def test_a_dedup_id_set_by_corral_is_honoured_by_node(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        simple = await world.queue.add("c", {"by": "corral"}, deduplication={"id": "cd"})
        debounce = {"id": "db", "ttl": 60_000, "extend": True, "replace": True}
        delayed = await world.queue.add("c", {"v": 1}, delay=60_000, deduplication=debounce)
        node_ids = await world.node.add(
            [
                {"name": "n", "data": {"by": "node"}, "opts": {"deduplication": {"id": "cd"}}},
                {
                    "name": "n",
                    "data": {"v": 2},
                    "opts": {"delay": 60_000, "deduplication": debounce},
                },
            ]
        )
        # Node's duplicate returns corral's job; Node's debounce replaced corral's delayed job.
        assert node_ids[0] == simple.id
        assert node_ids[1] != delayed.id
        assert await world.queue.get_job(delayed.id) is None
        assert await world.queue.get_deduplication_job_id("db") == node_ids[1]
        replaced = await world.job(node_ids[1])
        assert replaced.data == {"v": 2}
        assert replaced.opts.deduplication is not None
        assert replaced.opts.deduplication.replace
        removed = [e.fields for e in await world.backend.get_events(QUEUE) if e.name == "removed"]
        assert removed == [{"jobId": delayed.id, "prev": "delayed"}]
        events = await deduplicated_events(world)
        assert events == [
            {
                "jobId": simple.id,
                "deduplicationId": "cd",
                "deduplicatedJobId": events[0]["deduplicatedJobId"],
            },
            {"jobId": node_ids[1], "deduplicationId": "db", "deduplicatedJobId": delayed.id},
        ]

        # A Node worker finishing corral's job releases corral's key.
        worker = await world.node.start("worker", count=1, name="node-worker")
        await worker.finish()
        assert await world.queue.get_job_state(simple.id) == "completed"
        assert await world.queue.get_deduplication_job_id("cd") is None

    run(body, redis_url, key_prefix, node)


async def park_two(world: World, owner_id: str, add: Callable[[int], Awaitable[str]]) -> None:
    """Take the owner (corral holds its lock), then add twice with its dedup id while it is
    active: both adds are parked and return the owner."""
    fetched = await world.backend.fetch_next(QUEUE, FetchRequest("tok", 60_000), 0)
    assert fetched.job is not None
    assert fetched.job.job_id == owner_id
    assert [await add(v) for v in (1, 2)] == [owner_id, owner_id]


async def finish_owner(world: World, owner_id: str) -> Job:
    """Complete the owner; return the job stored from ``dn:<id>`` (the last add's data)."""
    assert await world.backend.finish(QUEUE, owner_id, "tok", Complete('"ok"'), 0) == 0
    [next_job] = await world.queue.get_jobs("waiting")
    assert next_job.data == {"v": 2}
    assert next_job.fields["deid"] == "k"
    return next_job


def test_keep_last_if_active_parked_by_corral_is_run_by_a_node_worker(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        option = {"id": "k", "keep_last_if_active": True}
        owner = await world.queue.add("c", {"v": 0}, deduplication=option)

        async def add(v: int) -> str:
            return (await world.queue.add("c", {"v": v}, deduplication=option)).id

        await park_two(world, owner.id, add)
        parked = await world.backend.client.hgetall(world.backend.keys(QUEUE).base + "dn:k")
        assert {key: parked[key] for key in ("name", "data")} == {"name": "c", "data": '{"v":2}'}
        assert json.loads(parked["opts"])["de"] == {"id": "k", "keepLastIfActive": True}
        next_job = await finish_owner(world, owner.id)
        worker = await world.node.start("worker", count=1, name="node-worker")
        await worker.finish()
        [seen] = [r["job"] for r in worker.events("processing")]
        assert (seen["id"], seen["data"]) == (next_job.id, {"v": 2})
        assert await world.queue.get_deduplication_job_id("k") is None  # Node released it

    run(body, redis_url, key_prefix, node)


def test_keep_last_if_active_parked_by_node_is_stored_by_corral(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        option = {"id": "k", "keepLastIfActive": True}
        [owner] = await world.node.add(
            [{"name": "n", "data": {"v": 0}, "opts": {"deduplication": option}}]
        )

        async def add(v: int) -> str:
            opts = {"deduplication": option}
            [job_id] = await world.node.add([{"name": "n", "data": {"v": v}, "opts": opts}])
            return job_id

        await park_two(world, owner, add)
        next_job = await finish_owner(world, owner)
        assert await world.queue.get_deduplication_job_id("k") == next_job.id
        seen: list[Job] = []

        async def processor(job: Job) -> str:
            seen.append(job)
            return "ok"

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
        await world.run_worker(worker, lambda: len(seen) == 1, "the parked job")
        assert seen[0].id == next_job.id
        assert await world.queue.get_deduplication_job_id("k") is None

    run(body, redis_url, key_prefix, node)
