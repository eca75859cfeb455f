"""Structural checks of the Redis layout (corral.backends.redis.checks) and the scripts'
transition log (Instrumentation), on fakeredis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest

from corral.backends.redis import RedisBackend
from corral.backends.redis.checks import check_queue, read_layout
from corral.backends.redis.keys import TRANSITION_LOG
from corral.backends.redis.scripts import SCRIPT_NAMES, Instrumentation, load_source
from corral.engine.flows import ParentLink
from corral.engine.job import KeepJobs
from corral.engine.states import JobState, Transition
from corral.engine.storage import (
    Complete,
    FetchRequest,
    FlowNode,
    NewJob,
    RetryLater,
    RetryNow,
    new_job,
)

Q = "q"
NOW = 1_700_000_000_000


def make_job(priority: int = 0, delay: int = 0, job_id: str | None = None) -> NewJob:
    return new_job("job", "{}", "{}", NOW, delay, priority, False, job_id)


async def make(instrumentation: Instrumentation | None = None) -> RedisBackend:
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return RedisBackend(client, instrumentation=instrumentation)


async def busy_queue() -> RedisBackend:
    """A queue with jobs in every state: 1 completed, 2 active (locked, marked stalled),
    3 waiting, 4 prioritized, 5 delayed, 6 failed after a retry."""
    backend = await make()
    jobs = [make_job(), make_job(), make_job(), make_job(priority=2), make_job(delay=60_000)]
    await backend.add_jobs(Q, [*jobs, make_job(job_id="6")])
    # Fetch order: wait (1, 2, 3, 6), then prioritized.
    for n in (1, 2):
        assert (await backend.fetch_next(Q, FetchRequest(f"t{n}", 30_000), NOW)).job is not None
    await backend.finish(Q, "1", "t1", Complete("1"), NOW)
    await backend.release(Q, "2", "t2", NOW)  # back to the front of wait
    await backend.fetch_next(Q, FetchRequest("t2b", 30_000), NOW)
    await backend.check_stalled(Q, max_stalled_count=1, stalled_interval=30_000, now=NOW)
    return backend


async def test_a_healthy_queue_passes() -> None:
    busy = await busy_queue()
    await check_queue(busy, Q)
    layout = await read_layout(busy.client, busy.keys(Q))
    assert layout.complete
    assert layout.placements["1"] == [JobState.COMPLETED]
    assert layout.placements["2"] == [JobState.ACTIVE]
    assert layout.locked == {"2"}
    assert layout.stalled == {"2": True}


async def test_bullmq_hashes_that_are_not_jobs_are_not_flagged() -> None:
    busy = await busy_queue()
    base = busy.keys(Q).base
    await busy.client.hset(base + "metrics:completed", "count", "1")
    await busy.client.hset(base + "1:processed", "x", "1")
    await busy.client.rpush(base + "3:logs", "a living job's log")
    await check_queue(busy, Q)


Corruption = Callable[[Any, str], Awaitable[Any]]


async def _twice_in_wait(client: Any, base: str) -> None:
    await client.lpush(base + "wait", "3")


async def _waiting_and_active(client: Any, base: str) -> None:
    await client.lpush(base + "active", "3")


async def _lock_on_a_waiting_job(client: Any, base: str) -> None:
    await client.set(base + "3:lock", "token")


async def _marked_stalled_while_waiting(client: Any, base: str) -> None:
    await client.sadd(base + "stalled", "3")


async def _hash_without_a_place(client: Any, base: str) -> None:
    await client.hset(base + "99", "name", "lost")


async def _place_without_a_hash(client: Any, base: str) -> None:
    await client.lpush(base + "wait", "ghost")


async def _active_without_processed_on(client: Any, base: str) -> None:
    await client.hdel(base + "2", "processedOn")


async def _logs_of_a_deleted_job(client: Any, base: str) -> None:
    await client.rpush(base + "77:logs", "row")


async def _marker_while_paused(client: Any, base: str) -> None:
    await client.hset(base + "meta", "paused", "1")
    await client.zadd(base + "marker", {"0": 0})


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_twice_in_wait, "job 3 is in waiting, waiting at once"),
        (_waiting_and_active, "job 3 is in waiting, active at once"),
        (_lock_on_a_waiting_job, "job 3 holds a lock but is waiting"),
        (_marked_stalled_while_waiting, "job 3 is marked stalled but is not active"),
        (_hash_without_a_place, "job 99 is stored unplaced"),
        (_place_without_a_hash, "job ghost is waiting but has no hash"),
        (_active_without_processed_on, "job 2 is active without processedOn"),
        (_marker_while_paused, "the marker is set while the queue is paused"),
        (_logs_of_a_deleted_job, r"logs of deleted jobs \['77'\]"),
    ],
)
async def test_a_broken_layout_is_named(corrupt: Corruption, message: str) -> None:
    busy = await busy_queue()
    await corrupt(busy.client, busy.keys(Q).base)
    with pytest.raises(AssertionError, match=f"queue 'q': {message}"):
        await check_queue(busy, Q)


async def test_a_partial_read_checks_the_given_jobs_against_an_index() -> None:
    busy = await busy_queue()
    from corral.backends.redis.checks import check_layout

    layout = await read_layout(busy.client, busy.keys(Q), ["2", "3", "never"])
    assert not layout.complete
    assert set(layout.placements) == {"2", "3", "never"}
    assert layout.placements["never"] == []
    check_layout(Q, layout, {"2": JobState.ACTIVE, "3": JobState.WAITING}, job_count=6)
    with pytest.raises(AssertionError, match="job 3 should be prioritized but is waiting"):
        check_layout(Q, layout, {"3": JobState.PRIORITIZED})
    with pytest.raises(AssertionError, match="6 places but 7 jobs"):
        check_layout(Q, layout, job_count=7)


# ---------------------------------------------------------------------- the transition log


async def test_instrumented_scripts_log_each_move_in_order() -> None:
    backend = await make(Instrumentation(transition_log=True))
    keys = backend.keys(Q)
    await backend.add_jobs(Q, [make_job(), make_job(priority=1), make_job(delay=10)])
    await backend.fetch_next(Q, FetchRequest("a", 1_000), NOW)
    await backend.finish(Q, "1", "a", RetryNow("x"), NOW + 10, FetchRequest("b", 1_000))
    await backend.finish(Q, "3", "b", RetryLater(5, "x"), NOW + 10)
    await backend.fetch_next(Q, FetchRequest("c", 1_000), NOW + 10)
    await backend.finish(Q, "1", "c", Complete("1", KeepJobs(count=0)), NOW + 10)
    layout = await read_layout(backend.client, keys, (), drain_log=True)
    moves = [(m.job_id, m.transition, m.source, m.target) for m in layout.log]
    s, t = JobState, Transition
    assert moves == [
        ("1", t.ADD, None, s.WAITING),
        ("2", t.ADD_PRIORITIZED, None, s.PRIORITIZED),
        ("3", t.ADD_DELAYED, None, s.DELAYED),
        ("1", t.FETCH, s.WAITING, s.ACTIVE),
        ("3", t.PROMOTE, s.DELAYED, s.WAITING),  # retry_now promotes first
        ("1", t.RETRY, s.ACTIVE, s.WAITING),
        ("3", t.FETCH, s.WAITING, s.ACTIVE),
        ("3", t.RETRY_LATER, s.ACTIVE, s.DELAYED),
        ("1", t.FETCH, s.WAITING, s.ACTIVE),
        ("1", t.COMPLETE, s.ACTIVE, s.COMPLETED),
        ("1", t.TRIM, s.COMPLETED, None),
    ]
    assert layout.log[-2].fields["returnvalue"] == "1"  # the hash at the moment of the move
    assert set(layout.placements) == {"1", "2", "3"}  # the jobs the log names
    assert not await backend.client.exists(keys.base + TRANSITION_LOG)  # drained
    again = await read_layout(backend.client, keys, (), drain_log=True)
    assert again.log == []


async def test_production_scripts_keep_no_log_and_plant_nothing() -> None:
    backend = await make()
    await backend.add_jobs(Q, [make_job()])
    assert not await backend.client.exists(backend.keys(Q).base + TRANSITION_LOG)
    for name in SCRIPT_NAMES:
        text = load_source(name).text
        assert "local function moved(id, transition, source) end" in text
        assert "local PLANTED = {}" in text


def test_instrumentation_refuses_an_unknown_bug() -> None:
    with pytest.raises(ValueError, match="unknown planted bug"):
        Instrumentation(planted_bugs=frozenset({"typo"}))


async def test_operator_scripts_log_their_moves_and_obliterate_leaves_only_its_own() -> None:
    backend = await make(Instrumentation(transition_log=True))
    keys = backend.keys(Q)
    await backend.add_jobs(Q, [make_job(), make_job(priority=1), make_job(delay=10), make_job()])
    await backend.fetch_next(Q, FetchRequest("a", 1_000), NOW)
    await backend.finish(Q, "1", "a", Complete("1"), NOW)
    await read_layout(backend.client, keys, (), drain_log=True)  # the flow's moves, read
    await backend.move_jobs_to_wait(Q, JobState.COMPLETED, 10, NOW, NOW)
    await backend.clean(Q, JobState.PRIORITIZED, NOW, 0)
    await backend.drain(Q, False)
    await backend.set_paused(Q, True)
    await backend.obliterate(Q, 100, False)
    layout = await read_layout(backend.client, keys, (), drain_log=True)
    moves = [(m.job_id, m.transition, m.source, m.target) for m in layout.log]
    s, t = JobState, Transition
    assert moves == [
        ("1", t.REPROCESS, s.COMPLETED, s.WAITING),
        ("2", t.CLEAN, s.PRIORITIZED, None),
        ("1", t.DRAIN, s.WAITING, None),
        ("4", t.DRAIN, s.WAITING, None),
        ("3", t.OBLITERATE, s.DELAYED, None),
    ]
    # The log was all that obliterate left, and reading drained it.
    assert await backend.client.keys(keys.base + "*") == []


# ---------------------------------------------------------------------- flows


async def add_tree(backend: RedisBackend) -> None:
    """Parent P in queue "pq" waiting for child C in queue "cq"."""
    link = ParentLink(backend.flow_queue_key("pq"), "P")
    nodes = [
        FlowNode("pq", make_job(job_id="P"), None, True),
        FlowNode("cq", make_job(job_id="C"), link, False),
    ]
    assert (await backend.add_flow(nodes, NOW)).job_ids == ["P", "C"]


async def test_a_flow_script_logs_every_queues_moves_in_the_queue_it_was_called_on() -> None:
    backend = await make(Instrumentation(transition_log=True))
    await add_tree(backend)  # (called on "pq", its first node's queue)
    assert not await backend.client.exists(backend.keys("cq").base + TRANSITION_LOG)
    added = await read_layout(backend.client, backend.keys("pq"), (), drain_log=True)
    assert [(m.base, m.job_id, m.transition) for m in added.log] == [
        ("bull:pq:", "P", Transition.ADD_WAITING_CHILDREN),
        ("bull:cq:", "C", Transition.ADD),
    ]
    assert set(added.placements) == {"P"}  # only this queue's jobs are looked at here
    await backend.fetch_next("cq", FetchRequest("t", 1_000), NOW)
    await backend.finish("cq", "C", "t", Complete('"c"'), NOW)
    assert not await backend.client.exists(backend.keys("pq").base + TRANSITION_LOG)
    layout = await read_layout(backend.client, backend.keys("cq"), (), drain_log=True)
    moves = [(m.base, m.job_id, m.transition, m.target) for m in layout.log]
    assert moves == [
        ("bull:cq:", "C", Transition.FETCH, JobState.ACTIVE),
        ("bull:cq:", "C", Transition.COMPLETE, JobState.COMPLETED),
        ("bull:pq:", "P", Transition.RELEASE_PARENT, JobState.WAITING),
    ]
    assert layout.log[2].processed == {"bull:cq:C": '"c"'}  # the parent's, at its move
    assert layout.log[1].processed == {}
    assert set(layout.placements) == {"C"}


async def test_waiting_children_is_a_place_and_a_parents_children_die_with_it() -> None:
    backend = await make()
    await add_tree(backend)
    keys = backend.keys("pq")
    layout = await read_layout(backend.client, keys)
    assert layout.placements["P"] == [JobState.WAITING_CHILDREN]
    assert layout.sizes[JobState.WAITING_CHILDREN] == 1
    await check_queue(backend, "pq")
    # The parent deleted behind the scripts' back: its dependencies outlive it.
    await backend.client.delete(keys.base + "P")
    await backend.client.zrem(keys.key("waiting-children"), "P")
    with pytest.raises(AssertionError, match=r"children of deleted parents \['P'\]"):
        await check_queue(backend, "pq")
