"""One queue seen from corral and from the Node scripts: what every interop test starts from."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from node_bullmq import Node, Record, node_scripts, poll

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker

QUEUE = "interop"
#: A test's whole scenario must end within this many seconds.
SCENARIO_TIMEOUT = 60


def run(body: Callable[[World], Awaitable[None]], redis_url: str, prefix: str, node: str) -> None:
    """Run a scenario on a fresh real-time event loop (bounded in time), with a World on the
    Redis at ``redis_url`` under ``prefix``."""

    async def scenario() -> None:
        backend = RedisBackend.from_url(redis_url, prefix=prefix)
        try:
            async with node_scripts(node, url=redis_url, prefix=prefix, queue=QUEUE) as scripts:
                await body(World(backend, scripts))
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(scenario(), SCENARIO_TIMEOUT))


class World:
    """One queue seen from both sides: corral's backend and queue, and the Node scripts."""

    def __init__(self, backend: RedisBackend, node: Node) -> None:
        self.backend = backend
        self.queue = Queue(QUEUE, backend)
        self.node = node

    async def job(self, job_id: str) -> Job:
        job = await self.queue.get_job(job_id)
        assert job is not None, f"job {job_id} is gone"
        return job

    async def run_worker(
        self, worker: Worker, done: Callable[[], bool | Awaitable[bool]], what: str
    ) -> None:
        """Run a corral worker until ``done()``, then close it."""
        task = asyncio.create_task(worker.run())
        try:
            await poll(lambda: task.done() or done(), 20, what)
        finally:
            await worker.close()
            await task

    async def assert_same_view(self, job_id: str, node_view: Record) -> Job:
        """Node BullMQ and corral read the same state and fields for the job."""
        job = await self.job(job_id)
        seen = node_view["job"]
        assert node_view["state"] == await self.queue.get_job_state(job_id)
        corral = {
            "name": job.name,
            "data": job.data,
            "timestamp": job.timestamp,
            "delay": job.delay,
            "priority": job.priority,
            "processedOn": job.processed_on,
            "finishedOn": job.finished_on,
            "attemptsMade": job.attempts_made,
            "attemptsStarted": job.attempts_started,
            "stalledCounter": job.stalled_counter,
            "progress": job.progress,
            "returnvalue": job.return_value,
            "failedReason": job.failed_reason,
            "stacktrace": job.stacktrace,
            "deferredFailure": job.deferred_failure,
            "processedBy": job.processed_by,
        }
        assert {key: seen[key] for key in corral} == corral
        return job


async def finish_by_corral(world: World, *names: str) -> dict[str, Job]:
    """Add one job per name and run them on a corral worker: ``bad*`` jobs fail
    ("<name> failed"), the others complete with ``{"by": "corral", "name": name}``."""
    jobs = {name: await world.queue.add(name, {"name": name}) for name in names}

    async def processor(job: Job) -> dict[str, str]:
        if job.name.startswith("bad"):
            raise ValueError(f"{job.name} failed")
        return {"by": "corral", "name": job.name}

    finished: list[str] = []
    worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
    worker.on("completed", lambda job, result: finished.append(job.id))
    worker.on("failed", lambda job, error: finished.append(job.id))
    await world.run_worker(worker, lambda: len(finished) == len(names), "the jobs to finish")
    return jobs
