"""The ``corral`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from corral import admin_cli, worker_cli
from corral.backends.memory import MemoryBackend
from corral.engine import Job, Queue, Worker
from corral.sim import cli as sim_cli


async def _demo(jobs: int, concurrency: int) -> int:
    backend = MemoryBackend()
    queue = Queue("demo", backend)
    done = asyncio.Event()
    completed = 0

    async def square(job: Job) -> int:
        value: int = job.data["n"]
        return value * value

    def on_completed(job: Job, result: int) -> None:
        nonlocal completed
        completed += 1
        if completed == jobs:
            done.set()

    worker = Worker("demo", square, backend, concurrency=concurrency)
    worker.on("completed", on_completed)
    started = time.perf_counter()
    await queue.add_bulk([{"name": "square", "data": {"n": n}} for n in range(jobs)])
    runner = asyncio.create_task(worker.run())
    await done.wait()
    await worker.close()
    await runner
    elapsed = time.perf_counter() - started
    counts = await queue.get_job_counts()
    sample = await queue.get_job("3")
    print(
        f"processed {completed} jobs with concurrency {concurrency} in {elapsed:.3f} s "
        f"({completed / elapsed:,.0f} jobs/s)"
    )
    print("job counts:", ", ".join(f"{state}={n}" for state, n in counts.items()))
    if sample is not None:
        print(
            f"job 3: data={sample.data} result={sample.return_value} "
            f"attempts_made={sample.attempts_made}"
        )
    backend.check()
    return 0 if counts["completed"] == jobs else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` console script."""
    parser = argparse.ArgumentParser(prog="corral", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="add jobs and process them with a Worker on the in-memory backend"
    )
    demo.add_argument("--jobs", type=int, default=10_000)
    demo.add_argument("--concurrency", type=int, default=10)
    sim_cli.add_parser(commands)
    worker_cli.add_parser(commands)
    admin_cli.add_inspect_parser(commands)
    admin_cli.add_check_stalled_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_cli.run_command(args, parser)
    if args.command == "inspect":
        return admin_cli.run_inspect(args, parser)
    if args.command == "check-stalled":
        return admin_cli.run_check_stalled(args, parser)
    if args.command == "sim":
        return sim_cli.run_command(args, parser)
    if args.command == "demo":
        if args.jobs < 1 or args.concurrency < 1:
            parser.error("--jobs and --concurrency must be at least 1")
        return asyncio.run(_demo(args.jobs, args.concurrency))
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
