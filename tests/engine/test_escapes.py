"""Which BaseExceptions from a processor fail the attempt (``corral.engine.escapes``)."""

from __future__ import annotations

import asyncio

import pytest

from corral.engine.escapes import ProcessorEscapeError, escaped_failure


class _Custom(BaseException):
    pass


async def test_what_the_worker_must_not_swallow() -> None:
    slot = asyncio.current_task()
    assert slot is not None
    # Process exits propagate; GeneratorExit means the coroutine is being closed (a loop torn
    # down), which must never turn into a failed attempt.
    for error in (KeyboardInterrupt(), SystemExit(2), GeneratorExit()):
        assert escaped_failure(error, slot) is None
    cancelled = asyncio.create_task(asyncio.sleep(1))
    cancelled.cancel()  # the worker's own cancellation of a slot
    assert escaped_failure(asyncio.CancelledError(), cancelled) is None
    with pytest.raises(asyncio.CancelledError):
        await cancelled


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (asyncio.CancelledError(), "the processor raised CancelledError, but nothing cancelled it"),
        (_Custom("x"), "the processor raised _Custom (x), a BaseException, not an Exception"),
    ],
)
async def test_what_fails_the_attempt(error: BaseException, text: str) -> None:
    slot = asyncio.current_task()
    assert slot is not None
    failure = escaped_failure(error, slot)
    assert isinstance(failure, ProcessorEscapeError)
    assert str(failure) == text
    assert failure.__cause__ is error
