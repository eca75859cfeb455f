"""Throughput of the engine on the memory backend (pytest-benchmark; not part of the test run).

Run:  .venv/bin/pytest bench/test_memory_throughput.py --benchmark-columns=median,ops,rounds

Each round adds or processes ``JOBS`` no-op jobs on a fresh backend under the real asyncio loop
and system clock; ``jobs/s`` = JOBS / median round time (pytest-benchmark reports the median).

``test_task_per_job`` is the yardstick the speed goal is stated against (an asyncio task created
and awaited per no-op job: about 177,000/s on the reference machines, against a goal of 100,000
jobs/s): the machine's speed drifts, so compare the other rates with it measured in the same run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.backends.memory import MemoryBackend
from corral.engine import Job, Queue, Worker

JOBS = 20_000
BULK_CHUNK = 1_000


async def _task_per_job() -> None:
    async def noop() -> None:
        return None

    loop = asyncio.get_running_loop()
    for _ in range(JOBS):
        await loop.create_task(noop())


async def _add_one_by_one() -> None:
    queue = Queue("bench", MemoryBackend())
    for n in range(JOBS):
        await queue.add("noop", n)


async def _add_bulk() -> None:
    queue = Queue("bench", MemoryBackend())
    for start in range(0, JOBS, BULK_CHUNK):
        await queue.add_bulk(
            [{"name": "noop", "data": n} for n in range(start, start + BULK_CHUNK)]
        )


async def _filled() -> MemoryBackend:
    backend = MemoryBackend()
    queue = Queue("bench", backend)
    for start in range(0, JOBS, BULK_CHUNK):
        await queue.add_bulk(
            [{"name": "noop", "data": n} for n in range(start, start + BULK_CHUNK)]
        )
    return backend


async def _process(concurrency: int, backend: MemoryBackend | None = None) -> None:
    backend = backend or await _filled()
    done = asyncio.Event()
    completed = 0

    async def noop(job: Job) -> None:
        return None

    def on_completed(job: Job, result: Any) -> None:
        nonlocal completed
        completed += 1
        if completed == JOBS:
            done.set()

    worker = Worker("bench", noop, backend, concurrency=concurrency)
    worker.on("completed", on_completed)
    runner = asyncio.create_task(worker.run())
    await done.wait()
    await worker.close()
    await runner


def _report(benchmark: Any) -> None:
    benchmark.extra_info["jobs"] = JOBS
    benchmark.extra_info["jobs_per_second_median"] = round(JOBS / benchmark.stats["median"])


def test_task_per_job(benchmark: Any) -> None:
    benchmark.pedantic(lambda: asyncio.run(_task_per_job()), rounds=5, warmup_rounds=1)
    _report(benchmark)


def test_add(benchmark: Any) -> None:
    benchmark.pedantic(lambda: asyncio.run(_add_one_by_one()), rounds=5, warmup_rounds=1)
    _report(benchmark)


def test_add_bulk(benchmark: Any) -> None:
    benchmark.pedantic(lambda: asyncio.run(_add_bulk()), rounds=5, warmup_rounds=1)
    _report(benchmark)


@pytest.mark.parametrize("concurrency", [1, 10, 100])
def test_end_to_end(benchmark: Any, concurrency: int) -> None:
    """Add (in bulk) and process: the processing rate includes the adds."""
    benchmark.pedantic(lambda: asyncio.run(_process(concurrency)), rounds=5, warmup_rounds=1)
    _report(benchmark)


@pytest.mark.parametrize("concurrency", [1, 10, 100])
def test_process_only(benchmark: Any, concurrency: int) -> None:
    """Processing alone: the jobs are added before the timed part of each round."""

    def setup() -> tuple[tuple[MemoryBackend], dict[str, Any]]:
        return (asyncio.run(_filled()),), {}

    benchmark.pedantic(
        lambda backend: asyncio.run(_process(concurrency, backend)),
        setup=setup,
        rounds=5,
        warmup_rounds=1,
    )
    _report(benchmark)
