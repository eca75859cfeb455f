"""Cron patterns: the next fire time, as Node BullMQ's cron library computes it.

BullMQ 6.7 computes a job scheduler's next run with ``cron-parser`` 5.10.3; a queue shared with
Node workers only keeps one schedule if corral's answers are the same. The field grammar and the
day matching come from ``croniter`` (pinned in pyproject.toml); this module adds what differs:

* **Fields.** Six fields are ``sec min hour dom month dow`` (seconds *first*); fewer fields are
  the trailing ones, the missing leading ones default to ``0`` (seconds) and ``*``. More than six
  fields are refused (croniter would read a seventh as a year). ``@minutely``, ``@secondly``,
  ``@weekdays`` and ``@weekends`` are expanded here (croniter lacks them); ``nL`` in the
  day-of-week field (the last weekday ``n`` of the month) is croniter's ``Ln``; ``H`` (a hash that
  cron-parser draws at random on every parse) is refused, since no two processes could agree.
* **Time zones.** The pattern is matched against the wall clock of the zone, and each matching
  wall time becomes an instant as cron-parser makes it:

  - a wall time skipped by a spring-forward gap fires at the same minute of the landing hour
    (``30 2 * * *`` in New York on 2026-03-08 → 03:30 EDT), once even if that time also matches;
  - a wall time repeated by a fall-back fires once, at its first occurrence, unless the pattern
    matches every hour: then each copy of the repeated hour fires (``0 * * * *`` runs at 01:00
    EDT and again at 01:00 EST).

* **Next.** The result is strictly after the given instant; milliseconds are dropped first.

Where cron-parser itself misbehaves (zones whose DST shift is not a whole hour, such as
``Australia/Lord_Howe``, and its "loop limit exceeded" failures) this module gives the regular
answer instead; tests/engine/test_cron_table.py lists every such case it knows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from corral.engine.errors import InvalidArgumentError

#: cron-parser's predefined patterns, in its six-field form.
ALIASES = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
    "@secondly": "* * * * * *",
    "@weekdays": "0 0 0 * * 1-5",
    "@weekends": "0 0 0 * * 0,6",
}
#: What a short pattern's missing leading fields default to (sec min hour dom month dow).
FIELD_DEFAULTS = ("0", "*", "*", "*", "*", "*")
#: A fall-back or a spring-forward moves the wall clock by less than this (at most 1 h in the
#: tz database since 1945, 2 h in a few wartime rules); candidates are searched this far around.
_MAX_SHIFT = timedelta(hours=3)
_LAST_WEEKDAY = re.compile(r"\b([0-7])L\b", re.IGNORECASE)
_ALLOWED = re.compile(r"^[0-9A-Za-z*?,/#-]+$")
#: A fixed naive instant to probe that a pattern matches some date at all.
_PROBE = datetime(2000, 1, 1)


@dataclass(frozen=True)
class CronPattern:
    """A validated cron pattern.

    Attributes:
        text: the pattern as the caller wrote it.
        fields: the six fields (``sec min hour dom month dow``) in croniter's spelling.
        every_hour: whether the hour field matches all 24 hours (decides the fall-back rule).
    """

    text: str
    fields: tuple[str, ...]
    every_hour: bool

    @property
    def expression(self) -> str:
        """The six fields joined, for croniter (with ``second_at_beginning=True``)."""
        return " ".join(self.fields)


@lru_cache(maxsize=1024)
def parse_cron(pattern: str) -> CronPattern:
    """Validate ``pattern`` as cron-parser does and normalise it.

    Raises:
        InvalidArgumentError: the pattern is not a string cron-parser accepts (too many fields,
            an unknown character or name, a value out of range, a date that never exists),
            or uses ``H``, which cannot be computed alike by two processes.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidArgumentError(f"invalid cron pattern {pattern!r}: it is empty")
    text = ALIASES.get(pattern.strip().lower(), pattern)
    atoms = text.split()
    if len(atoms) > len(FIELD_DEFAULTS):
        raise InvalidArgumentError(
            f"invalid cron pattern {pattern!r}: too many fields ({len(atoms)}; at most 6, "
            "seconds first)"
        )
    for atom in atoms:
        if not _ALLOWED.match(atom):
            raise InvalidArgumentError(f"invalid cron pattern {pattern!r}: bad field {atom!r}")
        if "H" in atom.upper():
            raise InvalidArgumentError(
                f"invalid cron pattern {pattern!r}: 'H' (a random value in Node's cron "
                "library) is not supported: processes sharing a scheduler could not agree"
            )
        if "W" in atom.upper() and not _is_name(atom):
            raise InvalidArgumentError(f"invalid cron pattern {pattern!r}: 'W' is not supported")
    fields = list(FIELD_DEFAULTS[: len(FIELD_DEFAULTS) - len(atoms)]) + atoms
    fields[5] = _LAST_WEEKDAY.sub(r"L\1", fields[5])
    expression = " ".join(fields)
    try:
        probe = croniter(expression, _PROBE, second_at_beginning=True)
        probe.get_next(datetime)
    except (CroniterError, ValueError, KeyError) as error:
        raise InvalidArgumentError(f"invalid cron pattern {pattern!r}: {error}") from None
    hours = probe.expanded[1]
    every_hour = hours == ["*"] or len(set(hours)) == 24
    return CronPattern(text=pattern, fields=tuple(fields), every_hour=every_hour)


def _is_name(atom: str) -> bool:
    """Whether every letter of ``atom`` belongs to month or day names (``WED``, ``TUE-WED``)."""
    words = re.findall(r"[A-Za-z]+", atom)
    names = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
    names |= {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
    return all(word.upper() in names for word in words)


def zone(tz: str | None) -> ZoneInfo:
    """The time zone named ``tz``; ``None`` is the process's local zone, like Node's.

    The local zone is the documented default and the one place this module reads the
    environment: ``$TZ`` if set, else ``/etc/localtime``, else UTC.

    Raises:
        InvalidArgumentError: ``tz`` is not an IANA zone name known here.
    """
    if tz is None:
        return _local_zone()
    try:
        return _named_zone(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgumentError(f"invalid time zone {tz!r}: not an IANA zone name") from None


@lru_cache(maxsize=256)
def _named_zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _local_zone() -> ZoneInfo:
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        return zone(name)
    try:
        with open("/etc/localtime", "rb") as data:
            return ZoneInfo.from_file(data, key="localtime")
    except OSError:
        return _named_zone("UTC")


def next_fire_ms(pattern: str | CronPattern, after_ms: int, tz: str | None) -> int:
    """The first instant (epoch ms) strictly after ``after_ms`` at which ``pattern`` fires in
    the zone ``tz`` (``None``: the process's local zone, see :func:`zone`).

    Milliseconds of ``after_ms`` are dropped first, as cron-parser does: from ``10:05:00.500``
    an every-five-minutes pattern next fires at ``10:10:00``.

    Raises:
        InvalidArgumentError: a bad pattern (see :func:`parse_cron`) or zone.
    """
    cron = pattern if isinstance(pattern, CronPattern) else parse_cron(pattern)
    where = zone(tz)
    after_s = after_ms // 1000
    after = datetime.fromtimestamp(after_s, UTC)
    # Walk the zone's naive wall clock with croniter and turn each matching wall time into the
    # instants it fires at. Wall order is instant order except around a clock change: when
    # ``after`` lies in the first copy of a repeated hour, matches in the second copy have
    # earlier wall times, so the walk starts that much earlier; and a match that a change moved
    # (a skipped time, a second copy) may be beaten by a later wall time, so the walk goes on
    # that much further.
    fall_back = _offset(after, where) - _offset(after + _MAX_SHIFT, where)
    start = _wall(after, where) - max(fall_back, timedelta(0))
    walker = croniter(cron.expression, start, second_at_beginning=True)
    best: datetime | None = None
    horizon: datetime | None = None
    while True:
        candidate = walker.get_next(datetime)
        if horizon is not None and candidate > horizon:
            break
        for instant, moved in _instants(candidate, where, cron.every_hour, after):
            if instant > after and (best is None or instant < best):
                best = instant
                horizon = candidate + (_shift_near(best, where) if moved else timedelta(0))
    assert best is not None  # croniter raises rather than run out of matches
    return int(best.timestamp()) * 1000


def _wall(instant: datetime, where: ZoneInfo) -> datetime:
    """The naive wall time of ``instant`` in ``where``."""
    return instant.astimezone(where).replace(tzinfo=None)


def _offset(instant: datetime, where: ZoneInfo) -> timedelta:
    """The UTC offset of ``where`` at ``instant``."""
    return instant.astimezone(where).utcoffset() or timedelta(0)


def _shift_near(instant: datetime, where: ZoneInfo) -> timedelta:
    """How far the zone's offset moves within ``_MAX_SHIFT`` of ``instant`` (zero mostly)."""
    offsets = [_offset(instant + delta, where) for delta in (-_MAX_SHIFT, timedelta(0), _MAX_SHIFT)]
    return max(offsets) - min(offsets)


def next_fire_times(
    pattern: str | CronPattern, after_ms: int, tz: str | None, count: int
) -> list[int]:
    """The next ``count`` fire times after ``after_ms``, as successive cron-parser ``next()``
    calls give them."""
    times: list[int] = []
    for _ in range(count):
        after_ms = next_fire_ms(pattern, after_ms, tz)
        times.append(after_ms)
    return times


def _instants(
    wall: datetime, where: ZoneInfo, every_hour: bool, after: datetime
) -> list[tuple[datetime, bool]]:
    """The instants (in UTC) at which the naive wall time ``wall`` of zone ``where`` fires for
    a walk that started at the instant ``after``, each with whether a clock change moved it
    (a skipped time, or the second copy of a repeated one).

    cron-parser walks the wall clock forward from ``after`` and treats a clock change only when
    its walk steps over it; so a gap or a repeated hour it starts beyond is an ordinary hour.
    """
    # Aware datetimes sharing one tzinfo compare by wall time, fold ignored: work in UTC.
    first = wall.replace(tzinfo=where, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=where, fold=1).astimezone(UTC)
    if first == second:
        return [(first, False)]
    if first < second:
        # A repeated wall time (fall-back). A pattern that matches every hour fires in both
        # copies; any other fires in the first, or in the second if the walk started there.
        if every_hour:
            return [(first, False), (second, True)]
        return (
            [(first, False)] if after < _change_between(first, second, where) else [(second, True)]
        )
    # A skipped wall time (spring-forward): fold=0 reads it with the offset from before the gap,
    # which lands on the same minute after the shift; a walk that starts past the gap skips it.
    return [(first, True)] if after < _change_between(second, first, where) else []


def _change_between(early: datetime, late: datetime, where: ZoneInfo) -> datetime:
    """The instant in ``(early, late]`` at which the offset of ``where`` changes."""
    low, high = early, late
    before = low.astimezone(where).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(where).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high
