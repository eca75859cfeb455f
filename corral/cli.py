"""The ``corral`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from importlib import metadata

from corral import admin_cli, queue_cli, worker_cli
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


DESCRIPTION = """\
corral: a job queue with BullMQ's semantics. Run a worker on a queue in Redis, inspect a queue
or recover its stalled jobs, or run the chaos simulator. "corral COMMAND --help" describes each
command."""

#: The exit status of a command whose output pipe was closed early, as if SIGPIPE had killed it
#: (what a shell reports for `yes | head -1`).
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE


def version() -> str:
    """corral's installed version ("unknown" when run from a checkout that was never installed)."""
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``corral`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="corral", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"corral {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="add jobs and process them with a Worker on the in-memory backend"
    )
    demo.add_argument("--jobs", type=int, default=10_000, metavar="N", help="jobs to add (10000)")
    demo.add_argument(
        "--concurrency", type=int, default=10, metavar="N", help="jobs run at once (10)"
    )
    sim_cli.add_parser(commands)
    worker_cli.add_parser(commands)
    admin_cli.add_inspect_parser(commands)
    admin_cli.add_check_stalled_parser(commands)
    queue_cli.add_parsers(commands)
    for command in commands.choices.values():
        # A usage error found after parsing shows the usage of the subcommand, not corral's.
        command.set_defaults(command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` console script.

    Output piped into a reader that stops early (``corral sim ... | head -4``) ends the command
    quietly with status 141, as SIGPIPE ends other command-line tools; files the command writes
    are written before its output.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = _run(args, args.command_parser)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # Python's recommended handling: point stdout at devnull so that the flush at exit
        # does not fail a second time, and report the broken pipe as SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_STATUS
    return status


def _run(args: argparse.Namespace, command: argparse.ArgumentParser) -> int:
    if args.command == "worker":
        return worker_cli.run_command(args, command)
    if args.command == "inspect":
        return admin_cli.run_inspect(args, command)
    if args.command == "check-stalled":
        return admin_cli.run_check_stalled(args, command)
    if args.command in queue_cli.COMMANDS:
        return queue_cli.run_command(args, command)
    if args.command == "sim":
        return sim_cli.run_command(args, command)
    if args.command == "demo":
        if args.jobs < 1 or args.concurrency < 1:
            command.error("--jobs and --concurrency must be at least 1")
        return asyncio.run(_demo(args.jobs, args.concurrency))
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
