"""Rate limits and global concurrency shared by Node BullMQ and corral on one real Redis: one
``limiter`` window counted by both sides' workers, and limit settings written by one side and
honoured (and read back) by the other. Real time, as the other interop tests."""

from __future__ import annotations

import asyncio

import pytest
from node_bullmq import poll, require_node
from test_bullmq_interop import World, run

from corral.engine import Job, Worker

pytestmark = [pytest.mark.redis, pytest.mark.interop]

QUEUE = "interop"


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with the pinned bullmq installed in tests/interop."""
    return require_node()


def fixed_windows(starts: list[int], duration: int, slack: int = 50) -> list[int]:
    """How many starts each of BullMQ's fixed windows held: a window opens at the first start
    after the previous one closed and lasts ``duration`` (less ``slack``: ``processedOn`` is
    the client's clock when it sent the fetch, a few ms before Redis ran it)."""
    counts: list[int] = []
    end = None
    for start in sorted(starts):
        if end is None or start >= end:
            end = start + duration - slack
            counts.append(0)
        counts[-1] += 1
    return counts


def test_node_and_corral_limiters_share_one_window(
    redis_url: str, key_prefix: str, node: str
) -> None:
    limiter = {"max": 2, "duration": 500}
    count = 12

    async def body(world: World) -> None:
        added = await world.queue.add_bulk([{"name": "j", "data": i} for i in range(count)])
        node_worker = await world.node.start(
            "worker", count=count, concurrency=4, limiter=limiter, name="node-worker"
        )
        await node_worker.wait_event("ready")

        async def quick(job: Job) -> str:
            return "corral"

        worker = Worker(
            QUEUE, quick, world.backend, concurrency=4, limiter=limiter, name="corral-worker"
        )

        async def all_done() -> bool:
            return (await world.queue.get_job_counts("completed"))["completed"] == count

        await world.run_worker(worker, all_done, "every job to complete")
        jobs = [await world.job(job.id) for job in added]
        starts = [job.processed_on for job in jobs if job.processed_on is not None]
        assert len(starts) == count
        windows = fixed_windows(starts, limiter["duration"])
        assert max(windows) <= limiter["max"], windows
        # 12 jobs at 2 per window: at least 6 windows, so over 2.5 s from first to last.
        assert len(windows) >= count // limiter["max"]
        assert max(starts) - min(starts) >= (count // limiter["max"] - 1) * limiter["duration"]
        assert {job.processed_by for job in jobs} <= {"node-worker", "corral-worker"}

    run(body, redis_url, key_prefix, node)


def test_global_concurrency_set_by_node_is_honoured_by_corral_workers(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        admin = await world.node.run("admin", globalConcurrency=1)
        assert (await admin.wait_event("limits"))["globalConcurrency"] == 1
        assert await world.queue.get_global_concurrency() == 1
        running = 0
        peak = 0
        done = 0

        async def slow(job: Job) -> None:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.1)
            running -= 1
            done += 1

        await world.queue.add_bulk([{"name": "j", "data": i} for i in range(6)])
        workers = [
            Worker(QUEUE, slow, world.backend, concurrency=3, drain_delay=200) for _ in range(2)
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await poll(lambda: done == 6, 20, "six jobs")
        finally:
            for w in workers:
                await w.close()
            await asyncio.gather(*tasks)
        assert peak == 1

    run(body, redis_url, key_prefix, node)


def test_limits_set_by_corral_are_read_by_node(redis_url: str, key_prefix: str, node: str) -> None:
    async def body(world: World) -> None:
        await world.queue.set_global_concurrency(4)
        await world.queue.set_global_rate_limit(10, 2000)
        await world.queue.rate_limit(5000)
        admin = await world.node.run("admin")
        seen = await admin.wait_event("limits")
        assert seen["globalConcurrency"] == 4
        assert seen["globalRateLimit"] == {"max": 10, "duration": 2000}
        assert 0 < seen["rateLimitTtl"] <= 5000
        # And Node's rateLimit() is seen by corral's query.
        await world.queue.remove_rate_limit_key()
        await world.node.run("admin", rateLimitMs=3000)
        assert 0 < await world.queue.get_rate_limit_ttl() <= 3000

    run(body, redis_url, key_prefix, node)
