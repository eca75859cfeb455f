"""Processors for the sandbox tests. A child process imports this module by name (it inherits
the parent's ``sys.path``, where pytest put this folder), so everything here is top level."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

from corral import Job, UnrecoverableError


def add(job: Job) -> dict[str, Any]:
    """A plain ``def``: reports progress, returns the sum and what it saw of the job."""
    job.update_progress_sync({"half": True})
    return {
        "sum": job.data["a"] + job.data["b"],
        "pid": os.getpid(),
        "id": job.id,
        "name": job.name,
        "attempts": job.opts.attempts,
        "attempts_made": job.attempts_made,
        "progress_seen": job.progress,
    }


async def add_async(job: Job) -> dict[str, Any]:
    """An ``async def``: reports progress twice, returns the sum."""
    await job.update_progress(10)
    await job.update_progress(100)
    return {"sum": job.data["a"] + job.data["b"], "pid": os.getpid()}


def _explode(attempt: int) -> None:
    raise ValueError(f"boom on attempt {attempt}")


def fail(job: Job) -> None:
    """Always fails, through a helper (so the stacktrace has two frames of this module)."""
    _explode(job.attempts_made + 1)


def give_up(job: Job) -> None:
    raise UnrecoverableError("not worth retrying")


class PickyError(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ wants two arguments)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"picky {code}: {detail}")


def fail_picky(job: Job) -> None:
    raise PickyError(7, "cannot cross")


def return_unpicklable(job: Job) -> Any:
    return lambda: None


def sleep_and_return_pid(job: Job) -> int:
    time.sleep(job.data.get("seconds", 0.3))
    return os.getpid()


def report_pid_then_sleep(job: Job) -> int:
    """Reports its pid as progress (the test kills it then), then sleeps on the job's first run
    only; returns its pid."""
    job.update_progress_sync({"pid": os.getpid(), "attempt": job.attempts_made + 1})
    if job.attempts_started == 1:
        time.sleep(job.data.get("seconds", 10))
    return os.getpid()


def exit_abruptly(job: Job) -> None:
    os._exit(3)


def busy(job: Job) -> int:
    """CPU-bound: spin for ``seconds`` of real time without ever sleeping."""
    deadline = time.monotonic() + job.data["seconds"]
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return spins


async def busy_in_loop(job: Job) -> int:
    """The same spin inside an ``async def``: run in-process it blocks the worker's loop. Only
    the first run spins, so the test ends once the stall was recovered and the job retaken."""
    if job.attempts_started > 1:
        return 0
    return busy(job)


NOT_CALLABLE = 42


def leave_a_reporter(job: Job) -> str:
    """A job of kind "late" returns at once, leaving a thread that reports progress after
    ``late_after`` seconds (after the processor returned); any other job sleeps ``seconds``."""
    if job.data.get("kind") == "late":

        def late() -> None:
            time.sleep(job.data.get("late_after", 0.05))
            try:
                job.update_progress_sync({"late_from": job.id})
            except Exception:
                return

        threading.Thread(target=late, daemon=True).start()
    else:
        time.sleep(job.data.get("seconds", 0.2))
    return job.id


_LEFT_BEHIND: set[asyncio.Task[None]] = set()


async def leave_a_task(job: Job) -> str:
    """The ``async def`` variant: a job of kind "late" returns at once, leaving a task that
    reports progress (it runs whenever the child's loop runs next: during a later job)."""
    if job.data.get("kind") == "late":

        async def late() -> None:
            await asyncio.sleep(job.data.get("late_after", 0.05))
            try:
                await job.update_progress({"late_from": job.id})
            except Exception:
                return

        task = asyncio.get_running_loop().create_task(late())
        _LEFT_BEHIND.add(task)
        task.add_done_callback(_LEFT_BEHIND.discard)
    else:
        await asyncio.sleep(job.data.get("seconds", 0.2))
    return job.id


# A value whose unpickling runs code: records where it was loaded. Pickling it (in a child) runs
# nothing; loading it in the worker's process would append to this list there.
UNPICKLED: list[str] = []


def _record_unpickling(marker: str) -> str:
    UNPICKLED.append(f"{marker} loaded in {os.getpid()}")
    return marker


class Booby:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickling, ("booby",))


def return_booby(job: Job) -> Any:
    return {"booby": Booby()}


def raise_with_booby(job: Job) -> None:
    raise ValueError(Booby())


def rogue_child(conn: Any, spec: str) -> None:
    """Stands in for the sandbox's child entry point: speaks the pipe protocol as told by each
    job's ``data["rogue"]``, to show what the worker does with a child that misbehaves."""
    import json
    import pickle

    while True:
        try:
            request = pickle.loads(conn.recv_bytes())  # the worker's own data: trusted
        except EOFError:
            return
        if request[0] != "run":
            if request[0] == "stop":
                return
            continue
        run = request[1]
        behaviour = json.loads(request[5]["data"])["rogue"]
        if behaviour == "stale":  # progress and an answer of a finished run, then its own
            conn.send_bytes(
                json.dumps(
                    {"kind": "progress", "run": run - 1, "seq": 1, "value": "stale"}
                ).encode()
            )
            conn.send_bytes(json.dumps({"kind": "done", "run": run - 1, "value": "stale"}).encode())
            _, *ack = pickle.loads(conn.recv_bytes())
            answer = {"ack": ack, "pid": os.getpid()}
            conn.send_bytes(json.dumps({"kind": "done", "run": run, "value": answer}).encode())
        elif behaviour == "pickle":  # what a child used to send
            conn.send_bytes(pickle.dumps(("done", Booby())))
        elif behaviour == "garbage":
            conn.send_bytes(b'{"kind": "done", "run": "seven"}')
        else:
            conn.send_bytes(json.dumps({"kind": "done", "run": run, "value": os.getpid()}).encode())
