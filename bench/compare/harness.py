"""The phases of the comparison benchmark, shared by the two Python programs.

``corral_bench.py`` and ``bullmq_py_bench.py`` each wrap their library in an :class:`Impl` and
call :func:`main`; ``node/bench.mjs`` is the same program in JavaScript. Every program times
the same five phases on one Redis, each in a queue of its own under the prefix it is given:

``add_single``
    ``N`` jobs added one by one, each ``add`` awaited before the next.
``add_bulk``
    ``N`` jobs added with the bulk call, ``chunk`` jobs per call, one call at a time.
``process_c<C>``
    ``N`` jobs pre-added (bulk, not timed), then one worker at concurrency ``C`` with a no-op
    processor. The clock starts just before the worker is created and stops when the worker
    has reported the ``N``-th ``completed`` event (each implementation emits it after the job's
    completion is stored). The completed set is checked to hold ``N`` jobs afterwards.

Each phase is bounded by ``--phase-timeout`` seconds; a phase that fails or times out reports
its error and the next phase runs. The program prints one JSON object on its last stdout line:
``{"impl", "version", "phases": {name: {"jobs", "seconds", "rate", "client_cpu_us_per_job",
"server_cpu_us_per_job"} | {"error"}}}`` (the CPU of this process and of the Redis server in
the timed window, per job: the server's is meaningful only on a server of one's own). Needs
only the standard library and ``redis`` (redis-py's asyncio client, for checks and cleanup).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

OnCompleted = Callable[[], None]


@dataclass
class Timing:
    """One timed window: wall seconds, this process's CPU seconds and the Redis server's
    (``INFO cpu``; meaningful on a server of one's own, as ``ab.py`` starts)."""

    seconds: float
    client_cpu: float
    server_cpu: float
    server_instructions: int | None = None


@dataclass
class Producer:
    """One implementation's producer: ``add(i)`` adds job ``i``, ``add_bulk(range)`` adds
    those jobs in one call, ``close()`` closes it."""

    add: Callable[[int], Awaitable[Any]]
    add_bulk: Callable[[range], Awaitable[Any]]
    close: Callable[[], Awaitable[Any]]


@dataclass
class Impl:
    """One implementation under test.

    Attributes:
        name: short name (``corral``, ``bullmq-python``).
        version: the library's version.
        producer: ``producer(queue)`` opens a producer on ``queue``.
        worker: ``worker(queue, concurrency, on_completed)`` starts a worker that calls
            ``on_completed()`` for every completed job, and returns its ``close(force)``.
    """

    name: str
    version: str
    producer: Callable[[str], Awaitable[Producer]]
    worker: Callable[[str, int, OnCompleted], Awaitable[Callable[[bool], Awaitable[Any]]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", required=True, help="key prefix (deleted afterwards)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--phases", default="add_single,add_bulk,process")
    parser.add_argument("--phase-timeout", type=float, default=180.0)
    return parser.parse_args(argv)


async def delete_keys(client: Redis, pattern: str) -> int:
    """UNLINK every key matching ``pattern``; returns how many."""
    deleted = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await client.unlink(*batch)
            batch = []
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


def callgrind(flag: str) -> int | None:
    """With ``CORRAL_BENCH_CALLGRIND=<pid>:<out file>`` (a server under ``valgrind
    --tool=callgrind --callgrind-out-file=<out file>``, as ``ab.py --callgrind`` starts it):
    ``-z`` zeroes its counters; ``-d`` dumps them and returns the instructions counted since."""
    setting = os.environ.get("CORRAL_BENCH_CALLGRIND")
    if not setting:
        return None
    pid, out_file = setting.split(":", 1)
    subprocess.run(["callgrind_control", flag, pid], capture_output=True, check=True)
    if flag != "-d":
        return None
    dumps = sorted(glob.glob(out_file + ".*"), key=os.path.getmtime)
    with open(dumps[-1]) as dump:
        for line in dump:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


class Bench:
    def __init__(self, impl: Impl, args: argparse.Namespace, client: Redis) -> None:
        self.impl = impl
        self.args = args
        self.client = client
        self.jobs: int = args.jobs

    async def server_cpu(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def start(self) -> tuple[float, float, float]:
        """The clocks at the start of a timed window (the server's read first, outside it)."""
        server = await self.server_cpu()
        callgrind("-z")
        return time.perf_counter(), time.process_time(), server

    async def stop(self, started: tuple[float, float, float]) -> Timing:
        """The window since ``started`` (the server's CPU read last, outside it)."""
        seconds, client = time.perf_counter() - started[0], time.process_time() - started[1]
        instructions = callgrind("-d")
        return Timing(seconds, client, await self.server_cpu() - started[2], instructions)

    def key(self, queue: str, suffix: str) -> str:
        return f"{self.args.prefix}:{queue}:{suffix}"

    async def expect(self, command: str, key: str, expected: int) -> None:
        found = await self.client.execute_command(command, key)
        if int(found) != expected:
            raise RuntimeError(f"{command} {key} is {found}, expected {expected}")

    async def add_bulk(self, producer: Producer) -> None:
        chunk = self.args.chunk
        for start in range(0, self.jobs, chunk):
            await producer.add_bulk(range(start, min(start + chunk, self.jobs)))

    async def add_single(self, queue: str) -> Timing:
        producer = await self.impl.producer(queue)
        try:
            await producer.add(-1)  # connect and load scripts before the clock starts
            started = await self.start()
            for i in range(self.jobs):
                await producer.add(i)
            elapsed = await self.stop(started)
        finally:
            await producer.close()
        await self.expect("LLEN", self.key(queue, "wait"), self.jobs + 1)
        return elapsed

    async def add_bulk_phase(self, queue: str) -> Timing:
        producer = await self.impl.producer(queue)
        try:
            await producer.add(-1)
            started = await self.start()
            await self.add_bulk(producer)
            elapsed = await self.stop(started)
        finally:
            await producer.close()
        await self.expect("LLEN", self.key(queue, "wait"), self.jobs + 1)
        return elapsed

    async def process(self, queue: str, concurrency: int) -> Timing:
        producer = await self.impl.producer(queue)
        try:
            await self.add_bulk(producer)
        finally:
            await producer.close()
        await self.expect("LLEN", self.key(queue, "wait"), self.jobs)
        done = asyncio.Event()
        completed = 0
        target = self.jobs

        def on_completed() -> None:
            nonlocal completed
            completed += 1
            if completed == target:
                done.set()

        started = await self.start()
        close = await self.impl.worker(queue, concurrency, on_completed)
        forced = True
        try:
            await done.wait()
            elapsed = await self.stop(started)
            forced = False
        finally:
            await close(forced)
        await self.expect("ZCARD", self.key(queue, "completed"), self.jobs)
        return elapsed

    async def phase(self, name: str, run: Callable[[str], Awaitable[Timing]]) -> dict[str, Any]:
        queue = f"{name}-{self.impl.name}"
        try:
            elapsed = await asyncio.wait_for(run(queue), self.args.phase_timeout)
        except TimeoutError:
            return {"error": f"timed out after {self.args.phase_timeout:g} s"}
        except Exception as exc:
            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            await delete_keys(self.client, f"{self.args.prefix}:{queue}:*")
            await delete_keys(self.client, f"{self.args.prefix}:{queue}")
        result = {
            "jobs": self.jobs,
            "seconds": elapsed.seconds,
            "rate": self.jobs / elapsed.seconds,
            "client_cpu_us_per_job": elapsed.client_cpu * 1e6 / self.jobs,
            "server_cpu_us_per_job": elapsed.server_cpu * 1e6 / self.jobs,
        }
        if elapsed.server_instructions is not None:
            result["server_instructions_per_job"] = elapsed.server_instructions / self.jobs
        return result

    async def run(self) -> dict[str, Any]:
        wanted = set(self.args.phases.split(","))
        phases: dict[str, Any] = {}
        if "add_single" in wanted:
            phases["add_single"] = await self.phase("add_single", self.add_single)
        if "add_bulk" in wanted:
            phases["add_bulk"] = await self.phase("add_bulk", self.add_bulk_phase)
        if "process" in wanted:
            for concurrency in (int(c) for c in self.args.concurrency.split(",")):

                def run(queue: str, concurrency: int = concurrency) -> Awaitable[Timing]:
                    return self.process(queue, concurrency)

                phases[f"process_c{concurrency}"] = await self.phase(f"process_c{concurrency}", run)
        return phases


async def _main(make_impl: Callable[[argparse.Namespace], Impl], argv: list[str] | None) -> int:
    args = parse_args(argv)
    impl = make_impl(args)
    client = Redis.from_url(args.redis_url)
    try:
        await client.ping()
        phases = await Bench(impl, args, client).run()
    finally:
        await delete_keys(client, f"{args.prefix}:*")
        await client.aclose()
    print(json.dumps({"impl": impl.name, "version": impl.version, "phases": phases}))
    return 0


def main(make_impl: Callable[[argparse.Namespace], Impl], argv: list[str] | None = None) -> int:
    """Run the benchmark phases for the implementation ``make_impl(args)`` builds."""
    try:
        return asyncio.run(_main(make_impl, argv))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
