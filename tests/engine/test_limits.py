"""The rate-limit and global-concurrency policy (corral.engine.limits): BullMQ's precedence,
its fixed window, and its TTL query, as pure functions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from corral.engine.errors import InvalidArgumentError, RateLimitError
from corral.engine.limits import (
    RATE_LIMIT_ERROR_MESSAGE,
    Limiter,
    counts_activation,
    effective_duration,
    effective_max,
    is_maxed,
    limited_for_ms,
    opens_window,
    rate_limit_sleep_ms,
    rate_limit_ttl,
)
from corral.engine.rate_limited import is_rate_limit_error


def test_queue_max_beats_worker_max() -> None:
    assert effective_max("1", (10, 200)) == 1
    assert effective_max(None, (10, 200)) == 10
    assert effective_max(None, None) is None
    assert effective_max("not a number", (3, 5)) == 3  # as Lua's tonumber: nil


def test_worker_duration_beats_queue_duration() -> None:
    assert effective_duration("800", (10, 200)) == 200
    assert effective_duration("800", None) == 800
    assert effective_duration("-800", None) == 800  # floor(abs()) as BullMQ
    assert effective_duration(None, None) == 0


def test_fixed_window_limits_only_at_the_max_and_with_a_ttl() -> None:
    assert limited_for_ms(2, 1, 700) == 0
    assert limited_for_ms(2, 2, 700) == 700
    assert limited_for_ms(2, 5, -1) == 0  # a counter without TTL never limits
    assert limited_for_ms(None, 10**15, 700) == 0  # no max: no check (§8 fact 5)
    assert opens_window(1)
    assert not opens_window(2)


def test_rate_limit_ttl_query() -> None:
    # Appendix B: counter 2 with ~701 ms left.
    assert rate_limit_ttl(None, None, 2, 701) == 701
    assert rate_limit_ttl(2, None, 2, 701) == 701
    assert rate_limit_ttl(5, None, 2, 701) == 0
    assert rate_limit_ttl(None, "5", 2, 701) == 0
    assert rate_limit_ttl(None, None, None, -2) == -2


def test_global_concurrency() -> None:
    assert is_maxed("2", 2)
    assert not is_maxed("2", 1)
    assert not is_maxed(None, 99)


def test_defa_job_does_not_count() -> None:
    assert counts_activation(1, {})
    assert not counts_activation(1, {"defa": "x"})
    assert not counts_activation(None, {})


def test_sleep_is_capped_and_positive() -> None:
    assert rate_limit_sleep_ms(50_000, 30_000) == 30_000
    assert rate_limit_sleep_ms(0, 30_000) == 1


def test_limiter_option() -> None:
    assert Limiter.build({"max": 3, "duration": timedelta(seconds=2)}) == Limiter(3, 2000)
    assert Limiter.build(None) is None
    with pytest.raises(InvalidArgumentError, match="limiter max"):
        Limiter.build({"max": True, "duration": 1})


def test_rate_limit_error_is_matched_by_message() -> None:
    assert str(RateLimitError()) == RATE_LIMIT_ERROR_MESSAGE
    assert is_rate_limit_error(RateLimitError())
    assert is_rate_limit_error(Exception("bullmq:rateLimitExceeded"))
    assert not is_rate_limit_error(ValueError("boom"))
