"""Error types, and BullMQ's texts for the expected races of finishing a job."""

from __future__ import annotations

import enum


class CorralError(Exception):
    """Base class of every error corral raises on purpose."""


class InvalidArgumentError(CorralError, ValueError):
    """A caller passed something corral cannot accept; nothing was stored."""


class UnknownOptionError(InvalidArgumentError, TypeError):
    """An option name that ``Queue.add`` (or an ``add_bulk`` entry) does not know; the message
    suggests the closest known name. Also a ``TypeError``, which Python raises for an unknown
    keyword argument, so code catching that keeps working."""


class ClosedError(CorralError, RuntimeError):
    """A queue was used after it (or the backend it stores its jobs in) was closed."""


class UnrecoverableError(CorralError):
    """Raise from a processor to fail the job at once, whatever attempts remain."""


class JobCancelledError(CorralError):
    """Raised by ``job.cancellation.raise_if_cancelled()`` once the job's run was cancelled."""


class StoreRefusedError(CorralError):
    """The store is up but refused an operation, which changed nothing (e.g. Redis out of
    memory under ``maxmemory-policy noeviction``, or a user lacking an ACL permission).

    A worker stops fetching jobs while the store refuses writes (see
    :func:`corral.engine.policy.fetch_backoff_ms`).

    Attributes:
        operation: the storage operation refused (e.g. ``"extend_locks"``).
        cause: why, in words (e.g. ``"Redis is out of memory"``).
    """

    def __init__(self, operation: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(f"{operation} refused: {cause}")


class ResultCode(enum.IntEnum):
    """Outcome codes of storage operations; the negative values are BullMQ's script codes."""

    OK = 0
    MISSING_JOB = -1
    MISSING_LOCK = -2
    NOT_IN_STATE = -3
    LOCK_MISMATCH = -6
    #: BullMQ's -8: the job is its scheduler's current iteration.
    SCHEDULER_JOB = -8
    #: BullMQ's -10: a pattern scheduler's slot already holds a job.
    SCHEDULER_SLOT_TAKEN = -10
    #: BullMQ's -11: an every scheduler's slot and the next ones already hold jobs.
    SCHEDULER_SLOTS_TAKEN = -11
    #: A parent finishing while children are still pending (flows).
    PENDING_DEPENDENCIES = -4
    #: A child added under a parent that does not exist (flows).
    MISSING_PARENT = -5
    #: A job already a child of one parent, added under another (flows).
    PARENT_CANNOT_BE_REPLACED = -7
    #: A parent completing after a ``fail_parent_on_failure`` child failed (flows).
    FAILED_CHILDREN = -9
    #: corral's own code: removal refused because the job's lock is held.
    JOB_LOCKED = -20


class LockLostError(CorralError):
    """A worker tried to move a job it no longer owns (BullMQ's finish errors).

    Attributes:
        code: the :class:`ResultCode` the storage operation returned.
        job_id: the job concerned.
        command: the name of the storage command, as BullMQ's script name.
    """

    def __init__(self, code: ResultCode, job_id: str, command: str, state: str = "active") -> None:
        self.code = code
        self.job_id = job_id
        self.command = command
        super().__init__(finish_error_text(code, job_id, command, state))


def finish_error_text(code: ResultCode, job_id: str, command: str, state: str = "active") -> str:
    """Return BullMQ's text for a failed finish, e.g. ``Missing lock for job 7. moveToFinished``."""
    if code is ResultCode.MISSING_JOB:
        return f"Missing key for job {job_id}. {command}"
    if code is ResultCode.MISSING_LOCK:
        return f"Missing lock for job {job_id}. {command}"
    if code is ResultCode.NOT_IN_STATE:
        return f"Job {job_id} is not in the {state} state. {command}"
    if code is ResultCode.LOCK_MISMATCH:
        return f"Lock mismatch for job {job_id}. Cmd {command} from {state}"
    if code is ResultCode.PENDING_DEPENDENCIES:
        return f"Job {job_id} has pending dependencies. {command}"
    if code is ResultCode.FAILED_CHILDREN:
        return f"Cannot complete job {job_id} because it has at least one failed child. {command}"
    raise ValueError(f"{code!r} is not an error code")


def missing_parent_text(parent_key: str, command: str) -> str:
    """BullMQ's text for a child added under a parent that does not exist (code -5)."""
    return f"Missing key for parent job {parent_key}. {command}"


def parent_replaced_text(parent_key: str, command: str) -> str:
    """BullMQ's text for a job of one parent added under another (code -7)."""
    return f"The parent job {parent_key} cannot be replaced. {command}"


#: The failure reason of a job that stalled more often than ``max_stalled_count`` allows.
STALLED_LIMIT_REASON = "job stalled more than allowable limit"


#: Emitted (as an ``error`` event) when a lock renewal finds the lock gone or taken.
def lock_renewal_error_text(job_id: str) -> str:
    """BullMQ's text for a lock that could not be renewed."""
    return f"could not renew lock for job {job_id}"


def removal_locked_text(job_id: str) -> str:
    """BullMQ's text for removing a job whose lock is held."""
    return f"Job {job_id} could not be removed because it is locked by another worker"


class JobStateError(CorralError):
    """An operator call on a job that is gone or not where the call needs it (BullMQ's codes
    and texts, e.g. ``Job 7 is not in the failed state. reprocessJob``); nothing changed.

    Attributes:
        code: the :class:`ResultCode` the storage operation returned.
        job_id: the job concerned.
        command: BullMQ's name of the script (``reprocessJob``, ``promote``, ...).
    """

    def __init__(self, code: ResultCode, job_id: str, command: str, state: str = "active") -> None:
        self.code = code
        self.job_id = job_id
        self.command = command
        super().__init__(finish_error_text(code, job_id, command, state))


class JobFailedError(CorralError):
    """Raised by ``job.wait_until_finished`` for a job that failed for good (or is gone): the
    message is its ``failedReason``, as BullMQ's ``waitUntilFinished`` rejects."""


class WaitTimeoutError(CorralError, TimeoutError):
    """``job.wait_until_finished`` heard of no finish within its ``ttl`` (BullMQ's text)."""


class RateLimitError(CorralError):
    """Raise from a processor after ``queue.rate_limit(ms)`` (e.g. on an HTTP 429): the job
    goes back to the front of wait without using an attempt, and the worker waits out the
    limit. Its message is BullMQ's marker ``bullmq:rateLimitExceeded``, which is what workers
    match on (any exception with that message counts, as in Node)."""

    def __init__(self, message: str = "bullmq:rateLimitExceeded") -> None:
        super().__init__(message)


def scheduler_error_text(code: ResultCode, job_id: str, command: str) -> str:
    """BullMQ's texts for the job scheduler refusals (-8, -10, -11)."""
    if code is ResultCode.SCHEDULER_JOB:
        return f"Job {job_id} belongs to a job scheduler and cannot be removed directly. {command}"
    if code is ResultCode.SCHEDULER_SLOT_TAKEN:
        return f"Cannot create job scheduler iteration - job ID already exists. {command}"
    if code is ResultCode.SCHEDULER_SLOTS_TAKEN:
        return (
            "Cannot create job scheduler iteration - current and next time slots already have "
            f"jobs. {command}"
        )
    raise ValueError(f"{code!r} is not a job scheduler error code")


class JobSchedulerError(CorralError):
    """A job scheduler operation the store refused (BullMQ's codes -8, -10, -11).

    Attributes:
        code: the :class:`ResultCode`.
    """

    def __init__(self, code: ResultCode, job_id: str, command: str) -> None:
        self.code = code
        super().__init__(scheduler_error_text(code, job_id, command))


def removal_result(code: ResultCode, job_id: str) -> bool:
    """What a job removal's result code means to the caller (``Queue.remove`` and
    ``Job.remove`` alike): True if the job was deleted, False if it did not exist.

    Raises:
        CorralError: if a worker holds the job's lock (BullMQ's text).
        JobSchedulerError: if the job is a scheduler's current iteration (BullMQ's -8).
    """
    if code is ResultCode.JOB_LOCKED:
        raise CorralError(removal_locked_text(job_id))
    if code is ResultCode.SCHEDULER_JOB:
        raise JobSchedulerError(code, job_id, "removeJob")
    return code is ResultCode.OK


class DelayedError(CorralError):
    """Raise from a processor after ``job.move_to_delayed``: the job was moved already, and
    the worker only takes the next job (BullMQ's step-job error of the same name)."""


class WaitingChildrenError(CorralError):
    """Raise from a processor after ``job.move_to_waiting_children`` returned True: the job
    waits for its children, and the worker only takes the next job."""


class WaitingError(CorralError):
    """Raise from a processor that moved its job back to wait itself (BullMQ's name)."""


#: The errors a worker reads as "the processor moved its job already": matched by name, as
#: BullMQ does, so that an error class of the same name from elsewhere counts too.
STEP_ERROR_NAMES = frozenset({"DelayedError", "WaitingChildrenError", "WaitingError"})
