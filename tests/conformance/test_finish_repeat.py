"""Conformance: a finish whose reply was lost is sent again safely (issue 13, item 11).

The store applies a finish once per lock token and answers the same finish sent again as it
answered the first, the job that finish fetched included; the worker sends a finish again after
a connection error while its lock may still hold, so an outage shorter than ``lock_duration``
runs no job twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import QUEUE, Recorder, check_invariants, start_worker, stop_worker, wait_for

from corral.engine import Job, Queue
from corral.engine.errors import ResultCode
from corral.engine.storage import (
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    Outcome,
    RetryLater,
    RetryNow,
    Storage,
)
from corral.sim.loop import VirtualClock

Q = QUEUE
OUTCOMES = [Complete('"r"'), Fail("bad"), RetryLater(1_000, "again"), RetryNow("again")]


async def take(backend: Storage, now: int, token: str) -> Fetched:
    result = await backend.fetch_next(Q, FetchRequest(token, 30_000), now)
    assert result.job is not None
    return result.job


async def observed(backend: Storage, job_id: str) -> tuple[Any, ...]:
    counts = await backend.get_counts(Q)
    events = [(e.name, e.fields) for e in await backend.get_events(Q)]
    return await backend.get_job(Q, job_id), await backend.get_state(Q, job_id), counts, events


@pytest.mark.parametrize("outcome", OUTCOMES, ids=lambda o: type(o).__name__)
async def test_a_finish_sent_again_gets_the_first_answer_and_changes_nothing(
    backend: Storage, clock: VirtualClock, outcome: Outcome
) -> None:
    await Queue(Q, backend, clock=clock).add("a", attempts=3)
    now = clock.now_ms()
    await take(backend, now, "t1")
    assert await backend.finish(Q, "1", "t1", outcome, now) is ResultCode.OK
    before = await observed(backend, "1")
    assert await backend.finish(Q, "1", "t1", outcome, now + 5) is ResultCode.OK
    assert await observed(backend, "1") == before
    check_invariants(backend)


async def test_a_finish_sent_again_returns_the_job_the_first_one_fetched(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(Q, backend, clock=clock)
    await queue.add_bulk([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    now = clock.now_ms()
    await take(backend, now, "t1")
    request = FetchRequest(None, 30_000, "w", token_prefix="w:")
    first = await backend.finish(Q, "1", "t1", Complete("1"), now, request)
    assert isinstance(first, Fetched)
    # Sent again with a longer lock: the same job and token, its lock re-armed for that long,
    # and no other job taken.
    longer = FetchRequest(None, 60_000, "w", token_prefix="w:")
    again = await backend.finish(Q, "1", "t1", Complete("1"), now + 5, longer)
    assert isinstance(again, Fetched)
    assert (again.job_id, again.token, again.fields["ats"]) == (first.job_id, first.token, "1")
    lock = await backend.get_lock(Q, first.job_id)
    assert lock is not None
    assert lock.token == first.token
    assert lock.ttl_ms > 30_000
    counts = await backend.get_counts(Q)
    assert (counts["completed"], counts["active"], counts["waiting"]) == (1, 1, 1)
    # Once that job is finished by its owner, the repeat answers OK and fetches nothing.
    assert await backend.finish(Q, first.job_id, first.token, Complete("2"), now) is ResultCode.OK
    assert await backend.finish(Q, "1", "t1", Complete("1"), now, request) is ResultCode.OK
    assert (await backend.get_counts(Q))["waiting"] == 1
    check_invariants(backend)


async def test_a_repeat_with_another_outcome_or_token_is_refused_as_before(
    backend: Storage, clock: VirtualClock
) -> None:
    await Queue(Q, backend, clock=clock).add("a", attempts=3)
    now = clock.now_ms()
    await take(backend, now, "t1")
    assert await backend.finish(Q, "1", "t1", RetryNow("x"), now) is ResultCode.OK
    assert await backend.finish(Q, "1", "t1", Complete("1"), now) is ResultCode.MISSING_LOCK
    assert await backend.finish(Q, "1", "t2", RetryNow("x"), now) is ResultCode.MISSING_LOCK
    await take(backend, now, "t2")  # the retry runs under a new token
    assert await backend.finish(Q, "1", "t1", Complete("1"), now) is ResultCode.LOCK_MISMATCH
    assert await backend.finish(Q, "1", "t1", RetryNow("x"), now) is ResultCode.OK
    assert await backend.get_lock(Q, "1") is not None  # the new run's lock is untouched
    assert await backend.finish(Q, "1", "t2", Complete("1"), now) is ResultCode.OK
    assert await backend.get_state(Q, "1") == "completed"
    # Each attempt's finish keeps its own record: the later one overwrites nothing.
    assert await backend.finish(Q, "1", "t1", RetryNow("x"), now) is ResultCode.OK
    assert await backend.finish(Q, "1", "t2", Complete("1"), now) is ResultCode.OK
    check_invariants(backend)


class Outage:
    """Delegates to ``inner``; its ``finish`` fails with ConnectionError, as a client whose
    connection broke: the first ``lost_replies`` calls after applying (the reply is lost), and
    every call before ``down_until_ms`` without reaching the store."""

    def __init__(self, inner: Storage, clock: VirtualClock) -> None:
        self.inner, self.clock = inner, clock
        self.lost_replies = 0
        self.down_until_ms = 0
        self.finishes = 0
        self.sends: list[tuple[str, int]] = []  # (token, virtual ms) of every finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def finish(self, *args: Any, **kwargs: Any) -> Any:
        self.finishes += 1
        self.sends.append((args[2], self.clock.now_ms()))
        if self.clock.now_ms() < self.down_until_ms:
            raise ConnectionError("store unreachable")
        result = await self.inner.finish(*args, **kwargs)
        if self.lost_replies:
            self.lost_replies -= 1
            raise ConnectionError("reply lost")
        return result


async def run_two_jobs(
    backend: Storage, clock: VirtualClock, outage: Outage, work_s: float = 1.0
) -> tuple[dict[str, int], Recorder, Queue]:
    queue = Queue(Q, backend, clock=clock)
    runs: dict[str, int] = {}

    async def work(job: Job) -> str:
        runs[job.id] = runs.get(job.id, 0) + 1
        await asyncio.sleep(work_s)
        return "done"

    await queue.add_bulk([{"name": "a"}, {"name": "b"}])
    recorder = Recorder(clock)
    worker, task = await start_worker(
        outage,  # type: ignore[arg-type]
        work,
        clock,
        recorder=recorder,
        lock_duration=10_000,
        stalled_interval=5_000,
    )

    async def both_finished() -> bool:
        counts = await queue.get_job_counts()
        return counts["completed"] == 2 and counts["active"] == 0

    await wait_for(both_finished, timeout_s=120, what="both jobs to complete")
    await stop_worker(worker, task)
    return runs, recorder, queue


async def test_a_worker_whose_finish_reply_is_lost_sends_it_again(
    backend: Storage, clock: VirtualClock
) -> None:
    outage = Outage(backend, clock)
    outage.lost_replies = 1  # job 1's finish is applied (and fetches job 2), its reply lost
    runs, recorder, queue = await run_two_jobs(backend, clock, outage)
    assert runs == {"1": 1, "2": 1}
    assert [event.args[0].id for event in recorder.of("completed")] == ["1", "2"]
    assert [str(event.args[0]) for event in recorder.of("error")] == ["reply lost"]
    job2 = await queue.get_job("2")
    assert job2 is not None
    assert (job2.stalled_counter, job2.attempts_started) == (0, 1)  # not left to stall
    check_invariants(backend)


async def test_an_outage_shorter_than_the_lock_runs_no_job_twice(
    backend: Storage, clock: VirtualClock
) -> None:
    outage = Outage(backend, clock)
    # Down from before the first finish (t=1 s) until t=7 s, within lock_duration (10 s).
    outage.down_until_ms = clock.now_ms() + 7_000
    runs, recorder, _ = await run_two_jobs(backend, clock, outage)
    assert runs == {"1": 1, "2": 1}
    assert [event.args[0].id for event in recorder.of("completed")] == ["1", "2"]
    errors = recorder.of("error")
    assert errors
    assert all(str(event.args[0]) == "store unreachable" for event in errors)
    assert outage.finishes == len(errors) + 2
    check_invariants(backend)


@pytest.mark.virtual_ttl
async def test_a_worker_gives_up_a_finish_once_its_lock_has_lapsed(
    backend: Storage, clock: VirtualClock
) -> None:
    outage = Outage(backend, clock)
    outage.down_until_ms = clock.now_ms() + 15_000  # longer than lock_duration (10 s)
    start = clock.now_ms()
    runs, _, _ = await run_two_jobs(backend, clock, outage)
    # The job was recovered as stalled and ran again: at-least-once, as before.
    assert runs["1"] == 2
    first_token = outage.sends[0][0]
    sends = [at - start for token, at in outage.sends if token == first_token]
    assert len(sends) > 3
    assert max(sends) <= 10_000  # none after the lock lapsed (10 s after the fetch at 0)
    check_invariants(backend)
