"""corral's side of the comparison benchmark (see harness.py); run by run.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness import Impl, OnCompleted, Producer, main

from corral import Job, Queue, Worker
from corral.backends.redis import RedisBackend


def make_impl(args: argparse.Namespace) -> Impl:
    url, prefix = args.redis_url, args.prefix

    async def producer(queue_name: str) -> Producer:
        backend = RedisBackend.from_url(url, prefix=prefix)
        queue = Queue(queue_name, backend)

        async def add(i: int) -> None:
            await queue.add("noop", {"i": i})

        async def add_bulk(ids: range) -> None:
            await queue.add_bulk([{"name": "noop", "data": {"i": i}} for i in ids])

        return Producer(add, add_bulk, backend.close)

    async def worker(
        queue_name: str, concurrency: int, on_completed: OnCompleted
    ) -> Callable[[bool], Awaitable[Any]]:
        backend = RedisBackend.from_url(url, prefix=prefix)

        async def noop(job: Job) -> None:
            return None

        worker = Worker(queue_name, noop, backend, concurrency=concurrency)
        worker.on("completed", lambda job, result: on_completed())

        task = asyncio.create_task(worker.run())

        async def close(force: bool) -> None:
            await worker.close(force=force)
            await task
            await backend.close()

        return close

    return Impl("corral", corral_version(), producer, worker)


def corral_version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:  # run.py links the source in rather than installing it
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])


if __name__ == "__main__":
    sys.exit(main(make_impl))
