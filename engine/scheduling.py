"""Job scheduler timing: the pure policy a scheduler's storage applies (bullmq-features.md
§1.3–§1.5).

A job scheduler owns one future job, its *current iteration*, whose id is
``repeat:<scheduler id>:<millis>`` (:func:`iteration_job_id`). The next iteration is made when a
worker activates the current one (and on upsert), at a time computed here:

* ``every`` schedulers (:func:`every_next_millis`) are anchored to the instant they were
  created: the first run is immediate (or at ``start_date``, or at the next slot of a given
  ``offset``), later runs are ``every`` apart, and missed slots are skipped, not made up.
  BullMQ computes this inside its scripts; the stored ``offset`` is the phase of the schedule.
* ``pattern`` schedulers (:func:`pattern_next_millis`) fire at the cron pattern's next time
  after ``max(now, previous iteration, start_date)`` in zone ``tz``, never earlier than that
  ``now``; ``immediately`` makes the first run now.
* Whether to make another iteration at all (:func:`iteration_allowed`) follows ``limit`` and
  ``end_date``.

:func:`validate_repeat` checks a ``repeat`` mapping as BullMQ's ``upsertJobScheduler`` does, in
its order and with its error texts. Times are epoch milliseconds; ``now`` is always passed in.
"""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from corral.engine.cron import next_fire_ms, parse_cron
from corral.engine.errors import InvalidArgumentError, UnknownOptionError
from corral.engine.job import duration_ms

# BullMQ's texts (job-scheduler.ts, queue.ts), kept word for word: callers match on them.
END_DATE_PASSED: Final = "End date must be greater than current timestamp"
BOTH_PATTERN_AND_EVERY: Final = (
    "Both .pattern and .every options are defined for this repeatable job"
)
NEITHER_PATTERN_NOR_EVERY: Final = (
    "Either .pattern or .every options must be defined for this repeatable job"
)
BOTH_IMMEDIATELY_AND_START_DATE: Final = (
    "Both .immediately and .startDate options are defined for this repeatable job"
)
DEBOUNCE_REMOVED: Final = "Debounce option has been removed. Use deduplication option instead"

#: The ``repeat`` option names (BullMQ's, in snake_case); ``count`` is the number of iterations
#: made so far, which BullMQ carries in each iteration's ``opts.repeat``.
REPEAT_OPTION_NAMES: Final = frozenset(
    {"every", "pattern", "tz", "limit", "start_date", "end_date", "immediately", "offset", "count"}
)

Instant = int | datetime.datetime | str


@dataclass(frozen=True)
class RepeatOptions:
    """A job scheduler's ``repeat`` options, validated (see :func:`validate_repeat`).

    Attributes:
        every: the interval in ms (``every`` schedulers), else None.
        pattern: the cron pattern (``pattern`` schedulers), else None.
        tz: the IANA zone of ``pattern``; None is the process's local zone, as in Node.
        limit: the most iterations to make, or None.
        start_date: epoch ms before which no iteration runs, or None.
        end_date: epoch ms after which no iteration is made, or None.
        immediately: whether a pattern scheduler's first run is now.
        offset: the phase of an ``every`` schedule in ms (0 or None: from the first run).
        count: iterations made so far (BullMQ's ``opts.repeat.count``).
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

    def to_bullmq(self) -> dict[str, Any]:
        """The ``repeat`` object BullMQ stores in an iteration's ``opts``: the options less
        ``immediately``, camelCase, dates as epoch ms, absent values left out."""
        fields = {
            "every": self.every,
            "pattern": self.pattern,
            "tz": self.tz,
            "limit": self.limit,
            "startDate": self.start_date,
            "endDate": self.end_date,
            "offset": self.offset,
            "count": self.count or None,
        }
        return {name: value for name, value in fields.items() if value is not None}


def validate_repeat(
    repeat: Mapping[str, Any],
    now: int,
    template_opts: Mapping[str, Any] | None = None,
    *,
    from_queue: bool = True,
) -> RepeatOptions:
    """Check ``repeat`` as BullMQ's ``upsertJobScheduler`` does and return it typed.

    BullMQ's checks, in its order: ``end_date`` already past (only on the Queue's path, not
    when a worker makes the next iteration: ``from_queue=False``), both or neither of
    ``pattern`` and ``every`` (an ``every`` of 0 counts as none, as in JavaScript),
    ``immediately`` with ``start_date``, a ``debounce`` key in the template options. corral
    also refuses what BullMQ would store and then choke on: unknown option names, values of the
    wrong type, a cron pattern or zone its cron library rejects.

    Args:
        repeat: the options, BullMQ's names in snake_case (:data:`REPEAT_OPTION_NAMES`).
        now: the current time, epoch ms.
        template_opts: the scheduler template's job options.
        from_queue: whether this is ``Queue.upsert_job_scheduler`` (the end-date check).

    Raises:
        InvalidArgumentError: with BullMQ's text for its checks, else naming the bad option.
    """
    unknown = set(repeat) - REPEAT_OPTION_NAMES
    if unknown:
        name = sorted(unknown)[0]
        close = difflib.get_close_matches(name, sorted(REPEAT_OPTION_NAMES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownOptionError(f"unknown repeat option {name!r}{hint}")
    end_date = _epoch_ms(repeat.get("end_date"), "end_date")
    start_date = _epoch_ms(repeat.get("start_date"), "start_date")
    if from_queue and end_date is not None and end_date < now:
        raise InvalidArgumentError(END_DATE_PASSED)
    every = repeat.get("every")
    every_ms = duration_ms(every, "every") if every is not None else None
    pattern = repeat.get("pattern")
    if pattern is not None and not isinstance(pattern, str):
        raise InvalidArgumentError(f"pattern must be a cron pattern string, got {pattern!r}")
    if pattern and every_ms:
        raise InvalidArgumentError(BOTH_PATTERN_AND_EVERY)
    if not pattern and not every_ms:
        raise InvalidArgumentError(NEITHER_PATTERN_NOR_EVERY)
    immediately = repeat.get("immediately", False)
    if not isinstance(immediately, bool):
        raise InvalidArgumentError(f"immediately must be a bool, got {immediately!r}")
    if immediately and start_date is not None:
        raise InvalidArgumentError(BOTH_IMMEDIATELY_AND_START_DATE)
    if template_opts is not None and "debounce" in template_opts:
        raise InvalidArgumentError(DEBOUNCE_REMOVED)
    tz = repeat.get("tz")
    if tz is not None and not isinstance(tz, str):
        raise InvalidArgumentError(f"tz must be an IANA time zone name, got {tz!r}")
    options = RepeatOptions(
        every=every_ms or None,
        pattern=pattern or None,
        tz=tz,
        limit=_count(repeat.get("limit"), "limit"),
        start_date=start_date,
        end_date=end_date,
        immediately=immediately,
        offset=_offset(repeat.get("offset")),
        count=_count(repeat.get("count"), "count") or 0,
    )
    if options.pattern is not None:
        # Parse now, so a bad pattern or zone is refused before anything is stored.
        next_fire_ms(parse_cron(options.pattern), now, options.tz)
    return options


def _epoch_ms(value: Instant | None, name: str) -> int | None:
    """An instant as epoch ms: an int, an aware datetime, or an ISO-8601 string with a zone."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgumentError(f"{name} is not an ISO-8601 date: {value!r}") from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError(
                f"{name} must carry a time zone (a naive datetime is ambiguous), got {value!r}"
            )
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidArgumentError(
        f"{name} must be epoch milliseconds, an aware datetime or an ISO-8601 string, got {value!r}"
    )


def _count(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(f"{name} must be a whole number of zero or more, got {value!r}")
    return value


def _offset(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"offset must be a whole number of milliseconds, got {value!r}")
    return value


def iteration_allowed(repeat: RepeatOptions, now: int) -> bool:
    """Whether another iteration may be made (BullMQ's ``limit`` and ``end_date`` checks).

    The iteration about to be made is number ``count + 1``; past ``limit``, or once ``now`` is
    after ``end_date``, none is made (and nothing is stored).
    """
    if repeat.limit is not None and repeat.count + 1 > repeat.limit:
        return False
    return repeat.end_date is None or now <= repeat.end_date


def pattern_next_millis(repeat: RepeatOptions, now: int, prev_millis: int = 0) -> int | None:
    """The time of a pattern scheduler's next iteration, or None for "no next iteration".

    Args:
        repeat: the scheduler's options (``pattern`` set).
        now: the current time, epoch ms.
        prev_millis: the time of the iteration being activated (its ``opts.prevMillis``);
            0 on upsert.

    The base is ``max(now, prev_millis)``, raised to ``start_date``; the result is the
    pattern's first time strictly after it (``immediately``: ``now`` itself), never earlier
    than ``max(now, prev_millis)``. A time after ``end_date`` gives None, as cron-parser's
    "Out of the time span range" does in BullMQ.

    Raises:
        InvalidArgumentError: ``pattern`` is missing or invalid, or ``tz`` is not a zone.
    """
    if repeat.pattern is None:
        raise InvalidArgumentError("pattern_next_millis needs a pattern scheduler")
    floor = max(now, prev_millis)
    if repeat.immediately:
        # BullMQ reads its clock again here (``now``), then raises the result to the floor.
        return floor
    base = floor if repeat.start_date is None else max(floor, repeat.start_date)
    if repeat.end_date is not None and base > repeat.end_date:
        # cron-parser starts from end_date then, and its first step is beyond it.
        return None
    millis = next_fire_ms(repeat.pattern, base, repeat.tz)
    if repeat.end_date is not None and millis > repeat.end_date:
        return None
    return max(millis, floor)


class EveryNext(NamedTuple):
    """An ``every`` scheduler's next iteration time and the schedule's phase (both ms)."""

    next_millis: int
    offset: int


def every_next_millis(
    prev_millis: int | None, every: int, now: int, offset: int | None, start_date: int | None
) -> EveryNext:
    """The next iteration of an ``every`` scheduler, and its offset (phase) to store.

    Args:
        prev_millis: the current iteration's time (the scheduler's score), None on creation.
        every: the interval, ms (more than zero).
        now: the current time, epoch ms.
        offset: the stored phase (0 or None: unknown yet).
        start_date: the scheduler's start date, epoch ms, or None.

    On creation the first run is at ``start_date`` (if later than now), else at the next slot of
    a given positive ``offset``, else now. Afterwards each run is ``every`` after the previous
    one; if that is already past, the schedule skips to its first slot after now. The phase
    returned is the given ``offset``, or, when there is none, that of the run computed here.
    """
    if every <= 0:
        raise InvalidArgumentError(f"every must be more than zero milliseconds, got {every}")
    phase = offset or 0
    if prev_millis is None:
        if start_date is not None:
            next_millis = max(start_date, now)
        elif phase > 0:
            next_millis = _slot_after(now, every, phase)
        else:
            next_millis = now
    else:
        next_millis = prev_millis + every
        if next_millis < now:
            # Missed slots are skipped, keeping the phase.
            next_millis = _slot_after(now, every, phase)
    if not phase:
        phase = next_millis - (next_millis // every) * every
    return EveryNext(next_millis, phase)


def _slot_after(now: int, every: int, phase: int) -> int:
    """The slot ``k * every + phase`` of the interval holding ``now``, or the one after if that
    is not later than ``now``."""
    slot = (now // every) * every + phase
    return slot + every if slot <= now else slot


def iteration_job_id(scheduler_id: str, millis: int) -> str:
    """The job id of a scheduler's iteration due at ``millis``: ``repeat:<id>:<millis>``."""
    return f"repeat:{scheduler_id}:{millis}"


def iteration_delay(next_millis: int, now: int) -> int:
    """An iteration's ``delay``: how long from ``now`` until it is due, never negative."""
    return max(0, next_millis - now)
