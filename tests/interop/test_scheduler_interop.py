"""Job schedulers shared by corral and the real Node BullMQ (npm, pinned in package.json):
a scheduler upserted by one side keeps running on the other side's workers, because each
iteration is made by whichever worker activates the one before, with the same ids and times.

Real time (see test_bullmq_interop.py): the schedules are two seconds apart, which leaves
room for a slow start (an iteration activated after the next slot skips the missed slots)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from node_bullmq import node_scripts, poll, require_node

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker

pytestmark = [pytest.mark.redis, pytest.mark.interop]

QUEUE = "interop"
SCENARIO_TIMEOUT = 60


@pytest.fixture(scope="module")
def node() -> str:
    return require_node()


def slots(job_ids: list[str], scheduler_id: str) -> list[int]:
    prefix = f"repeat:{scheduler_id}:"
    assert all(job_id.startswith(prefix) for job_id in job_ids), job_ids
    return [int(job_id[len(prefix) :]) for job_id in job_ids]


def test_a_node_scheduler_keeps_running_on_corral_workers(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def scenario() -> None:
        backend = RedisBackend.from_url(redis_url, prefix=key_prefix)
        queue = Queue(QUEUE, backend)
        started: list[Job] = []

        async def processor(job: Job) -> str:
            started.append(job)
            return "ok"

        try:
            async with node_scripts(node, url=redis_url, prefix=key_prefix, queue=QUEUE) as n:
                upsert = await n.start(
                    "scheduler",
                    id="tick",
                    repeat={"every": 2000, "limit": 3},
                    template={"name": "t", "data": {"a": 1}, "opts": {"attempts": 2}},
                )
                records = await upsert.finish()
                first = records[0]["jobId"]
                worker = Worker(QUEUE, processor, backend, drain_delay=200)
                task = asyncio.create_task(worker.run())
                try:
                    await poll(lambda: len(started) >= 3, 30, "three iterations on corral")
                    await asyncio.sleep(2.5)  # a fourth would be due by now
                finally:
                    await worker.close()
                    await task
                ids = [job.id for job in started]
                assert ids[0] == first
                times = slots(ids, "tick")
                assert times == [times[0], times[0] + 2000, times[0] + 4000]
                assert [json.loads(j._fields["opts"])["repeat"]["count"] for j in started] == [
                    1,
                    2,
                    3,
                ]
                assert all(job.data == {"a": 1} and job.name == "t" for job in started)
                # Node reads corral's iterations back: three made, none pending (limit).
                seen = await n.start("scheduler", id="tick")
                scheduler = (await seen.finish())[0]["scheduler"]
                assert scheduler["iterationCount"] == 3
                assert scheduler["next"] == times[2]
                assert (await queue.get_job_counts("completed", "delayed")) == {
                    "completed": 3,
                    "delayed": 0,
                }
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))


@pytest.mark.parametrize(
    "repeat",
    [{"every": 2000, "limit": 3}, {"pattern": "*/2 * * * * *", "tz": "UTC", "limit": 3}],
    ids=["every", "pattern"],
)
def test_a_corral_scheduler_keeps_running_on_node_workers(
    redis_url: str, key_prefix: str, node: str, repeat: dict[str, Any]
) -> None:
    async def scenario() -> None:
        backend = RedisBackend.from_url(redis_url, prefix=key_prefix)
        queue = Queue(QUEUE, backend)
        try:
            async with node_scripts(node, url=redis_url, prefix=key_prefix, queue=QUEUE) as n:
                # The worker first: an iteration activated after the next slot has passed
                # skips the missed slots (as it should), and Node takes a while to start.
                worker = await n.start("worker", count=3, timeoutMs=30_000)
                await worker.wait_event("ready")
                first = await queue.upsert_job_scheduler(
                    "tick", repeat, {"name": "t", "data": {"b": 2}}
                )
                assert first is not None
                records = await worker.finish(timeout=30)
                processing = [r["job"] for r in records if r["event"] == "processing"]
                ids = [job["id"] for job in processing]
                assert ids[0] == first
                times = slots(ids, "tick")
                step = 2000
                assert times == [times[0], times[0] + step, times[0] + 2 * step]
                assert [job["opts"]["repeat"]["count"] for job in processing] == [1, 2, 3]
                assert all(job["data"] == {"b": 2} for job in processing)
                if "pattern" in repeat:
                    assert [job["opts"]["prevMillis"] for job in processing] == times
                    assert all(t % 2000 == 0 for t in times)
                scheduler = await queue.get_job_scheduler("tick")
                assert scheduler is not None
                assert scheduler["iteration_count"] == 3
                assert scheduler["next"] == times[2]
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))
