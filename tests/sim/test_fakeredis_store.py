"""FakeRedisStore: the Redis backend on fakeredis, with calls that complete at once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from corral.backends.redis.fake import virtual_fakeredis
from corral.engine.states import JobState, Transition
from corral.engine.storage import FetchRequest, NewJob, new_job
from corral.sim.fakeredis_store import FakeRedisStore, SuspendedCallError
from corral.sim.loop import DEFAULT_EPOCH_MS, VirtualClock
from corral.sim.simloop import SimLoop

Q = "q"
T = TypeVar("T")


class World:
    """A caller loop and the store, on one hand-moved world clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.caller = SimLoop(lambda: self.now)
        self.clock = VirtualClock(self.caller, epoch_ms=DEFAULT_EPOCH_MS)
        self.store = FakeRedisStore(lambda: self.now)

    def job(self) -> NewJob:
        return new_job("job", "{}", "{}", self.clock.now_ms())


@pytest.fixture
def world() -> Iterator[World]:
    made = World()
    with virtual_fakeredis(made.clock):
        yield made
        made.store.shut()
    made.store.loop.close()
    made.caller.close()


def finish(coro: Coroutine[Any, Any, T]) -> T:
    """Run a store call that must not suspend (as the simulator's store loop does)."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    raise AssertionError("the call suspended")


def test_calls_complete_without_suspending_and_report_their_moves(world: World) -> None:
    moves: list[tuple[str, Transition, JobState | None, JobState | None]] = []
    world.store.transition_listener = lambda q, i, t, s, d, f: moves.append((i, t, s, d))
    finish(world.store.add_jobs(Q, [world.job()]))
    fetched = finish(world.store.fetch_next(Q, FetchRequest("t", 1_000), world.clock.now_ms()))
    assert fetched.job is not None
    assert moves == [
        ("1", Transition.ADD, None, JobState.WAITING),
        ("1", Transition.FETCH, JobState.WAITING, JobState.ACTIVE),
    ]
    assert world.store.index == {Q: {"1": JobState.ACTIVE}}
    fields = world.store.job_fields(Q, "1")
    assert fields is not None
    assert fields["ats"] == "1"
    world.store.check()
    world.store.check_jobs(Q, ["1"])


def test_a_call_that_waits_for_time_is_a_bug(world: World) -> None:
    with pytest.raises(SuspendedCallError):
        world.store.run(asyncio.sleep(1))


def test_a_blocked_wait_is_woken_within_the_writing_call(world: World) -> None:
    waiting = world.caller.create_task(world.store.wait_for_work(Q, 5_000))
    world.caller.step()
    assert not waiting.done()
    assert world.store.next_due() == 5.0  # the block's timeout, on the server loop
    finish(world.store.add_jobs(Q, [world.job()]))
    world.caller.step()
    assert waiting.result() is True


def test_a_blocked_wait_times_out_in_virtual_time(world: World) -> None:
    waiting = world.caller.create_task(world.store.wait_for_work(Q, 5_000))
    world.caller.step()
    due = world.store.next_due()
    assert due is not None
    world.now = due
    world.store.step()
    world.caller.step()
    assert waiting.result() is False
