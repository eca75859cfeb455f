"""The bull-board recipe of docs/operating.md, run over corral's queues.

``node/board.mjs`` is the recipe, verbatim (tests/cli/test_operating_guide.py checks the
guide's copy against it). Each test
starts it on a free port over a queue that corral filled, and asks the board the questions its
UI asks, through the same JSON endpoints: the counts per state, the jobs of one state, retrying
a failed job, the workers. What the board shows must be what corral stored, and what the board
does must be visible to corral.
"""

from __future__ import annotations

from typing import Any

import pytest
from interop_world import QUEUE, World, finish_by_corral, run
from node_bullmq import http, poll

from corral.engine import Job, Worker

pytestmark = [pytest.mark.redis, pytest.mark.interop]

#: The corral states and the names the board (BullMQ's getJobCounts) gives them.
STATES = ("waiting", "prioritized", "delayed", "active", "completed", "failed")


async def _board_queue(board: str, **query: str) -> dict[str, Any]:
    """The board's entry for QUEUE from ``GET /api/queues`` (what the UI polls)."""
    params = "&".join(f"{key}={value}" for key, value in query.items())
    status, body = await http("GET", f"{board}/api/queues?{params}")
    assert status == 200, body
    (entry,) = [q for q in body["queues"] if q["name"] == QUEUE]
    return dict(entry)


async def _fill(world: World) -> dict[str, Job]:
    """One job in each state but active: ``ok`` completed and ``bad`` failed by a corral
    worker, then ``queued`` waiting, ``urgent`` prioritized and ``later`` delayed."""
    jobs = await finish_by_corral(world, "ok", "bad")
    jobs["queued"] = await world.queue.add("queued", {"n": 3})
    jobs["urgent"] = await world.queue.add("urgent", {"n": 4}, priority=3)
    jobs["later"] = await world.queue.add("later", {"n": 5}, delay=600_000)
    return jobs


def test_bull_board_shows_corral_counts_and_retries_a_failed_corral_job(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        jobs = await _fill(world)
        _, board = await world.node.board([QUEUE])

        shown = await _board_queue(board)
        counts = await world.queue.get_job_counts(*STATES)
        assert counts == dict.fromkeys(STATES, 1) | {"active": 0}
        assert {state: shown["counts"][state] for state in STATES} == counts
        assert shown["isPaused"] is False

        failed = await _board_queue(board, activeQueue=QUEUE, status="failed")
        (row,) = failed["jobs"]
        assert (row["id"], row["name"], row["data"]) == (jobs["bad"].id, "bad", {"name": "bad"})
        assert row["failedReason"] == "bad failed"
        assert "bad failed" in row["stacktrace"][0]

        # The board's "Retry" button on the failed job.
        status, _ = await http("PUT", f"{board}/api/queues/{QUEUE}/{jobs['bad'].id}/retry")
        assert status == 204
        assert await world.queue.get_job_state(jobs["bad"].id) == "waiting"
        retried = await world.job(jobs["bad"].id)
        assert (retried.failed_reason, retried.finished_on) == (None, None)
        events = await world.backend.get_events(QUEUE)
        assert [
            (e.name, e.fields.get("prev")) for e in events if e.fields.get("jobId") == retried.id
        ][-1] == ("waiting", "failed")

        # A corral worker takes the retried job like any waiting job; the board sees it done.
        ran: list[str] = []

        async def processor(job: Job) -> str:
            ran.append(job.name)
            return "done"

        worker = Worker(QUEUE, processor, world.backend, drain_delay=500)

        async def settled() -> bool:
            return (await world.queue.get_job_counts())["completed"] == 4

        await world.run_worker(worker, settled, "the retried job to complete")
        assert sorted(ran) == ["bad", "queued", "urgent"]
        shown = await _board_queue(board)
        assert {state: shown["counts"][state] for state in STATES} == dict.fromkeys(STATES, 0) | {
            "completed": 4,
            "delayed": 1,
        }

    run(body, redis_url, key_prefix, node)


def test_bull_board_refuses_to_retry_a_job_that_is_not_finished(
    redis_url: str, key_prefix: str, node: str
) -> None:
    async def body(world: World) -> None:
        jobs = await _fill(world)
        _, board = await world.node.board([QUEUE])
        status, reply = await http("PUT", f"{board}/api/queues/{QUEUE}/{jobs['queued'].id}/retry")
        assert status == 400, reply
        assert await world.queue.get_job_state(jobs["queued"].id) == "waiting"
        assert (await world.queue.get_job_counts())["waiting"] == 1

    run(body, redis_url, key_prefix, node)


def test_bull_board_lists_a_running_corral_worker(
    redis_url: str, key_prefix: str, node: str
) -> None:
    """BullMQ finds workers by their Redis connection names; corral names a worker's
    connections as BullMQ does, so the board's worker panel lists it under its name."""

    async def body(world: World) -> None:
        _, board = await world.node.board([QUEUE])
        status, reply = await http("GET", f"{board}/api/queues/{QUEUE}/workers")
        assert (status, reply) == (200, {"workers": []})

        async def processor(job: Job) -> None:
            return None

        worker = Worker(QUEUE, processor, world.backend, name="mailer-1", drain_delay=500)
        listed: list[dict[str, Any]] = []

        async def seen() -> bool:
            status, reply = await http("GET", f"{board}/api/queues/{QUEUE}/workers")
            listed[:] = reply["workers"] if status == 200 else []
            return bool(listed)

        await world.run_worker(worker, seen, "the board to list the corral worker")
        # The board shows the part of the connection name after ":w:", and where it is.
        assert [w["name"] for w in listed] == ["mailer-1"]
        assert all(w["addr"] and w["id"] for w in listed)

        async def gone() -> bool:
            status, reply = await http("GET", f"{board}/api/queues/{QUEUE}/workers")
            return status == 200 and reply["workers"] == []

        await poll(gone, 10, "the closed worker to leave the board's list")

    run(body, redis_url, key_prefix, node)
