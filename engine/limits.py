"""Rate limits and global concurrency as BullMQ 6.7 applies them: pure decisions, no I/O.

Where the settings live (bullmq-features.md §2.1):

* a worker's ``limiter={"max": n, "duration": ms}`` is stored nowhere: each worker sends it with
  every fetch, and the store applies it to the queue's one window counter (the ``limiter`` key);
* the queue's *global rate limit* is the ``meta`` hash fields ``max`` and ``duration``;
* the queue's *global concurrency* is the ``meta`` field ``concurrency``.

The window is fixed, not sliding: the first activation of a window sets the counter to 1 and
starts its TTL of ``duration`` ms; every activation adds 1; while the counter is at or above the
maximum, fetches return the TTL left instead of a job. A manual ``rate_limit(ms)`` sets the
counter to :data:`MANUAL_LIMIT_COUNT` with that TTL, which only limits fetches that have a
maximum at all (a worker ``max`` or ``meta.max``).

The precedence is uneven, and deliberately copied (§2.2 steps 3 and 7, §8 fact 5): the queue's
``max`` beats the worker's, but the worker's ``duration`` beats the queue's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.errors import InvalidArgumentError
from corral.engine.job import Duration, duration_ms

#: What ``rate_limit(ms)`` stores in the counter (JavaScript's ``Number.MAX_SAFE_INTEGER``, as
#: Node BullMQ writes it): larger than any maximum, so every limited fetch sees the queue full.
MANUAL_LIMIT_COUNT: Final = 9007199254740991

#: The longest a rate-limited worker sleeps before asking again (BullMQ's
#: ``maximumRateLimitDelay`` default, ms).
DEFAULT_MAXIMUM_RATE_LIMIT_DELAY: Final = 30_000

#: The message BullMQ's ``RateLimitError`` carries; Node workers match on it, not on the class.
RATE_LIMIT_ERROR_MESSAGE: Final = "bullmq:rateLimitExceeded"


@dataclasses.dataclass(frozen=True, slots=True)
class Limiter:
    """A worker's rate limit: at most ``max`` activations per ``duration`` ms, queue-wide."""

    max: int
    duration: int

    @classmethod
    def build(cls, spec: Limiter | Mapping[str, Any] | None) -> Limiter | None:
        """A limiter from the worker option ``{"max": n, "duration": ms}`` (or None).

        Raises:
            InvalidArgumentError: naming the missing or bad field.
        """
        if spec is None or isinstance(spec, Limiter):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidArgumentError(
                f'limiter must be a mapping {{"max": n, "duration": ms}}, got {spec!r}'
            )
        unknown = set(spec) - {"max", "duration"}
        if unknown:
            raise InvalidArgumentError(f"limiter: unknown field(s) {sorted(unknown)}")
        if "max" not in spec or "duration" not in spec:
            raise InvalidArgumentError('limiter needs both "max" and "duration"')
        return cls(positive_int(spec["max"], "limiter max"), window_ms(spec["duration"]))

    @property
    def pair(self) -> tuple[int, int]:
        """``(max, duration)``, as a FetchRequest carries it."""
        return (self.max, self.duration)


def positive_int(value: object, name: str) -> int:
    """``value`` as a positive int, or a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return value


def window_ms(value: Duration, name: str = "limiter duration") -> int:
    """A window length in ms (an int or a timedelta), at least 1."""
    return duration_ms(value, name, allow_zero=False)


def _meta_int(raw: str | None) -> int | None:
    """A meta field as Lua's ``tonumber`` reads it (None for absent or not a number)."""
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def effective_max(meta_max: str | None, limiter: tuple[int, int] | None) -> int | None:
    """The maximum a fetch applies: ``meta.max`` if set, else the worker's (None: no check).
    ``limiter`` is the worker's ``(max, duration)`` as a FetchRequest carries it."""
    queue_max = _meta_int(meta_max)
    if queue_max is not None:
        return queue_max
    return None if limiter is None else limiter[0]


def effective_duration(meta_duration: str | None, limiter: tuple[int, int] | None) -> int:
    """The window a first activation opens: the worker's ``duration`` if it has a limiter, else
    ``meta.duration`` (0 when neither: the counter then has no TTL, as in BullMQ)."""
    if limiter is not None:
        return limiter[1]
    return abs(_meta_int(meta_duration) or 0)


def limited_for_ms(max_jobs: int | None, count: int, ttl_ms: int) -> int:
    """How long a fetch must wait: the window's TTL while ``count >= max_jobs``, else 0.

    ``ttl_ms`` is the counter's remaining TTL as PTTL gives it (-1 no TTL, -2 no key). A counter
    without a TTL never limits (BullMQ's check passes), nor does a fetch without a maximum.
    """
    if max_jobs is None or count < max_jobs:
        return 0
    return max(ttl_ms, 0)


def rate_limit_ttl(
    max_jobs: int | None, meta_max: str | None, count: int | None, ttl_ms: int
) -> int:
    """``Queue.get_rate_limit_ttl(max_jobs)``: with a maximum (the argument, else ``meta.max``)
    the TTL only while the counter has reached it (else 0); without one the raw PTTL (-2 when
    the key does not exist, -1 when it has no TTL)."""
    limit = max_jobs if max_jobs else _meta_int(meta_max)
    if limit is None:
        return ttl_ms
    if count is not None and count >= limit:
        return ttl_ms
    return 0


def is_maxed(meta_concurrency: str | None, active: int) -> bool:
    """Whether global concurrency stops fetching: ``active >= meta.concurrency``."""
    limit = _meta_int(meta_concurrency)
    return limit is not None and active >= limit


def opens_window(count_after: int) -> bool:
    """Whether this activation started a window (the counter just became 1): it sets the TTL."""
    return count_after == 1


def counts_activation(max_jobs: int | None, fields: Mapping[str, str]) -> bool:
    """Whether activating a job with these hash fields adds to the window counter: only when a
    maximum applies, and not for a job carrying ``defa`` (it fails at once; BullMQ 6.7)."""
    return max_jobs is not None and "defa" not in fields


def rate_limit_sleep_ms(delay_ms: int, maximum_ms: int) -> int:
    """How long a rate-limited worker waits before fetching again (at least 1 ms)."""
    return max(1, min(delay_ms, maximum_ms))
