"""engine/cron.py: cron-parser's field rules, DST rules and refusals, case by case (the
agreement table, test_cron_table.py, checks them in bulk against Node's own output)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.engine.cron import next_fire_ms, next_fire_times, parse_cron
from corral.engine.errors import InvalidArgumentError


def ms(iso: str) -> int:
    """Epoch ms of an ISO-8601 instant with its offset."""
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def iso(millis: int, tz: str = "UTC") -> str:
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(millis / 1000, ZoneInfo(tz)).isoformat()


@pytest.mark.parametrize(
    ("pattern", "after", "expected"),
    [
        # Six fields are seconds first (croniter alone reads the sixth as seconds).
        ("0 15 3 * * *", "2026-01-01T00:00:00+00:00", "2026-01-01T03:15:00+00:00"),
        ("30 * * * * *", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:30+00:00"),
        # Five fields fire at second 0; four are "hour dom month dow" after "0 *".
        ("5 4 * * *", "2026-01-01T00:00:00+00:00", "2026-01-01T04:05:00+00:00"),
        ("15 10 * *", "2026-01-01T00:00:00+00:00", "2026-01-10T15:00:00+00:00"),
        # nL is the last weekday n of the month; n#k the k-th; L the last day.
        ("0 8 * * 5L", "2026-01-01T00:00:00+00:00", "2026-01-30T08:00:00+00:00"),
        ("0 8 * * 1#2", "2026-01-01T00:00:00+00:00", "2026-01-12T08:00:00+00:00"),
        ("0 12 L * *", "2026-02-01T00:00:00+00:00", "2026-02-28T12:00:00+00:00"),
        ("0 0 ? * MON", "2026-01-01T00:00:00+00:00", "2026-01-05T00:00:00+00:00"),
        ("0 0 * JUL sun", "2026-01-01T00:00:00+00:00", "2026-07-05T00:00:00+00:00"),
        # Both day fields restricted: either matches (the 13th, or a Friday).
        ("0 0 13 * 5", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),
        # Aliases, including those croniter lacks.
        ("@weekdays", "2026-01-02T12:00:00+00:00", "2026-01-05T00:00:00+00:00"),
        ("@weekends", "2026-01-02T12:00:00+00:00", "2026-01-03T00:00:00+00:00"),
        ("@minutely", "2026-01-02T12:00:00+00:00", "2026-01-02T12:01:00+00:00"),
        ("@secondly", "2026-01-02T12:00:00+00:00", "2026-01-02T12:00:01+00:00"),
        # Strictly after, and milliseconds are dropped first.
        ("*/5 * * * *", "2026-01-01T10:05:00+00:00", "2026-01-01T10:10:00+00:00"),
        ("*/5 * * * *", "2026-01-01T10:05:00.500+00:00", "2026-01-01T10:10:00+00:00"),
    ],
)
def test_fields_as_cron_parser_reads_them(pattern: str, after: str, expected: str) -> None:
    assert iso(next_fire_ms(pattern, ms(after), "UTC")) == expected


def test_the_zone_is_the_patterns_wall_clock() -> None:
    after = ms("2026-01-01T00:00:00+00:00")
    assert iso(next_fire_ms("0 9 * * *", after, "Asia/Kolkata")) == "2026-01-01T03:30:00+00:00"
    assert iso(next_fire_ms("0 9 * * *", after, "America/New_York")) == "2026-01-01T14:00:00+00:00"


def test_without_a_zone_the_process_local_zone_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """As Node does (bullmq-features.md §1.10): in January New York is UTC-5."""
    after = ms("2026-01-01T00:00:00+00:00")
    monkeypatch.setenv("TZ", "UTC")
    assert iso(next_fire_ms("0 15 3 * * *", after, None)) == "2026-01-01T03:15:00+00:00"
    monkeypatch.setenv("TZ", "America/New_York")
    assert iso(next_fire_ms("0 15 3 * * *", after, None)) == "2026-01-01T08:15:00+00:00"


NEW_YORK = "America/New_York"


def test_spring_forward_gap_fires_at_the_same_minute_of_the_landing_hour() -> None:
    times = next_fire_times("30 2 * * *", ms("2026-03-07T12:00:00-05:00"), NEW_YORK, 2)
    assert [iso(t, NEW_YORK) for t in times] == [
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


def test_a_gap_time_that_also_matches_fires_once() -> None:
    times = next_fire_times("15 1,2,3 * * *", ms("2026-03-08T00:00:00-05:00"), NEW_YORK, 3)
    assert [iso(t, NEW_YORK) for t in times] == [
        "2026-03-08T01:15:00-05:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-09T01:15:00-04:00",
    ]


def test_a_walk_starting_past_the_gap_does_not_fire_for_it() -> None:
    after = ms("2026-03-08T03:00:00-04:00")  # the very instant of the change
    assert iso(next_fire_ms("30 2 * * *", after, NEW_YORK), NEW_YORK) == "2026-03-09T02:30:00-04:00"


def test_fall_back_fires_a_restricted_hour_once_at_its_first_occurrence() -> None:
    times = next_fire_times("15 1,2,3 * * *", ms("2026-11-01T00:00:00-04:00"), NEW_YORK, 3)
    assert [iso(t, NEW_YORK) for t in times] == [
        "2026-11-01T01:15:00-04:00",
        "2026-11-01T02:15:00-05:00",
        "2026-11-01T03:15:00-05:00",
    ]


def test_fall_back_fires_an_every_hour_pattern_in_both_copies() -> None:
    times = next_fire_times("0,30 * * * *", ms("2026-11-01T01:10:00-04:00"), NEW_YORK, 4)
    assert [iso(t, NEW_YORK) for t in times] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_a_walk_starting_in_the_second_copy_fires_there() -> None:
    after = ms("2026-11-01T01:00:00-05:00")
    assert iso(next_fire_ms("45 1 * * *", after, NEW_YORK), NEW_YORK) == "2026-11-01T01:45:00-05:00"


def test_a_daily_job_based_in_its_repeated_hour_skips_to_the_next_day() -> None:
    after = ms("2026-10-25T02:00:00+02:00")
    paris = "Europe/Paris"
    assert iso(next_fire_ms("0 2 * * *", after, paris), paris) == "2026-10-26T02:00:00+01:00"


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0 0 0 * * * *", "too many fields"),
        ("* * * * 8", "out of range"),
        ("60 * * * *", "out of range"),
        ("0 0 30 2 *", "failed to find next date"),
        ("a b c d e", "not acceptable"),
        ("H * * * *", "'H'"),
        ("0 0 LW * *", "'W'"),
        ("0 0 1W * *", "'W'"),
        ("0 0 * * $", "bad field"),
    ],
)
def test_refusals_name_the_pattern(pattern: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        parse_cron(pattern)
    assert repr(pattern) in str(refused.value)
    assert words in str(refused.value)


def test_names_with_a_w_are_not_mistaken_for_w() -> None:
    assert parse_cron("0 0 * * WED").fields[5] == "WED"


def test_a_bad_zone_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgumentError, match="'Mars/Olympus'"):
        next_fire_ms("* * * * *", 0, "Mars/Olympus")


def test_a_pattern_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="invalid cron pattern"):
        parse_cron(5)  # type: ignore[arg-type]


def test_every_hour_is_read_from_the_expanded_field() -> None:
    assert parse_cron("0 * * * *").every_hour
    assert parse_cron("0 0-23 * * *").every_hour
    assert not parse_cron("0 */2 * * *").every_hour
    assert not parse_cron("0 1 * * *").every_hour


def test_times_are_whole_seconds_in_ms() -> None:
    after = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000) + 1
    assert next_fire_ms("* * * * * *", after, "UTC") % 1000 == 0
