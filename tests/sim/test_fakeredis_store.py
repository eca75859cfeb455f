"""FakeRedisStore: the Redis backend on fakeredis, with calls that complete at once."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import pytest

from corral.backends.redis.fake import virtual_fakeredis
from corral.engine.errors import ResultCode
from corral.engine.flows import ParentLink
from corral.engine.states import JobState, Transition
from corral.engine.storage import Complete, FetchRequest, FlowNode, NewJob, new_job, result_code
from corral.sim.fakeredis_store import FakeRedisStore, SuspendedCallError
from corral.sim.loop import DEFAULT_EPOCH_MS, VirtualClock
from corral.sim.simloop import SimLoop

Q = "q"
T = TypeVar("T")


class World:
    """A caller loop and the store, on one hand-moved world clock."""

    def __init__(self, planted_bugs: frozenset[str] = frozenset()) -> None:
        self.now = 0.0
        self.caller = SimLoop(lambda: self.now)
        self.clock = VirtualClock(self.caller, epoch_ms=DEFAULT_EPOCH_MS)
        self.store = FakeRedisStore(lambda: self.now, planted_bugs=planted_bugs)

    def job(self, job_id: str | None = None) -> NewJob:
        return new_job("job", "{}", "{}", self.clock.now_ms(), job_id=job_id)


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    made = World(getattr(request, "param", frozenset()))
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


# ---------------------------------------------------------------------------- flows

Move = tuple[str, str, Transition, JobState | None]


def _listen(world: World, processed: dict[str, dict[str, str]]) -> list[Move]:
    """Record each move (queue, job, transition, target), and what ``parent_processed`` says
    of each job released from waiting-children while its release is delivered."""
    moves: list[Move] = []

    def listener(
        queue: str,
        job_id: str,
        transition: Transition,
        source: JobState | None,
        target: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        moves.append((queue, job_id, transition, target))
        if transition is Transition.RELEASE_PARENT:
            processed[job_id] = world.store.parent_processed(queue, job_id)

    world.store.transition_listener = listener
    return moves


def _add_tree(world: World) -> None:
    """Parent P in queue "pq" with children A and B in queue "cq"."""
    link = ParentLink(world.store.flow_queue_key("pq"), "P")
    nodes = [
        FlowNode("pq", world.job("P"), None, True),
        FlowNode("cq", world.job("A"), link, False),
        FlowNode("cq", world.job("B"), link, False),
    ]
    added = finish(world.store.add_flow(nodes, world.clock.now_ms()))
    assert added.job_ids == ["P", "A", "B"]


def _complete(world: World, queue: str, job_id: str) -> None:
    now = world.clock.now_ms()
    fetched = finish(world.store.fetch_next(queue, FetchRequest(f"t-{job_id}", 1_000), now))
    assert fetched.job is not None
    assert fetched.job.job_id == job_id
    done = finish(world.store.finish(queue, job_id, f"t-{job_id}", Complete(f'"{job_id}"'), now))
    assert result_code(done) is ResultCode.OK


def test_a_flow_across_queues_is_delivered_to_the_queue_of_each_job(world: World) -> None:
    processed: dict[str, dict[str, str]] = {}
    moves = _listen(world, processed)
    _add_tree(world)
    assert moves == [
        ("pq", "P", Transition.ADD_WAITING_CHILDREN, JobState.WAITING_CHILDREN),
        ("cq", "A", Transition.ADD, JobState.WAITING),
        ("cq", "B", Transition.ADD, JobState.WAITING),
    ]
    assert world.store.index == {
        "pq": {"P": JobState.WAITING_CHILDREN},
        "cq": {"A": JobState.WAITING, "B": JobState.WAITING},
    }
    world.store.check()  # a parent in waiting-children is placed
    _complete(world, "cq", "A")
    _complete(world, "cq", "B")
    # The last child's finish, called on "cq", released the parent in "pq", in order.
    assert moves[-2:] == [
        ("cq", "B", Transition.COMPLETE, JobState.COMPLETED),
        ("pq", "P", Transition.RELEASE_PARENT, JobState.WAITING),
    ]
    assert world.store.index["pq"] == {"P": JobState.WAITING}
    keys = {name: f"bull:cq:{name}" for name in "AB"}
    assert processed == {"P": {keys["A"]: '"A"', keys["B"]: '"B"'}}
    dependencies = finish(world.store.get_dependencies("pq", "P"))
    assert dependencies.processed == processed["P"]
    world.store.check()
    world.store.check_jobs("pq", ["P"])


@pytest.mark.parametrize("world", [frozenset({"flow-release-before-record"})], indirect=True)
def test_parent_processed_reads_the_moment_of_the_release(world: World) -> None:
    processed: dict[str, dict[str, str]] = {}
    _listen(world, processed)
    _add_tree(world)
    _complete(world, "cq", "A")
    _complete(world, "cq", "B")
    # (planted: the parent moved before B's result was recorded, which the script did next)
    assert processed == {"P": {"bull:cq:A": '"A"'}}
    assert len(world.store.parent_processed("pq", "P")) == 2


def test_step_jobs_and_detached_children_on_fakeredis(world: World) -> None:
    moves = _listen(world, {})
    now = world.clock.now_ms()
    finish(world.store.add_jobs("pq", [world.job("S")]))
    assert finish(world.store.fetch_next("pq", FetchRequest("t", 1_000), now)).job is not None
    link = ParentLink(world.store.flow_queue_key("pq"), "S")
    finish(world.store.add_flow([FlowNode("cq", world.job("C"), link, False)], now))
    assert finish(world.store.move_to_waiting_children("pq", "S", "t", None, now)) == 0
    assert finish(world.store.remove_child_dependency("cq", "C")) == 0
    assert finish(world.store.fetch_next("pq", FetchRequest("u", 1_000), now)).job is not None
    assert finish(world.store.move_to_delayed("pq", "S", "u", 500, now)) is ResultCode.OK
    assert [(q, i, t) for q, i, t, _ in moves[3:]] == [
        ("pq", "S", Transition.MOVE_TO_WAITING_CHILDREN),
        ("pq", "S", Transition.RELEASE_PARENT),  # detaching its last child, from "cq"
        ("pq", "S", Transition.FETCH),
        ("pq", "S", Transition.MOVE_TO_DELAYED),
    ]
    assert world.store.index["pq"] == {"S": JobState.DELAYED}
    world.store.check()


def test_the_full_check_finds_a_move_left_in_a_log(world: World) -> None:
    finish(world.store.add_jobs(Q, [world.job()]))
    world.store.check()
    # A move logged where no call drains it (as if a script logged into another queue's log).
    finish(world.store.add_jobs("other", [world.job()]))
    world.store.run(world.store.backend.add_jobs("other", [world.job()]))  # (not delivered)
    with pytest.raises(AssertionError, match="queue 'other': moves never delivered: ADD 2"):
        world.store.check()
