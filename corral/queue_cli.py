"""``corral retry | promote | clean | drain | obliterate | pause | resume | remove``: operate a
queue in Redis (BullMQ's queue management from the command line).

Each prints one line saying what it did, or one JSON object with ``--json``. The store's bulk
moves and deletions (retry, promote, drain, obliterate) do not count the jobs they touch, and
workers change the counts meanwhile: those commands say what was requested and how many jobs of
the state are left, never a "before minus after" guess. ``remove`` reports each id: removed,
missing, or refused with the store's reason (the other ids are still tried). The destructive
ones (clean, drain, obliterate, remove) ask for confirmation on a terminal; without one (a pipe,
a script) they refuse unless ``--yes`` is given, so nothing is deleted by accident.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from corral.cli_common import add_redis_arguments, check_target, connect
from corral.engine import CorralError, Queue
from corral.engine.queue_operations import CLEAN_STATES

#: A command's work: given the queue, do it and return what to report (JSON-ready).
Action = Callable[[Queue, argparse.Namespace], Awaitable[dict[str, Any]]]

COMMANDS = ("retry", "promote", "clean", "drain", "obliterate", "pause", "resume", "remove")
DESTRUCTIVE = frozenset({"clean", "drain", "obliterate", "remove"})

# ---------------------------------------------------------------------------- parsers


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the queue-operation subcommands."""
    retry = _parser(commands, "retry", "move failed (or completed) jobs back to wait")
    retry.add_argument(
        "--state", choices=("failed", "completed"), default="failed", help="which jobs (failed)"
    )
    retry.add_argument("--count", type=int, default=1000, metavar="N", help="jobs per call (1000)")
    retry.add_argument(
        "--before", type=int, metavar="MS", help="only jobs finished at or before this epoch ms"
    )
    promote = _parser(commands, "promote", "make every delayed job ready now")
    promote.add_argument("--count", type=int, default=1000, metavar="N", help="jobs per call")
    clean = _parser(commands, "clean", "delete jobs of one state older than a grace period")
    clean.add_argument(
        "--grace", type=int, required=True, metavar="MS", help="required: keep jobs younger"
    )
    clean.add_argument("--limit", type=int, default=0, metavar="N", help="at most N (0: all)")
    clean.add_argument(
        "--state",
        choices=tuple(CLEAN_STATES),
        default="completed",
        help="which jobs (completed; wait, waiting and paused all name the wait list)",
    )
    drain = _parser(commands, "drain", "delete every waiting and prioritized job")
    drain.add_argument("--delayed", action="store_true", help="delete the delayed jobs too")
    obliterate = _parser(commands, "obliterate", "delete the queue and all its jobs")
    obliterate.add_argument(
        "--force", action="store_true", help="even with active jobs (their workers lose them)"
    )
    obliterate.add_argument("--count", type=int, default=1000, metavar="N", help="jobs per call")
    _parser(commands, "pause", "stop every worker of the queue from taking jobs")
    _parser(commands, "resume", "let the workers of the queue take jobs again")
    remove = _parser(commands, "remove", "delete jobs by id (not while a worker holds them)")
    remove.add_argument("job_ids", nargs="+", metavar="JOB_ID", help="the ids of the jobs")


def _parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=f"{text} (Redis)", description=f"{text[0].upper()}{text[1:]}."
    )
    add_redis_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if name in DESTRUCTIVE:
        parser.add_argument(
            "--yes", action="store_true", help="do not ask for confirmation (needed off a terminal)"
        )
    return parser


# ---------------------------------------------------------------------------- actions


async def _retry(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    await queue.retry_jobs(args.state, args.count, args.before)
    return {"state": args.state, "left": await queue.get_job_count(args.state)}


async def _promote(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    await queue.promote_jobs(args.count)
    return {"left": await queue.get_delayed_count()}


async def _clean(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    removed = await queue.clean(args.grace, args.limit, args.state)
    return {"removed": removed, "state": args.state}


async def _drain(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    states = ("waiting", "prioritized", "delayed") if args.delayed else ("waiting", "prioritized")
    await queue.drain(args.delayed)
    return {"left": await queue.get_job_count(*states)}


async def _obliterate(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    await queue.obliterate(force=args.force, count=args.count)
    return {"obliterated": True}


async def _pause(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    await queue.pause()
    return {"paused": True}


async def _resume(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    await queue.resume()
    return {"paused": False}


async def _remove(queue: Queue, args: argparse.Namespace) -> dict[str, Any]:
    """Remove each id in turn; a refusal (a locked job, a scheduler's current iteration) is
    reported with its reason and the next ids are still tried."""
    removed: list[str] = []
    missing: list[str] = []
    refused: dict[str, str] = {}
    for job_id in args.job_ids:
        try:
            (removed if await queue.remove(job_id) else missing).append(job_id)
        except CorralError as exc:
            refused[job_id] = str(exc)
    return {"removed": removed, "missing": missing, "refused": refused}


ACTIONS: dict[str, Action] = {
    "retry": _retry,
    "promote": _promote,
    "clean": _clean,
    "drain": _drain,
    "obliterate": _obliterate,
    "pause": _pause,
    "resume": _resume,
    "remove": _remove,
}


def _describe(command: str, args: argparse.Namespace) -> str:
    """What a destructive command is about to do, for its confirmation question."""
    where = f"queue {args.queue!r} (prefix {args.prefix!r}) at {args.url}"
    if command == "clean":
        limit = f"up to {args.limit}" if args.limit else "all"
        return f"delete {limit} {args.state} jobs older than {args.grace} ms of {where}"
    if command == "drain":
        kinds = "waiting, prioritized and delayed" if args.delayed else "waiting and prioritized"
        return f"delete every {kinds} job of {where}"
    if command == "obliterate":
        return f"delete {where} and every job in it{' (even active ones)' if args.force else ''}"
    return f"delete job(s) {', '.join(args.job_ids)} of {where}"


def _summary(command: str, report: dict[str, Any]) -> str:
    if command in ("clean", "remove"):
        text = f"{command}: removed {len(report['removed'])} job(s)"
        if report["removed"] and command == "remove":
            text += f" ({', '.join(report['removed'])})"
        if report.get("missing"):
            text += f"; no such job(s): {', '.join(report['missing'])}"
        for job_id, reason in report.get("refused", {}).items():
            text += f"; refused {job_id}: {reason}"
        return text
    if command == "drain":
        return f"drain: deleted the queued jobs; {report['left']} left (added since)"
    if command == "obliterate":
        return "obliterate: the queue and its jobs are deleted"
    if command == "retry":
        state = report["state"]
        return f"retry: moved the {state} jobs to wait; {report['left']} {state} job(s) left"
    if command == "promote":
        return f"promote: moved the delayed jobs to wait; {report['left']} delayed job(s) left"
    return f"{command}: the queue is {'paused' if report['paused'] else 'running'}"


def confirmed(question: str, stdin: TextIO, stderr: TextIO) -> bool | None:
    """Ask ``question`` on a terminal; None when ``stdin`` is not one (nobody to ask)."""
    if not stdin.isatty():
        return None
    stderr.write(f"{question}? [y/N] ")
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


# ---------------------------------------------------------------------------- running


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Carry out one of :data:`COMMANDS`."""
    command: str = args.command
    check_target(args, parser, command)
    if getattr(args, "count", 1) < 1:
        parser.error("--count must be at least 1")
    if command == "clean" and (args.grace < 0 or args.limit < 0):
        parser.error("--grace and --limit must be 0 or more")
    if command in DESTRUCTIVE and not args.yes:
        answer = confirmed(_describe(command, args), sys.stdin, sys.stderr)
        if answer is None:
            print(
                f"corral {command}: refusing to {_describe(command, args)} without "
                f"confirmation: stdin is not a terminal; pass --yes to go ahead",
                file=sys.stderr,
            )
            return 1
        if not answer:
            print(f"corral {command}: nothing done", file=sys.stderr)
            return 1
    try:
        report = asyncio.run(_run(command, args, parser))
    except (CorralError, ConnectionError, OSError) as exc:
        print(f"corral {command}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"command": command, "queue": args.queue, **report}))
    else:
        print(_summary(command, report))
    return 1 if report.get("refused") else 0


async def _run(
    command: str, args: argparse.Namespace, parser: argparse.ArgumentParser
) -> dict[str, Any]:
    backend = connect(args, parser, command)
    queue = Queue(args.queue, backend)
    try:
        report = await ACTIONS[command](queue, args)
        report["counts"] = await queue.get_job_counts()
        return report
    finally:
        await backend.close()
