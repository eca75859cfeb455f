"""engine/scheduling.py: when a job scheduler's next iteration is due (bullmq-features.md
§1.3–§1.5), as pure functions of the options and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from corral.engine.errors import InvalidArgumentError, UnknownOptionError
from corral.engine.scheduling import (
    BOTH_IMMEDIATELY_AND_START_DATE,
    BOTH_PATTERN_AND_EVERY,
    DEBOUNCE_REMOVED,
    END_DATE_PASSED,
    NEITHER_PATTERN_NOR_EVERY,
    EveryNext,
    RepeatOptions,
    every_next_millis,
    iteration_allowed,
    iteration_delay,
    iteration_job_id,
    pattern_next_millis,
    validate_repeat,
)


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


NOW = ms("2026-06-01T10:15:00+00:00")

# ------------------------------------------------------------------------------------- every


def test_every_first_run_is_immediate_and_anchors_the_phase() -> None:
    """The example observed with BullMQ 6.7: created at …545057, runs …545057, …548057, …551057,
    stored offset 57."""
    first = every_next_millis(None, 3000, 1796557545057, None, None)
    assert first == EveryNext(1796557545057, 57)
    second = every_next_millis(first.next_millis, 3000, 1796557545100, first.offset, None)
    assert second == EveryNext(1796557548057, 57)
    third = every_next_millis(second.next_millis, 3000, 1796557548060, second.offset, None)
    assert third == EveryNext(1796557551057, 57)


def test_every_first_run_waits_for_a_later_start_date() -> None:
    assert every_next_millis(None, 1000, 5_000, None, 9_250) == EveryNext(9_250, 250)
    assert every_next_millis(None, 1000, 5_000, None, 2_000) == EveryNext(5_000, 0)


def test_every_first_run_with_an_offset_takes_the_next_slot() -> None:
    assert every_next_millis(None, 1000, 10_100, 200, None) == EveryNext(10_200, 200)
    assert every_next_millis(None, 1000, 10_500, 200, None) == EveryNext(11_200, 200)
    assert every_next_millis(None, 1000, 10_200, 200, None) == EveryNext(11_200, 200)


def test_every_missed_slots_are_skipped_not_made_up() -> None:
    # Due at 2000, activated at 5500: the next is the first slot after now.
    assert every_next_millis(1000, 1000, 5_500, None, None) == EveryNext(6_000, 0)
    assert every_next_millis(1000, 1000, 5_500, 700, None) == EveryNext(5_700, 700)
    assert every_next_millis(1700, 1000, 5_800, 700, None) == EveryNext(6_700, 700)


def test_every_next_slot_exactly_now_is_not_missed() -> None:
    assert every_next_millis(4_000, 1000, 5_000, 0, None) == EveryNext(5_000, 0)


def test_every_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError, match="every"):
        every_next_millis(None, 0, 5_000, None, None)


# ----------------------------------------------------------------------------------- pattern


def test_pattern_next_after_now() -> None:
    repeat = RepeatOptions(pattern="0 * * * *", tz="UTC")
    assert pattern_next_millis(repeat, NOW) == ms("2026-06-01T11:00:00+00:00")


def test_pattern_next_after_the_previous_iteration_when_that_is_later() -> None:
    """A worker whose clock is behind still moves the schedule forward."""
    repeat = RepeatOptions(pattern="0 * * * *", tz="UTC")
    previous = ms("2026-06-01T11:00:00+00:00")
    assert pattern_next_millis(repeat, NOW, previous) == ms("2026-06-01T12:00:00+00:00")


def test_pattern_waits_for_start_date_and_fires_strictly_after_it() -> None:
    start = ms("2026-06-03T00:00:00+00:00")
    repeat = RepeatOptions(pattern="0 0 * * *", tz="UTC", start_date=start)
    assert pattern_next_millis(repeat, NOW) == ms("2026-06-04T00:00:00+00:00")


def test_pattern_uses_its_zone() -> None:
    repeat = RepeatOptions(pattern="0 9 * * *", tz="Asia/Kolkata")
    assert pattern_next_millis(repeat, NOW) == ms("2026-06-02T03:30:00+00:00")


def test_pattern_immediately_runs_now() -> None:
    repeat = RepeatOptions(pattern="0 0 1 1 *", tz="UTC", immediately=True)
    assert pattern_next_millis(repeat, NOW) == NOW
    assert pattern_next_millis(repeat, NOW, NOW + 5_000) == NOW + 5_000


def test_pattern_past_end_date_has_no_next() -> None:
    repeat = RepeatOptions(pattern="0 0 * * *", tz="UTC", end_date=ms("2026-06-01T23:00:00+00:00"))
    assert pattern_next_millis(repeat, NOW) is None
    at_end = RepeatOptions(pattern="0 0 * * *", tz="UTC", end_date=ms("2026-06-02T00:00:00+00:00"))
    assert pattern_next_millis(at_end, NOW) == ms("2026-06-02T00:00:00+00:00")
    assert pattern_next_millis(at_end, ms("2026-06-03T00:00:00+00:00")) is None


def test_pattern_next_needs_a_pattern() -> None:
    with pytest.raises(InvalidArgumentError, match="pattern"):
        pattern_next_millis(RepeatOptions(every=1000), NOW)


# ------------------------------------------------------------------------- limit and end date


@pytest.mark.parametrize(
    ("limit", "count", "allowed"), [(3, 0, True), (3, 2, True), (3, 3, False), (0, 0, False)]
)
def test_limit_counts_the_iteration_about_to_be_made(limit: int, count: int, allowed: bool) -> None:
    repeat = RepeatOptions(every=1000, limit=limit, count=count)
    assert iteration_allowed(repeat, NOW) is allowed


def test_end_date_stops_iterations_after_it() -> None:
    repeat = RepeatOptions(every=1000, end_date=NOW)
    assert iteration_allowed(repeat, NOW)
    assert not iteration_allowed(repeat, NOW + 1)
    assert iteration_allowed(RepeatOptions(every=1000), NOW)


# ------------------------------------------------------------------------------- ids and delay


def test_iteration_job_id_keeps_colons_of_the_scheduler_id() -> None:
    assert iteration_job_id("a:b:c", 1796557545057) == "repeat:a:b:c:1796557545057"


def test_iteration_delay_is_never_negative() -> None:
    assert iteration_delay(NOW + 250, NOW) == 250
    assert iteration_delay(NOW - 250, NOW) == 0


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("repeat", "template", "text"),
    [
        ({"every": 1000, "end_date": NOW - 1}, None, END_DATE_PASSED),
        # BullMQ's order: the end date first, even when pattern and every clash too.
        ({"every": 1000, "pattern": "* * * * *", "end_date": NOW - 1}, None, END_DATE_PASSED),
        ({"every": 1000, "pattern": "* * * * *"}, None, BOTH_PATTERN_AND_EVERY),
        ({}, None, NEITHER_PATTERN_NOR_EVERY),
        ({"every": 0}, None, NEITHER_PATTERN_NOR_EVERY),
        ({"pattern": ""}, None, NEITHER_PATTERN_NOR_EVERY),
        (
            {"pattern": "* * * * *", "immediately": True, "start_date": NOW},
            None,
            BOTH_IMMEDIATELY_AND_START_DATE,
        ),
        ({"every": 1000}, {"debounce": {"id": "x"}}, DEBOUNCE_REMOVED),
    ],
)
def test_bullmq_checks_and_texts(
    repeat: dict[str, object], template: dict[str, object] | None, text: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        validate_repeat(repeat, NOW, template)
    assert str(refused.value) == text


def test_a_worker_path_does_not_refuse_a_past_end_date() -> None:
    repeat = validate_repeat({"every": 1000, "end_date": NOW - 1}, NOW, from_queue=False)
    assert not iteration_allowed(repeat, NOW)


def test_unknown_repeat_option_suggests_the_close_one() -> None:
    with pytest.raises(UnknownOptionError, match=r"'evry' \(did you mean 'every'\?\)"):
        validate_repeat({"evry": 1000}, NOW)


@pytest.mark.parametrize(
    ("repeat", "words"),
    [
        ({"pattern": "0 0 0 * * * *"}, "too many fields"),
        ({"pattern": "* * * * *", "tz": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"pattern": 5}, "pattern must be"),
        ({"every": -5}, "every must be"),
        ({"every": "1000"}, "every must be"),
        ({"every": 1000, "limit": -1}, "limit must be"),
        ({"every": 1000, "limit": True}, "limit must be"),
        ({"every": 1000, "offset": 1.5}, "offset must be"),
        ({"every": 1000, "start_date": "tomorrow"}, "start_date is not an ISO-8601 date"),
        ({"every": 1000, "start_date": datetime(2026, 7, 1)}, "must carry a time zone"),
        ({"every": 1000, "end_date": 1.5e12}, "end_date must be epoch milliseconds"),
        ({"pattern": "* * * * *", "immediately": "yes"}, "immediately must be a bool"),
        ({"pattern": "* * * * *", "tz": 5}, "tz must be"),
    ],
)
def test_bad_values_are_refused_by_name(repeat: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        validate_repeat(repeat, NOW)


def test_valid_options_are_typed_and_dates_become_ms() -> None:
    later = datetime(2026, 7, 1, tzinfo=UTC)
    repeat = validate_repeat(
        {
            "pattern": "0 9 * * *",
            "tz": "Europe/Paris",
            "limit": 5,
            "start_date": "2026-06-02T00:00:00Z",
            "end_date": later,
            "count": 2,
        },
        NOW,
    )
    assert repeat == RepeatOptions(
        pattern="0 9 * * *",
        tz="Europe/Paris",
        limit=5,
        start_date=ms("2026-06-02T00:00:00+00:00"),
        end_date=ms("2026-07-01T00:00:00+00:00"),
        count=2,
    )
    every = validate_repeat({"every": timedelta(seconds=3), "offset": 57}, NOW)
    assert every == RepeatOptions(every=3000, offset=57)
    shifted = datetime(2026, 7, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert validate_repeat({"every": 1, "end_date": shifted}, NOW).end_date == ms(
        "2026-07-01T00:00:00+00:00"
    )


def test_to_bullmq_is_the_stored_repeat_object() -> None:
    repeat = RepeatOptions(pattern="0 9 * * *", tz="UTC", limit=3, immediately=True, count=1)
    assert repeat.to_bullmq() == {"pattern": "0 9 * * *", "tz": "UTC", "limit": 3, "count": 1}
    every = RepeatOptions(every=3000, offset=57, start_date=5, end_date=9, count=3)
    assert every.to_bullmq() == {
        "every": 3000,
        "startDate": 5,
        "endDate": 9,
        "offset": 57,
        "count": 3,
    }
