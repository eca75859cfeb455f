"""Profile corral's processing path on Redis: one worker, pre-added no-op jobs.

Run with an interpreter that has corral[redis] (from outside the repository root, whose
``corral/`` folder would shadow the installed package)::

    python bench/compare/profile_corral.py --concurrency 1 [--jobs 20000] [--cprofile out.prof]

Prints the processing rate, the round trips to Redis per job (batches the backend's command
queue sent) and the commands per round trip, and the server-side time per EVALSHA from
``INFO commandstats`` (a delta over the run: other clients of a shared server inflate the
count a little). With ``--cprofile`` the worker runs under cProfile and the top functions by
own time are printed; for a sampling view run it under ``py-spy record``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from typing import Any

from redis.asyncio import Redis

from corral import Job, Queue, Worker
from corral.backends.redis import RedisBackend, pipeline
from corral.backends.redis.pipeline import CommandQueue


async def commandstats(client: Redis) -> dict[str, dict[str, float]]:
    raw: dict[str, Any] = await client.info("commandstats")
    return {name: dict(value) for name, value in raw.items()}


async def run(args: argparse.Namespace) -> None:
    prefix = f"corral-profile-{time.time_ns()}"
    client = Redis.from_url(args.redis_url)
    try:
        await profile(args, prefix, client)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
        await client.aclose()


async def profile(args: argparse.Namespace, prefix: str, client: Redis) -> None:
    producer = RedisBackend.from_url(args.redis_url, prefix=prefix)
    queue = Queue("profile", producer)
    for start in range(0, args.jobs, 1000):
        stop = min(start + 1000, args.jobs)
        await queue.add_bulk([{"name": "noop", "data": {"i": i}} for i in range(start, stop)])
    await producer.close()

    # Round trips: the batches the backend's command queue writes (its own packer with a plain
    # client, redis-py's pipeline or execute_command with a cluster client).
    batches: list[int] = []
    original_pack, original_pipeline = pipeline._pack, CommandQueue._pipeline

    def counting_pack(connection: Any, commands: list[tuple[Any, ...]]) -> bytes:
        batches.append(len(commands))
        return original_pack(connection, commands)

    async def counting_pipeline(self: CommandQueue, commands: list[tuple[Any, ...]]) -> list[Any]:
        batches.append(len(commands))
        return await original_pipeline(self, commands)

    pipeline._pack = counting_pack
    CommandQueue._pipeline = counting_pipeline  # type: ignore[method-assign]

    backend = RedisBackend.from_url(args.redis_url, prefix=prefix)
    done = asyncio.Event()
    completed = 0

    def on_completed(job: Job, result: Any) -> None:
        nonlocal completed
        completed += 1
        if completed == args.jobs:
            done.set()

    async def noop(job: Job) -> None:
        return None

    before = await commandstats(client)
    profiler = cProfile.Profile() if args.cprofile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    worker = Worker("profile", noop, backend, concurrency=args.concurrency)
    worker.on("completed", on_completed)
    task = asyncio.create_task(worker.run())
    await done.wait()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if profiler is not None:
        profiler.disable()
    after = await commandstats(client)
    await worker.close()
    await task
    await backend.close()
    pipeline._pack = original_pack
    CommandQueue._pipeline = original_pipeline  # type: ignore[method-assign]

    jobs = args.jobs
    print(f"concurrency {args.concurrency}: {jobs / elapsed:,.0f} jobs/s ({elapsed:.2f} s)")
    print(f"client CPU: {cpu / jobs * 1e6:.0f} µs per job ({cpu / elapsed:.0%} of one core)")
    print(
        f"round trips: {len(batches):,} ({len(batches) / jobs:.3f} per job), "
        f"{sum(batches) / max(len(batches), 1):.2f} commands per round trip"
    )
    for name in ("cmdstat_evalsha", "cmdstat_fcall", "cmdstat_bzpopmin"):
        calls = after.get(name, {}).get("calls", 0) - before.get(name, {}).get("calls", 0)
        usec = after.get(name, {}).get("usec", 0) - before.get(name, {}).get("usec", 0)
        if calls:
            print(
                f"{name[8:]}: {calls:,.0f} calls, {usec / calls:.1f} µs each on the server, "
                f"{usec / 1e6:.2f} s in all ({usec / 1e6 / elapsed:.0%} of the run)"
            )
    if profiler is not None:
        profiler.dump_stats(args.cprofile)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cprofile", help="write cProfile stats here and print the top")
    parser.add_argument("--top", type=int, default=30)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
