"""BullMQ's Python port's side of the comparison benchmark (see harness.py); run by run.py in
its own virtualenv."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

from bullmq import Queue, Worker
from harness import Impl, OnCompleted, Producer, main


def make_impl(args: argparse.Namespace) -> Impl:
    url, prefix = args.redis_url, args.prefix

    async def producer(queue_name: str) -> Producer:
        queue = Queue(queue_name, {"connection": url, "prefix": prefix})

        async def add(i: int) -> None:
            await queue.add("noop", {"i": i})

        async def add_bulk(ids: range) -> None:
            await queue.addBulk([{"name": "noop", "data": {"i": i}} for i in ids])

        return Producer(add, add_bulk, queue.close)

    async def worker(
        queue_name: str, concurrency: int, on_completed: OnCompleted
    ) -> Callable[[bool], Awaitable[Any]]:
        async def noop(job: Any, token: str) -> None:
            return None

        worker = Worker(
            queue_name,
            noop,
            {"connection": url, "prefix": prefix, "concurrency": concurrency},
        )
        worker.on("completed", lambda job, result: on_completed())

        async def close(force: bool) -> None:
            await worker.close(force=force)

        return close

    return Impl("bullmq-python", version("bullmq"), producer, worker)


if __name__ == "__main__":
    sys.exit(main(make_impl))
