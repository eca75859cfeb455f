"""The Job record, job options, and their encoding as BullMQ job-hash fields.

A job is stored as a flat hash of strings, exactly BullMQ's fields (``name, data, opts,
timestamp, delay, priority, processedOn, finishedOn, atm, ats, stc, returnvalue, failedReason,
stacktrace, progress, defa, pb``). Every backend stores that hash; :class:`Job` is the typed,
snake_case view of it. Options are encoded in the ``opts`` field as BullMQ's JSON (camelCase keys,
because Node BullMQ reads the same field).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from corral.engine.deduplication import Deduplication
from corral.engine.errors import InvalidArgumentError, JobCancelledError
from corral.engine.flows import (
    FAILURE_FLAGS,
    ParentLink,
    check_dedup_in_flow,
    parent_link_from_options,
)
from corral.engine.inputs import (
    MAX_JSON_DEPTH,
    RESERVED_JOB_IDS,
    check_utf8,
    json_nested_deeper,
    unknown_option_error,
)
from corral.engine.job_flows import JobFlowCalls
from corral.engine.job_operations import JobHost, JobOperations

if TYPE_CHECKING:
    from corral.engine.storage import NewJob

#: Highest allowed priority (BullMQ: 2^21 − 1); 0 means "no priority".
MAX_PRIORITY: Final = 2**21 - 1

Duration = int | datetime.timedelta

#: Option names accepted by ``Queue.add`` and by the ``opts`` of ``Queue.add_bulk`` entries.
JOB_OPTION_NAMES: Final = frozenset(
    {
        "delay",
        "priority",
        "attempts",
        "backoff",
        "job_id",
        "remove_on_complete",
        "remove_on_fail",
        "lifo",
        "keep_logs",
        "deduplication",
        # Flows (see corral.engine.flows):
        "parent",
        "fail_parent_on_failure",
        "continue_parent_on_failure",
        "ignore_dependency_on_failure",
        "remove_dependency_on_failure",
    }
)


def duration_ms(value: Duration, name: str, *, allow_zero: bool = True) -> int:
    """Return a duration in whole milliseconds, accepting an int or a ``timedelta``.

    Raises:
        InvalidArgumentError: if the value is negative (or zero when not allowed) or not a duration.
    """
    if isinstance(value, datetime.timedelta):
        ms = int(value / datetime.timedelta(milliseconds=1))
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        raise InvalidArgumentError(
            f"{name} must be an integer number of milliseconds or a timedelta, got {value!r}"
        )
    if ms < 0 or (ms == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise InvalidArgumentError(f"{name} must be {bound} milliseconds, got {ms}")
    return ms


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_json(value: Any, what: str, *what_args: object) -> str:
    """Encode ``value`` as compact JSON.

    Args:
        value: what to encode.
        what: names the value in the error if it cannot be encoded, as a ``str.format``
            template filled with ``what_args`` (formatted only then: this runs once per job).
    """
    # The values most jobs carry and return skip the encoder, whose set-up per call costs
    # more than the encoding of a scalar (exact types only: subclasses may encode otherwise).
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    try:
        encoded = _ENCODER.encode(value)
    except RecursionError:
        pass  # too deep for the encoder itself
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{what.format(*what_args)} cannot be encoded as JSON: {exc}"
        ) from exc
    else:
        # A depth of d takes at least 2·d characters: most values skip the check.
        if len(encoded) <= 2 * MAX_JSON_DEPTH or not json_nested_deeper(encoded, MAX_JSON_DEPTH):
            return encoded
    raise InvalidArgumentError(
        f"{what.format(*what_args)} cannot be encoded as JSON: it is nested deeper than "
        f"{MAX_JSON_DEPTH} levels"
    )


class _CounterSteps(dict[str | None, str]):
    """Maps a counter field's stored value to the value after it; absent or empty counts as 0.

    The small counts (``ats`` and ``atm`` are bumped for every job, and are almost always small)
    are looked up in C instead of parsed and formatted again; the rest are computed on a miss.
    """

    def __missing__(self, raw: str | None) -> str:
        return str(int(raw or 0) + 1)


_SMALL_COUNTS: dict[str | None, str] = {None: "1", "": "1"}
_SMALL_COUNTS.update((str(count), str(count + 1)) for count in range(100))
_COUNTER_STEPS: Final = _CounterSteps(_SMALL_COUNTS)

#: ``next_count(raw)``: the stored value of a counter field after ``raw`` (absent or empty
#: counts as 0). A bound C method, not a Python function: it runs several times per job.
next_count: Final[Callable[[str | None], str]] = _COUNTER_STEPS.__getitem__


def validate_queue_name(name: object) -> str:
    """Check a queue name: a non-empty UTF-8 string without ``:`` (it separates key parts)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"queue name must be a non-empty string, got {name!r}")
    if ":" in name:
        raise InvalidArgumentError(f"queue name {name!r} must not contain ':'")
    if not name.isascii():
        check_utf8(name, "queue name")
    return name


def validate_job_id(job_id: object) -> str:
    """Check a custom job id: a non-empty UTF-8 string, not an integer, without ``:``, and not
    one of :data:`RESERVED_JOB_IDS`.

    Integer strings are reserved for the ids the queue's counter hands out.
    """
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgumentError(f"job id must be a non-empty string, got {job_id!r}")
    if job_id.lstrip("-").isdigit():
        raise InvalidArgumentError(
            f"custom job id {job_id!r} must not be an integer: those are reserved for generated ids"
        )
    if ":" in job_id:
        raise InvalidArgumentError(f"custom job id {job_id!r} must not contain ':'")
    if job_id in RESERVED_JOB_IDS:
        raise InvalidArgumentError(
            f"custom job id {job_id!r} is reserved: it names a key of the queue's own layout "
            f"(<prefix>:<queue>:{job_id}), which the job's hash would overwrite"
        )
    if not job_id.isascii():
        check_utf8(job_id, "custom job id")
    return job_id


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retrying a failed attempt.

    Attributes:
        type: ``"fixed"``, ``"exponential"``, or the name of a custom strategy that the worker's
            ``backoff_strategy`` understands.
        delay: base delay in milliseconds.
        jitter: between 0 and 1; the delay is drawn from ``[delay × (1 − jitter), delay]``.
    """

    type: str = "fixed"
    delay: int = 0
    jitter: float = 0.0

    @classmethod
    def parse(cls, spec: object) -> Backoff | None:
        """Build a Backoff from an int (fixed delay), a dict like BullMQ's, or a Backoff."""
        if spec is None or isinstance(spec, Backoff):
            return spec
        if callable(spec):
            raise InvalidArgumentError(
                "backoff cannot be a function because job options are stored as JSON; pass "
                "backoff={'type': 'my-strategy', 'delay': ...} and give the worker "
                "backoff_strategy=your_function"
            )
        if isinstance(spec, int) and not isinstance(spec, bool):
            return cls("fixed", duration_ms(spec, "backoff"))
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"type", "delay", "jitter"}
            if unknown:
                raise InvalidArgumentError(f"unknown backoff option(s): {sorted(unknown)}")
            kind = spec.get("type", "fixed")
            if not isinstance(kind, str) or not kind:
                raise InvalidArgumentError(f"backoff type must be a non-empty string: {kind!r}")
            jitter = spec.get("jitter", 0.0)
            if not isinstance(jitter, int | float) or not 0.0 <= jitter <= 1.0:
                raise InvalidArgumentError(f"backoff jitter must be between 0 and 1: {jitter!r}")
            return cls(kind, duration_ms(spec.get("delay", 0), "backoff delay"), float(jitter))
        raise InvalidArgumentError(f"backoff must be an int, a dict or a Backoff, got {spec!r}")

    def to_json(self) -> dict[str, Any]:
        """BullMQ's encoding."""
        encoded: dict[str, Any] = {"type": self.type, "delay": self.delay}
        if self.jitter:
            encoded["jitter"] = self.jitter
        return encoded


@dataclasses.dataclass(frozen=True, slots=True)
class KeepJobs:
    """Retention of finished jobs: keep at most ``count`` and none older than ``age_ms``.

    ``None`` means "no limit"; ``KeepJobs(count=0)`` deletes each job as it finishes.
    """

    count: int | None = None
    age_ms: int | None = None
    #: True when nothing is ever trimmed (computed: asked once per finished job).
    keeps_all: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keeps_all", self.count is None and self.age_ms is None)

    @classmethod
    def parse(cls, spec: object, name: str) -> KeepJobs:
        """Parse BullMQ's ``removeOnComplete`` / ``removeOnFail``: bool, count, or {age, count}.

        ``age`` is in seconds, as in BullMQ.
        """
        if isinstance(spec, KeepJobs):
            return spec
        if isinstance(spec, bool):
            return cls(count=0) if spec else cls()
        if isinstance(spec, int):
            if spec < 0:
                raise InvalidArgumentError(f"{name} count must be zero or more, got {spec}")
            return cls(count=spec)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"age", "count", "limit"}
            if unknown:
                raise InvalidArgumentError(f"unknown {name} option(s): {sorted(unknown)}")
            count, age = spec.get("count"), spec.get("age")
            for label, value in (("count", count), ("age", age)):
                if value is not None and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 0
                ):
                    raise InvalidArgumentError(f"{name} {label} must be an int >= 0: {value!r}")
            return cls(count=count, age_ms=None if age is None else age * 1000)
        raise InvalidArgumentError(f"{name} must be a bool, an int or a dict, got {spec!r}")

    def to_json(self) -> bool | int | dict[str, int]:
        """BullMQ's encoding."""
        if self.keeps_all:
            return False
        if self.age_ms is None:
            return True if self.count == 0 else int(self.count or 0)
        encoded = {"age": self.age_ms // 1000}
        if self.count is not None:
            encoded["count"] = self.count
        return encoded


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """The options of one job (validated; see ``Queue.add`` for their meaning)."""

    delay: int = 0
    priority: int = 0
    attempts: int = 1
    backoff: Backoff | None = None
    job_id: str | None = None
    remove_on_complete: KeepJobs = KeepJobs()
    remove_on_fail: KeepJobs = KeepJobs()
    lifo: bool = False
    #: How many log rows ``job.log`` keeps (the newest); None keeps all (BullMQ's ``keepLogs``).
    keep_logs: int | None = None
    deduplication: Deduplication | None = None
    #: The parent this job is a child of, with its failure flag (flows), or None.
    parent: ParentLink | None = None

    @classmethod
    def build(cls, options: Mapping[str, Any]) -> JobOptions:
        """Validate user options (snake_case names) and return them typed.

        Raises:
            InvalidArgumentError: naming the first unknown or invalid option.
        """
        unknown = set(options) - JOB_OPTION_NAMES
        if unknown:
            raise unknown_option_error(unknown, JOB_OPTION_NAMES)
        priority = options.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidArgumentError(f"priority must be an int, got {priority!r}")
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidArgumentError(
                f"priority must be between 0 and {MAX_PRIORITY}, got {priority}"
            )
        attempts = options.get("attempts", 1)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise InvalidArgumentError(f"attempts must be an int >= 1, got {attempts!r}")
        job_id = options.get("job_id")
        lifo = options.get("lifo", False)
        if not isinstance(lifo, bool):
            raise InvalidArgumentError(f"lifo must be a bool, got {lifo!r}")
        keep_logs = options.get("keep_logs")
        if keep_logs is not None and (
            not isinstance(keep_logs, int) or isinstance(keep_logs, bool) or keep_logs < 1
        ):
            raise InvalidArgumentError(f"keep_logs must be an int >= 1 or None, got {keep_logs!r}")
        check_dedup_in_flow(options, has_children=False)
        return cls(
            delay=duration_ms(options.get("delay", 0), "delay"),
            priority=priority,
            attempts=attempts,
            backoff=Backoff.parse(options.get("backoff")),
            job_id=None if job_id is None else validate_job_id(job_id),
            remove_on_complete=KeepJobs.parse(
                options.get("remove_on_complete", False), "remove_on_complete"
            ),
            remove_on_fail=KeepJobs.parse(options.get("remove_on_fail", False), "remove_on_fail"),
            lifo=lifo,
            keep_logs=keep_logs,
            deduplication=Deduplication.parse(options.get("deduplication")),
            parent=parent_link_from_options(options),
        )

    def to_json(self) -> dict[str, Any]:
        """BullMQ's ``opts`` encoding (camelCase keys; defaults left out except attempts/delay)."""
        encoded: dict[str, Any] = {"attempts": self.attempts, "delay": self.delay}
        if self.priority:
            encoded["priority"] = self.priority
        if self.backoff is not None:
            encoded["backoff"] = self.backoff.to_json()
        if self.job_id is not None:
            encoded["jobId"] = self.job_id
        if not self.remove_on_complete.keeps_all:
            encoded["removeOnComplete"] = self.remove_on_complete.to_json()
        if not self.remove_on_fail.keeps_all:
            encoded["removeOnFail"] = self.remove_on_fail.to_json()
        if self.lifo:
            encoded["lifo"] = True
        if self.keep_logs is not None:
            encoded["kl"] = self.keep_logs  # BullMQ's optsAsJSON name for keepLogs
        if self.deduplication is not None:
            encoded["de"] = self.deduplication.to_json()
        if self.parent is not None:  # BullMQ: opts.parent {id, queue} and the short flag
            encoded["parent"] = {"id": self.parent.job_id, "queue": self.parent.queue_key}
            if self.parent.flag:
                encoded[self.parent.flag] = True
        return encoded

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> JobOptions:
        """Decode BullMQ's ``opts`` (tolerant: a Node producer may store options we ignore)."""
        attempts = raw.get("attempts") or 1
        return cls(
            delay=int(raw.get("delay") or 0),
            priority=int(raw.get("priority") or 0),
            attempts=max(1, int(attempts)),
            backoff=_backoff_from_json(raw.get("backoff")),
            job_id=raw.get("jobId"),
            remove_on_complete=_keep_from_json(raw.get("removeOnComplete")),
            remove_on_fail=_keep_from_json(raw.get("removeOnFail")),
            lifo=bool(raw.get("lifo", False)),
            keep_logs=_keep_logs_from_json(raw.get("kl")),
            deduplication=Deduplication.from_json(raw.get("de")),
            parent=_parent_from_json(raw),
        )


def _backoff_from_json(raw: object) -> Backoff | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Backoff("fixed", raw)
    if isinstance(raw, Mapping):
        return Backoff(
            str(raw.get("type", "fixed")), int(raw.get("delay") or 0), float(raw.get("jitter", 0))
        )
    return None


def _parent_from_json(raw: Mapping[str, Any]) -> ParentLink | None:
    parent = raw.get("parent")
    if not isinstance(parent, Mapping) or not isinstance(parent.get("queue"), str):
        return None
    flag = next((f for f in FAILURE_FLAGS.values() if raw.get(f) is True), "")
    return ParentLink(parent["queue"], str(parent.get("id")), flag)


def _keep_logs_from_json(raw: object) -> int | None:
    # BullMQ treats a falsy keepLogs as "keep every row".
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 1:
        return int(raw)
    return None


def _keep_from_json(raw: object) -> KeepJobs:
    if isinstance(raw, bool | int | Mapping):
        return KeepJobs.parse(raw, "retention")
    return KeepJobs()


class Cancellation:
    """Tells a running processor that its run should stop.

    Set when the worker lost the job's lock (a renewal found it expired or taken) or when
    ``worker.cancel_job`` was called. A processor can poll :attr:`is_cancelled` (also from a
    thread), call :meth:`raise_if_cancelled`, or ``await`` :meth:`wait`.
    """

    __slots__ = ("_event", "_loop", "_reason")

    def __init__(self) -> None:
        self._reason: str | None = None
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_cancelled(self) -> bool:
        """True once the run was cancelled."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the run was cancelled, or None."""
        return self._reason

    def cancel(self, reason: str) -> None:
        """Cancel the run (first reason wins). Call from the worker's event loop."""
        if self._reason is None:
            self._reason = reason
            if self._event is not None:
                self._event.set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelledError` if the run was cancelled."""
        if self._reason is not None:
            raise JobCancelledError(self._reason)

    async def wait(self) -> str:
        """Wait until the run is cancelled; return the reason."""
        if self._event is None:
            self._event = asyncio.Event()
            if self._reason is not None:
                self._event.set()
        await self._event.wait()
        assert self._reason is not None
        return self._reason


ProgressWriter = Callable[[str, str], Awaitable[None]]

_UNSET: Final[Any] = object()
_NO_FIELDS: Final[dict[str, str]] = {}  # held for an instant by a job from Job._added


class Job(JobOperations, JobFlowCalls):
    """A job as read from storage: the snake_case view of BullMQ's job hash.

    Attributes mirror the hash fields: ``id, name, data, opts, priority, delay, timestamp,
    processed_on, finished_on, attempts_made, attempts_started, stalled_counter, progress,
    return_value, failed_reason, stacktrace``, plus ``deferred_failure`` (``defa``) and
    ``processed_by`` (``pb``). While a worker runs the job, ``token`` is its lock token and
    ``cancellation`` tells the processor whether it should stop.

    Fields are decoded when first read, so a job costs little until it is looked at. A Job is a
    snapshot: read the job again (``queue.get_job``) to see later changes. The calls that change
    the stored job (``retry``, ``promote``, ``log``, ``move_to_completed``, ...) come from
    :class:`~corral.engine.job_operations.JobOperations`.
    """

    __slots__ = (
        "_cancellation",
        "_data",
        "_fields",
        "_host",
        "_loop",
        "_opts",
        "_owner_thread",
        "_pending",
        "_progress_writer",
        "id",
        "queue_name",
        "token",
    )

    _pending: NewJob  # set instead of _fields by _added

    def __init__(
        self,
        queue_name: str,
        job_id: str,
        fields: Mapping[str, str],
        progress_writer: ProgressWriter | None = None,
        token: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        loop_thread: int | None = None,
    ) -> None:
        # (The queue and the worker pass everything by position: keywords cost a dict per job.)
        self.queue_name = queue_name
        self.id = job_id
        # A dict handed in is owned from now on (backends and queues pass fresh copies).
        self._fields: dict[str, str] = fields if type(fields) is dict else dict(fields)
        self._data: Any = _UNSET
        self._opts: JobOptions | None = None
        self.token = token
        self._cancellation: Cancellation | None = None
        self._progress_writer = progress_writer
        #: The Queue or Worker that read the job: the job's calls go through it.
        self._host: JobHost | None = None
        # The event loop of the worker running this job, and that loop's thread (see
        # bind_loop): thread-side progress is sent there.
        self._loop = loop
        if loop is None:
            self._owner_thread = 0
        else:
            self._owner_thread = threading.get_ident() if loop_thread is None else loop_thread

    @classmethod
    def _added(
        cls,
        queue_name: str,
        job_id: str,
        new_job: NewJob,
        progress_writer: ProgressWriter | None = None,
    ) -> Job:
        """The job a queue has just stored from ``new_job``: its hash is built on first use
        (see ``__getattr__``), as most callers of ``add_bulk`` read no more than the ids."""
        job = cls(queue_name, job_id, _NO_FIELDS, progress_writer)
        del job._fields
        job._pending = new_job
        return job

    def __getattr__(self, name: str) -> Any:
        # Reached only for an unset slot: the hash of a job from _added, made on first use.
        if name == "_fields":
            from corral.engine.storage import hash_fields  # (storage imports this module)

            fields = self._fields = hash_fields(self._pending)
            return fields
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"<Job {self.queue_name}:{self.id} name={self.name!r}>"

    @property
    def cancellation(self) -> Cancellation:
        """Tells the processor whether its run should stop (see :class:`Cancellation`)."""
        # Made on first use: most runs never look at it.
        if self._cancellation is None:
            self._cancellation = Cancellation()
        return self._cancellation

    @property
    def fields(self) -> Mapping[str, str]:
        """The raw BullMQ hash fields this job was read from."""
        return self._fields

    def _record_attempt(self, field: str, value: str | None) -> None:
        """Mirror a finished attempt the worker stored: one more ``atm`` and ``field``
        (``returnvalue`` or ``failedReason``) set to ``value``."""
        fields = self._fields
        fields["atm"] = next_count(fields.get("atm", fields.get("attemptsMade")))
        if value is None:
            fields.pop(field, None)
        else:
            fields[field] = value

    def _set_field(self, name: str, value: str | None) -> None:
        """Update a raw field of this snapshot (the worker mirrors what it stored)."""
        if value is None:
            self._fields.pop(name, None)
        else:
            self._fields[name] = value

    @property
    def name(self) -> str:
        """The job's name."""
        return self._fields.get("name", "")

    @property
    def data(self) -> Any:
        """The job's data (decoded JSON)."""
        if self._data is _UNSET:
            self._data = _json_or_none(self._fields.get("data"))
        return self._data

    @property
    def opts(self) -> JobOptions:
        """The job's options."""
        if self._opts is None:
            self._opts = decode_opts(self._fields.get("opts") or "{}")
        return self._opts

    @property
    def timestamp(self) -> int:
        """Creation time (ms)."""
        return _int_or_none(self._fields.get("timestamp")) or 0

    @property
    def delay(self) -> int:
        """Current delay (ms)."""
        return _int_or_none(self._fields.get("delay")) or 0

    @property
    def priority(self) -> int:
        """Priority (0 = none)."""
        return _int_or_none(self._fields.get("priority")) or 0

    @property
    def processed_on(self) -> int | None:
        """Start of the latest attempt (ms)."""
        return _int_or_none(self._fields.get("processedOn"))

    @property
    def finished_on(self) -> int | None:
        """When the job completed or failed for good (ms)."""
        return _int_or_none(self._fields.get("finishedOn"))

    @property
    def attempts_made(self) -> int:
        """Finished attempts (``atm``; older BullMQ versions wrote ``attemptsMade``)."""
        return _int_or_none(self._fields.get("atm", self._fields.get("attemptsMade"))) or 0

    @property
    def attempts_started(self) -> int:
        """Times the job was moved to active (``ats``)."""
        return _int_or_none(self._fields.get("ats")) or 0

    @property
    def stalled_counter(self) -> int:
        """Times the job was recovered from a stall (``stc``)."""
        return _int_or_none(self._fields.get("stc")) or 0

    @property
    def progress(self) -> Any:
        """Last reported progress (decoded JSON; 0 when never reported)."""
        return _json_or_none(self._fields.get("progress"), default=0)

    @property
    def return_value(self) -> Any:
        """The processor's result (decoded JSON)."""
        return _json_or_none(self._fields.get("returnvalue"))

    @property
    def failed_reason(self) -> str | None:
        """Why the latest attempt failed."""
        return self._fields.get("failedReason")

    @property
    def stacktrace(self) -> list[str]:
        """Stacktraces of failed attempts, most recent last."""
        stack = _json_or_none(self._fields.get("stacktrace"), default=[])
        return stack if isinstance(stack, list) else []

    @property
    def deferred_failure(self) -> str | None:
        """A failure reason to apply when the job is next taken (``defa``)."""
        return self._fields.get("defa")

    @property
    def processed_by(self) -> str | None:
        """Name of the worker that took the job last (``pb``)."""
        return self._fields.get("pb")

    async def update_progress(self, value: Any) -> None:
        """Store the job's progress (any JSON value) and emit ``progress``."""
        if self._progress_writer is None:
            raise RuntimeError(f"job {self.id} was not read through a queue or worker")
        encoded = encode_json(value, "progress of job {}", self.id)
        await self._progress_writer(self.id, encoded)
        self._fields["progress"] = encoded

    def update_progress_sync(self, value: Any) -> None:
        """Report progress from a synchronous processor running in a worker thread."""
        if self._loop is None:
            raise RuntimeError("update_progress_sync is for processors run by a worker")
        if threading.get_ident() == self._owner_thread:
            raise RuntimeError(
                "update_progress_sync called on the event loop; "
                "await job.update_progress(...) instead"
            )
        asyncio.run_coroutine_threadsafe(self.update_progress(value), self._loop).result()

    def bind_loop(self, loop: asyncio.AbstractEventLoop, thread: int | None = None) -> None:
        """Record the event loop of the worker running this job (for thread-side progress)
        and the loop's thread (``threading.get_ident()`` by default: the caller's)."""
        self._loop = loop
        self._owner_thread = threading.get_ident() if thread is None else thread


@functools.lru_cache(maxsize=512)
def decode_opts(encoded: str) -> JobOptions:
    """Decode a job's ``opts`` field (memoised).

    Most jobs of a queue share a handful of option sets, and JobOptions is immutable, so the
    decoded value is shared instead of parsed again for every job.
    """
    raw = _json_or_none(encoded)
    return JobOptions.from_json(raw if isinstance(raw, dict) else {})


def _int_or_none(raw: str | None) -> int | None:
    return None if raw is None or raw == "" else int(raw)


def _json_or_none(raw: str | None, default: Any = None) -> Any:
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        # A field written by another producer that is not JSON (or nested too deeply for
        # Python's decoder): expose it as the raw string.
        return raw
