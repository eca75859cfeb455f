"""Conformance: flows meet the rest of corral (issue 16, part 2) — retrying a child re-links it
into its parent, clean/drain/obliterate take BullMQ's hard removal path, a child failed by the
stall limit applies its parent option, and deduplication's restrictions in flows; on memory,
fakeredis and real Redis."""

from __future__ import annotations

import asyncio

import pytest
from helpers import check_invariants
from test_flows import CQ, PQ, key, producer, run_child, state, two_children

from corral.engine import Queue
from corral.engine.errors import InvalidArgumentError, ResultCode
from corral.engine.storage import Complete, Fail, FetchRequest, Storage
from corral.sim.loop import VirtualClock


async def counts(backend: Storage, parent_queue: str = PQ) -> dict[str, int]:
    parent = await Queue(parent_queue, backend).get_job("P")
    assert parent is not None
    return await parent.get_dependencies_count()


async def event_names(backend: Storage, queue: str, job_id: str) -> list[str]:
    return [e.name for e in await backend.get_events(queue) if e.fields.get("jobId") == job_id]


# ---------------------------------------------------------------------------- retry re-links


async def test_retrying_a_completed_child_makes_the_parent_wait_for_it_again(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    await run_child(backend, clock, "A", Complete('"first"'))
    a = await Queue(CQ, backend, clock=clock).get_job("A")
    assert a is not None
    await a.retry("completed")
    assert await counts(backend) == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
    await run_child(backend, clock, "B", Complete('"b"'))
    assert await state(backend, PQ, "P") == "waiting-children"  # A is pending again
    await run_child(backend, clock, "A", Complete('"second"'))
    assert await state(backend, PQ, "P") == "waiting"
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    assert (await parent.get_children_values())[key(CQ, "A", backend)] == "second"
    check_invariants(backend)


async def test_retrying_a_child_that_failed_its_parent_leaves_the_parent_where_it_is(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock, fail_parent_on_failure=True)
    await run_child(backend, clock, "A", Complete("1"))
    await run_child(backend, clock, "B", Fail("boom"))
    assert await state(backend, PQ, "P") == "waiting"
    b = await Queue(CQ, backend, clock=clock).get_job("B")
    assert b is not None
    await b.retry()
    # Out of the parent's failed children and pending again; the parent is not moved back.
    assert await counts(backend) == {"processed": 1, "unprocessed": 1, "ignored": 0, "failed": 0}
    assert await state(backend, PQ, "P") == "waiting"
    check_invariants(backend)


async def test_retry_jobs_re_links_each_ignored_child(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock, ignore_dependency_on_failure=True)
    await run_child(backend, clock, "A", Fail("a stays pending"))  # no flag: still a dependency
    await run_child(backend, clock, "B", Fail("ignored"))
    assert await counts(backend) == {"processed": 0, "unprocessed": 1, "ignored": 1, "failed": 0}
    await Queue(CQ, backend, clock=clock).retry_jobs("failed")
    assert await counts(backend) == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
    assert await state(backend, CQ, "B") == "waiting"
    check_invariants(backend)


async def test_retry_jobs_from_completed_re_links_children_and_moves_plain_jobs_as_before(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    await run_child(backend, clock, "A", Complete("1"))
    cq = Queue(CQ, backend, clock=clock)
    await cq.add("loner", None, job_id="L")
    await run_child(backend, clock, "B", Complete("2"))  # (B, then L, are next in cq)
    await run_child(backend, clock, "L", Complete("3"))
    await cq.retry_jobs("completed")
    assert await counts(backend) == {"processed": 0, "unprocessed": 2, "ignored": 0, "failed": 0}
    assert await state(backend, CQ, "L") == "waiting"


# ---------------------------------------------------------------------------- the hard path


async def same_queue_flow(backend: Storage, clock: VirtualClock) -> None:
    """P with children A and B, all in pq."""
    await producer(backend, clock).add(
        {
            "name": "p",
            "queue_name": PQ,
            "opts": {"job_id": "P"},
            "children": [
                {"name": "a", "queue_name": PQ, "opts": {"job_id": "A"}},
                {"name": "b", "queue_name": PQ, "opts": {"job_id": "B"}},
            ],
        }
    )


async def test_clean_deleting_a_last_pending_child_deletes_its_parent_in_the_same_queue(
    backend: Storage, clock: VirtualClock
) -> None:
    await same_queue_flow(backend, clock)
    pq = Queue(PQ, backend, clock=clock)
    for job_id in ("A", "B"):
        taken = await backend.fetch_next(PQ, FetchRequest("t", 30_000), clock.now_ms())
        assert taken.job is not None
        assert taken.job.job_id == job_id
        await backend.finish(PQ, job_id, "t", Fail("no flag"), clock.now_ms())
    assert await pq.get_job_state("P") == "waiting-children"
    assert sorted(await pq.clean(0, 0, "failed")) == ["A", "B"]
    assert await pq.get_job_state("P") == "unknown"  # BullMQ's hard path, with no event
    assert await event_names(backend, PQ, "P") == ["added", "waiting-children"]
    assert set((await pq.get_job_counts()).values()) == {0}
    check_invariants(backend)


async def test_drain_releases_a_parent_in_another_queue_without_an_event(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    await run_child(backend, clock, "A", Complete("1"))
    await Queue(CQ, backend, clock=clock).drain()
    assert await state(backend, CQ, "B") == "unknown"
    assert await state(backend, PQ, "P") == "waiting"
    assert await event_names(backend, PQ, "P") == ["added", "waiting-children"]
    assert await counts(backend) == {"processed": 1, "unprocessed": 0, "ignored": 0, "failed": 0}
    check_invariants(backend)


async def test_drain_with_delayed_cascades_up_a_same_queue_tree(
    backend: Storage, clock: VirtualClock
) -> None:
    await producer(backend, clock).add(
        {
            "name": "root",
            "queue_name": PQ,
            "opts": {"job_id": "R"},
            "children": [
                {
                    "name": "mid",
                    "queue_name": PQ,
                    "opts": {"job_id": "M"},
                    "children": [
                        {"name": "leaf", "queue_name": PQ, "opts": {"job_id": "L", "delay": 5}}
                    ],
                }
            ],
        }
    )
    pq = Queue(PQ, backend, clock=clock)
    await pq.drain(delayed=True)
    assert [await pq.get_job_state(i) for i in ("L", "M", "R")] == ["unknown"] * 3
    assert set((await pq.get_job_counts()).values()) == {0}
    check_invariants(backend)


async def test_clean_drain_and_obliterate_release_deduplication_keys(
    backend: Storage, clock: VirtualClock
) -> None:
    cq = Queue(CQ, backend, clock=clock)
    await cq.add("a", None, deduplication={"id": "drained"})
    await cq.drain()
    assert await cq.get_deduplication_job_id("drained") is None
    await cq.add("a", None, deduplication={"id": "cleaned"})
    assert await cq.clean(0, 0, "waiting")
    assert await cq.get_deduplication_job_id("cleaned") is None
    await cq.add("a", None, deduplication={"id": "obliterated"})
    await cq.pause()
    await cq.obliterate()
    assert await cq.get_deduplication_job_id("obliterated") is None


async def test_obliterate_deletes_parents_waiting_for_children_elsewhere(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    pq = Queue(PQ, backend, clock=clock)
    await pq.pause()
    await pq.obliterate()
    assert await pq.get_job("P") is None
    assert set((await pq.get_job_counts()).values()) == {0}
    # The children stay; finishing one finds no parent and changes nothing else.
    await run_child(backend, clock, "A", Complete("1"))
    assert await state(backend, CQ, "A") == "completed"
    check_invariants(backend)


# ---------------------------------------------------------------------------- stalls


@pytest.mark.virtual_ttl
@pytest.mark.parametrize(
    ("option", "parent_after"),
    [
        ("fail_parent_on_failure", "waiting"),
        ("continue_parent_on_failure", "waiting"),
        ("ignore_dependency_on_failure", "waiting-children"),  # A is still pending
        (None, "waiting-children"),
    ],
)
async def test_a_child_failed_by_the_stall_limit_applies_its_parent_option(
    backend: Storage, clock: VirtualClock, option: str | None, parent_after: str
) -> None:
    await two_children(backend, clock, **({option: True} if option else {}))
    cq = Queue(CQ, backend, clock=clock)
    taken = await backend.fetch_next(CQ, FetchRequest("t1", 30_000), clock.now_ms())
    assert taken.job is not None
    assert taken.job.job_id == "A"  # left pending, held
    taken = await backend.fetch_next(CQ, FetchRequest("dead", 1_000), clock.now_ms())
    assert taken.job is not None
    assert taken.job.job_id == "B"  # its worker dies
    assert (await cq.check_stalled(0, 1_000)).failed == []  # marks B (and A)
    await asyncio.sleep(1.5)  # B's lock and the throttle run out; A's lock is held
    assert (await cq.check_stalled(0, 1_000)).failed == ["B"]
    assert await state(backend, PQ, "P") == parent_after
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    deps = await parent.get_dependencies()
    reason = "job stalled more than allowable limit"
    if option == "fail_parent_on_failure":
        assert deps["failed"] == [key(CQ, "B", backend)]
        assert parent.deferred_failure == f"child {key(CQ, 'B', backend)} failed"
    elif option is not None:
        assert deps["ignored"] == {key(CQ, "B", backend): reason}
    else:
        assert sorted(deps["unprocessed"]) == [key(CQ, "A", backend), key(CQ, "B", backend)]
    check_invariants(backend)


# ---------------------------------------------------------------------------- deduplication


async def test_deduplication_is_refused_on_children_and_on_nodes_with_children(
    backend: Storage, clock: VirtualClock
) -> None:
    with pytest.raises(InvalidArgumentError, match="Deduplication and parent options"):
        await two_children(backend, clock, deduplication={"id": "d"})
    with pytest.raises(InvalidArgumentError, match="cannot be used on flow nodes with children"):
        await producer(backend, clock).add(
            {
                "name": "p",
                "queue_name": PQ,
                "opts": {"deduplication": {"id": "d"}},
                "children": [{"name": "a", "queue_name": CQ}],
            }
        )
    pq, cq = Queue(PQ, backend, clock=clock), Queue(CQ, backend, clock=clock)
    parent = await pq.add("p", None, job_id="P")
    with pytest.raises(InvalidArgumentError, match="Deduplication and parent options"):
        await cq.add(
            "c",
            None,
            parent={"id": parent.id, "queue": backend.flow_queue_key(PQ)},
            deduplication={"id": "d"},
        )
    for queue in (pq, cq):  # nothing stored but P
        assert sum((await queue.get_job_counts()).values()) == (1 if queue is pq else 0)
    assert await cq.get_deduplication_job_id("d") is None
    # A flow leaf without a parent (a lone root) may still deduplicate.
    await producer(backend, clock).add(
        {"name": "solo", "queue_name": CQ, "opts": {"deduplication": {"id": "d"}}}
    )
    assert await cq.get_deduplication_job_id("d") is not None


# ---------------------------------------------------------------------------- schedulers


async def test_a_job_schedulers_iteration_can_wait_for_children_it_adds(
    backend: Storage, clock: VirtualClock
) -> None:
    """An iteration's id holds colons (``repeat:<id>:<ms>``): its key still names it as a
    parent (the memory backend once split the key at its last colon and answered -5)."""
    pq = Queue(PQ, backend, clock=clock)
    job_id = await pq.upsert_job_scheduler("s", {"every": 60_000})
    assert job_id is not None
    assert ":" in job_id
    fetched = (await backend.fetch_next(PQ, FetchRequest("t", 30_000), clock.now_ms())).job
    assert fetched is not None
    assert fetched.job_id == job_id
    queue_key = backend.flow_queue_key(PQ)
    child = await Queue(CQ, backend, clock=clock).add(
        "child", 1, parent={"id": job_id, "queue": queue_key}
    )
    assert child.parent_key == f"{queue_key}:{job_id}"
    assert await backend.move_to_waiting_children(PQ, job_id, "t", None, clock.now_ms()) == 0
    assert await run_child(backend, clock, child.id, Complete('"c"')) is ResultCode.OK
    assert await state(backend, PQ, job_id) == "waiting"
    dependencies = await backend.get_dependencies(PQ, job_id)
    assert dependencies.processed == {key(CQ, child.id, backend): '"c"'}
    assert await backend.remove_child_dependency(CQ, child.id) == 1  # (no longer pending)
    check_invariants(backend)
