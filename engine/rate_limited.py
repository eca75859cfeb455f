"""A worker's side of rate limiting: recognising BullMQ's ``RateLimitError``, giving its job
back, and how long to wait when the store says the queue is rate limited.

The wait itself is the worker's usual wait for work (the store's marker) with the store-given
delay as its timeout, capped by ``maximum_rate_limit_delay``: no polling, and lifting the limit
(``remove_rate_limit_key``, removing the global limit) sets the marker, which wakes the worker at
once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.engine.errors import LockLostError, ResultCode
from corral.engine.events import EventEmitter
from corral.engine.job import Duration, Job
from corral.engine.limits import RATE_LIMIT_ERROR_MESSAGE, rate_limit_sleep_ms, window_ms
from corral.engine.storage import FetchResult, Storage

if TYPE_CHECKING:
    from corral.engine.clock import Clock

#: BullMQ's script name for giving a rate-limited job back (in error texts).
MOVE_TO_WAIT_COMMAND = "moveJobFromActiveToWait"


def is_rate_limit_error(error: BaseException) -> bool:
    """Whether a processor's error asks for a rate-limited retry: BullMQ matches the message,
    not the class, so a plain ``Exception("bullmq:rateLimitExceeded")`` counts too."""
    return str(error) == RATE_LIMIT_ERROR_MESSAGE


async def give_back(
    backend: Storage, queue: str, job: Job, token: str, events: EventEmitter
) -> int:
    """Put a job whose processor raised a rate-limit error back in wait, no attempt used.

    Returns the remaining TTL (ms) of the queue's rate-limit window, 0 if none (or if the job
    could not be given back): BullMQ's worker fetches nothing until it has run out (§2.3),
    with or without a ``limiter`` of its own (see :func:`limited_until`).
    """
    try:
        code, ttl = await backend.move_to_wait(queue, job.id, token)
    except Exception as exc:
        events.emit("error", exc, job)
        return 0
    if code is not ResultCode.OK:
        events.emit("error", LockLostError(code, job.id, MOVE_TO_WAIT_COMMAND), job)
        return 0
    return max(0, ttl)


def limited_until(ttl_ms: int, maximum_rate_limit_delay: int, now: int) -> int:
    """When a worker that gave a job back with ``ttl_ms`` left on the window may fetch again
    (BullMQ's ``limitUntil``; the wait bounded by ``maximum_rate_limit_delay``); ``now`` if
    there is no window, so nothing waits."""
    if ttl_ms <= 0:
        return now
    return now + rate_limit_sleep_ms(ttl_ms, maximum_rate_limit_delay)


#: Redis times a blocked command out on its own clock tick (``hz`` 10: up to 100 ms late), which
#: would stretch every rate-limit window by that much: a rate-limited slot blocks on the marker
#: until this long before the limit ends, then sleeps the rest on its own loop's timer.
BLOCK_SLACK_MS = 100


def idle_timeout_ms(
    result: FetchResult, drain_delay: int, maximum_rate_limit_delay: int, now: int
) -> tuple[int, int]:
    """How long an idle slot waits for the marker after a fetch that brought no job, and then
    how long it sleeps if none came (only for a rate limit: see :data:`BLOCK_SLACK_MS`)."""
    if result.rate_limit_ms:
        total = rate_limit_sleep_ms(result.rate_limit_ms, maximum_rate_limit_delay)
        block = max(1, total - BLOCK_SLACK_MS)
        return block, total - block
    if result.next_due_ms is not None:
        return max(1, min(drain_delay, result.next_due_ms - now)), 0
    return drain_delay, 0


class RateLimitedWorker:
    """A Worker's side of manual rate limiting (mixed into
    :class:`~corral.engine.worker.Worker`)."""

    if TYPE_CHECKING:  # provided by Worker
        queue_name: str
        backend: Storage
        clock: Clock
        maximum_rate_limit_delay: int
        _events: EventEmitter
        _limit_until: int

    async def rate_limit(self, expire_time: Duration) -> None:
        """Rate-limit the queue for ``expire_time`` ms (the alias of ``Queue.rate_limit``)."""
        await self.backend.set_rate_limit(self.queue_name, window_ms(expire_time, "expire_time"))

    async def _give_back(self, job: Job, token: str) -> None:
        """Give back a job whose processor raised RateLimitError, and fetch nothing until the
        queue's window has run out (BullMQ's ``limitUntil``, §2.3)."""
        ttl = await give_back(self.backend, self.queue_name, job, token, self._events)
        until = limited_until(ttl, self.maximum_rate_limit_delay, self.clock.now_ms())
        self._limit_until = max(self._limit_until, until)
