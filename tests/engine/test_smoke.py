"""A first end-to-end run: add, process, complete."""

from __future__ import annotations

import asyncio

from corral.engine import Job, Queue, Worker
from corral.engine.storage import Storage
from corral.sim.loop import VirtualClock


async def test_add_process_complete(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue("smoke", backend, clock=clock)
    job = await queue.add("square", {"n": 7})

    async def square(j: Job) -> int:
        await asyncio.sleep(1)
        return int(j.data["n"]) ** 2

    worker = Worker("smoke", square, backend, clock=clock)
    done = asyncio.Event()
    worker.on("completed", lambda j, r: done.set())
    runner = asyncio.create_task(worker.run())
    await done.wait()
    await worker.close()
    await runner
    stored = await queue.get_job(job.id)
    assert stored is not None
    assert stored.return_value == 49
    assert await queue.get_job_state(job.id) == "completed"
    assert stored.finished_on == clock.now_ms()
