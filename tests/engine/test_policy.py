"""Retry, backoff and stall-limit decisions (pure functions, no storage)."""

from __future__ import annotations

import json
import random

import pytest

from corral.engine.errors import UnrecoverableError
from corral.engine.job import Backoff, Job, JobOptions, KeepJobs
from corral.engine.policy import (
    FINISH_RETRY_MAX_MS,
    backoff_delay,
    failure_outcome,
    fetch_backoff_ms,
    finish_retry_delay,
    lock_renewal_due,
    stall_limit_exceeded,
)
from corral.engine.storage import Fail, RetryLater, RetryNow

RNG = random.Random(7)
ERROR = RuntimeError("boom")


@pytest.mark.parametrize(("made", "expected"), [(1, 1000), (2, 2000), (3, 4000), (4, 8000)])
def test_exponential_backoff_doubles(made: int, expected: int) -> None:
    assert backoff_delay(Backoff("exponential", 1000), made, RNG, error=ERROR) == expected


def test_fixed_backoff_is_constant() -> None:
    assert [backoff_delay(Backoff("fixed", 250), m, RNG, error=ERROR) for m in (1, 5)] == [250, 250]


def test_jitter_stays_within_its_band() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(Backoff("fixed", 1000, 0.5), 1, rng, error=ERROR) for _ in range(500)]
    assert min(delays) >= 500
    assert max(delays) <= 1000
    assert len(set(delays)) > 50  # really random, not a constant


def test_custom_strategy_receives_the_facts() -> None:
    seen = []
    job = Job("q", "1", {"name": "n", "data": "null"})

    def strategy(made: int, kind: str, error: BaseException, j: Job) -> int:
        seen.append((made, kind, error, j))
        return 123

    backoff = Backoff("linear", 10)
    assert backoff_delay(backoff, 2, RNG, error=ERROR, job=job, strategy=strategy) == 123
    assert seen == [(2, "linear", ERROR, job)]


def test_failure_with_attempts_left_retries_later_with_backoff() -> None:
    opts = JobOptions(attempts=3, backoff=Backoff("exponential", 100))
    first = failure_outcome(opts, 0, ERROR, RNG)
    second = failure_outcome(opts, 1, ERROR, RNG)
    assert isinstance(first, RetryLater)
    assert isinstance(second, RetryLater)
    assert (first.delay_ms, second.delay_ms) == (100, 200)
    assert first.reason == "boom"


def test_failure_without_backoff_retries_now() -> None:
    assert isinstance(failure_outcome(JobOptions(attempts=2), 0, ERROR, RNG), RetryNow)


def test_last_attempt_fails_for_good_with_retention() -> None:
    keep = KeepJobs(count=5)
    outcome = failure_outcome(JobOptions(attempts=2, remove_on_fail=keep), 1, ERROR, RNG)
    assert isinstance(outcome, Fail)
    assert outcome.keep == keep
    assert "RuntimeError: boom" in json.loads(outcome.stacktrace)[-1]


def test_unrecoverable_error_skips_remaining_attempts() -> None:
    outcome = failure_outcome(JobOptions(attempts=5), 0, UnrecoverableError("no"), RNG)
    assert isinstance(outcome, Fail)
    assert outcome.reason == "no"


def test_negative_custom_delay_means_no_retry() -> None:
    opts = JobOptions(attempts=5, backoff=Backoff("never"))
    outcome = failure_outcome(opts, 0, ERROR, RNG, job=Job("q", "1", {}), strategy=lambda *_: -1)
    assert isinstance(outcome, Fail)


def test_unknown_backoff_type_without_strategy_fails_with_a_reason() -> None:
    outcome = failure_outcome(JobOptions(attempts=5, backoff=Backoff("mystery")), 0, ERROR, RNG)
    assert isinstance(outcome, Fail)
    assert "unknown backoff type 'mystery'" in outcome.reason


def test_stacktraces_accumulate_up_to_the_limit() -> None:
    previous = [f"trace {n}" for n in range(12)]
    outcome = failure_outcome(JobOptions(attempts=20), 0, ERROR, RNG, previous_stacktrace=previous)
    stack = json.loads(outcome.stacktrace)
    assert len(stack) == 10
    assert stack[0] == "trace 3"
    assert "boom" in stack[-1]


def test_error_without_message_is_named_by_type() -> None:
    outcome = failure_outcome(JobOptions(), 0, KeyError(), RNG)
    assert isinstance(outcome, Fail)
    assert outcome.reason == "KeyError"


@pytest.mark.parametrize(
    ("stalls", "limit", "exceeded"), [(1, 1, False), (2, 1, True), (1, 0, True)]
)
def test_stall_limit_is_strict(stalls: int, limit: int, exceeded: bool) -> None:
    assert stall_limit_exceeded(stalls, limit) is exceeded


def test_lock_renewal_is_due_after_half_the_period() -> None:
    assert not lock_renewal_due(1000, 1000 + 7499, 15000)
    assert lock_renewal_due(1000, 1000 + 7500, 15000)


def test_fetch_backoff_grows_with_failures_or_refused_writes_and_is_capped() -> None:
    assert fetch_backoff_ms(0, 0) == 0
    assert [fetch_backoff_ms(n, 0) for n in (1, 2, 3)] == [100, 200, 400]
    # A refused write (lock renewal) holds fetching back even before any fetch failed.
    assert fetch_backoff_ms(1, 3) == 400
    assert fetch_backoff_ms(40, 0) == fetch_backoff_ms(0, 40) == 5_000


def test_a_failed_finish_is_sent_again_after_a_doubling_jittered_wait() -> None:
    rng = random.Random(3)
    waits = [finish_retry_delay(n, 0, 60_000, rng) for n in range(1, 8)]
    ceilings = [100, 200, 400, 800, 1_000, 1_000, 1_000]
    assert all(c // 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    assert max(waits) <= FINISH_RETRY_MAX_MS


def test_a_failed_finish_is_given_up_once_the_lock_has_lapsed() -> None:
    rng = random.Random(3)
    # The last try lands by the lock's expiry; after it, nothing.
    assert finish_retry_delay(6, 29_950, 30_000, rng) == 50
    assert finish_retry_delay(7, 30_000, 30_000, rng) is None
    assert finish_retry_delay(1, 31_000, 30_000, rng) is None
