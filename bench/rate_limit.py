"""Rate-limited throughput: does the limiter hold its rate, and without busy polling?

Run:  .venv/bin/python bench/rate_limit.py [--max 50] [--duration 1000] [--seconds 60]
          [--workers 2] [--concurrency 10] [--backend redis|memory] [--url redis://...]

Adds more jobs than the run can take, runs ``--workers`` workers (one process, real time) with
``limiter={"max": --max, "duration": --duration}`` for ``--seconds``, and prints:

* jobs/s measured from the first activation to the end of the last window, against
  ``max / duration``, and their ratio (the issue's goal: within 2 % over a minute). BullMQ's
  fixed window, opened by the first activation after the previous one closed, keeps the rate
  a little *below* ``max/duration``: each window also holds the time to the next fetch;
* the most activations in any fixed window (must be <= max);
* storage calls per job, by operation: each is one round trip to Redis (one EVALSHA, or one
  BZPOPMIN for ``wait_for_work``), so this counts Redis calls without reading the shared
  server's statistics. A polling worker would show many ``fetch_next`` per job.

On Redis it uses a key prefix of its own and deletes its keys at the end. Keep runs short on a
shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
import uuid
from typing import Any

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker
from corral.engine.storage import Storage


class Counting:
    """A Storage proxy counting the calls of each operation."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await target(*args, **kwargs)

        return call


def windows(starts: list[float], duration_ms: int) -> list[int]:
    """Activations per fixed window (opened by the first start after the last one closed)."""
    counts: list[int] = []
    end = -1.0
    for start in sorted(starts):
        if start >= end:
            end = start + duration_ms / 1000
            counts.append(0)
        counts[-1] += 1
    return counts


async def run(args: argparse.Namespace) -> None:
    prefix = f"corral-bench-{uuid.uuid4().hex[:8]}"
    inner: Storage
    if args.backend == "redis":
        inner = RedisBackend.from_url(args.url, prefix=prefix)
    else:
        inner = MemoryBackend()
    backend = Counting(inner)
    queue = Queue("bench", inner)
    rate = args.max * 1000 / args.duration
    total = int(rate * args.seconds * 1.2) + args.max
    for first in range(0, total, 1000):
        await queue.add_bulk(
            [{"name": "j", "data": i} for i in range(first, min(total, first + 1000))]
        )
    starts: list[float] = []

    async def job(job: Job) -> None:
        starts.append(time.monotonic())

    limiter = {"max": args.max, "duration": args.duration}
    workers = [
        Worker("bench", job, backend, concurrency=args.concurrency, limiter=limiter)  # type: ignore[arg-type]
        for _ in range(args.workers)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await asyncio.sleep(args.seconds)
    for w in workers:
        await w.close()
    await asyncio.gather(*tasks)
    done = len(starts)
    # From the first window's opening to the last window's end: whole windows only, so that a
    # short run is not flattered by its last window's unspent time.
    span = max(starts) - min(starts) + args.duration / 1000 if done else 0.0
    measured = done / span if span else 0.0
    per_window = windows(starts, args.duration)
    print(
        f"backend={args.backend} limiter max={args.max} duration={args.duration} ms, "
        f"{args.workers} worker(s) x concurrency {args.concurrency}, {args.seconds} s"
    )
    print(
        f"jobs started: {done}; over {span:.2f} s: {measured:.2f} jobs/s "
        f"(limit {rate:.2f}/s, ratio {measured / rate:.4f})"
    )
    print(
        f"fixed windows: {len(per_window)}, most activations in one: {max(per_window)} "
        f"(max {args.max})"
    )
    calls = sum(backend.calls.values())
    detail = ", ".join(f"{op} {n / done:.3f}" for op, n in backend.calls.most_common())
    print(f"storage calls (Redis round trips) per job: {calls / done:.3f} ({detail})")
    if isinstance(inner, RedisBackend):
        client = inner.client
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    await inner.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max", type=int, default=50)
    parser.add_argument("--duration", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--backend", choices=("redis", "memory"), default="redis")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
