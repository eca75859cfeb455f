"""corral and the real Node BullMQ (npm, pinned in package.json) sharing queues on one Redis.

Each test drives the small scripts in ``node/`` as subprocesses (a producer, a worker, a
QueueEvents listener and an inspector that reads jobs back through Node BullMQ) against corral's
``RedisBackend`` on the same server, under a key prefix of its own. The tests run in real time:
they are plain functions calling ``asyncio.run`` with the system clock, since a real Redis and
real Node processes cannot follow the suite's virtual clock. Locks and stalled intervals are
1–2 s so that stalls are found quickly; every wait is bounded.

Where corral deliberately differs from BullMQ 6 (README, "Semantics, and where corral
deliberately differs"), the tests show that both sides still read the same stored state:

* BullMQ ≥ 5.53.2 fails a job over the stall limit lazily (its checker sets ``defa``, the next
  worker that takes the job fails it: one more ``ats`` and ``atm``); corral's checker fails it
  inline, as BullMQ did before, and corral's worker honours a ``defa`` left by Node.
* ``Worker.close(force=True)`` hands running jobs back at once, without a stall; a Node worker
  takes them up as ordinary waiting jobs.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from interop_world import QUEUE, World, run
from node_bullmq import Record, pinned_bullmq

from corral.engine import Job, Queue, QueueEvent, QueueEvents, Worker
from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.storage import Complete, FetchRequest, StoredEvent

pytestmark = [pytest.mark.redis, pytest.mark.interop]

#: Node BullMQ and corral both make lock tokens "<worker uuid>:<fetch number>".
TOKEN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:\d+$")


def test_pinned_bullmq_is_6x() -> None:
    assert re.fullmatch(r"6\.\d+\.\d+", pinned_bullmq())


# ---------------------------------------------------------------------- (a) Node → corral


def test_node_jobs_run_on_a_corral_worker_and_node_queue_events_see_it(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """Jobs added by Node BullMQ are processed by a corral worker (one after a failed attempt,
    one failing for good); Node's QueueEvents sees them completed with their return values (or
    failed), and Node reads back the results, attempts and progress corral stored."""

    async def body(world: World) -> None:
        listener = await world.node.start("events", until={"completed": 3, "retries-exhausted": 1})
        greet = {"to": "Zoë", "n": [1, 2.5, None, True], "nested": {"a": {"b": "ç"}}}
        ids = await world.node.add(
            [
                {"name": "greet", "data": greet},
                {"name": "count", "data": 42, "opts": {"attempts": 2}},
                {"name": "report", "data": "text"},
                {"name": "bad", "data": None},
            ]
        )
        seen: list[tuple[str, str, Any, int, int]] = []

        async def processor(job: Job) -> Any:
            seen.append((job.id, job.name, job.data, job.attempts_made, job.opts.attempts))
            if job.name == "count" and job.attempts_made == 0:
                raise RuntimeError("corral attempt 1 failed")
            if job.name == "bad":
                raise ValueError("bad job")
            if job.name == "report":
                await job.update_progress({"pct": 50})
            return {"by": "corral", "echo": job.data, "attempts_made": job.attempts_made}

        finished: list[str] = []
        worker = Worker(QUEUE, processor, world.backend, name="corral-worker", drain_delay=500)
        worker.on("completed", lambda job, result: finished.append(job.id))
        worker.on("failed", lambda job, error: finished.append(job.id))
        await world.run_worker(worker, lambda: len(finished) == 5, "every attempt")

        assert seen == [
            (ids[0], "greet", greet, 0, 1),
            (ids[1], "count", 42, 0, 2),
            (ids[2], "report", "text", 0, 1),
            (ids[3], "bad", None, 0, 1),  # Node stores attempts 0; corral reads it as 1
            (ids[1], "count", 42, 1, 2),
        ]
        results = {
            ids[0]: {"by": "corral", "echo": greet, "attempts_made": 0},
            ids[1]: {"by": "corral", "echo": 42, "attempts_made": 1},
            ids[2]: {"by": "corral", "echo": "text", "attempts_made": 0},
        }

        await listener.finish()
        assert {r["jobId"]: r["returnvalue"] for r in listener.events("completed")} == results
        assert all(r["prev"] == "active" for r in listener.events("completed"))
        assert [r["data"] for r in listener.events("progress")] == [{"pct": 50}]
        assert [r["jobId"] for r in listener.events("active")] == [*ids, ids[1]]
        # The retry goes back to wait (prev "active", as BullMQ's retryJob logs it); only the
        # final failure is a global "failed", followed by "retries-exhausted".
        assert [(r["jobId"], r.get("prev")) for r in listener.events("waiting")][-1] == (
            ids[1],
            "active",
        )
        assert [(r["jobId"], r["failedReason"]) for r in listener.events("failed")] == [
            (ids[3], "bad job")
        ]
        assert [(r["jobId"], r["attemptsMade"]) for r in listener.events("retries-exhausted")] == [
            (ids[3], "1")
        ]

        counts, views = await world.node.inspect(ids)
        assert counts == {
            "waiting": 0,
            "prioritized": 0,
            "delayed": 0,
            "active": 0,
            "completed": 3,
            "failed": 1,
        }
        assert views[ids[3]]["state"] == "failed"
        assert views[ids[3]]["job"]["failedReason"] == "bad job"
        await world.assert_same_view(ids[3], views[ids[3]])
        for job_id, result in results.items():
            view = views[job_id]
            assert view["state"] == "completed"
            assert view["job"]["returnvalue"] == result
            assert view["job"]["processedBy"] == "corral-worker"
            await world.assert_same_view(job_id, view)
        assert views[ids[1]]["job"]["attemptsMade"] == 2
        assert views[ids[1]]["job"]["attemptsStarted"] == 2
        assert views[ids[1]]["job"]["failedReason"] == "corral attempt 1 failed"
        assert "corral attempt 1 failed" in views[ids[1]]["job"]["stacktrace"][0]
        assert views[ids[2]]["job"]["progress"] == {"pct": 50}

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- (b) corral → Node


def test_corral_jobs_run_on_a_node_worker(redis_url: str, key_prefix: str, node: str) -> None:
    """Jobs added by corral are processed by a Node BullMQ worker: names, data and options
    arrive intact, and corral reads back return values, progress, attempts and retention."""

    async def body(world: World) -> None:
        greet = {"to": "Zoë", "n": [1, 2.5, None, True], "nested": {"a": {"b": "ç"}}}
        added = [
            await world.queue.add("greet", greet),
            await world.queue.add("plain", [1, "two", {"3": None}]),
            await world.queue.add("retry", {"k": "v"}, attempts=2),
            await world.queue.add("gone", "bye", remove_on_complete=True),
        ]
        ids = [job.id for job in added]
        worker = await world.node.start(
            "worker", count=5, failAttempts={"retry": 1}, progress=7, name="node-worker"
        )
        await worker.finish()

        processing = [r["job"] for r in worker.events("processing")]
        assert [(p["id"], p["attemptsMade"]) for p in processing] == [
            (ids[0], 0),
            (ids[1], 0),
            (ids[2], 0),
            (ids[3], 0),
            (ids[2], 1),
        ]
        for job, seen in zip(added, processing, strict=False):
            assert (seen["name"], seen["data"], seen["timestamp"]) == (
                job.name,
                job.data,
                job.timestamp,
            )
        assert processing[2]["opts"]["attempts"] == 2
        assert processing[3]["opts"]["removeOnComplete"] is True
        assert [r["reason"] for r in worker.events("failed")] == ["node attempt 1 failed"]

        for job in added[:3]:
            stored = await world.job(job.id)
            assert await world.queue.get_job_state(job.id) == "completed"
            assert stored.return_value == {
                "by": "node",
                "name": job.name,
                "echo": job.data,
                "attemptsMade": 1 if job.name == "retry" else 0,
            }
            assert stored.progress == 7
            assert stored.processed_by == "node-worker"
            assert stored.finished_on is not None
        retried = await world.job(ids[2])
        assert (retried.attempts_made, retried.attempts_started) == (2, 2)
        assert retried.failed_reason == "node attempt 1 failed"
        assert "node attempt 1 failed" in retried.stacktrace[0]
        # removeOnComplete: true, written by corral, honoured by Node.
        assert await world.queue.get_job(ids[3]) is None
        assert await world.queue.get_job_state(ids[3]) == "unknown"
        assert (await world.queue.get_job_counts())["completed"] == 3

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- the event log

#: One workload, run once entirely by Node BullMQ and once entirely by corral; the attempts of
#: the jobs named in LOG_FAILS fail that many times.
LOG_JOBS: list[Record] = [
    {"name": "ok", "data": 1},
    {"name": "retry", "data": 2, "opts": {"attempts": 2}},
    {"name": "backoff", "data": 3, "opts": {"attempts": 2, "backoff": 100}},
    {"name": "fail", "data": 4},
    {"name": "prio", "data": 5, "opts": {"priority": 2}},
    {"name": "later", "data": 6, "opts": {"delay": 100}},
]
LOG_FAILS = {"retry": 1, "backoff": 1, "fail": 1}
LOG_ATTEMPTS = 8  # "retry" and "backoff" take two attempts, the others one ("fail" has one)


def _lives(events: list[StoredEvent]) -> dict[str, list[tuple[str, list[str], str | None]]]:
    """Each job's events in order: name, field names, and ``prev``."""
    lives: dict[str, list[tuple[str, list[str], str | None]]] = {}
    for event in events:
        if "jobId" in event.fields:
            lives.setdefault(event.fields["jobId"], []).append(
                (event.name, sorted(event.fields), event.fields.get("prev"))
            )
    return lives


def test_corral_logs_the_same_job_events_as_bullmq(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """For the same job lives, corral writes to the events stream what BullMQ writes: the same
    events, in the same order per job, with the same fields and ``prev`` states (``drained``,
    which the two emit at slightly different moments, is left out)."""

    async def body(world: World) -> None:
        await world.node.run("producer", queue="by-node", jobs=LOG_JOBS)
        await world.node.run("worker", queue="by-node", count=LOG_ATTEMPTS, failAttempts=LOG_FAILS)

        queue = Queue("by-corral", world.backend)
        for job in LOG_JOBS:
            await queue.add(job["name"], job["data"], **job.get("opts", {}))
        attempts: list[str] = []

        async def processor(job: Job) -> int:
            if job.attempts_made < LOG_FAILS.get(job.name, 0):
                raise RuntimeError(f"attempt {job.attempts_made + 1} failed")
            return 1

        worker = Worker("by-corral", processor, world.backend, drain_delay=500)
        worker.on("completed", lambda job, result: attempts.append(job.id))
        worker.on("failed", lambda job, error: attempts.append(job.id))
        await world.run_worker(worker, lambda: len(attempts) == LOG_ATTEMPTS, "every attempt")

        by_node = _lives(await world.backend.get_events("by-node"))
        by_corral = _lives(await world.backend.get_events("by-corral"))
        assert by_corral == by_node
        assert [name for name, _, _ in by_node["4"]][-2:] == ["failed", "retries-exhausted"]
        assert ("waiting", ["jobId", "prev"], "active") in by_node["2"]  # the retry

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- (c) order


#: Added in this order; the worker must take them as listed in EXPECTED_ORDER: wait (FIFO)
#: before prioritized (lower first, FIFO per level), delayed jobs when due, earliest first.
ORDER_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("late", {"delay": 1600}),
    ("p3", {"priority": 3}),
    ("early", {"delay": 1000}),
    ("p1a", {"priority": 1}),
    ("plain", {}),
    ("p2", {"priority": 2}),
    ("p1b", {"priority": 1}),
    ("plain2", {}),
]
#: A job's processed_on is the time its worker read when it *sent* the fetch; a fetch sent just
#: before the queue was resumed runs after it, so an undelayed job's processed_on may be a
#: millisecond before its own timestamp (seen in CI). A delayed job's processed_on is still bound
#: by its due time: the fetch that takes it promotes it with that same timestamp.
EXPECTED_ORDER = ["plain", "plain2", "p1a", "p1b", "p2", "p3", "early", "late"]


def test_node_delayed_and_prioritized_jobs_keep_their_order_on_corral(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        # The worker waits on the paused queue, so that how long Node takes to start does not
        # eat into the delays.
        await world.queue.pause()
        order: list[str] = []

        async def processor(job: Job) -> str:
            order.append(job.name)
            return job.name

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
        task = asyncio.create_task(world.run_worker(worker, lambda: len(order) == 8, "every job"))
        ids = await world.node.add(
            [{"name": name, "data": name, "opts": opts} for name, opts in ORDER_JOBS]
        )
        await world.queue.resume()
        await task
        assert order == EXPECTED_ORDER
        for job_id, (name, opts) in zip(ids, ORDER_JOBS, strict=True):
            job = await world.job(job_id)
            assert job.name == name
            assert job.processed_on is not None
            if opts.get("delay", 0):
                assert job.processed_on >= job.timestamp + opts["delay"]

    run(body, redis_url, key_prefix, node)


def test_corral_delayed_and_prioritized_jobs_keep_their_order_on_node(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        # The Node worker starts on the paused queue, so that how long it takes to start does
        # not eat into the delays.
        await world.queue.pause()
        worker = await world.node.start("worker", count=len(ORDER_JOBS))
        await worker.wait_event("ready")
        added = [await world.queue.add(name, name, **opts) for name, opts in ORDER_JOBS]
        await world.queue.resume()
        await worker.finish()
        processing = [r["job"] for r in worker.events("processing")]
        assert [p["name"] for p in processing] == EXPECTED_ORDER
        for job in added:
            stored = await world.job(job.id)
            assert stored.processed_on is not None
            if job.opts.delay:
                assert stored.processed_on >= job.timestamp + job.opts.delay
            assert stored.return_value["name"] == job.name

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- (d) stalls

DEAD_TOKEN = "00000000-0000-4000-8000-000000000000:1"


async def stall_with_a_dead_corral_worker(world: World, name: str) -> str:
    """Add a job and take it as a corral worker that then dies: a 1 s lock, never renewed,
    never finished."""
    job = await world.queue.add(name, {"stalled": True})
    fetched = await world.backend.fetch_next(
        QUEUE, FetchRequest(DEAD_TOKEN, 1000, "dead-corral"), world.queue.clock.now_ms()
    )
    assert fetched.job is not None
    assert fetched.job.job_id == job.id
    return job.id


async def stall_with_a_killed_node_worker(world: World, name: str) -> str:
    """Add a job with Node and take it with a Node worker that is SIGKILLed mid-job."""
    (job_id,) = await world.node.add([{"name": name, "data": {"stalled": True}}])
    worker = await world.node.start("worker", hang=True, lockDuration=1000, stalledInterval=1000)
    await worker.wait_event("processing")
    await worker.kill()
    lock = await world.backend.get_lock(QUEUE, job_id)
    assert lock is not None, "the dead Node worker's lock should still be there"
    assert TOKEN.match(lock.token), lock.token
    assert await world.queue.get_job_state(job_id) == "active"
    return job_id


def test_job_of_a_dead_corral_worker_is_recovered_by_a_node_worker(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        job_id = await stall_with_a_dead_corral_worker(world, "stuck")
        worker = await world.node.run(
            "worker", count=1, lockDuration=2000, stalledInterval=1000, maxStalledCount=1
        )
        assert [r["id"] for r in worker.events("stalled")] == [job_id]
        (processing,) = [r["job"] for r in worker.events("processing")]
        assert (processing["stalledCounter"], processing["attemptsStarted"]) == (1, 2)
        assert processing["attemptsMade"] == 0  # stalls do not use attempts

        stored = await world.job(job_id)
        assert await world.queue.get_job_state(job_id) == "completed"
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (1, 2, 1)
        assert stored.return_value["by"] == "node"
        # The dead owner coming back to finish is refused (completion is exactly-once).
        late = await world.backend.finish(
            QUEUE, job_id, DEAD_TOKEN, Complete('"late"'), world.queue.clock.now_ms()
        )
        assert late is ResultCode.MISSING_LOCK
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_node_worker_killed_mid_job_is_recovered_by_a_corral_worker(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        job_id = await stall_with_a_killed_node_worker(world, "stuck")
        stalled: list[str] = []
        seen: list[tuple[int, int, int]] = []

        async def processor(job: Job) -> dict[str, str]:
            seen.append((job.stalled_counter, job.attempts_started, job.attempts_made))
            return {"by": "corral"}

        worker = Worker(
            QUEUE,
            processor,
            world.backend,
            lock_duration=2000,
            stalled_interval=1000,
            max_stalled_count=1,
            drain_delay=500,
        )
        worker.on("stalled", lambda job_id, prev: stalled.append(job_id))

        async def completed() -> bool:
            return await world.queue.get_job_state(job_id) == "completed"

        await world.run_worker(worker, completed, "the recovered job to complete")
        assert stalled == [job_id]
        assert seen == [(1, 2, 0)]
        stored = await world.job(job_id)
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (1, 2, 1)
        assert stored.return_value == {"by": "corral"}
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_node_checker_fails_a_job_over_the_stall_limit_lazily(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """BullMQ 6 over the limit: its checker sets ``defa`` and re-queues the job; the Node worker
    that takes it fails it (one more ``ats`` and ``atm``). corral reads the same failure."""

    async def body(world: World) -> None:
        job_id = await stall_with_a_dead_corral_worker(world, "doomed")
        worker = await world.node.run(
            "worker", count=1, lockDuration=2000, stalledInterval=1000, maxStalledCount=0
        )
        assert [r["id"] for r in worker.events("stalled")] == [job_id]
        assert [(r["id"], r["reason"]) for r in worker.events("failed")] == [
            (job_id, STALLED_LIMIT_REASON)
        ]
        assert worker.events("processing") == []  # failed on pickup, never processed

        assert await world.queue.get_job_state(job_id) == "failed"
        stored = await world.job(job_id)
        assert stored.failed_reason == STALLED_LIMIT_REASON
        assert stored.deferred_failure is None
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (1, 2, 1)
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_corral_worker_honours_the_deferred_failure_of_a_node_checker(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        job_id = await stall_with_a_dead_corral_worker(world, "doomed")
        checker = await world.node.run(
            "worker", checkerOnly=True, count=1, stalledInterval=1000, maxStalledCount=0
        )
        assert [r["id"] for r in checker.events("stalled")] == [job_id]
        assert await world.queue.get_job_state(job_id) == "waiting"
        marked = await world.job(job_id)
        assert marked.deferred_failure == STALLED_LIMIT_REASON
        assert marked.stalled_counter == 1

        processed: list[str] = []
        failed: list[tuple[str, str]] = []

        async def processor(job: Job) -> None:
            processed.append(job.id)

        worker = Worker(QUEUE, processor, world.backend, skip_stalled_check=True, drain_delay=500)
        worker.on("failed", lambda job, error: failed.append((job.id, str(error))))
        await world.run_worker(worker, lambda: bool(failed), "the deferred failure")
        assert processed == []
        assert failed == [(job_id, STALLED_LIMIT_REASON)]

        assert await world.queue.get_job_state(job_id) == "failed"
        stored = await world.job(job_id)
        assert stored.failed_reason == STALLED_LIMIT_REASON
        assert stored.deferred_failure is None
        # Exactly what a Node worker stores when it takes the job (previous test).
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (1, 2, 1)
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_corral_checker_fails_a_job_over_the_stall_limit_inline(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """corral's checker fails a job over the limit itself (documented deviation: no pickup,
    so ``ats``/``atm`` stay as they were); Node's QueueEvents and Node's reader agree."""

    async def body(world: World) -> None:
        listener = await world.node.start("events", until={"failed": 1})
        job_id = await stall_with_a_killed_node_worker(world, "doomed")
        failed: list[tuple[str, str]] = []

        async def processor(job: Job) -> None:
            raise AssertionError("a job over the stall limit must not run again")

        worker = Worker(
            QUEUE,
            processor,
            world.backend,
            lock_duration=2000,
            stalled_interval=1000,
            max_stalled_count=0,
            drain_delay=500,
        )
        worker.on("failed", lambda job, error: failed.append((job.id, str(error))))
        await world.run_worker(worker, lambda: bool(failed), "the stall failure")
        assert failed == [(job_id, STALLED_LIMIT_REASON)]

        await listener.finish()
        (event,) = listener.events("failed")
        assert (event["jobId"], event["failedReason"]) == (job_id, STALLED_LIMIT_REASON)
        stored = await world.job(job_id)
        assert await world.queue.get_job_state(job_id) == "failed"
        assert stored.failed_reason == STALLED_LIMIT_REASON
        assert stored.finished_on is not None
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (1, 1, 0)
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_corral_forced_close_hands_the_job_to_a_node_worker_without_a_stall(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """Documented deviation: a corral worker closed with force puts its running job back at
    the front of wait at once; a Node worker takes it up with no stall counted."""

    async def body(world: World) -> None:
        job = await world.queue.add("handed-back", {"n": 1})
        started = asyncio.Event()

        async def processor(job: Job) -> None:
            started.set()
            await asyncio.sleep(60)

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        await worker.close(force=True)
        await task
        assert await world.queue.get_job_state(job.id) == "waiting"

        node_worker = await world.node.run("worker", count=1, stalledInterval=60000)
        assert node_worker.events("stalled") == []
        stored = await world.job(job.id)
        assert await world.queue.get_job_state(job.id) == "completed"
        assert (stored.stalled_counter, stored.attempts_started, stored.attempts_made) == (0, 2, 1)
        assert stored.return_value["by"] == "node"

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- (e) retries


def _backoffs(events: list[StoredEvent]) -> list[int]:
    """For each ``delayed`` event: its due time minus the time Redis logged it (≈ the
    backoff, less the few ms between the client's clock read and the script)."""
    return [
        int(event.fields["delay"]) - int(event.id.split("-")[0])
        for event in events
        if event.name == "delayed"
    ]


def _assert_backoffs(measured: list[int], expected: list[int]) -> None:
    assert len(measured) == len(expected), measured
    for got, want in zip(measured, expected, strict=True):
        assert want - 150 <= got <= want, (measured, expected)


def test_retry_with_backoff_starts_on_node_and_ends_on_corral(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        backoff = {"type": "exponential", "delay": 300}
        (job_id,) = await world.node.add(
            [{"name": "flaky", "data": {"n": 1}, "opts": {"attempts": 3, "backoff": backoff}}]
        )
        node_worker = await world.node.run("worker", count=1, failAttempts=1)
        assert [r["reason"] for r in node_worker.events("failed")] == ["node attempt 1 failed"]
        assert await world.queue.get_job_state(job_id) == "delayed"
        after_node = await world.job(job_id)
        assert (after_node.attempts_made, after_node.delay) == (1, 300)

        seen: list[tuple[int, int]] = []

        async def processor(job: Job) -> dict[str, int]:
            assert job.processed_on is not None
            seen.append((job.attempts_made, job.processed_on))
            if job.attempts_made < 2:
                raise RuntimeError(f"corral attempt {job.attempts_made + 1} failed")
            return {"attempts_made": job.attempts_made}

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)

        async def completed() -> bool:
            return await world.queue.get_job_state(job_id) == "completed"

        await world.run_worker(worker, completed, "the third attempt")
        assert [made for made, _ in seen] == [1, 2]

        stored = await world.job(job_id)
        assert (stored.attempts_made, stored.attempts_started) == (3, 3)
        assert stored.return_value == {"attempts_made": 2}
        assert stored.failed_reason == "corral attempt 2 failed"
        assert len(stored.stacktrace) == 2
        assert "node attempt 1 failed" in stored.stacktrace[0]
        assert "corral attempt 2 failed" in stored.stacktrace[1]
        events = await world.backend.get_events(QUEUE)
        # Node waited 2^0 × 300 ms after attempt 1, corral 2^1 × 300 ms after attempt 2.
        _assert_backoffs(_backoffs(events), [300, 600])
        dues = [int(e.fields["delay"]) for e in events if e.name == "delayed"]
        assert all(start >= due for (_, start), due in zip(seen, dues, strict=True))
        assert [e.name for e in events if e.name in ("failed", "completed")] == ["completed"]
        _, views = await world.node.inspect([job_id])
        await world.assert_same_view(job_id, views[job_id])

    run(body, redis_url, key_prefix, node)


def test_retry_with_backoff_starts_on_corral_and_ends_on_node(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        job = await world.queue.add(
            "flaky", {"n": 2}, attempts=3, backoff={"type": "exponential", "delay": 300}
        )
        failed: list[str] = []

        async def processor(job: Job) -> None:
            raise RuntimeError("corral attempt 1 failed")

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)
        worker.on("failed", lambda job, error: failed.append(str(error)))
        await world.run_worker(worker, lambda: bool(failed), "the first failure")
        assert failed == ["corral attempt 1 failed"]
        assert await world.queue.get_job_state(job.id) == "delayed"

        node_worker = await world.node.run("worker", count=2, failAttempts=2)
        processing = [r["job"] for r in node_worker.events("processing")]
        assert [(p["attemptsMade"], p["attemptsStarted"]) for p in processing] == [(1, 2), (2, 3)]
        assert [r["reason"] for r in node_worker.events("failed")] == ["node attempt 2 failed"]

        stored = await world.job(job.id)
        assert await world.queue.get_job_state(job.id) == "completed"
        assert (stored.attempts_made, stored.attempts_started) == (3, 3)
        assert stored.return_value == {
            "by": "node",
            "name": "flaky",
            "echo": {"n": 2},
            "attemptsMade": 2,
        }
        assert len(stored.stacktrace) == 2
        assert "corral attempt 1 failed" in stored.stacktrace[0]
        assert "node attempt 2 failed" in stored.stacktrace[1]
        events = await world.backend.get_events(QUEUE)
        # corral waited 2^0 × 300 ms after attempt 1, Node 2^1 × 300 ms after attempt 2.
        _assert_backoffs(_backoffs(events), [300, 600])
        dues = [int(e.fields["delay"]) for e in events if e.name == "delayed"]
        starts = [p["processedOn"] for p in processing]
        assert all(start >= due for start, due in zip(starts, dues, strict=True))
        _, views = await world.node.inspect([job.id])
        await world.assert_same_view(job.id, views[job.id])

    run(body, redis_url, key_prefix, node)


# ---------------------------------------------------------------------- corral's QueueEvents


def test_corral_queue_events_hear_a_node_worker(redis_url: str, key_prefix: str, node: str) -> None:
    """corral's QueueEvents reads BullMQ's events stream, so it hears what a Node worker does:
    each job's added/waiting (written by corral), active/progress/completed (written by Node),
    once each and in order."""

    async def body(world: World) -> None:
        listener = QueueEvents(QUEUE, world.backend, block=200)
        heard: list[QueueEvent] = []

        async def listen() -> None:
            async for event in listener:
                heard.append(event)
                if sum(e.name == "completed" for e in heard) == 2:
                    return

        reading = asyncio.create_task(listen())
        await asyncio.sleep(0.1)  # the listener starts before the jobs exist
        jobs = [await world.queue.add("one", 1), await world.queue.add("two", 2)]
        worker = await world.node.start("worker", count=2, progress=7, name="node-worker")
        await worker.finish()
        await asyncio.wait_for(reading, 20)
        for job in jobs:
            life = [e for e in heard if e.job_id == job.id]
            assert [e.name for e in life] == ["added", "waiting", "active", "progress", "completed"]
            assert json.loads(life[-1].fields["returnvalue"])["echo"] == job.data
        assert len({e.id for e in heard}) == len(heard)

    run(body, redis_url, key_prefix, node)
