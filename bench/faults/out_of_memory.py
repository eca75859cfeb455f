"""Issue 13 item 4: a worker on a Redis that is out of memory (``noeviction``).

Starts a private redis-server on ``--port``, adds 300 jobs, fills the server to ``--headroom``
bytes under a new ``maxmemory``, and runs a worker (concurrency 8) whose jobs each take 1.5 s
against a 1 s ``lock_duration``, for 20 s at the limit; then frees the memory and lets it
finish. Prints the peak memory over the limit, the jobs re-run (a processor started twice) and
the errors the worker reported::

    python bench/faults/out_of_memory.py --port 6482 [--headroom 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time

from _server import private_server

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker

JOBS = 300
FILLERS = 3000


async def main(args: argparse.Namespace) -> None:
    with private_server(args.port, {"maxmemory-policy": "noeviction"}) as server:
        admin = server.admin()
        backend = RedisBackend.from_url(server.url, prefix="oom")
        queue = Queue("q", backend)
        for i in range(JOBS):
            await queue.add("j", {"i": i, "pad": "p" * 500})
        with admin.pipeline(transaction=False) as pipe:
            for i in range(FILLERS):
                pipe.set(f"filler:{i}", "x" * 1000)
            pipe.execute()
        limit = int(admin.info("memory")["used_memory"]) + args.headroom
        admin.config_set("maxmemory", limit)
        starts: collections.Counter[str] = collections.Counter()
        errors: collections.Counter[str] = collections.Counter()

        async def work(job: Job) -> str:
            starts[job.id] += 1
            await asyncio.sleep(1.5)
            return "r" * 200

        worker = Worker("q", work, backend, concurrency=8, lock_duration=1000)
        worker.on(
            "error", lambda exc, job=None: errors.update([f"{type(exc).__name__}: {exc}"[:90]])
        )
        runner = asyncio.create_task(worker.run())
        peak = 0
        for _ in range(40):
            await asyncio.sleep(0.5)
            peak = max(peak, int(admin.info("memory")["used_memory"]))
        admin.delete(*[f"filler:{i}" for i in range(FILLERS)])
        admin.config_set("maxmemory", 0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (await queue.get_job_counts())["completed"] < JOBS:
            await asyncio.sleep(0.5)
        await worker.close()
        await runner
        print(f"peak memory over maxmemory: {max(0, peak - limit)} bytes")
        reruns = sum(n - 1 for n in starts.values())
        print(f"jobs re-run: {reruns}; counts: {await queue.get_job_counts()}")
        for text, count in errors.most_common(6):
            print(f"  error x{count}: {text}")
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--headroom", type=int, default=60_000)
    asyncio.run(main(parser.parse_args()))
