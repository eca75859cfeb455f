"""Issue 13 item 5: what an evicting ``maxmemory-policy`` does to a queue, and the warning.

Starts a private redis-server on ``--port`` with 4 MB of ``maxmemory`` and ``allkeys-lru``,
adds ``--jobs`` jobs in chunks of 500, and prints how many adds were reported created, how
many ids the wait list holds, how many of their job hashes were evicted and what the id
counter says; corral's warning about the policy is logged on the first operation::

    python bench/faults/eviction.py --port 6481 [--jobs 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from _server import private_server

from corral.backends.redis import RedisBackend
from corral.engine.storage import new_job


async def main(args: argparse.Namespace) -> None:
    with private_server(
        args.port, {"maxmemory": "4mb", "maxmemory-policy": "allkeys-lru"}
    ) as server:
        admin = server.admin()
        backend = RedisBackend.from_url(server.url, prefix="evict")
        created = 0
        data = '{"pad":"%s"}' % ("x" * 100)
        for start in range(0, args.jobs, 500):
            chunk = [new_job("j", data, "{}", 1) for _ in range(start, min(args.jobs, start + 500))]
            created += sum((await backend.add_jobs("q", chunk)).created)
        keys = backend.keys("q")
        ids = admin.lrange(keys.wait, 0, -1)
        evicted = sum(1 for i in ids if not admin.exists(keys.base + i.decode()))
        print(
            f"adds reported created: {created} of {args.jobs}; ids in wait: {len(ids)}; "
            f"their job hashes evicted: {evicted}; id counter: {admin.get(keys.id)!r}; "
            f"keys evicted by the server: {admin.info('stats')['evicted_keys']}"
        )
        if hasattr(backend, "server_warnings"):  # (corral before issue 13 had none)
            print(f"warnings: {await backend.server_warnings()}")
        await backend.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(levelname)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=int, default=60_000)
    asyncio.run(main(parser.parse_args()))
