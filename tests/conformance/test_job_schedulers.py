"""Conformance: job schedulers (BullMQ's repeatable jobs) — upsert, replace, remove, readers,
iterations made on activation with BullMQ's ids, fields and times, limit, start/end dates,
and the refusals. Every backend; virtual time."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import QUEUE, check_invariants, elapsed_ms, start_worker, stop_worker, wait_for

from corral.engine import InvalidArgumentError, Job, JobSchedulerError, Queue
from corral.engine.errors import ResultCode
from corral.engine.storage import FetchRequest, SchedulerUpsert, Storage
from corral.sim.loop import VirtualClock


def opts_of(job: Job) -> dict[str, Any]:
    return json.loads(job._fields["opts"])


async def job_of(queue: Queue, job_id: str) -> Job:
    job = await queue.get_job(job_id)
    assert job is not None, f"no job {job_id}"
    return job


async def run_iterations(
    backend: Storage,
    clock: VirtualClock,
    queue: Queue,
    count: int,
    settle_s: float = 0.0,
    **repeat: Any,
) -> tuple[list[str], list[int]]:
    """Upsert scheduler ``s`` with ``repeat``, run a worker until ``count`` iterations have
    started, then ``settle_s`` virtual seconds more (for a schedule that must stop: any
    iteration too many shows), and return the started job ids and their start times.

    Raises:
        AssertionError: if fewer than ``count`` iterations started within 60 virtual s (the
            schedule stalled).
    """
    started: list[str] = []
    times: list[int] = []

    async def processor(job: Job) -> str:
        started.append(job.id)
        times.append(clock.now_ms())
        return "ok"

    await queue.upsert_job_scheduler("s", repeat, {"name": "tick", "data": {"a": 1}})
    worker, task = await start_worker(backend, processor, clock)
    try:
        await wait_for(
            lambda: len(started) >= count, timeout_s=60, what=f"{count} iterations to start"
        )
        await asyncio.sleep(settle_s)
    finally:
        await stop_worker(worker, task)
    check_invariants(backend)
    return started, times


async def test_every_scheduler_first_iteration_runs_now_anchored_to_creation(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    job_id = await queue.upsert_job_scheduler(
        "every-3s",
        {"every": 3000},
        {"name": "tick", "data": {"a": 1}, "opts": {"attempts": 2, "remove_on_complete": 5}},
    )
    assert job_id == f"repeat:every-3s:{now}"
    assert await queue.get_job_state(job_id) == "waiting"
    job = await job_of(queue, job_id)
    assert (job.name, job.data, job._fields["rjk"]) == ("tick", {"a": 1}, "every-3s")
    opts = opts_of(job)
    assert opts["repeat"] == {"every": 3000, "count": 1}
    assert (opts["repeatJobKey"], opts["jobId"], opts["delay"]) == ("every-3s", job_id, 0)
    assert (opts["attempts"], opts["removeOnComplete"]) == (2, 5)
    assert "prevMillis" not in opts
    scheduler = await queue.get_job_scheduler("every-3s")
    assert scheduler == {
        "key": "every-3s",
        "name": "tick",
        "next": now,
        "iteration_count": 1,
        "every": 3000,
        "offset": now % 3000,
        "template": {"data": {"a": 1}, "opts": {"attempts": 2, "removeOnComplete": 5}},
    }


async def test_iterations_are_made_on_activation_every_interval(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    t0 = clock.now_ms()
    started, times = await run_iterations(backend, clock, queue, 4, every=3000)
    assert started[:4] == [f"repeat:s:{t0 + k * 3000}" for k in range(4)]
    assert times[:4] == [t0 + k * 3000 for k in range(4)]
    for k, job_id in enumerate(started[:4]):
        job = await job_of(queue, job_id)
        assert opts_of(job)["repeat"]["count"] == k + 1
        assert job.timestamp <= t0 + k * 3000
    scheduler = await queue.get_job_scheduler("s")
    assert scheduler is not None
    # The fourth iteration's activation made the fifth, which waits for its slot.
    assert scheduler["iteration_count"] == len(started) + 1
    assert await queue.get_job_state(f"repeat:s:{scheduler['next']}") == "delayed"


async def test_limit_stops_the_schedule(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    started, _ = await run_iterations(backend, clock, queue, 3, 10, every=1000, limit=3)
    assert len(started) == 3
    counts = await queue.get_job_counts()
    assert counts["completed"] == 3
    assert counts["delayed"] == counts["waiting"] == 0


async def test_end_date_stops_the_schedule(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    t0 = clock.now_ms()
    _, times = await run_iterations(backend, clock, queue, 4, 10, every=1000, end_date=t0 + 2500)
    # Slots t0, t0+1000, t0+2000 start before the end date; the one at t0+3000 was still
    # made (its maker ran at t0+2000) but no later one: BullMQ checks the maker's time.
    assert times == [t0, t0 + 1000, t0 + 2000, t0 + 3000]


async def test_start_date_delays_the_first_iteration(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    start = clock.now_ms() + 10_000
    job_id = await queue.upsert_job_scheduler("s", {"every": 5000, "start_date": start})
    assert job_id == f"repeat:s:{start}"
    assert await queue.get_job_state(job_id) == "delayed"
    job = await job_of(queue, job_id)
    assert job.delay == 10_000
    assert opts_of(job)["repeat"]["startDate"] == start


async def test_upsert_replaces_the_pending_iteration_in_place(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    first = await queue.upsert_job_scheduler("s", {"every": 5000}, {"data": {"v": 1}})
    assert first is not None
    again = await queue.upsert_job_scheduler("s", {"every": 5000}, {"data": {"v": 2}})
    assert again == first
    assert (await job_of(queue, first)).data == {"v": 2}
    assert await queue.get_job_counts("waiting") == {"waiting": 1}
    assert await queue.get_job_schedulers_count() == 1
    # A new interval computes a new first slot: the old pending job is dropped.
    clock_before = clock.now_ms()
    changed = await queue.upsert_job_scheduler("s", {"every": 7000}, {"data": {"v": 3}})
    assert changed == f"repeat:s:{clock_before}"
    assert await queue.get_job_counts("waiting") == {"waiting": 1}
    check_invariants(backend)


async def test_remove_job_scheduler_drops_only_a_delayed_iteration(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    delayed = await queue.upsert_job_scheduler(
        "later", {"every": 1000, "start_date": clock.now_ms() + 60_000}
    )
    waiting = await queue.upsert_job_scheduler("now", {"every": 1000})
    assert delayed is not None
    assert waiting is not None
    assert await queue.remove_job_scheduler("later") is True
    assert await queue.get_job_state(delayed) == "unknown"
    assert await queue.remove_job_scheduler("now") is True
    assert await queue.get_job_state(waiting) == "waiting"  # still runs once (BullMQ 6)
    assert await queue.remove_job_scheduler("now") is False
    assert await queue.get_job_schedulers_count() == 0
    assert await queue.get_job_scheduler("now") is None
    # Its activation makes nothing once the scheduler is gone.
    assert await backend.update_job_scheduler(QUEUE, "now", waiting, None, "{}", 0) is None
    names = [e.name for e in await backend.get_events(QUEUE, None, 100)]
    assert names.count("removed") == 1
    check_invariants(backend)


async def test_an_iteration_cannot_be_removed_directly(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    job_id = await queue.upsert_job_scheduler("s", {"every": 1000})
    assert job_id is not None
    assert await backend.remove(QUEUE, job_id) is ResultCode.SCHEDULER_JOB
    with pytest.raises(JobSchedulerError, match=f"Job {job_id} belongs to a job scheduler"):
        await queue.remove(job_id)
    # Job.remove maps the result code as Queue.remove does (BullMQ's job.remove() throws -8).
    job = await job_of(queue, job_id)
    with pytest.raises(JobSchedulerError, match=f"Job {job_id} belongs to a job scheduler"):
        await job.remove()
    assert await queue.get_job_state(job_id) == "waiting"
    await queue.remove_job_scheduler("s")
    assert await job.remove() is True


async def test_the_producer_guard_makes_each_iteration_once(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    job_id = await queue.upsert_job_scheduler("s", {"every": 1000})
    assert job_id is not None
    fetched = (await backend.fetch_next(QUEUE, FetchRequest("t", 30_000), now)).job
    assert fetched is not None
    assert fetched.job_id == job_id
    opts = json.dumps({"repeat": {"every": 1000, "count": 2}, "repeatJobKey": "s"})
    assert await backend.update_job_scheduler(QUEUE, "s", "other", None, opts, now) is None
    made = await backend.update_job_scheduler(QUEUE, "s", job_id, None, opts, now)
    assert made == f"repeat:s:{now + 1000}"
    # The same activation reported again (a retried call, a second worker): nothing more.
    assert await backend.update_job_scheduler(QUEUE, "s", job_id, None, opts, now) is None
    assert await queue.get_job_counts("delayed") == {"delayed": 1}
    scheduler = await queue.get_job_scheduler("s")
    assert scheduler is not None
    assert scheduler["iteration_count"] == 2
    check_invariants(backend)


async def test_missed_slots_are_skipped(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    t0 = clock.now_ms()
    job_id = await queue.upsert_job_scheduler("s", {"every": 1000})
    assert job_id is not None
    late = t0 + 4500  # activated long after its slot
    await backend.fetch_next(QUEUE, FetchRequest("t", 30_000), late)
    opts = json.dumps({"repeat": {"every": 1000, "count": 2}, "repeatJobKey": "s"})
    made = await backend.update_job_scheduler(QUEUE, "s", job_id, None, opts, late)
    assert made == f"repeat:s:{t0 + 5000}"


async def test_get_job_schedulers_orders_by_next_slot(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    for name, start in (("b", 2000), ("a", 1000), ("c", 3000)):
        await queue.upsert_job_scheduler(name, {"every": 10_000, "start_date": now + start})
    assert [s["key"] for s in await queue.get_job_schedulers()] == ["c", "b", "a"]
    assert [s["key"] for s in await queue.get_job_schedulers(asc=True)] == ["a", "b", "c"]
    assert [s["key"] for s in await queue.get_job_schedulers(0, 0, asc=True)] == ["a"]
    assert await queue.get_job_schedulers_count() == 3


async def test_template_priority_puts_iterations_in_prioritized(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    job_id = await queue.upsert_job_scheduler("s", {"every": 1000}, {"opts": {"priority": 3}})
    assert job_id is not None
    assert await queue.get_job_state(job_id) == "prioritized"


@pytest.mark.parametrize(
    ("repeat", "template", "message"),
    [
        ({"every": 1, "pattern": "* * * * *"}, None, "Both .pattern and .every"),
        ({}, None, "Either .pattern or .every"),
        ({"pattern": "* * * * *", "immediately": True, "start_date": 1}, None, "Both .immediately"),
        ({"every": 0}, None, "Either .pattern or .every"),  # 0 is no interval, as in JS
        ({"every": 1000, "limit": -1}, None, "limit must be a whole number"),
        ({"pattern": "* * * * * * *"}, None, "too many fields"),
        ({"pattern": "0 * * * *", "tz": "Nowhere/City"}, None, "Nowhere/City"),
        ({"every": 1000, "evrey": 1}, None, "unknown repeat option 'evrey'"),
        ({"every": 1000}, {"opts": {"debounce": {"id": "x"}}}, "Debounce option has been removed"),
        ({"every": 1000}, {"opts": {"job_id": "x"}}, "must not set 'job_id'"),
        ({"every": 1000}, {"nmae": "x"}, "unknown template key 'nmae'"),
        ({"every": 1000}, {"opts": {"atempts": 2}}, "unknown job option 'atempts'"),
    ],
)
async def test_bad_options_are_refused_and_store_nothing(
    backend: Storage,
    clock: VirtualClock,
    repeat: dict[str, Any],
    template: dict[str, Any] | None,
    message: str,
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    await queue.upsert_job_scheduler("kept", {"every": 1000})
    with pytest.raises(InvalidArgumentError, match=message.replace(".", r"\.")):
        await queue.upsert_job_scheduler("s", repeat, template)
    assert await queue.get_job_schedulers_count() == 1
    assert await queue.get_job_counts("waiting") == {"waiting": 1}


async def test_an_end_date_in_the_past_is_refused(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    with pytest.raises(InvalidArgumentError, match="End date must be greater than current"):
        await queue.upsert_job_scheduler("s", {"every": 1000, "end_date": clock.now_ms() - 1})
    assert await queue.get_job_schedulers_count() == 0


async def test_the_legacy_repeat_option_is_refused(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    with pytest.raises(InvalidArgumentError, match="upsert_job_scheduler"):
        await queue.add("j", None, repeat={"every": 1000})  # type: ignore[call-arg]
    assert await queue.get_job_counts("waiting") == {"waiting": 0}


async def test_a_stalled_iteration_taken_again_makes_no_second_next(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    job_id = await queue.upsert_job_scheduler("s", {"every": 60_000})
    assert job_id is not None
    opts = json.dumps({"repeat": {"every": 60_000, "count": 2}, "repeatJobKey": "s"})
    await backend.fetch_next(QUEUE, FetchRequest("dead", 30_000), now)
    first = await backend.update_job_scheduler(QUEUE, "s", job_id, None, opts, now)
    await backend.release(QUEUE, job_id, "dead", now)  # back to wait, as after a stall
    await backend.fetch_next(QUEUE, FetchRequest("alive", 30_000), now + 10)
    again = await backend.update_job_scheduler(QUEUE, "s", job_id, None, opts, now + 10)
    assert first == f"repeat:s:{now + 60_000}"
    assert again is None
    assert elapsed_ms(clock) == 0


# ---------------------------------------------------------------------------- cron patterns


def next_ten_seconds(now: int) -> int:
    return (now // 10_000 + 1) * 10_000


async def test_pattern_scheduler_stores_bullmq_fields(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    slot = next_ten_seconds(now)
    job_id = await queue.upsert_job_scheduler(
        "cron1",
        {"pattern": "*/10 * * * * *", "tz": "Europe/Paris", "limit": 3},
        {"name": "c", "data": {"b": 2}},
    )
    assert job_id == f"repeat:cron1:{slot}"
    assert await queue.get_job_state(job_id) == "delayed"
    opts = opts_of(await job_of(queue, job_id))
    assert opts["prevMillis"] == slot
    assert opts["delay"] == slot - now
    assert opts["repeat"] == {
        "tz": "Europe/Paris",
        "pattern": "*/10 * * * * *",
        "count": 1,
        "limit": 3,
    }
    scheduler = await queue.get_job_scheduler("cron1")
    assert scheduler is not None
    assert (scheduler["pattern"], scheduler["tz"], scheduler["limit"]) == (
        "*/10 * * * * *",
        "Europe/Paris",
        3,
    )
    assert scheduler["next"] == slot
    assert "offset" not in scheduler


async def test_pattern_iterations_run_at_each_slot_up_to_the_limit(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    first = next_ten_seconds(clock.now_ms())
    started, times = await run_iterations(
        backend, clock, queue, 3, 40, pattern="*/10 * * * * *", tz="UTC", limit=3
    )
    assert started == [f"repeat:s:{first + k * 10_000}" for k in range(3)]
    assert times == [first + k * 10_000 for k in range(3)]
    for k, job_id in enumerate(started):
        opts = opts_of(await job_of(queue, job_id))
        assert (opts["repeat"]["count"], opts["prevMillis"]) == (k + 1, first + k * 10_000)


async def test_pattern_immediately_runs_the_first_iteration_now(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    job_id = await queue.upsert_job_scheduler(
        "s", {"pattern": "0 0 1 1 *", "tz": "UTC", "immediately": True}
    )
    assert job_id == f"repeat:s:{now}"
    assert await queue.get_job_state(job_id) == "waiting"
    assert "immediately" not in opts_of(await job_of(queue, job_id))["repeat"]


async def test_a_taken_pattern_slot_is_refused(backend: Storage, clock: VirtualClock) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    now = clock.now_ms()
    job_id = await queue.upsert_job_scheduler("s", {"pattern": "*/10 * * * * *", "tz": "UTC"})
    assert job_id is not None
    slot = next_ten_seconds(now)
    fetched = (await backend.fetch_next(QUEUE, FetchRequest("t", 60_000), slot)).job
    assert fetched is not None
    assert fetched.job_id == job_id
    opts = json.dumps({"repeat": {"pattern": "*/10 * * * * *", "count": 2}, "prevMillis": slot})
    made = await backend.update_job_scheduler(QUEUE, "s", job_id, slot + 10_000, opts, slot)
    assert made == f"repeat:s:{slot + 10_000}"
    assert await queue.remove_job_scheduler("s") is True  # drops the delayed one only
    # Upserting again for the slot still held by the active job is refused (BullMQ's -10).
    upsert = SchedulerUpsert(
        "s", {"name": "s", "pattern": "*/10 * * * * *"}, "{}", "{}", "{}", slot
    )
    assert await backend.upsert_job_scheduler(QUEUE, upsert, slot) is (
        ResultCode.SCHEDULER_SLOT_TAKEN
    )
    assert await queue.get_job_schedulers_count() == 0
    check_invariants(backend)


async def _stall(backend: Storage, clock: VirtualClock, token: str) -> tuple[list[str], list[str]]:
    """Take the next job under ``token`` with a 1 s lock, let it lapse, and run the two checks
    that recover it; return (recovered, failed) of the second check."""
    await backend.fetch_next(QUEUE, FetchRequest(token, 1000), clock.now_ms())
    await asyncio.sleep(0.01)  # past the last check's throttle
    await backend.check_stalled(QUEUE, max_stalled_count=0, stalled_interval=1, now=clock.now_ms())
    await asyncio.sleep(2)
    check = await backend.check_stalled(
        QUEUE, max_stalled_count=0, stalled_interval=1, now=clock.now_ms()
    )
    return check.recovered, check.failed


@pytest.mark.virtual_ttl
async def test_an_iteration_is_not_failed_for_stalling_while_its_scheduler_lives(
    backend: Storage, clock: VirtualClock
) -> None:
    queue = Queue(QUEUE, backend, clock=clock)
    job_id = await queue.upsert_job_scheduler("s", {"every": 600_000})
    assert await _stall(backend, clock, "a") == ([job_id], [])  # stc 1 > 0, but exempt
    assert await queue.remove_job_scheduler("s") is True  # (the waiting iteration stays)
    assert await _stall(backend, clock, "b") == ([], [job_id])
    assert await queue.get_job_state(job_id) == "failed"
    check_invariants(backend)


async def test_manual_fetching_makes_the_next_iteration(
    backend: Storage, clock: VirtualClock
) -> None:
    """§1.6/§5.10: ``get_next_job`` activates like the worker's own fetch, so it makes the next
    iteration too (as does a finish that fetches the next job)."""
    from corral.engine import Worker

    queue = Queue(QUEUE, backend, clock=clock)
    t0 = clock.now_ms()
    first = await queue.upsert_job_scheduler("s", {"every": 1000}, {"name": "tick"})
    worker = Worker(QUEUE, None, backend, clock=clock)
    job = await worker.get_next_job("tok-1")
    assert job is not None
    assert job.id == first
    second = f"repeat:s:{t0 + 1000}"
    assert await queue.get_job_state(second) == "delayed"
    await asyncio.sleep(1)
    # The finish takes the next iteration under the same token: the one after it is made.
    nxt = await job.move_to_completed("ok", "tok-1", fetch_next=True)
    assert nxt is not None
    assert nxt.id == second
    assert await queue.get_job_state(f"repeat:s:{t0 + 2000}") == "delayed"
    await nxt.move_to_completed("ok", "tok-1")
    await asyncio.sleep(1)
    third = await worker.get_next_job("tok-2", block=False)
    assert third is not None
    assert third.id == f"repeat:s:{t0 + 2000}"
    scheduler = await queue.get_job_scheduler("s")
    assert scheduler is not None
    assert scheduler["iteration_count"] == 4
    await worker.close()
    check_invariants(backend)
