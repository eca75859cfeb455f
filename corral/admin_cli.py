"""``corral inspect`` and ``corral check-stalled``: look at, and repair, a queue in Redis.

Human-readable output is rendered with rich (the ``cli`` extra); ``--json`` needs nothing more
than the ``redis`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from corral.cli_common import add_redis_arguments, check_target, connect, rich_console
from corral.engine import CorralError, Job, StalledChecker
from corral.engine.clock import SystemClock
from corral.engine.states import JobState
from corral.engine.storage import Storage

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


# ---------------------------------------------------------------------------- inspect: data


class ActiveJob(TypedDict):
    """An active job and who holds it (``token``/``lock_ttl_ms`` are None without a lock)."""

    id: str
    name: str | None
    token: str | None
    lock_ttl_ms: int | None
    marked_stalled: bool
    processed_on: int | None
    processed_by: str | None
    attempts_started: int
    stalled_counter: int


class FailedJob(TypedDict):
    """A job that failed for good, with the reason its last attempt gave."""

    id: str
    name: str | None
    failed_reason: str | None
    finished_on: int | None
    attempts_made: int
    attempts: int


class Snapshot(TypedDict):
    """What ``corral inspect`` shows (and prints with ``--json``)."""

    queue: str
    url: str
    prefix: str
    now: int
    paused: bool
    counts: dict[str, int]
    active: list[ActiveJob]
    marked_stalled: list[str]
    failed: list[FailedJob]
    #: What is unsafe about the server (e.g. an eviction policy that deletes jobs).
    warnings: list[str]


async def take_snapshot(
    backend: Storage,
    queue: str,
    *,
    limit: int,
    now: int,
    url: str = "",
    prefix: str = "",
    warnings: list[str] | None = None,
) -> Snapshot:
    """Read a queue's counts, its ``limit`` oldest active jobs with their locks and stalled
    marks, and its ``limit`` newest failures (works on any backend); ``warnings`` are shown
    as given."""
    counts, paused, active_ids, failed_ids = await asyncio.gather(
        backend.get_counts(queue),
        backend.is_paused(queue),
        backend.get_job_ids(queue, JobState.ACTIVE, 0, limit - 1, True),
        backend.get_job_ids(queue, JobState.FAILED, 0, limit - 1, False),
    )

    async def active(job_id: str) -> ActiveJob:
        fields, lock, marked = await asyncio.gather(
            backend.get_job(queue, job_id),
            backend.get_lock(queue, job_id),
            backend.is_marked_stalled(queue, job_id),
        )
        job = Job(queue, job_id, fields or {})
        return {
            "id": job_id,
            "name": job.fields.get("name"),
            "token": None if lock is None else lock.token,
            "lock_ttl_ms": None if lock is None else lock.ttl_ms,
            "marked_stalled": marked,
            "processed_on": job.processed_on,
            "processed_by": job.processed_by,
            "attempts_started": job.attempts_started,
            "stalled_counter": job.stalled_counter,
        }

    async def failed(job_id: str) -> FailedJob | None:
        fields = await backend.get_job(queue, job_id)
        if fields is None:  # removed since it was listed
            return None
        job = Job(queue, job_id, fields)
        return {
            "id": job_id,
            "name": job.fields.get("name"),
            "failed_reason": job.failed_reason,
            "finished_on": job.finished_on,
            "attempts_made": job.attempts_made,
            "attempts": job.opts.attempts,
        }

    actives = await asyncio.gather(*(active(job_id) for job_id in active_ids))
    failures = await asyncio.gather(*(failed(job_id) for job_id in failed_ids))
    return {
        "queue": queue,
        "url": url,
        "prefix": prefix,
        "now": now,
        "paused": paused,
        "counts": {state.value: counts[state] for state in JobState},
        "active": list(actives),
        "marked_stalled": [job["id"] for job in actives if job["marked_stalled"]],
        "failed": [job for job in failures if job is not None],
        "warnings": warnings or [],
    }


# ---------------------------------------------------------------------------- inspect: view


def _ago(now: int, then: int | None) -> str:
    if then is None:
        return "-"
    seconds = max(0, now - then) / 1000
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min ago"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86_400:.1f} d ago"


#: The lock / stalled-mark combinations of an active job: short label, style, meaning.
_LOCK_STATES = {
    (True, False): ("held", "green", ""),
    (True, True): (
        "held, marked",
        "yellow",
        "held, marked: the last stalled check marked it; the owner's next renewal clears it",
    ),
    (False, True): (
        "STALLED",
        "bold red",
        "STALLED: no lock and marked; the next stalled check moves it back to wait",
    ),
    (False, False): (
        "no lock",
        "red",
        "no lock: the next stalled check marks it and the one after recovers it",
    ),
}


def render(snapshot: Snapshot) -> RenderableType:
    """The snapshot as rich renderables: header, counts, active jobs, recent failures."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = snapshot["now"]
    header = Text.assemble(
        ("queue ", "dim"),
        (snapshot["queue"], "bold"),
        (f"  {snapshot['url']}", "dim"),
        (f"  prefix {snapshot['prefix']!r}" if snapshot["prefix"] else "", "dim"),
    )
    if snapshot["paused"]:
        header.append("  PAUSED", "bold yellow")

    counts = Table(title="jobs per state", title_justify="left", box=box.SIMPLE_HEAD)
    styles = {"active": "cyan", "completed": "green", "failed": "red", "delayed": "magenta"}
    for state in snapshot["counts"]:
        counts.add_column(state, justify="right", style=styles.get(state))
    counts.add_row(*(str(n) for n in snapshot["counts"].values()))

    parts: list[RenderableType] = [header]
    parts += [Text(f"WARNING: {warning}", style="bold yellow") for warning in snapshot["warnings"]]
    parts.append(counts)
    total_active = snapshot["counts"]["active"]
    if snapshot["active"]:
        shown = len(snapshot["active"])
        more = f", oldest {shown} of {total_active}" if shown < total_active else ""
        active = Table(title=f"active jobs{more}", title_justify="left", box=box.SIMPLE_HEAD)
        active.add_column("id", overflow="fold", min_width=2)
        active.add_column("name", overflow="fold", min_width=4)
        active.add_column("owner token", overflow="fold", min_width=12)
        active.add_column("lock left", justify="right")
        active.add_column("lock")
        active.add_column("started")
        active.add_column("tries", justify="right", no_wrap=True)
        active.add_column("stalls", justify="right", no_wrap=True)
        legend: dict[str, str] = {}
        for job in snapshot["active"]:
            label, style, meaning = _LOCK_STATES[job["token"] is not None, job["marked_stalled"]]
            if meaning:
                legend[label] = meaning
            ttl = job["lock_ttl_ms"]
            active.add_row(
                job["id"],
                job["name"] or "",
                job["token"] or "-",
                "-" if ttl is None else f"{ttl / 1000:.1f} s",
                Text(label, style=style),
                _ago(now, job["processed_on"]),
                str(job["attempts_started"]),
                str(job["stalled_counter"]),
            )
        parts.append(active)
        parts.extend(Text(meaning, style="dim") for meaning in legend.values())
    else:
        parts.append(Text("no active jobs", style="dim"))
    if snapshot["marked_stalled"]:
        parts.append(
            Text(
                "marked stalled by the last check: " + ", ".join(snapshot["marked_stalled"]),
                style="yellow",
            )
        )
    total_failed = snapshot["counts"]["failed"]
    if snapshot["failed"]:
        shown = len(snapshot["failed"])
        failed = Table(
            title=f"recent failures, newest {shown} of {total_failed}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        failed.add_column("id")
        failed.add_column("name")
        failed.add_column("finished")
        failed.add_column("attempts", justify="right")
        failed.add_column("reason", style="red", overflow="fold")
        for failure in snapshot["failed"]:
            failed.add_row(
                failure["id"],
                failure["name"] or "",
                _ago(now, failure["finished_on"]),
                f"{failure['attempts_made']}/{failure['attempts']}",
                failure["failed_reason"] or "",
            )
        parts.append(failed)
    else:
        parts.append(Text("no failed jobs", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------------------- inspect: command


def add_inspect_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``inspect`` subcommand."""
    parser = commands.add_parser(
        "inspect",
        help="show a queue in Redis: counts, active jobs and their locks, stalls, failures",
        description="Show a queue in Redis: the number of jobs per state, the active jobs with "
        "their owner's lock token and the time left on the lock, the jobs marked stalled, and "
        "the newest failures with their reasons.",
    )
    add_redis_arguments(parser)
    parser.add_argument(
        "--limit", type=int, default=20, metavar="N", help="active jobs and failures shown (20)"
    )
    parser.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (one per refresh)"
    )


def run_inspect(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Carry out ``corral inspect``."""
    check_target(args, parser, "inspect")
    if args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    if args.watch is not None and args.watch <= 0:
        parser.error(f"--watch must be positive, got {args.watch}")
    console = None if args.json else rich_console("inspect")
    try:
        return asyncio.run(_inspect(args, parser, console))
    except (CorralError, OSError) as exc:
        print(f"corral inspect: {exc}", file=sys.stderr)
        return 1


async def _inspect(
    args: argparse.Namespace, parser: argparse.ArgumentParser, console: Console | None
) -> int:
    backend = connect(args, parser, "inspect")
    clock = SystemClock()

    async def snap() -> Snapshot:
        return await take_snapshot(
            backend,
            args.queue,
            limit=args.limit,
            now=clock.now_ms(),
            url=backend.url,
            prefix=args.prefix,
            warnings=await backend.server_warnings(),
        )

    try:
        if args.watch is None:
            snapshot = await snap()
            if console is None:
                print(json.dumps(snapshot))
            else:
                console.print(render(snapshot))
            return 0
        await _watch(snap, args.watch, console)
        return 0
    finally:
        await backend.close()


async def _watch(snap: Callable[[], Any], interval: float, console: Console | None) -> None:
    """Refresh until SIGINT/SIGTERM; a failing refresh is shown and tried again."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def next_view() -> Any:
        try:
            snapshot: Snapshot = await snap()
        except (CorralError, OSError) as exc:
            if console is None:
                print(json.dumps({"error": str(exc)}), flush=True)
                return None
            from rich.text import Text

            return Text(f"cannot read the queue: {exc} (retrying)", style="bold red")
        if console is None:
            print(json.dumps(snapshot), flush=True)
            return None
        return render(snapshot)

    async def pause() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)

    try:
        if console is None:
            while not stop.is_set():
                await next_view()
                await pause()
            return
        from rich.live import Live

        with Live(await next_view(), console=console, auto_refresh=False) as live:
            while not stop.is_set():
                await pause()
                if not stop.is_set():
                    live.update(await next_view(), refresh=True)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


# ---------------------------------------------------------------------------- check-stalled


def add_check_stalled_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register the ``check-stalled`` subcommand."""
    check = commands.add_parser(
        "check-stalled",
        help="recover the stalled jobs of a queue on Redis (once, or every MS with --every)",
    )
    add_redis_arguments(check)
    check.add_argument(
        "--every", type=int, metavar="MS", help="keep checking every MS ms until Ctrl-C"
    )
    check.add_argument(
        "--stalled-interval",
        type=int,
        default=30_000,
        metavar="MS",
        help="the queue's stalled-check interval, the throttle shared with its workers (30000; "
        "--every replaces it)",
    )
    check.add_argument(
        "--max-stalled-count",
        type=int,
        default=1,
        metavar="N",
        help="stalls a job may survive; one more fails it (1, as the workers')",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line, whose event is recovered, failed, "
        "no-stalled-jobs, throttled, watching or error",
    )


def run_check_stalled(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Carry out ``corral check-stalled``."""
    check_target(args, parser, "check-stalled")
    if args.every is not None and args.every < 1:
        parser.error("--every must be at least 1 ms")
    output = _CheckOutput("check-stalled", args.json)
    try:
        return asyncio.run(_check_stalled(args, parser, output))
    except (CorralError, ConnectionError, OSError) as exc:
        print(f"corral check-stalled: {exc}", file=sys.stderr)
        return 1


class _CheckOutput:
    """Where ``corral check-stalled`` writes: JSON lines, or rich text."""

    def __init__(self, command: str, as_json: bool) -> None:
        self.out = None if as_json else rich_console(command)
        self.err = None if as_json else rich_console(command, stderr=True)

    def event(self, kind: str, job_id: str, detail: str = "") -> None:
        if self.out is None:
            print(json.dumps({"event": kind, "job_id": job_id, "detail": detail}), flush=True)
            return
        from rich.text import Text

        style = "green" if kind == "recovered" else "bold red"
        self.out.print(
            Text.assemble((kind, style), f" job {job_id}", (f" {detail}" if detail else ""))
        )

    def error(self, exc: BaseException, _job: object = None) -> None:
        if self.err is None:
            print(json.dumps({"event": "error", "detail": str(exc)}), flush=True)
            return
        from rich.text import Text

        self.err.print(Text(f"error: {exc}", style="bold red"))

    def note(self, kind: str, text: str, **fields: Any) -> None:
        """A line about the checking itself: ``text`` for people, ``fields`` for --json."""
        if self.out is None:
            print(json.dumps({"event": kind, "detail": text, **fields}), flush=True)
            return
        from rich.text import Text

        self.out.print(Text(text, style="dim"))


async def _check_stalled(
    args: argparse.Namespace, parser: argparse.ArgumentParser, output: _CheckOutput
) -> int:
    backend = connect(args, parser, "check-stalled")
    interval = args.every or args.stalled_interval
    checker = StalledChecker(
        args.queue, backend, stalled_interval=interval, max_stalled_count=args.max_stalled_count
    )
    checker.on("stalled", lambda job_id, prev: output.event("recovered", job_id, f"(was {prev})"))
    checker.on("failed", lambda job, exc: output.event("failed", job.id if job else "?", str(exc)))
    checker.on("error", output.error)
    try:
        if not args.every:
            result = await checker.check()
            if not result.ran:
                output.note(
                    "throttled", f"throttled: another checker ran within the last {interval} ms"
                )
            elif not (result.recovered or result.failed):
                output.note(
                    "no-stalled-jobs",
                    "no stalled jobs (active jobs are now marked for the next check)",
                )
            return 0
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(checker.close()))
        output.note(
            "watching",
            f"checking queue {args.queue!r} every {interval} ms (Ctrl-C stops)",
            queue=args.queue,
            every_ms=interval,
        )
        await checker.run()
        return 0
    finally:
        await backend.close()
