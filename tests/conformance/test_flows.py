"""Conformance: flows (issue 16) — trees across queues, each parent option, step jobs, removal,
retention and atomicity, on memory, fakeredis and real Redis."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from helpers import start_worker, stop_worker, wait_for

from corral.engine import DelayedError, FlowProducer, Job, Queue, WaitingChildrenError
from corral.engine.errors import InvalidArgumentError, ResultCode
from corral.engine.flows import MissingParentError
from corral.engine.job import KeepJobs
from corral.engine.storage import Complete, Fail, FetchRequest, Storage
from corral.sim.loop import VirtualClock

PQ, CQ = "pq", "cq"
_KEEP_NONE = KeepJobs(count=0)


def producer(backend: Storage, clock: VirtualClock) -> FlowProducer:
    return FlowProducer(backend, clock=clock, rng=random.Random(7))


async def two_children(backend: Storage, clock: VirtualClock, **child_opts: Any) -> Any:
    """P in pq with children a (plain) and b (``child_opts``) in cq, custom ids."""
    return await producer(backend, clock).add(
        {
            "name": "p",
            "queue_name": PQ,
            "opts": {"job_id": "P"},
            "children": [
                {"name": "a", "queue_name": CQ, "data": 1, "opts": {"job_id": "A"}},
                {"name": "b", "queue_name": CQ, "data": 2, "opts": {"job_id": "B", **child_opts}},
            ],
        }
    )


async def run_child(
    backend: Storage, clock: VirtualClock, job_id: str, outcome: Any, token: str = "t"
) -> ResultCode:
    """Fetch from cq until ``job_id`` is taken (others are taken and left), then finish it."""
    result = await backend.fetch_next(CQ, FetchRequest(token, 30_000), clock.now_ms())
    assert result.job is not None, result
    assert result.job.job_id == job_id, result
    code = await backend.finish(CQ, job_id, token, outcome, clock.now_ms())
    assert isinstance(code, ResultCode)
    return code


async def state(backend: Storage, queue: str, job_id: str) -> str:
    return await Queue(queue, backend).get_job_state(job_id)


def key(queue: str, job_id: str, backend: Storage) -> str:
    return f"{backend.flow_queue_key(queue)}:{job_id}"


async def test_a_tree_across_queues_is_stored_as_bullmq_lays_it_out(
    backend: Storage, clock: VirtualClock
) -> None:
    tree = await two_children(backend, clock, fail_parent_on_failure=True)
    assert tree.job.id == "P"
    assert [c.job.id for c in tree.children] == ["A", "B"]
    pq, cq = Queue(PQ, backend, clock=clock), Queue(CQ, backend, clock=clock)
    assert await pq.get_job_state("P") == "waiting-children"
    assert (await pq.get_job_counts("waiting-children"))["waiting-children"] == 1
    assert [job.id for job in await pq.get_waiting_children()] == ["P"]
    assert (await cq.get_job_counts("waiting"))["waiting"] == 2
    b = await cq.get_job("B")
    assert b is not None
    queue_key = backend.flow_queue_key(PQ)
    assert b.parent_key == f"{queue_key}:P"
    assert json.loads(b.fields["parent"]) == {"id": "P", "queueKey": queue_key, "fpof": True}
    opts = json.loads(b.fields["opts"])
    assert opts["parent"] == {"id": "P", "queue": queue_key}
    assert opts["fpof"] is True
    parent = await pq.get_job("P")
    assert parent is not None
    assert await parent.get_dependencies_count() == {
        "processed": 0,
        "unprocessed": 2,
        "ignored": 0,
        "failed": 0,
    }


async def test_the_last_child_completing_records_its_value_and_releases_the_parent(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    assert await run_child(backend, clock, "A", Complete('{"v":1}')) is ResultCode.OK
    assert await state(backend, PQ, "P") == "waiting-children"
    assert await run_child(backend, clock, "B", Complete('"two"')) is ResultCode.OK
    assert await state(backend, PQ, "P") == "waiting"
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    assert await parent.get_children_values() == {
        key(CQ, "A", backend): {"v": 1},
        key(CQ, "B", backend): "two",
    }
    events = [(e.name, e.fields) for e in await backend.get_events(PQ)]
    assert events[-1] == ("waiting", {"jobId": "P", "prev": "waiting-children"})


async def test_a_parent_with_pending_children_cannot_complete(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock, continue_parent_on_failure=True)
    await run_child(backend, clock, "A", Fail("boom-a"))  # no flag: A blocks the parent
    assert await run_child(backend, clock, "B", Fail("boom-b")) is ResultCode.OK
    # continue_parent_on_failure released the parent at once, with A still pending.
    assert await state(backend, PQ, "P") == "waiting"
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    deps = await parent.get_dependencies()
    assert deps["ignored"] == {key(CQ, "B", backend): "boom-b"}
    assert deps["unprocessed"] == [key(CQ, "A", backend)]
    taken = await backend.fetch_next(PQ, FetchRequest("tp", 30_000), clock.now_ms())
    assert taken.job is not None
    assert taken.job.job_id == "P"
    code = await backend.finish(PQ, "P", "tp", Complete("1"), clock.now_ms())
    assert code is ResultCode.PENDING_DEPENDENCIES
    assert await state(backend, PQ, "P") == "active"  # nothing changed


@pytest.mark.parametrize(
    ("option", "released", "ignored"),
    [
        ("ignore_dependency_on_failure", True, True),
        ("remove_dependency_on_failure", True, False),
        (None, False, False),
    ],
)
async def test_a_child_failing_for_good_applies_its_parent_option(
    backend: Storage, clock: VirtualClock, option: str | None, released: bool, ignored: bool
) -> None:
    await two_children(backend, clock, **({option: True} if option else {}))
    await run_child(backend, clock, "A", Complete("1"))
    await run_child(backend, clock, "B", Fail("boom"))
    assert await state(backend, PQ, "P") == ("waiting" if released else "waiting-children")
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    failures = await parent.get_ignored_children_failures()
    assert failures == ({key(CQ, "B", backend): "boom"} if ignored else {})


async def test_fail_parent_on_failure_releases_the_parent_which_then_fails(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock, fail_parent_on_failure=True)
    await run_child(backend, clock, "A", Fail("first"))  # A pending: the parent still goes
    await run_child(backend, clock, "B", Fail("boom"))
    pq = Queue(PQ, backend, clock=clock)
    assert await pq.get_job_state("P") == "waiting"
    reason = f"child {key(CQ, 'B', backend)} failed"
    parent = await pq.get_job("P")
    assert parent is not None
    assert parent.deferred_failure == reason
    assert (await parent.get_dependencies())["failed"] == [key(CQ, "B", backend)]
    ran: list[str] = []
    worker, task = await start_worker(backend, lambda job: ran.append(job.id), clock, queue=PQ)
    await wait_for(lambda: pq.get_job_state("P"), what="the parent to be taken")
    await wait_for(lambda: _is(pq, "P", "failed"), what="the parent to fail")
    await stop_worker(worker, task)
    failed = await pq.get_job("P")
    assert failed is not None
    assert failed.failed_reason == reason
    assert ran == []


async def test_failed_children_read_by_failure_time_then_by_key(
    backend: Storage, clock: VirtualClock
) -> None:
    """``<parent>:unsuccessful`` is a sorted set: children failed in the same millisecond read
    in key order, whichever failed first (the memory backend once kept their failure order)."""
    await producer(backend, clock).add(
        {
            "name": "p",
            "queue_name": PQ,
            "opts": {"job_id": "P"},
            "children": [
                {
                    "name": c,
                    "queue_name": CQ,
                    "opts": {"job_id": c, "fail_parent_on_failure": True},
                }
                for c in ("A", "B")
            ],
        }
    )
    now = clock.now_ms()
    for token in ("ta", "tb"):
        assert (await backend.fetch_next(CQ, FetchRequest(token, 30_000), now)).job is not None
    assert await backend.finish(CQ, "B", "tb", Fail("b"), now) is ResultCode.OK
    assert await backend.finish(CQ, "A", "ta", Fail("a"), now) is ResultCode.OK
    dependencies = await backend.get_dependencies(PQ, "P")
    assert dependencies.failed == [key(CQ, "A", backend), key(CQ, "B", backend)]


async def _is(queue: Queue, job_id: str, wanted: str) -> bool:
    return await queue.get_job_state(job_id) == wanted


async def test_children_and_parent_run_by_workers_end_to_end(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    seen: dict[str, Any] = {}

    async def parent_processor(job: Job) -> str:
        seen.update(await job.get_children_values())
        return "assembled"

    child_worker, child_task = await start_worker(
        backend, lambda job: job.data * 10, clock, queue=CQ, seed=1
    )
    parent_worker, parent_task = await start_worker(
        backend, parent_processor, clock, queue=PQ, seed=2
    )
    pq = Queue(PQ, backend, clock=clock)
    await wait_for(lambda: _is(pq, "P", "completed"), what="the parent to complete")
    await stop_worker(child_worker, child_task)
    await stop_worker(parent_worker, parent_task)
    assert seen == {key(CQ, "A", backend): 10, key(CQ, "B", backend): 20}


async def test_a_bad_node_stores_nothing(backend: Storage, clock: VirtualClock) -> None:
    flow = {
        "name": "p",
        "queue_name": PQ,
        "children": [
            {"name": "a", "queue_name": CQ},
            {"name": "b", "queue_name": CQ, "opts": {"priority": -1}},
        ],
    }
    with pytest.raises(InvalidArgumentError, match=r"children\[1\]"):
        await producer(backend, clock).add(flow)
    with pytest.raises(InvalidArgumentError, match="cannot be used together"):
        await two_children(
            backend, clock, fail_parent_on_failure=True, ignore_dependency_on_failure=True
        )
    orphan = {
        "name": "p",
        "queue_name": PQ,
        "opts": {"parent": {"id": "nobody", "queue": backend.flow_queue_key(PQ)}},
        "children": [{"name": "a", "queue_name": CQ}],
    }
    with pytest.raises(MissingParentError, match="Missing key for parent job"):
        await producer(backend, clock).add(orphan)
    for queue in (PQ, CQ):
        assert set((await Queue(queue, backend).get_job_counts()).values()) == {0}


async def test_queue_add_with_a_parent_joins_an_existing_parent(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    cq = Queue(CQ, backend, clock=clock)
    queue_key = backend.flow_queue_key(PQ)
    late = await cq.add("late", None, parent={"id": "P", "queue": queue_key})
    assert late.parent_key == f"{queue_key}:P"
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    assert (await parent.get_dependencies_count())["unprocessed"] == 3
    with pytest.raises(MissingParentError):
        await cq.add("x", None, parent={"id": "gone", "queue": queue_key})
    assert (await cq.get_job_counts("waiting"))["waiting"] == 3


async def test_removing_a_parent_removes_its_children_and_a_removed_child_releases(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    pq, cq = Queue(PQ, backend), Queue(CQ, backend)
    await run_child(backend, clock, "A", Complete("1"))
    assert await cq.remove("B")  # the last pending child, detached: the parent goes on
    assert await pq.get_job_state("P") == "waiting"
    await two_children(backend, clock)  # P exists: duplicated; A re-linked as processed
    assert await pq.remove("P")
    assert await cq.get_job("A") is None
    assert set((await cq.get_job_counts()).values()) == {0}
    assert set((await pq.get_job_counts()).values()) == {0}


async def test_retention_keeps_a_removed_childs_result_in_its_parent(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    await run_child(backend, clock, "A", Complete('"kept"', keep=_KEEP_NONE))
    assert await Queue(CQ, backend).get_job("A") is None  # trimmed at once
    parent = await Queue(PQ, backend).get_job("P")
    assert parent is not None
    assert await parent.get_children_values() == {key(CQ, "A", backend): "kept"}


async def test_a_failed_child_deleted_by_remove_on_fail_releases_its_parent(
    backend: Storage, clock: VirtualClock
) -> None:
    await two_children(backend, clock)
    await run_child(backend, clock, "A", Complete("1"))
    await run_child(backend, clock, "B", Fail("boom", keep=_KEEP_NONE))
    assert await state(backend, PQ, "P") == "waiting"  # BullMQ's removeOnFail trap


async def test_get_flow_rebuilds_the_tree(backend: Storage, clock: VirtualClock) -> None:
    await two_children(backend, clock)
    tree = await producer(backend, clock).get_flow("P", PQ)
    assert tree is not None
    assert tree.children is not None
    assert sorted(child.job.id for child in tree.children) == ["A", "B"]
    assert await producer(backend, clock).get_flow("nope", PQ) is None


async def test_step_jobs_delay_themselves_and_wait_for_children_they_add(
    backend: Storage, clock: VirtualClock
) -> None:
    pq, cq = Queue(PQ, backend, clock=clock), Queue(CQ, backend, clock=clock)
    job = await pq.add("step", None, job_id="S")
    steps: list[str] = []

    async def processor(job: Job) -> str:
        step = job.data or "start"
        steps.append(step)
        if step == "start":
            await job.update_data("children")
            await job.move_to_delayed(clock.now_ms() + 1_000)
            raise DelayedError()
        if step == "children":
            await job.update_data("done")
            queue_key = backend.flow_queue_key(PQ)
            await cq.add("child", 5, parent={"id": job.id, "queue": queue_key})
            assert await job.move_to_waiting_children()
            raise WaitingChildrenError()
        return "finished"

    parent_worker, parent_task = await start_worker(backend, processor, clock, queue=PQ, seed=1)
    await wait_for(lambda: _is(pq, "S", "waiting-children"), what="the step job to wait")
    child_worker, child_task = await start_worker(
        backend, lambda job: job.data, clock, queue=CQ, seed=2
    )
    await wait_for(lambda: _is(pq, "S", "completed"), timeout_s=600, what="the step job to end")
    await stop_worker(parent_worker, parent_task)
    await stop_worker(child_worker, child_task)
    assert steps == ["start", "children", "done"]
    done = await pq.get_job(job.id)
    assert done is not None
    assert done.attempts_made == 1
    assert done.attempts_started == 3
