"""Storing a job's outcome, sent again while the lock may hold when the call gets no reply.

A finish whose reply is lost (connection dropped, timeout, store restarting) may or may not have
been applied. Giving up would leave the job active under a lock nobody renews, to be recovered
as stalled and run a second time; sending it again is safe because the store applies a finish
once per lock token and answers a repeat as it answered the first (see ``Storage.finish``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from corral.engine.clock import Clock
from corral.engine.policy import finish_retry_delay
from corral.engine.storage import FetchRequest, FinishResult, Outcome, Storage


async def send_finish_again(
    error: OSError,
    backend: Storage,
    queue: str,
    job_id: str,
    token: str,
    outcome: Outcome,
    fetch: FetchRequest | None,
    *,
    clock: Clock,
    rng: random.Random,
    lock_expires_ms: int,
    on_error: Callable[[BaseException], None],
) -> FinishResult:
    """Send again a ``backend.finish`` of ``outcome`` whose call failed with ``error`` (a
    connection error or timeout), with the back-off of :func:`finish_retry_delay`, until one
    gets a reply or ``lock_expires_ms`` (worker clock) has passed. Each failure but the last
    goes to ``on_error``; the last, and any error other than ``OSError``, is raised."""
    failures = 0
    while True:
        failures += 1
        delay = finish_retry_delay(failures, clock.now_ms(), lock_expires_ms, rng)
        if delay is None:
            raise error
        on_error(error)
        await asyncio.sleep(delay / 1000)
        try:
            return await backend.finish(queue, job_id, token, outcome, clock.now_ms(), fetch)
        except OSError as exc:
            error = exc
