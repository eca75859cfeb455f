"""Re-executions caused by store outages shorter than ``lock_duration`` (issue 13, item 11).

Not a test (pytest does not collect it): a measurement on a private ``redis-server`` (AOF,
``appendfsync always``) that this script starts on ``--port``. Workers process ``--jobs`` jobs
while the server is restarted ``--restarts`` times, each time down for ``--down`` seconds (well
under the lock duration); the script then counts the jobs whose processor ran more than once
and checks that every job completed exactly once (one ``completed`` event each).

Run from a directory without a ``corral/`` folder, e.g. from ``/tmp``::

    python /path/to/tests/redis/outage_soak.py --port 6431

Before/after figures: point ``PYTHONPATH`` at a copy of the old package.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from local_redis import RedisProcess

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker
from corral.engine.states import JobState

Q = "soak"


async def soak(args: argparse.Namespace, server: RedisProcess) -> dict[str, object]:
    backend = RedisBackend.from_url(server.url, prefix=f"outage-soak-{args.port}")
    queue = Queue(Q, backend)
    ids: list[str] = []
    for start in range(0, args.jobs, 1000):
        added = await queue.add_bulk(
            [{"name": "j", "data": i} for i in range(start, min(start + 1000, args.jobs))]
        )
        ids += [job.id for job in added]
    runs: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()

    async def work(job: Job) -> int:
        runs[job.id] += 1
        await asyncio.sleep(random.uniform(0.005, 0.03))
        return 1

    workers = [
        Worker(
            Q,
            work,
            RedisBackend.from_url(server.url, prefix=f"outage-soak-{args.port}"),
            concurrency=args.concurrency,
            lock_duration=args.lock,
            stalled_interval=2_000,
        )
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.on("error", lambda error, job: errors.update([type(error).__name__]))
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    started = time.monotonic()
    for _ in range(args.restarts):
        await asyncio.sleep(args.every)
        await asyncio.to_thread(server.restart, crash=args.crash, down_s=args.down)
    while True:
        try:
            counts = await queue.get_job_counts()
            if counts["completed"] == args.jobs:
                break
        except Exception:
            pass
        if time.monotonic() - started > args.deadline:
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    for worker in workers:
        await worker.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    completed_events = collections.Counter(
        event.fields.get("jobId")
        for event in await backend.get_events(Q, count=10 * args.jobs)
        if event.name == "completed"
    )
    counts = await backend.get_counts(Q)
    if args.show:
        for job_id, n in runs.items():
            if n > 1:
                print(job_id, await backend.get_job(Q, job_id))
    stalled = 0
    for job_id in ids:
        fields = await backend.get_job(Q, job_id)
        stalled += int((fields or {}).get("stc") or 0) > 0
    await backend.close()
    return {
        "jobs": args.jobs,
        "completed": counts[JobState.COMPLETED],
        "re_executed_jobs": sum(1 for n in runs.values() if n > 1),
        "extra_runs": sum(n - 1 for n in runs.values() if n > 1),
        "stalled_jobs": stalled,
        "completed_twice": sum(1 for n in completed_events.values() if n > 1),
        "worker_errors": dict(errors),
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--lock", type=int, default=10_000, help="lock_duration (ms)")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between restarts")
    parser.add_argument("--down", type=float, default=2.0, help="seconds the server is down")
    parser.add_argument("--crash", action="store_true", help="SIGKILL instead of SIGTERM")
    parser.add_argument("--deadline", type=float, default=180.0)
    parser.add_argument("--show", action="store_true", help="print the re-executed jobs")
    args = parser.parse_args()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", args.port)) == 0:
            parser.error(f"port {args.port} is taken: this script starts a server of its own")
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(
            Path(directory), args.port, {"appendonly": "yes", "appendfsync": "always"}
        )
        server.start()
        try:
            print(asyncio.run(soak(args, server)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
