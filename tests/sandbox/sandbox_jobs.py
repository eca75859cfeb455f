"""Processors for the sandbox tests. A child process imports this module by name (it inherits
the parent's ``sys.path``, where pytest put this folder), so everything here is top level."""

from __future__ import annotations

import os
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
