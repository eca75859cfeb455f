"""Operating a queue that corral and Node BullMQ share (issue 14): each side's operator calls
on the other side's jobs and workers.

Node's calls go through ``node/ops.mjs`` (BullMQ's own ``job.retry``, ``queue.clean``,
``queue.obliterate``, ``job.promote``, ``queue.getWorkers``, ``queue.getJobLogs``, ...); corral's
through its public API. Each test checks the move from the side that did not make it: the
state, the fields, the events a QueueEvents of either side hears, and the refusals (BullMQ's
texts) for jobs in the wrong state or held by a worker.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import redis.asyncio as aioredis
from interop_world import QUEUE, World, finish_by_corral, run
from node_bullmq import Record, poll

from corral.engine import Job, QueueEvents, Worker
from corral.engine.errors import CorralError, JobFailedError, JobStateError, ResultCode
from corral.engine.storage import Complete, FetchRequest

pytestmark = [pytest.mark.redis, pytest.mark.interop]

#: A lock token no live worker has: the job looks held by a worker that is still running.
HOLDER = "11111111-1111-4111-8111-111111111111:1"


def outcomes(records: list[Record]) -> list[tuple[str, Any]]:
    """Each Node op's outcome: ``("done", value)`` or ``("refused", message)``."""
    return [(r["event"], r["value"] if r["event"] == "done" else r["message"]) for r in records]


async def moves(world: World, job_id: str) -> list[tuple[str, str | None]]:
    """The job's events in corral's reading of the log: name and ``prev``."""
    events = await world.backend.get_events(QUEUE)
    return [(e.name, e.fields.get("prev")) for e in events if e.fields.get("jobId") == job_id]


async def finish_by_node(world: World, *names: str) -> dict[str, str]:
    """Add one job per name with Node and run them on a Node worker: ``bad*`` jobs fail
    ("node attempt 1 failed"); their ids by name."""
    ids = await world.node.add([{"name": name, "data": {"name": name}} for name in names])
    bad = {name: 1 for name in names if name.startswith("bad")}
    await world.node.run("worker", count=len(names), failAttempts=bad)
    return dict(zip(names, ids, strict=True))


async def hold(world: World) -> str:
    """Take the next job with a lock of HOLDER's, 60 s long (a worker busy with it)."""
    fetched = await world.backend.fetch_next(
        QUEUE, FetchRequest(HOLDER, 60_000, "holder"), world.queue.clock.now_ms()
    )
    assert fetched.job is not None
    return fetched.job.job_id


# ---------------------------------------------------------------------- Node → corral's jobs


def test_node_retries_promotes_and_reschedules_corral_jobs(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        done = await finish_by_corral(world, "ok", "bad")
        ok, bad = done["ok"].id, done["bad"].id
        later = (await world.queue.add("later", {"n": 3}, delay=600_000)).id
        moved = (await world.queue.add("moved", {"n": 4}, delay=600_000)).id
        urgent = (await world.queue.add("urgent", {"n": 5}, priority=5)).id

        results = await world.node.ops(
            {"op": "retry", "id": bad},
            {"op": "retry", "id": ok, "state": "completed"},
            {"op": "retry", "id": urgent},
            {"op": "promote", "id": later},
            {"op": "promote", "id": later},
            {"op": "changePriority", "id": urgent, "priority": 1},
            {"op": "changeDelay", "id": moved, "delay": 300},
            {"op": "changeDelay", "id": ok, "delay": 300},
        )
        assert outcomes(results) == [
            ("done", None),
            ("done", None),
            ("refused", f"Job {urgent} is not in the failed state. reprocessJob"),
            ("done", None),
            ("refused", f"Job {later} is not in the delayed state. promote"),
            ("done", None),
            ("done", None),
            ("refused", f"Job {ok} is not in the delayed state. changeDelay"),
        ]

        states = {jid: await world.queue.get_job_state(jid) for jid in (ok, bad, later, urgent)}
        assert states == {ok: "waiting", bad: "waiting", later: "waiting", urgent: "prioritized"}
        retried = await world.job(bad)
        assert (retried.failed_reason, retried.finished_on, retried.processed_on) == (None,) * 3
        assert retried.attempts_made == 1  # Node's retry without resetAttemptsMade keeps it
        assert "bad failed" in retried.stacktrace[0]
        assert (await world.job(ok)).return_value is None
        assert (await world.job(later)).delay == 0
        assert (await world.job(urgent)).priority == 1
        assert (await world.job(moved)).delay == 300
        assert (await moves(world, bad))[-1] == ("waiting", "failed")
        assert (await moves(world, ok))[-1] == ("waiting", "completed")
        assert (await moves(world, later))[-1] == ("waiting", "delayed")
        assert (await moves(world, moved))[-1] == ("delayed", None)

        # A corral worker runs them as they now stand: wait in order, then prioritized, then
        # the re-scheduled job once due.
        order: list[str] = []

        async def processor(job: Job) -> str:
            order.append(job.name)
            return job.name

        worker = Worker(QUEUE, processor, world.backend, drain_delay=200)
        await world.run_worker(worker, lambda: len(order) == 5, "the five jobs")
        assert order == ["bad", "ok", "later", "urgent", "moved"]

    run(body, redis_url, key_prefix, node)


def test_node_cleans_and_obliterates_a_corral_queue(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        done = await finish_by_corral(world, "a", "b", "c", "bad")
        waiting = [(await world.queue.add(name, None)).id for name in ("w1", "w2", "w3")]
        held = await hold(world)  # w1, running on a live worker

        results = await world.node.ops(
            {"op": "clean", "grace": 0, "limit": 0, "type": "completed"},
            {"op": "clean", "grace": 0, "limit": 1, "type": "wait"},
            {"op": "clean", "grace": 0, "limit": 0, "type": "active"},
            {"op": "obliterate"},
        )
        cleaned, oldest, active, refused = outcomes(results)
        assert cleaned[0] == "done"
        assert sorted(cleaned[1]) == sorted(done[name].id for name in ("a", "b", "c"))
        assert oldest == ("done", [waiting[1]])  # w1 is active; w2 is the oldest waiting
        assert active == ("done", [])  # a job that holds a lock is never cleaned
        assert refused == ("refused", "Cannot obliterate queue with active jobs")

        for name in ("a", "b", "c"):
            assert await world.queue.get_job(done[name].id) is None
        assert await world.queue.get_job_state(waiting[1]) == "unknown"
        counts = await world.queue.get_job_counts()
        assert counts == {
            "waiting": 1,
            "prioritized": 0,
            "delayed": 0,
            "active": 1,
            "completed": 0,
            "failed": 1,
            "waiting-children": 0,
        }
        events = await world.backend.get_events(QUEUE)
        assert [e.fields["count"] for e in events if e.name == "cleaned"] == ["3", "1", "0"]
        assert await world.queue.is_paused()  # Node's obliterate pauses before it refuses

        (forced,) = outcomes(await world.node.ops({"op": "obliterate", "force": True}))
        assert forced == ("done", None)
        async with aioredis.from_url(redis_url) as client:
            left = [key async for key in client.scan_iter(match=f"{key_prefix}:{QUEUE}:*")]
        assert left == []
        assert await world.queue.get_job_counts() == dict.fromkeys(counts, 0)
        assert not await world.queue.is_paused()
        # The worker that held w1 finds its job gone when it finishes.
        late = await world.backend.finish(
            QUEUE, held, HOLDER, Complete('"late"'), world.queue.clock.now_ms()
        )
        assert late is ResultCode.MISSING_JOB

    run(body, redis_url, key_prefix, node)


def test_job_logs_written_on_one_side_are_read_on_the_other(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        job = await world.queue.add("logged", None)
        assert [await job.log("one"), await job.log("two")] == [1, 2]
        kept = await world.queue.add("kept", None, keep_logs=2)

        results = await world.node.ops(
            {"op": "getJobLogs", "id": job.id},
            {"op": "getJobLogs", "id": job.id, "start": 0, "end": 0, "asc": False},
            {"op": "log", "id": job.id, "row": "three from node"},
            *[{"op": "log", "id": kept.id, "row": f"row {n}"} for n in range(3)],
            {"op": "getJobLogs", "id": "no-such-job"},
        )
        assert outcomes(results) == [
            ("done", {"logs": ["one", "two"], "count": 2}),
            ("done", {"logs": ["two"], "count": 2}),
            ("done", 3),
            ("done", 1),
            ("done", 2),
            ("done", 2),  # keepLogs, read by Node from the options corral stored
            ("done", {"logs": [], "count": 0}),
        ]
        logs = await world.queue.get_job_logs(job.id)
        assert (logs.logs, logs.count) == (["one", "two", "three from node"], 3)
        newest = await world.queue.get_job_logs(job.id, 0, 1, asc=False)
        assert (newest.logs, newest.count) == (["three from node", "two"], 3)
        assert (await world.queue.get_job_logs(kept.id)).logs == ["row 1", "row 2"]
        # Removing a job removes its log, whichever side wrote it.
        assert await job.remove()
        assert (await world.queue.get_job_logs(job.id)).count == 0

    run(body, redis_url, key_prefix, node)


def test_node_get_workers_lists_corral_workers_and_not_producers(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """Workers are found by their Redis connection names (``<prefix>:<base64 queue>``, and
    ``...:w:<name>`` for a named one): Node's getWorkers lists corral's running workers, not
    its producers, and no longer lists them once closed."""

    async def body(world: World) -> None:
        b64 = base64.b64encode(QUEUE.encode()).decode()

        async def idle(job: Job) -> None:
            return None

        named = Worker(QUEUE, idle, world.backend, name="mailer-1", drain_delay=500)
        unnamed = Worker(QUEUE, idle, world.backend, drain_delay=500)
        tasks = [asyncio.create_task(w.run()) for w in (named, unnamed)]
        try:
            await world.queue.add("one", None)  # a producer's connections are not workers
            listed: list[Record] = []

            async def both_listed() -> bool:
                (outcome,) = outcomes(await world.node.ops({"op": "getWorkers"}))
                assert outcome[0] == "done", outcome
                listed[:] = outcome[1]
                return len(listed) >= 2

            await poll(both_listed, 15, "Node to list both corral workers")
            assert sorted((w["name"], w["rawname"]) for w in listed) == [
                (QUEUE, f"{key_prefix}:{b64}"),
                (QUEUE, f"{key_prefix}:{b64}:w:mailer-1"),
            ]
        finally:
            for worker in (named, unnamed):
                await worker.close()
            await asyncio.gather(*tasks)
        (after,) = outcomes(await world.node.ops({"op": "getWorkers"}))
        assert after == ("done", [])

    run(body, redis_url, key_prefix, node)


def test_corral_get_workers_lists_node_workers(redis_url: str, key_prefix: str, node: str) -> None:
    async def body(world: World) -> None:
        b64 = base64.b64encode(QUEUE.encode()).decode()
        assert await world.queue.get_workers() == []
        node_worker = await world.node.start("worker", name="node-1", count=99)
        await node_worker.wait_event("ready")
        listed = await world.queue.get_workers()
        assert [(w["name"], w["rawname"]) for w in listed] == [
            (QUEUE, f"{key_prefix}:{b64}:w:node-1")
        ]
        assert await world.queue.get_workers_count() == 1
        await node_worker.kill()

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- corral → Node's jobs


def test_corral_retries_promotes_and_changes_node_jobs(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        ids = await finish_by_node(world, "ok", "bad")
        ok, bad = await world.job(ids["ok"]), await world.job(ids["bad"])
        later_id, urgent_id = await world.node.add(
            [
                {"name": "later", "data": 1, "opts": {"delay": 600_000}},
                {"name": "urgent", "data": 2, "opts": {"priority": 7}},
            ]
        )
        later, urgent = await world.job(later_id), await world.job(urgent_id)

        with pytest.raises(JobStateError, match=rf"^Job {ok.id} is not in the failed state\. "):
            await ok.retry()
        await bad.retry(reset_attempts_made=True)
        await ok.retry("completed")
        with pytest.raises(JobStateError, match=rf"^Job {bad.id} is not in the failed state\. "):
            await bad.retry()
        await later.change_delay(600_000)
        await later.promote()
        with pytest.raises(JobStateError, match=rf"^Job {later.id} is not in the delayed state"):
            await later.promote()
        with pytest.raises(JobStateError, match=rf"^Job {urgent.id} is not in the delayed state"):
            await urgent.change_delay(100)
        await urgent.change_priority(1)
        await urgent.update_data({"changed": "by corral"})

        listener = await world.node.start("events", until={"completed": 5})
        _, views = await world.node.inspect([ok.id, bad.id, later.id, urgent.id])
        assert {jid: views[jid]["state"] for jid in views} == {
            ok.id: "waiting",
            bad.id: "waiting",
            later.id: "waiting",
            urgent.id: "prioritized",
        }
        assert views[bad.id]["job"]["attemptsMade"] == 0  # reset_attempts_made
        assert views[bad.id]["job"]["failedReason"] is None
        assert views[ok.id]["job"]["returnvalue"] is None
        assert views[later.id]["job"]["delay"] == 0
        assert views[urgent.id]["job"]["priority"] == 1
        assert views[urgent.id]["job"]["data"] == {"changed": "by corral"}
        for job_id in views:
            await world.assert_same_view(job_id, views[job_id])

        worker = await world.node.run("worker", count=4)
        processing = [r["job"] for r in worker.events("processing")]
        assert [p["name"] for p in processing] == ["bad", "ok", "later", "urgent"]
        await listener.finish()
        heard = [(r["jobId"], r.get("prev")) for r in listener.events("waiting")]
        assert heard[-3:] == [(bad.id, "failed"), (ok.id, "completed"), (later.id, "delayed")]
        assert (await world.job(bad.id)).return_value["echo"] == {"name": "bad"}

    run(body, redis_url, key_prefix, node)


def test_corral_cleans_drains_and_obliterates_node_jobs(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        ids = await finish_by_node(world, "a", "b", "bad1", "bad2")
        assert sorted(await world.queue.clean(0, 0, "completed")) == sorted([ids["a"], ids["b"]])
        await world.queue.retry_jobs("failed")
        counts, _ = await world.node.inspect([])
        assert (counts["completed"], counts["failed"], counts["waiting"]) == (0, 0, 2)

        pending = await world.node.add(
            [
                {"name": "p", "data": 1, "opts": {"priority": 3}},
                {"name": "d", "data": 2, "opts": {"delay": 600_000}},
                {"name": "d2", "data": 3, "opts": {"delay": 600_000}},
            ]
        )
        assert await world.queue.get_counts_per_priority([0, 3]) == {0: 2, 3: 1}
        await world.queue.drain()
        counts, _ = await world.node.inspect([])
        assert (counts["waiting"], counts["prioritized"], counts["delayed"]) == (0, 0, 2)
        await world.queue.promote_jobs()
        counts, views = await world.node.inspect(pending[1:])
        assert (counts["waiting"], counts["delayed"]) == (2, 0)

        held = await hold(world)
        with pytest.raises(CorralError, match=r"^Cannot obliterate queue with active jobs$"):
            await world.queue.obliterate()
        counts, views = await world.node.inspect([held])
        assert (counts["active"], counts["waiting"], views[held]["state"]) == (1, 1, "active")
        await world.queue.obliterate(force=True)
        counts, views = await world.node.inspect([held, *pending])
        assert all(n == 0 for n in counts.values()), counts
        assert {view["state"] for view in views.values()} == {"unknown"}

    run(body, redis_url, key_prefix, node)


def test_corral_operator_calls_leave_a_job_a_node_worker_holds(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        (job_id,) = await world.node.add([{"name": "busy", "data": None}])
        worker = await world.node.start("worker", hang=True, lockDuration=30_000)
        await worker.wait_event("processing")
        job = await world.job(job_id)

        with pytest.raises(JobStateError, match=f"^Job {job_id} is not in the failed state"):
            await job.retry()
        with pytest.raises(JobStateError, match=f"^Job {job_id} is not in the delayed state"):
            await job.promote()
        with pytest.raises(CorralError, match="locked"):
            await job.remove()
        assert await world.queue.clean(0, 0, "active") == []
        await world.queue.drain(delayed=True)
        with pytest.raises(CorralError, match=r"^Cannot obliterate queue with active jobs$"):
            await world.queue.obliterate()

        _, views = await world.node.inspect([job_id])
        assert views[job_id]["state"] == "active"
        lock = await world.backend.get_lock(QUEUE, job_id)
        assert lock is not None
        await worker.kill()

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- waiting for results


def test_node_wait_until_finished_on_jobs_a_corral_worker_runs(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        ok = await world.queue.add("ok", {"n": 1})
        bad = await world.queue.add("bad", {"n": 2}, attempts=2)  # fails twice: one retry
        idle = await world.queue.add("idle", None, delay=600_000)
        waiter = await world.node.start(
            "ops",
            ops=[
                {"op": "waitUntilFinished", "id": ok.id},
                {"op": "waitUntilFinished", "id": bad.id},
                {"op": "waitUntilFinished", "id": idle.id, "ttl": 300},
            ],
        )
        await waiter.wait_event("listening")  # Node listens before the job runs

        async def processor(job: Job) -> dict[str, Any]:
            if job.name == "bad":
                raise ValueError(f"bad attempt {job.attempts_made + 1}")
            return {"by": "corral", "echo": job.data}

        finished: list[str] = []
        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
        worker.on("completed", lambda job, result: finished.append(job.id))
        worker.on("failed", lambda job, error: finished.append(job.id))
        await world.run_worker(worker, lambda: len(finished) == 3, "three attempts")
        await waiter.finish()
        assert outcomes([r for r in waiter.records if r["event"] in ("done", "refused")]) == [
            ("done", {"by": "corral", "echo": {"n": 1}}),
            ("refused", "bad attempt 2"),  # the first failure was retried: no rejection
            (
                "refused",
                "Job wait idle timed out before finishing, no finish notification arrived "
                f"after 300ms (id={idle.id})",
            ),
        ]

    run(body, redis_url, key_prefix, node)


def test_corral_wait_until_finished_on_jobs_a_node_worker_runs(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        ok_id, bad_id = await world.node.add(
            [{"name": "ok", "data": {"n": 1}}, {"name": "bad", "data": {"n": 2}}]
        )
        ok, bad = await world.job(ok_id), await world.job(bad_id)
        events = QueueEvents(QUEUE, world.backend, block=200)
        listening = asyncio.create_task(events.run())
        try:
            waits = [
                asyncio.create_task(ok.wait_until_finished(events)),
                asyncio.create_task(bad.wait_until_finished(events)),
            ]
            await events.wait_until_ready()
            await world.node.run("worker", count=2, failAttempts={"bad": 1})
            result, failure = await asyncio.gather(*waits, return_exceptions=True)
            # Once finished, a wait answers at once from the stored state.
            again = await ok.wait_until_finished(events)
        finally:
            await events.close()
            await listening
        assert result == {"by": "node", "name": "ok", "echo": {"n": 1}, "attemptsMade": 0}
        assert again == result
        assert isinstance(failure, JobFailedError)
        assert str(failure) == "node attempt 1 failed"

    run(body, redis_url, key_prefix, node)
