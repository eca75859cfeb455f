"""Issue 13 item 2: one call that cannot be sent must not fail the calls beside it.

Each round makes 10 good adds and 1 bad one (a lone surrogate in the job name) at once on one
RedisBackend, and counts the good calls that failed. ``--mode backend`` sends the bad job past
the Queue API's check, so that the command queue alone is measured. Uses the Redis at ``--url``
under a key prefix of its own, deleted afterwards::

    python bench/faults/batch_isolation.py [--rounds 20] [--mode api|backend]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import redis

from corral.backends.redis import RedisBackend
from corral.engine import Queue
from corral.engine.storage import new_job


async def one_round(backend: RedisBackend, queue: Queue, mode: str) -> int:
    async def good(i: int) -> None:
        await queue.add(f"good-{i}", {"i": i})

    async def bad() -> None:
        if mode == "backend":
            await backend.add_jobs(queue.name, [new_job("bad\ud800", "null", "{}", 0)])
        else:
            await queue.add("bad\ud800")

    calls = [good(i) for i in range(5)] + [bad()] + [good(i) for i in range(5, 10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[5], BaseException), "the bad call went through"
    return sum(isinstance(result, BaseException) for result in results[:5] + results[6:])


async def main(args: argparse.Namespace) -> None:
    prefix = f"corral-batch-{uuid.uuid4().hex[:8]}"
    backend = RedisBackend.from_url(args.url, prefix=prefix)
    queue = Queue("batch", backend)
    try:
        await queue.add("warm-up")
        failed = [await one_round(backend, queue, args.mode) for _ in range(args.rounds)]
    finally:
        await backend.close()
        with redis.Redis.from_url(args.url) as admin:
            keys = list(admin.scan_iter(match=f"{prefix}:*"))
            if keys:
                admin.delete(*keys)
    print(f"[{args.mode}] good calls failed per round (10 good + 1 bad): {failed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mode", choices=["api", "backend"], default="api")
    asyncio.run(main(parser.parse_args()))
