"""The next iteration of a job scheduler, made when a worker activates the current one.

BullMQ makes a scheduler's next job on activation, by the worker, before the processor runs
(bullmq-features.md §1.6), so that a scheduler needs no process of its own: whichever worker
(corral or Node) takes an iteration makes the next. The store only makes it if the activated job
is still the scheduler's current iteration (the producer guard), so a retried attempt, a job
taken again after a stall, or a call sent twice never makes a second one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping

from corral.engine.errors import StoreRefusedError
from corral.engine.job_schedulers import iteration_opts, repeat_from_json
from corral.engine.scheduling import iteration_allowed, pattern_next_millis
from corral.engine.storage import Storage

#: First wait between tries when the store cannot be reached or refuses writes (seconds),
#: doubled after each failure up to :data:`LONGEST_WAIT_S`.
FIRST_WAIT_S = 0.05
LONGEST_WAIT_S = 2.0


def next_iteration_request(
    fields: Mapping[str, str], now: int
) -> tuple[str, int | None, str] | None:
    """``(scheduler id, pattern slot or None, next job's opts JSON)`` for an activated job, or
    None when it belongs to no scheduler or its scheduler has no next iteration (``limit``,
    ``end_date``, a pattern with no further slot).

    Raises:
        InvalidArgumentError: if the stored pattern or time zone cannot be parsed.
    """
    scheduler_id = fields.get("rjk")
    if not scheduler_id:
        return None
    try:
        opts = json.loads(fields.get("opts") or "{}")
    except ValueError:
        return None
    raw_repeat = opts.get("repeat") if isinstance(opts, dict) else None
    if not isinstance(raw_repeat, dict):
        return None
    try:
        repeat = repeat_from_json(raw_repeat)
    except (TypeError, ValueError):
        return None
    if not iteration_allowed(repeat, now):
        return None
    next_millis = None
    if repeat.pattern is not None:
        prev = opts.get("prevMillis")
        next_millis = pattern_next_millis(repeat, now, int(prev) if prev else 0)
        if next_millis is None:
            return None
    count = repeat.count + 1
    next_opts = iteration_opts(opts, scheduler_id, repeat, count, next_millis)
    return scheduler_id, next_millis, json.dumps(next_opts, separators=(",", ":"))


async def schedule_next(
    backend: Storage,
    queue: str,
    job_id: str,
    fields: Mapping[str, str],
    now: int,
    keep_trying: Callable[[], bool],
) -> bool:
    """Make the next iteration after activating ``job_id`` (a no-op for other jobs).

    A call that gets no reply, or that the store refuses, is sent again (the guard makes a
    repeat harmless) for as long as ``keep_trying()`` says (the worker still holds the job's
    lock and is not closing). Returns False if it gave up: the job must then not run, so that
    its lock lapses and whoever takes it after the stalled check makes the next iteration (a
    scheduler never stops because one process lost the store).

    Raises:
        InvalidArgumentError: if the stored pattern or time zone cannot be parsed.
    """
    request = next_iteration_request(fields, now)
    if request is None:
        return True
    scheduler_id, next_millis, opts = request
    wait_s = FIRST_WAIT_S
    while True:
        try:
            await backend.update_job_scheduler(queue, scheduler_id, job_id, next_millis, opts, now)
            return True
        except (OSError, StoreRefusedError):
            if not keep_trying():
                return False
        await asyncio.sleep(wait_s)
        if not keep_trying():
            return False
        wait_s = min(wait_s * 2, LONGEST_WAIT_S)
