"""corral.testing.drain on its own (the function behind the corral_drain fixture). The async
tests run on the suite's virtual-time loop (tests/conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from corral import MemoryBackend, Queue, UnrecoverableError
from corral.engine.errors import STALLED_LIMIT_REASON
from corral.engine.job import Job
from corral.engine.storage import FetchRequest
from corral.sim.loop import VirtualClock, current_clock, run_virtual
from corral.testing import DrainTimeoutError, drain


def make_queue(clock: VirtualClock) -> Queue:
    return Queue("q", MemoryBackend(clock=clock), clock=clock)


async def _jittered_run() -> list[int | None]:
    queue = make_queue(current_clock())
    for i in range(3):
        await queue.add(
            "flaky", i, attempts=4, backoff={"type": "exponential", "delay": 1000, "jitter": 1}
        )

    def always_fails(job: Job) -> None:
        raise RuntimeError(f"attempt {job.attempts_made + 1}")

    result = await drain(queue, always_fails, concurrency=2)
    assert [job.failed_reason for job in result.failed] == ["attempt 4"] * 3
    return [job.processed_on for job, _ in result.attempt_failures]


def test_jittered_backoff_is_the_same_on_every_run() -> None:
    first = run_virtual(_jittered_run())
    assert len(first) == 12
    assert len(set(first)) > 3  # the jitter did spread the retries
    assert run_virtual(_jittered_run()) == first


async def test_a_job_stalled_too_often_is_reported_failed(clock: VirtualClock) -> None:
    queue = make_queue(clock)
    job = await queue.add("doomed")
    taken = await queue.backend.fetch_next("q", FetchRequest("dead:1", 5_000), clock.now_ms())
    assert taken.job is not None

    result = await drain(queue, lambda job: "never", max_stalled_count=0, stalled_interval=5_000)

    assert result.completed == []
    assert [(j.id, j.failed_reason) for j in result.failed] == [(job.id, STALLED_LIMIT_REASON)]
    [(_, error)] = result.attempt_failures
    assert isinstance(error, UnrecoverableError)


async def test_a_stuck_processor_times_out_and_gives_its_job_back(clock: VirtualClock) -> None:
    queue = make_queue(clock)
    job = await queue.add("stuck")
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits_forever(job: Job) -> None:
        await never

    with pytest.raises(DrainTimeoutError, match=r"1 active.*processor waiting") as raised:
        await drain(queue, waits_forever, timeout=timedelta(minutes=10))
    assert "600 s" in str(raised.value)
    assert await queue.get_job_state(job.id) == "waiting"  # force-closed: handed back


async def test_worker_options_are_passed_on(clock: VirtualClock) -> None:
    queue = make_queue(clock)
    await queue.add_bulk([{"name": "sleepy", "data": i} for i in range(10)])
    running = 0
    most = 0

    async def sleepy(job: Job) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(60)
        running -= 1
        return int(job.data)

    result = await drain(queue, sleepy, concurrency=5)

    assert most == 5
    assert result.elapsed_ms == 2 * 60_000
    assert result.results == {job.id: job.data for job in await queue.get_jobs("completed")}


def test_drain_works_on_a_real_event_loop() -> None:
    async def main() -> list[str]:
        queue = Queue("q", MemoryBackend())
        await queue.add("quick", 1)
        return [job.id for job in (await drain(queue, lambda job: "ok")).completed]

    assert asyncio.run(main()) == ["1"]
