"""Job options: validation, BullMQ's JSON encoding, and the Job view of a hash."""

from __future__ import annotations

import datetime
import json

import pytest

from corral.engine.errors import InvalidArgumentError, JobCancelledError
from corral.engine.job import (
    Backoff,
    Job,
    JobOptions,
    KeepJobs,
    decode_opts,
    duration_ms,
    next_count,
)


def test_options_round_trip_through_bullmq_json() -> None:
    opts = JobOptions.build(
        {
            "delay": 1500,
            "priority": 3,
            "attempts": 4,
            "backoff": {"type": "exponential", "delay": 200, "jitter": 0.25},
            "job_id": "order-7",
            "remove_on_complete": {"age": 60, "count": 10},
            "remove_on_fail": 5,
            "lifo": True,
        }
    )
    encoded = opts.to_json()
    assert encoded == {
        "attempts": 4,
        "delay": 1500,
        "priority": 3,
        "backoff": {"type": "exponential", "delay": 200, "jitter": 0.25},
        "jobId": "order-7",
        "removeOnComplete": {"age": 60, "count": 10},
        "removeOnFail": 5,
        "lifo": True,
    }
    assert decode_opts(json.dumps(encoded)) == opts


def test_options_written_by_node_bullmq_are_read() -> None:
    opts = decode_opts('{"attempts":0,"delay":0,"backoff":3000,"removeOnComplete":true,"kl":5}')
    assert opts.attempts == 1  # BullMQ's 0 means one try
    assert opts.backoff == Backoff("fixed", 3000)
    assert opts.remove_on_complete == KeepJobs(count=0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (True, KeepJobs(count=0)),
        (False, KeepJobs()),
        (3, KeepJobs(count=3)),
        ({"age": 2}, KeepJobs(age_ms=2000)),
        ({"age": 2, "count": 1}, KeepJobs(count=1, age_ms=2000)),
    ],
)
def test_retention_specs(spec: object, expected: KeepJobs) -> None:
    assert KeepJobs.parse(spec, "remove_on_complete") == expected


def test_unknown_option_suggests_the_close_name() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown job option 'atempts' \(did you mean"):
        JobOptions.build({"atempts": 3})


def test_durations_accept_timedelta_and_reject_negatives() -> None:
    assert duration_ms(datetime.timedelta(seconds=1.5), "delay") == 1500
    with pytest.raises(InvalidArgumentError, match="delay must be zero or more"):
        duration_ms(-1, "delay")
    with pytest.raises(InvalidArgumentError, match="must be more than zero"):
        duration_ms(0, "lock_duration", allow_zero=False)


def test_job_view_of_a_hash() -> None:
    job = Job(
        "q",
        "9",
        {
            "name": "resize",
            "data": '{"w":3}',
            "opts": '{"attempts":2,"delay":0}',
            "timestamp": "1000",
            "processedOn": "1200",
            "atm": "1",
            "ats": "2",
            "stc": "1",
            "returnvalue": "[1,2]",
            "stacktrace": '["trace"]',
            "progress": '{"pct":50}',
            "defa": "job stalled more than allowable limit",
        },
    )
    assert (job.id, job.name, job.data, job.timestamp) == ("9", "resize", {"w": 3}, 1000)
    assert (job.attempts_made, job.attempts_started, job.stalled_counter) == (1, 2, 1)
    assert job.processed_on == 1200
    assert job.finished_on is None
    assert job.return_value == [1, 2]
    assert job.stacktrace == ["trace"]
    assert job.progress == {"pct": 50}
    assert job.opts.attempts == 2
    assert job.deferred_failure == "job stalled more than allowable limit"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "1"),
        ("", "1"),
        ("0", "1"),
        ("1", "2"),
        ("99", "100"),
        ("100", "101"),
        ("4096", "4097"),
    ],
)
def test_next_count_of_a_counter_field(raw: str | None, expected: str) -> None:
    assert next_count(raw) == expected


def test_a_recorded_attempt_counts_on_from_the_legacy_field() -> None:
    job = Job("q", "1", {"attemptsMade": "3"})
    job._record_attempt("returnvalue", "42")
    assert (job.attempts_made, job.return_value) == (4, 42)
    job._record_attempt("failedReason", None)
    assert (job.attempts_made, job.failed_reason) == (5, None)


def test_legacy_attempts_made_field_is_read() -> None:
    assert Job("q", "1", {"attemptsMade": "3"}).attempts_made == 3


async def test_cancellation_can_be_awaited_and_polled() -> None:
    job = Job("q", "1", {})
    assert not job.cancellation.is_cancelled
    job.cancellation.raise_if_cancelled()
    job.cancellation.cancel("lock lost")
    job.cancellation.cancel("second reason is ignored")
    assert job.cancellation.is_cancelled
    assert await job.cancellation.wait() == "lock lost"
    with pytest.raises(JobCancelledError, match="lock lost"):
        job.cancellation.raise_if_cancelled()
