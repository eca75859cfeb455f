"""Retry, backoff and stall-limit decisions as pure functions.

Nothing here touches storage or reads time: callers pass the facts (the job's options and
counters, the error, a random generator) and get a decision back. The Worker applies it through
one storage operation; the simulator's model uses the same functions.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from corral.engine.errors import UnrecoverableError
from corral.engine.job import Backoff, JobOptions, KeepJobs, encode_json
from corral.engine.storage import Fail, Outcome, RetryLater, RetryNow

if TYPE_CHECKING:
    from corral.engine.job import Job

#: A custom backoff strategy: ``(attempts_made, backoff_type, error, job) -> delay_ms``; a
#: negative delay means "do not retry".
BackoffStrategy = Callable[[int, str, BaseException, "Job"], int]

#: How many stacktraces a job keeps (BullMQ's default ``stackTraceLimit``).
STACKTRACE_LIMIT: Final = 10


class UnknownBackoffError(Exception):
    """A job names a backoff type that neither corral nor the worker's strategy knows."""


def backoff_delay(
    backoff: Backoff,
    attempts_made: int,
    rng: random.Random,
    *,
    error: BaseException,
    job: Job | None = None,
    strategy: BackoffStrategy | None = None,
) -> int:
    """Milliseconds to wait before the next attempt; negative means "do not retry".

    ``attempts_made`` counts the attempt that just failed (1 after the first failure), so an
    exponential backoff waits ``delay``, then ``2 × delay``, then ``4 × delay``, ...
    """
    if backoff.type == "fixed":
        raw = backoff.delay
    elif backoff.type == "exponential":
        raw = round(2 ** (attempts_made - 1) * backoff.delay)
    elif strategy is not None and job is not None:
        return strategy(attempts_made, backoff.type, error, job)
    else:
        raise UnknownBackoffError(
            f"unknown backoff type {backoff.type!r}: give the worker a backoff_strategy"
        )
    if backoff.jitter and raw > 0:
        low = raw * (1 - backoff.jitter)
        return int(low + rng.random() * (raw - low))
    return raw


def failure_outcome(
    opts: JobOptions,
    attempts_made: int,
    error: BaseException,
    rng: random.Random,
    *,
    job: Job | None = None,
    strategy: BackoffStrategy | None = None,
    previous_stacktrace: list[str] | None = None,
) -> Outcome:
    """Decide what a failed attempt leads to: a retry (now or later) or a final failure.

    Args:
        opts: the job's options (attempts, backoff, retention).
        attempts_made: attempts finished *before* this one (the job's ``atm``).
        error: what the processor raised.
        rng: randomness for backoff jitter.
        job: the job, passed to a custom backoff strategy.
        strategy: the worker's custom backoff strategy, if any.
        previous_stacktrace: stacktraces of earlier attempts (kept, most recent last).
    """
    reason = error_reason(error)
    stack = encode_json(
        [*(previous_stacktrace or []), format_stacktrace(error)][-STACKTRACE_LIMIT:],
        "stacktrace",
    )
    made = attempts_made + 1
    final = Fail(reason, stack, opts.remove_on_fail)
    if isinstance(error, UnrecoverableError) or made >= opts.attempts:
        return final
    if opts.backoff is None:
        return RetryNow(reason, stack)
    try:
        delay = backoff_delay(opts.backoff, made, rng, error=error, job=job, strategy=strategy)
    except UnknownBackoffError as exc:
        return Fail(f"{reason} (not retried: {exc})", stack, opts.remove_on_fail)
    if delay < 0:
        return final
    return RetryLater(delay, reason, stack) if delay > 0 else RetryNow(reason, stack)


def stall_limit_exceeded(stalled_counter: int, max_stalled_count: int) -> bool:
    """BullMQ's strict rule: fail once the job stalled *more* than ``max_stalled_count`` times."""
    return stalled_counter > max_stalled_count


def lock_renewal_due(last_renewed_ms: int, now_ms: int, lock_renew_time: int) -> bool:
    """Whether a tracked lock is due for renewal on this tick (renewed over half a period ago)."""
    return now_ms - last_renewed_ms >= lock_renew_time // 2


#: First wait (ms) before fetching again after a failed fetch or a refused write; it doubles
#: with each further one, up to FETCH_BACKOFF_MAX_MS: an unreachable or full store costs a few
#: calls per second, and a short outage ends fast.
FETCH_BACKOFF_MS: Final = 100
FETCH_BACKOFF_MAX_MS: Final = 5_000


def fetch_backoff_ms(failed_fetches: int, refused_writes: int) -> int:
    """How long a worker waits before its next fetch; 0 means fetch now.

    Args:
        failed_fetches: consecutive fetches (or waits for work) that raised, of any cause.
        refused_writes: consecutive writes of any kind (fetch, lock renewal) that the store
            refused (:class:`~corral.engine.errors.StoreRefusedError`, e.g. Redis out of
            memory); a write that succeeds resets it. While the store refuses writes the worker
            takes no new jobs, which it could neither lock nor finish, and probes with one fetch
            per wait.
    """
    failures = max(failed_fetches, refused_writes)
    if failures == 0:
        return 0
    return min(FETCH_BACKOFF_MS << min(failures - 1, 16), FETCH_BACKOFF_MAX_MS)


def error_reason(error: BaseException) -> str:
    """The ``failedReason`` for an error: its message, or its type name when it has none.

    A message that UTF-8 cannot encode (a lone surrogate, as ``os.fsdecode`` makes of bad
    bytes) has those characters escaped (``\\udc80``): Redis stores bytes, and the job's
    finish must not fail for its reason's text.
    """
    text = str(error)
    if not text:
        return type(error).__name__
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


#: An error raised in another process (a sandboxed processor) carries the stacktrace formatted
#: there in this attribute; it is stored instead of the local one.
REMOTE_STACKTRACE_ATTRIBUTE: Final = "corral_remote_stacktrace"


def format_stacktrace(error: BaseException) -> str:
    """One stacktrace string, as BullMQ stores each entry of ``stacktrace``."""
    remote = getattr(error, REMOTE_STACKTRACE_ATTRIBUTE, None)
    if isinstance(remote, str):
        return remote
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()


#: The first wait (ms) before a finish whose call failed is sent again, and the most it grows to
#: (short: the store may come back for moments only, between restarts, and each running job
#: sends at most one finish a second).
FINISH_RETRY_BASE_MS: Final = 100
FINISH_RETRY_MAX_MS: Final = 1_000


def finish_retry_delay(
    failures: int, now_ms: int, lock_expires_ms: int, rng: random.Random
) -> int | None:
    """How long to wait before sending a finish again whose call failed (no reply: the store
    may or may not have applied it, and a finish sent twice under one token is applied once),
    or None to give up because the lock has lapsed by now.

    The wait doubles from :data:`FINISH_RETRY_BASE_MS` up to :data:`FINISH_RETRY_MAX_MS`, drawn
    from its upper half so that workers cut off together do not come back in step, and never
    goes past the lock's expiry: the last try lands while the lock may still hold.

    Args:
        failures: failed sends so far (1 after the first).
        now_ms: the worker's clock.
        lock_expires_ms: when the lock lapses at the latest, on the worker's clock (the last
            renewal sent, or the fetch, plus ``lock_duration``).
        rng: randomness for the jitter.
    """
    remaining = lock_expires_ms - now_ms
    if remaining <= 0:
        return None
    ceiling = min(FINISH_RETRY_BASE_MS << min(failures - 1, 16), FINISH_RETRY_MAX_MS)
    low = ceiling // 2
    return min(low + int(rng.random() * (ceiling - low + 1)), remaining)


def keep_jobs(own: KeepJobs, worker_default: KeepJobs) -> KeepJobs:
    """The retention a finished job gets (BullMQ's ``getKeepJobs``): its own
    ``remove_on_complete`` / ``remove_on_fail`` when it has one, else the worker's default.

    A job whose option keeps everything counts as having none (corral does not store a
    ``false`` option, so the two cannot be told apart)."""
    return worker_default if own.keeps_all else own
