"""The values the Storage operations take and return (see :mod:`corral.engine.storage`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from typing import Final, TypeAlias

from corral.engine.errors import InvalidArgumentError, ResultCode
from corral.engine.job import KeepJobs

# The result types are plain (not frozen) slotted dataclasses because they are built on every
# job's hot path, where frozen dataclasses cost several times more to construct. Treat them as
# immutable values all the same.


#: A job ready to be stored, options validated and payloads JSON-encoded:
#: ``(name, data, opts, timestamp, delay, priority, lifo, job_id)``. Build one with
#: :func:`new_job` and read it by unpacking. A plain tuple of strings and numbers, not a class:
#: the garbage collector stops tracking such a tuple at its first collection, where an instance
#: stays tracked, and a bulk add's thousands of pending jobs would be promoted to the oldest
#: generation and bring on full collections (a fifth of a bulk add's time, measured).
NewJob: TypeAlias = tuple[str, str, str, int, int, int, bool, str | None]


def new_job(
    name: str,
    data: str,
    opts: str,
    timestamp: int,
    delay: int = 0,
    priority: int = 0,
    lifo: bool = False,
    job_id: str | None = None,
) -> NewJob:
    """A :data:`NewJob`: ``data`` and ``opts`` are JSON; ``job_id`` None lets the store number
    the job."""
    return (name, data, opts, timestamp, delay, priority, lifo, job_id)


def hash_fields(job: NewJob) -> dict[str, str]:
    """The job's hash as first stored (BullMQ's fields; a fresh dict)."""
    name, data, opts, timestamp, delay, priority, _, _ = job
    return {
        "name": name,
        "data": data,
        "opts": opts,
        "timestamp": str(timestamp),
        # (most jobs have neither: a constant costs a fraction of str(0), twice per added job)
        "delay": str(delay) if delay else "0",
        "priority": str(priority) if priority else "0",
    }


@dataclasses.dataclass(slots=True)
class AddResult:
    """What one ``add_jobs`` call stored: the id of each job, in order, and whether it was
    created (False where its custom id already existed: that job was left as it was). One
    result per call, not per job: adding jobs in bulk makes no object per job for it."""

    job_ids: list[str]
    created: list[bool]


@dataclasses.dataclass(slots=True)
class FetchRequest:
    """Who is fetching: the lock token, the lock's TTL and the worker's name (``pb``).

    With ``token`` None the store mints the token: ``token_prefix`` (which must end in ``:``)
    followed by a number the backend object never hands out twice, returned in
    :attr:`Fetched.token`. That is what a Worker does (its prefix is its id): one request then
    serves all its fetches. A caller that passes its own tokens must keep them unique.
    """

    token: str | None
    lock_duration: int
    worker_name: str | None = None
    token_prefix: str = ""
    #: The worker's rate limit ``(max, duration ms)``, applied queue-wide by the store.
    limiter: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Each store numbers the tokens it mints on its own: a prefix unique to the caller keeps
        # two processes sharing a Redis store apart, and its closing ":" marks where the number
        # starts (else "w7" + "11" would meet "w71" + "1").
        if self.token is None and not self.token_prefix.endswith(":"):
            raise InvalidArgumentError(
                "a FetchRequest without a token needs a token_prefix ending in ':', "
                f"got {self.token_prefix!r}"
            )

    def lock_token(self, numbers: Iterator[int]) -> str:
        """The token to lock the fetched job with: ``token``, or one minted from ``numbers``
        (the store's count, which every request without a token uses up, whether or not it
        gets a job: so do the memory backend, the Redis backend and the model)."""
        if self.token is not None:
            return self.token
        return self.token_prefix + str(next(numbers))


@dataclasses.dataclass(slots=True)
class Fetched:
    """A job that was just moved to active: its id, hash fields and lock token."""

    job_id: str
    fields: dict[str, str]
    token: str


@dataclasses.dataclass(slots=True)
class FetchResult:
    """The job that was activated, or None with the due time of the next delayed job (if any),
    or, when a rate limit holds fetches back, ``rate_limit_ms`` > 0: how long it lasts."""

    job: Fetched | None
    next_due_ms: int | None = None
    rate_limit_ms: int = 0


@dataclasses.dataclass(slots=True)
class Complete:
    """Finish: the processor returned ``return_value`` (JSON)."""

    return_value: str
    keep: KeepJobs = KeepJobs()


@dataclasses.dataclass(slots=True)
class Fail:
    """Finish: the job failed for good."""

    reason: str
    stacktrace: str = "[]"
    keep: KeepJobs = KeepJobs()


@dataclasses.dataclass(slots=True)
class RetryLater:
    """Finish: the attempt failed; retry after ``delay_ms`` (the job goes to delayed)."""

    delay_ms: int
    reason: str
    stacktrace: str = "[]"


@dataclasses.dataclass(slots=True)
class RetryNow:
    """Finish: the attempt failed; retry at once (back of wait, or prioritized)."""

    reason: str
    stacktrace: str = "[]"


Outcome = Complete | Fail | RetryLater | RetryNow

#: BullMQ's name of the script that applies each outcome (used in error texts).
OUTCOME_COMMANDS: dict[type[Complete | Fail | RetryLater | RetryNow], str] = {
    Complete: "moveToFinished",
    Fail: "moveToFinished",
    RetryLater: "moveToDelayed",
    RetryNow: "retryJob",
}


#: What ``finish`` returns: the job it fetched in the same step, when asked to and one was ready
#: (which implies the outcome was stored), else the result code (``OK``: the outcome was stored).
#: One or the other rather than a record of both: finishing is once per job, and the record
#: would be one more object each time. Read it with :func:`result_code` and :func:`next_job`.
FinishResult: TypeAlias = Fetched | ResultCode


#: Each outcome's kind, as the Redis finish script takes it and as finish records hold it.
OUTCOME_KINDS: Final[dict[type[Complete | Fail | RetryLater | RetryNow], str]] = {
    Complete: "complete",
    Fail: "fail",
    RetryLater: "retry_later",
    RetryNow: "retry_now",
}

#: A job's hash records every finish applied to it in a field of its own, ``"fin:<lock token>"``
#: (corral's own: Node BullMQ ignores fields it does not know; one per attempt), so that the same
#: finish sent again (its reply was lost) gets the same answer, whatever happened to the job
#: since. Its value is :func:`finish_record`.
FINISH_FIELD_PREFIX: Final = "fin:"


def finish_field(token: str) -> str:
    """The job hash field that records the finish applied under ``token``."""
    return FINISH_FIELD_PREFIX + token


def finish_record(kind: str, fetched: tuple[str, str] | None = None) -> str:
    """A finish record: ``"<outcome kind>:"`` then, if that finish fetched a job (``(id,
    token)``), ``"<UTF-8 length of id>:<id><token>"`` (the length keeps any id and token apart;
    bytes, as Lua counts)."""
    if fetched is None:
        return kind + ":"
    job_id, token = fetched
    return f"{kind}:{len(job_id.encode())}:{job_id}{token}"


def parse_finish_record(record: str) -> tuple[str, tuple[str, str] | None]:
    """``(outcome kind, (id, token) of the job fetched or None)`` from a :func:`finish_record`."""
    kind, _, fetched = record.partition(":")
    if not fetched:
        return kind, None
    length, _, rest = fetched.partition(":")
    encoded = rest.encode()
    size = int(length)
    return kind, (encoded[:size].decode(), encoded[size:].decode())


def result_code(result: FinishResult) -> ResultCode:
    """The result code of a ``finish``: ``OK`` when it fetched a job."""
    return ResultCode.OK if isinstance(result, Fetched) else result


def next_job(result: FinishResult) -> Fetched | None:
    """The job a ``finish`` fetched, or None."""
    return result if isinstance(result, Fetched) else None


@dataclasses.dataclass(slots=True)
class StalledCheck:
    """What one stalled-check pass did.

    Attributes:
        ran: False when another checker ran within ``stalled_interval`` (throttled).
        recovered: ids moved back to wait (``stc`` + 1).
        failed: ids failed because ``stc`` exceeded ``max_stalled_count``.
    """

    ran: bool
    recovered: list[str]
    failed: list[str]


@dataclasses.dataclass(slots=True)
class LockInfo:
    """The holder of a job's lock and the milliseconds left before it expires."""

    token: str
    ttl_ms: int


@dataclasses.dataclass(slots=True)
class StoredEvent:
    """One entry of the queue's event log (BullMQ's ``events`` stream)."""

    id: str
    name: str
    fields: dict[str, str]


class ObliterateResult(enum.IntEnum):
    """What one ``obliterate`` call did (BullMQ's ``obliterate`` script codes)."""

    DONE = 0  # nothing of the queue is left
    MORE = 1  # the count was used up: call again
    NOT_PAUSED = -1  # refused: "Cannot obliterate non-paused queue"
    ACTIVE_JOBS = -2  # refused: "Cannot obliterate queue with active jobs"
