"""Job schedulers (BullMQ's repeatable jobs) as pure policy: the repeat options and their
checks, iteration ids, the next run of an ``every`` scheduler, and the options of each
iteration job.

A scheduler owns exactly one future job, its *current iteration*, whose id is
``repeat:<scheduler id>:<millis of its slot>``. The next iteration is made when a worker
activates the current one (see :mod:`corral.engine.scheduler_iterations`), not by a timer: a
scheduler therefore needs no process of its own, and survives the crash of any process. The
store applies these decisions (``corral.engine.storage.schedulers``); nothing here reads a clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.errors import InvalidArgumentError
from corral.engine.job import JobOptions, encode_json

#: Names accepted in ``upsert_job_scheduler``'s ``repeat`` mapping.
REPEAT_OPTION_NAMES: Final = frozenset(
    {"every", "pattern", "tz", "limit", "start_date", "end_date", "immediately", "offset", "count"}
)
#: Names accepted in the ``template`` mapping.
TEMPLATE_NAMES: Final = frozenset({"name", "data", "opts"})
#: How many later slots an ``every`` scheduler tries when its slot's job id is taken (BullMQ's).
EVERY_SLOT_TRIES: Final = 32

# BullMQ's texts (bullmq-features.md §1.3).
END_DATE_PASSED: Final = "End date must be greater than current timestamp"
BOTH_PATTERN_AND_EVERY: Final = (
    "Both .pattern and .every options are defined for this repeatable job"
)
NEITHER_PATTERN_NOR_EVERY: Final = (
    "Either .pattern or .every options must be defined for this repeatable job"
)
IMMEDIATELY_AND_START: Final = (
    "Both .immediately and .startDate options are defined for this repeatable job"
)
DEBOUNCE_REMOVED: Final = "Debounce option has been removed. Use deduplication option instead"


def iteration_id(scheduler_id: str, millis: int) -> str:
    """The job id of a scheduler's iteration for the slot at ``millis``."""
    return f"repeat:{scheduler_id}:{millis}"


def scheduler_of(job_id: str) -> str | None:
    """The scheduler id an iteration id names (None for any other id)."""
    if not job_id.startswith("repeat:"):
        return None
    scheduler_id, _, millis = job_id[7:].rpartition(":")
    return scheduler_id if scheduler_id and millis.isdigit() else None


def _epoch_ms(value: object, name: str) -> int:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError(f"repeat {name} must be an aware datetime, got {value!r}")
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise InvalidArgumentError(
        f"repeat {name} must be epoch milliseconds or an aware datetime, got {value!r}"
    )


def _positive_int(value: object, name: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, datetime.timedelta):
        value = int(value.total_seconds() * 1000)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        limit = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(f"repeat {name} must be an int {limit}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class RepeatOptions:
    """A scheduler's repeat options, validated (times in epoch ms, durations in ms).

    ``count`` is the iteration number of the job these options belong to (1-based; 0 on a
    fresh upsert). ``immediately`` only affects the first iteration and is never stored.
    """

    every: int | None = None
    pattern: str | None = None
    tz: str | None = None
    limit: int | None = None
    start_date: int | None = None
    end_date: int | None = None
    immediately: bool = False
    offset: int | None = None
    count: int = 0

    @classmethod
    def build(cls, options: Mapping[str, Any]) -> RepeatOptions:
        """Validate ``upsert_job_scheduler``'s ``repeat`` mapping (snake_case names).

        Raises:
            InvalidArgumentError: naming the first unknown or invalid option, with BullMQ's
                texts for the combinations it refuses.
        """
        if not isinstance(options, Mapping):
            raise InvalidArgumentError(f"repeat options must be a mapping, got {options!r}")
        unknown = sorted(set(options) - REPEAT_OPTION_NAMES)
        if unknown:
            raise InvalidArgumentError(
                f"unknown repeat option {unknown[0]!r}; expected some of "
                f"{', '.join(sorted(REPEAT_OPTION_NAMES))}"
            )
        every, pattern = options.get("every"), options.get("pattern")
        if every is not None and pattern is not None:
            raise InvalidArgumentError(BOTH_PATTERN_AND_EVERY)
        if every is None and pattern is None:
            raise InvalidArgumentError(NEITHER_PATTERN_NOR_EVERY)
        immediately = options.get("immediately", False)
        if not isinstance(immediately, bool):
            raise InvalidArgumentError(f"repeat immediately must be a bool, got {immediately!r}")
        if immediately and options.get("start_date") is not None:
            raise InvalidArgumentError(IMMEDIATELY_AND_START)
        if pattern is not None and (not isinstance(pattern, str) or not pattern.strip()):
            raise InvalidArgumentError(f"repeat pattern must be a non-empty string: {pattern!r}")
        tz = options.get("tz")
        if tz is not None and (not isinstance(tz, str) or not tz):
            raise InvalidArgumentError(f"repeat tz must be an IANA zone name, got {tz!r}")

        def optional(name: str, parse: Any) -> Any:
            value = options.get(name)
            return None if value is None else parse(value, name)

        return cls(
            every=optional("every", _positive_int),
            pattern=pattern,
            tz=tz,
            limit=optional("limit", _positive_int),
            start_date=optional("start_date", _epoch_ms),
            end_date=optional("end_date", _epoch_ms),
            immediately=immediately,
            offset=optional("offset", lambda v, n: _positive_int(v, n, allow_zero=True)),
            count=optional("count", lambda v, n: _positive_int(v, n, allow_zero=True)) or 0,
        )

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RepeatOptions:
        """Read the ``repeat`` object of an iteration's stored ``opts`` (camelCase, as BullMQ
        writes it; tolerant of what another producer stored)."""

        def number(name: str) -> int | None:
            value = raw.get(name)
            return None if value is None or isinstance(value, bool) else int(value)

        return cls(
            every=number("every"),
            pattern=raw.get("pattern"),
            tz=raw.get("tz"),
            limit=number("limit"),
            start_date=number("startDate"),
            end_date=number("endDate"),
            offset=number("offset"),
            count=number("count") or 0,
        )

    def to_json(self, count: int) -> dict[str, Any]:
        """The ``repeat`` object of an iteration job's opts, with its iteration ``count``."""
        encoded: dict[str, Any] = {}
        for name, value in (
            ("every", self.every),
            ("pattern", self.pattern),
            ("tz", self.tz),
            ("limit", self.limit),
            ("startDate", self.start_date),
            ("endDate", self.end_date),
            ("offset", self.offset),
        ):
            if value is not None:
                encoded[name] = value
        encoded["count"] = count
        return encoded

    def scheduler_fields(self, name: str) -> dict[str, str]:
        """The scheduler hash fields these options set (``data``, ``opts``, ``ic`` aside)."""
        fields = {"name": name}
        for field, value in (
            ("tz", self.tz),
            ("limit", self.limit),
            ("pattern", self.pattern),
            ("startDate", self.start_date),
            ("endDate", self.end_date),
            ("every", self.every),
            ("offset", self.offset or None),
        ):
            if value is not None:
                fields[field] = str(value)
        return fields


def next_iteration_due(repeat: RepeatOptions, now: int) -> bool:
    """Whether the job after the one carrying ``repeat`` may be made (BullMQ skips it past
    ``limit`` or after ``end_date``)."""
    if repeat.limit is not None and repeat.count + 1 > repeat.limit:
        return False
    return repeat.end_date is None or now <= repeat.end_date


def every_next_millis(
    prev: int | None, every: int, now: int, offset: int | None, start_date: int | None
) -> tuple[int, int]:
    """The slot of an ``every`` scheduler's next iteration and the schedule's offset.

    The first slot is ``max(start_date, now)``, or the next multiple of ``every`` plus
    ``offset`` when an offset is given, else ``now``: the schedule is anchored to the instant
    it was made. After ``prev`` comes ``prev + every``; slots already missed are skipped, not
    made up. The offset returned is the one given, or the phase of the slot within ``every``.
    """
    if prev is None:
        if start_date is not None:
            next_ms = max(start_date, now)
        elif offset:
            next_ms = (now // every) * every + offset
            if next_ms <= now:
                next_ms += every
        else:
            next_ms = now
    else:
        next_ms = prev + every
        if next_ms < now:
            next_ms = (now // every) * every + (offset or 0)
            if next_ms <= now:
                next_ms += every
    new_offset = offset if offset else next_ms - (next_ms // every) * every
    return math.floor(next_ms), math.floor(new_offset)


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    """The job every iteration is: its name, data and options, JSON-encoded."""

    name: str
    data: str
    opts: str

    @classmethod
    def build(cls, scheduler_id: str, template: Mapping[str, Any] | None) -> Template:
        """Validate ``upsert_job_scheduler``'s ``template`` (``name`` defaults to the
        scheduler id; ``opts`` takes ``Queue.add``'s options but ``job_id`` and ``delay``).

        Raises:
            InvalidArgumentError: naming what is wrong.
        """
        template = template or {}
        if not isinstance(template, Mapping):
            raise InvalidArgumentError(f"template must be a mapping, got {template!r}")
        unknown = sorted(set(template) - TEMPLATE_NAMES)
        if unknown:
            raise InvalidArgumentError(
                f"unknown template key {unknown[0]!r}; expected name, data, opts"
            )
        name = template.get("name", scheduler_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"template name must be a non-empty string, got {name!r}")
        opts = template.get("opts") or {}
        if not isinstance(opts, Mapping):
            raise InvalidArgumentError(f"template opts must be a mapping, got {opts!r}")
        if "debounce" in opts:
            raise InvalidArgumentError(DEBOUNCE_REMOVED)
        for refused in ("job_id", "delay", "repeat"):
            if refused in opts:
                raise InvalidArgumentError(
                    f"template opts must not set {refused!r}: the scheduler sets it"
                )
        encoded = JobOptions.build(opts).to_json()
        encoded.pop("delay", None)
        if "attempts" not in opts:
            encoded.pop("attempts", None)
        data = encode_json(template.get("data", {}), "data of job scheduler {!r}", scheduler_id)
        return cls(name, data, encode_json(encoded, "job scheduler template options"))


def iteration_opts(
    template_opts: Mapping[str, Any],
    scheduler_id: str,
    repeat: RepeatOptions,
    count: int,
    prev_millis: int | None,
) -> dict[str, Any]:
    """The ``opts`` of an iteration job (the store adds ``jobId``, ``delay``, ``timestamp``).

    ``prev_millis`` is the slot of a pattern scheduler's iteration (BullMQ's ``prevMillis``;
    an ``every`` scheduler's slot is computed by the store, and its jobs carry none).
    """
    opts = {
        key: value
        for key, value in template_opts.items()
        if key not in ("jobId", "delay", "timestamp", "prevMillis")
    }
    opts["repeat"] = repeat.to_json(count)
    opts["repeatJobKey"] = scheduler_id
    if prev_millis is not None:
        opts["prevMillis"] = prev_millis
    return opts


def pattern_next_millis(repeat: RepeatOptions, now: int, prev_millis: int) -> int | None:
    """The next slot of a pattern scheduler after ``max(now, prev_millis, start_date)``
    (``now`` itself with ``immediately``), or None when there is none before ``end_date``.

    Raises:
        InvalidArgumentError: for a pattern or time zone that cannot be parsed.
    """
    raise InvalidArgumentError(
        f"cron pattern {repeat.pattern!r}: pattern schedulers are not available yet"
    )
