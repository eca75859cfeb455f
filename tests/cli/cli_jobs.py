"""Processors for the ``corral worker`` subprocess tests (imported as ``cli_jobs:<name>``)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from corral.engine import Job


async def process(job: Job) -> Any:
    """``quick`` returns at once, ``slow`` sleeps ``data["seconds"]``, ``fail`` raises."""
    if job.name == "fail":
        raise RuntimeError(f"job {job.id} was told to fail")
    if job.name == "slow":
        await asyncio.sleep(job.data["seconds"])
    return {"done": job.id, "pid": os.getpid()}


def finish(job: Job) -> Any:
    """A plain-function processor that completes anything at once."""
    return {"finished_by": "second worker", "pid": os.getpid()}


def blocking(job: Job) -> Any:
    """A plain-function processor stuck in its thread for a minute (it ignores cancellation)."""
    time.sleep(60)
    return None


async def raises_cancelled(job: Job) -> Any:
    """Raises a CancelledError that no cancellation caused (a library's internals leaking it)."""
    raise asyncio.CancelledError


async def raises_exit(job: Job) -> Any:
    """Calls ``sys.exit(3)`` in the middle of a job."""
    sys.exit(3)


NOT_CALLABLE = 42
