"""Conformance: the Queue (producer/admin) API — add, ids, delays, priorities, listing, pause,
removal, retention, progress, the event log and stalled checks. Storage protocol only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import QUEUE, Recorder, check_invariants, start_worker, stop_worker, wait_for

from corral.engine import CorralError, InvalidArgumentError, Job, Queue
from corral.engine.errors import ResultCode
from corral.engine.storage import Complete, Fail, Fetched, FetchRequest, Storage
from corral.sim.loop import VirtualClock

Q = QUEUE
STATES = ["waiting", "prioritized", "delayed", "active", "completed", "failed"]
#: Every state counts report (flows add waiting-children, issue 16).
COUNTED = [*STATES, "waiting-children"]

# ---------------------------------------------------------------------------- helpers


async def take(backend: Storage, now: int, token: str = "tok", lock_ms: int = 30_000) -> Fetched:
    """Fetch the next job of queue ``Q`` through the storage API; fail if there is none."""
    result = await backend.fetch_next(Q, FetchRequest(token, lock_ms), now)
    assert result.job is not None, f"nothing to fetch at {now} (next due {result.next_due_ms})"
    return result.job


async def take_with(backend: Storage, request: FetchRequest, now: int) -> Fetched:
    """Fetch the next job of queue ``Q`` with ``request``; fail if there is none."""
    result = await backend.fetch_next(Q, request, now)
    assert result.job is not None, f"nothing to fetch at {now}"
    return result.job


async def fetch_order(backend: Storage, now: int) -> list[str]:
    """Fetch until nothing is ready; return the ids in the order they were taken."""
    taken = []
    for n in range(1000):
        result = await backend.fetch_next(Q, FetchRequest(f"t{n}", 30_000), now)
        if result.job is None:
            return taken
        taken.append(result.job.job_id)
    raise AssertionError("fetch_next never ran dry")


async def counts(queue: Queue) -> dict[str, int]:
    return {k: v for k, v in (await queue.get_job_counts()).items() if v}


async def completed_at_least(queue: Queue, n: int) -> bool:
    return (await queue.get_job_counts("completed"))["completed"] >= n


async def process_all(
    queue: Queue, processor: Callable[[Job], Awaitable[Any]], **worker_kwargs: Any
) -> list[str]:
    """Run a worker until no job is waiting, prioritized, delayed or active; return the ids
    in the order the (async) processor saw them."""
    seen: list[str] = []

    async def recording(job: Job) -> Any:
        seen.append(job.id)
        return await processor(job)

    assert isinstance(queue.clock, VirtualClock)
    worker, task = await start_worker(queue.backend, recording, queue.clock, **worker_kwargs)

    async def idle() -> bool:
        c = await queue.get_job_counts("waiting", "prioritized", "delayed", "active")
        return not any(c.values())

    await wait_for(idle, timeout_s=600, what="an idle queue")
    await stop_worker(worker, task)
    return seen


async def ok(job: Job) -> str:
    await asyncio.sleep(1)
    return f"done {job.id}"


async def boom(job: Job) -> None:
    await asyncio.sleep(1)
    raise RuntimeError(f"boom {job.id}")


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


# ---------------------------------------------------------------------------- add / get


async def test_add_generates_ids_and_fields(queue: Queue, clock: VirtualClock) -> None:
    await asyncio.sleep(5)
    first = await queue.add("email", {"to": "a", "tags": ["x", "é✓"], "n": None, "f": 1.5})
    await asyncio.sleep(1)
    second = await queue.add("sms", [1, 2])
    assert (first.id, second.id) == ("1", "2")
    assert second.timestamp == clock.now_ms() == first.timestamp + 1000
    assert first.name == "email"
    assert first.data == {"to": "a", "tags": ["x", "é✓"], "n": None, "f": 1.5}
    counters = (first.attempts_made, first.attempts_started, first.stalled_counter)
    assert (*counters, first.priority, first.delay, first.progress) == (0, 0, 0, 0, 0, 0)
    unset = (first.processed_on, first.finished_on, first.return_value, first.failed_reason)
    assert unset == (None, None, None, None)
    assert (first.stacktrace, first.opts.attempts) == ([], 1)
    stored = await queue.get_job("1")
    assert stored is not None
    assert (stored.name, stored.data, stored.timestamp) == (first.name, first.data, first.timestamp)
    assert (await queue.get_job("2")).data == [1, 2]  # type: ignore[union-attr]
    assert await queue.get_job("3") is None
    assert await queue.get_job_state("3") == "unknown"
    check_invariants(queue.backend)


async def test_get_job_state_for_every_state(queue: Queue, backend: Storage) -> None:
    now = queue.clock.now_ms()
    for name in ("to-complete", "to-fail", "active"):
        await queue.add(name)
    assert [(await take(backend, now, f"t{i}")).job_id for i in range(3)] == ["1", "2", "3"]
    assert await backend.finish(Q, "1", "t0", Complete("1"), now) is ResultCode.OK
    assert await backend.finish(Q, "2", "t1", Fail("bad"), now) is ResultCode.OK
    await queue.add("waits")
    await queue.add("prio", priority=3)
    await queue.add("later", delay=1000)
    expected = ["completed", "failed", "active", "waiting", "prioritized", "delayed", "unknown"]
    assert [await queue.get_job_state(str(i)) for i in range(1, 8)] == expected
    assert await queue.get_job_counts() == {**dict.fromkeys(STATES, 1), "waiting-children": 0}
    check_invariants(backend)


async def test_a_fetch_without_a_token_gets_one_the_store_mints(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    for name in ("a", "b", "c"):
        await queue.add(name)
    request = FetchRequest(None, 30_000, token_prefix="w7:")
    first = await take_with(backend, request, now)
    # A finish that fetches mints the next job's token too.
    second = await backend.finish(Q, first.job_id, first.token, Complete("1"), now, request)
    assert isinstance(second, Fetched)  # in place of OK
    third = await take_with(backend, request, now)
    tokens = [first.token, second.token, third.token]
    assert len(set(tokens)) == 3
    assert all(token.startswith("w7:") for token in tokens)
    for fetched in (second, third):
        lock = await backend.get_lock(Q, fetched.job_id)
        assert lock is not None
        assert lock.token == fetched.token
    for prefix in ("", "w7"):  # without the ":", "w7" + "11" would meet "w71" + "1"
        with pytest.raises(InvalidArgumentError, match="token_prefix ending in ':'"):
            FetchRequest(None, 30_000, token_prefix=prefix)


async def test_custom_job_id_duplicate_returns_existing(queue: Queue, backend: Storage) -> None:
    first = await queue.add("orig", {"v": 1}, job_id="custom")
    before = await queue.get_job_counts()
    again = await queue.add("other", {"v": 2}, job_id="custom", priority=5, delay=100)
    assert again.id == first.id == "custom"
    assert (again.name, again.data, again.priority, again.delay) == ("orig", {"v": 1}, 0, 0)
    assert again.timestamp == first.timestamp
    assert await queue.get_job_counts() == before == {**dict.fromkeys(COUNTED, 0), "waiting": 1}
    assert (await queue.get_job("custom")).data == {"v": 1}  # type: ignore[union-attr]
    # BullMQ INCRs the id counter on every add, custom id or not: ids 1 and 2 are used up.
    assert (await queue.add("generated")).id == "3"
    names = [e.name for e in await backend.get_events(Q) if e.fields.get("jobId") == "custom"]
    assert names == ["added", "waiting", "duplicated"]
    check_invariants(backend)


# ---------------------------------------------------------------------------- add_bulk


async def test_add_bulk_preserves_order(queue: Queue, backend: Storage) -> None:
    jobs = await queue.add_bulk([{"name": f"j{i}", "data": {"i": i}} for i in range(5)])
    assert [(j.id, j.name, j.data) for j in jobs] == [
        (str(i + 1), f"j{i}", {"i": i}) for i in range(5)
    ]
    assert all(j.timestamp == queue.clock.now_ms() for j in jobs)
    assert await fetch_order(backend, queue.clock.now_ms()) == ["1", "2", "3", "4", "5"]
    check_invariants(backend)


# Atomic validation of add_bulk (one bad entry: nothing stored, the error names the entry) is
# covered case by case in test_bad_input.py.


async def test_add_bulk_mixed_delayed_and_prioritized(queue: Queue, backend: Storage) -> None:
    opts: list[dict[str, int]] = [{}, {"priority": 2}, {"delay": 500}, {"priority": 1}]
    jobs = await queue.add_bulk([{"name": n, "opts": o} for n, o in zip("abcd", opts, strict=True)])
    assert [j.id for j in jobs] == ["1", "2", "3", "4"]
    states = [await queue.get_job_state(j.id) for j in jobs]
    assert states == ["waiting", "prioritized", "delayed", "prioritized"]
    assert await counts(queue) == {"waiting": 1, "prioritized": 2, "delayed": 1}
    now = queue.clock.now_ms()
    assert await fetch_order(backend, now) == ["1", "4", "2"]
    assert await fetch_order(backend, now + 500) == ["3"]
    check_invariants(backend)


# ---------------------------------------------------------------------------- delayed


async def test_delayed_job_not_fetched_before_due(queue: Queue, backend: Storage) -> None:
    job = await queue.add("later", {"x": 1}, delay=1000)
    due = job.timestamp + 1000
    assert (job.delay, await queue.get_job_state("1")) == (1000, "delayed")
    assert await counts(queue) == {"delayed": 1}
    early = await backend.fetch_next(Q, FetchRequest("t", 30_000), due - 1)
    assert (early.job, early.next_due_ms) == (None, due)
    assert await queue.get_job_state("1") == "delayed"
    fetched = await take(backend, due)
    assert fetched.job_id == "1"
    assert (fetched.fields["delay"], fetched.fields["processedOn"]) == ("0", str(due))
    assert await counts(queue) == {"active": 1}
    check_invariants(backend)


async def test_delayed_job_runs_on_time_with_worker(queue: Queue, clock: VirtualClock) -> None:
    job = await queue.add("later", delay=2500)
    started: list[int] = []

    async def proc(j: Job) -> None:
        started.append(clock.now_ms())

    await process_all(queue, proc)
    due = job.timestamp + 2500
    assert len(started) == 1
    assert due <= started[0] <= due + 5
    stored = await queue.get_job("1")
    assert stored is not None
    assert stored.processed_on == started[0]
    check_invariants(queue.backend)


async def test_delayed_fifo_within_same_due_ms(queue: Queue, backend: Storage) -> None:
    for i in range(4):
        await queue.add(f"d{i}", delay=100)
    await queue.add("sooner", delay=50)
    await queue.add("much-later", delay=10_000)
    now = queue.clock.now_ms()
    assert await fetch_order(backend, now + 49) == []
    assert await fetch_order(backend, now + 100) == ["5", "1", "2", "3", "4"]
    assert await counts(queue) == {"active": 5, "delayed": 1}
    check_invariants(backend)


async def test_delayed_job_with_priority_promotes_to_prioritized(
    queue: Queue, backend: Storage
) -> None:
    await queue.add("urgent", priority=1)
    delayed = await queue.add("later", delay=100, priority=7)
    assert delayed.priority == 7
    assert await queue.get_job_state("2") == "delayed"
    assert (await take(backend, delayed.timestamp + 100)).job_id == "1"
    assert await queue.get_job_state("2") == "prioritized"
    stored = await queue.get_job("2")
    assert stored is not None
    assert (stored.priority, stored.delay) == (7, 0)
    check_invariants(backend)


# ---------------------------------------------------------------------------- priorities


@pytest.mark.parametrize(
    ("adds", "expected"),
    [
        pytest.param([{"priority": 1}, {}], ["2", "1"], id="wait-before-prioritized"),
        pytest.param(
            [{"priority": p} for p in (5, 1, 5, 1, 2)], ["2", "4", "5", "1", "3"], id="low-first"
        ),
        pytest.param([{}, {}, {"lifo": True}, {}], ["3", "1", "2", "4"], id="lifo-front"),
        pytest.param([{"priority": 2**21 - 1}, {"priority": 2**21 - 2}], ["2", "1"], id="max"),
    ],
)
async def test_priority_order(
    queue: Queue, backend: Storage, adds: list[dict[str, Any]], expected: list[str]
) -> None:
    for i, opts in enumerate(adds):
        await queue.add(f"j{i}", **opts)
    assert await fetch_order(backend, queue.clock.now_ms()) == expected
    check_invariants(backend)


async def test_worker_serves_priorities_in_order(queue: Queue) -> None:
    await queue.add("p3", priority=3)
    await queue.add("p1", priority=1)
    await queue.add("w")
    await queue.add("p1b", priority=1)
    assert await process_all(queue, ok) == ["3", "2", "4", "1"]
    assert await counts(queue) == {"completed": 4}
    check_invariants(queue.backend)


# ---------------------------------------------------------------------------- listing


async def test_get_jobs_ranges_and_order(queue: Queue, backend: Storage) -> None:
    for i in range(5):
        await queue.add(f"w{i}")
    await queue.add("d", delay=1000)

    async def ids(*args: Any, **kwargs: Any) -> list[str]:
        return [j.id for j in await queue.get_jobs(*args, **kwargs)]

    assert await ids("waiting") == ["5", "4", "3", "2", "1"]
    assert await ids("waiting", asc=True) == ["1", "2", "3", "4", "5"]
    assert await ids("waiting", 0, 1) == ["5", "4"]
    assert await ids("waiting", 1, 2, asc=True) == ["2", "3"]
    assert await ids("waiting", -2) == ["2", "1"]
    assert await ids(["delayed", "waiting"], 0, 0) == ["6", "5"]
    assert sorted(await ids()) == ["1", "2", "3", "4", "5", "6"]
    now = queue.clock.now_ms()
    for i, token in enumerate(["a", "b", "c"]):  # finish 1, 2, 3 at increasing times
        await take(backend, now, token)
        await backend.finish(Q, str(i + 1), token, Complete("null"), now + i)
    assert await ids("completed") == ["3", "2", "1"]
    assert await ids("completed", 0, 0, asc=True) == ["1"]
    assert await ids("active") == []
    check_invariants(backend)


async def test_get_job_counts_subsets(queue: Queue) -> None:
    await queue.add("a")
    await queue.add("b", priority=2)
    await queue.add("c", delay=10)
    expected = dict.fromkeys(COUNTED, 0) | {"waiting": 1, "prioritized": 1, "delayed": 1}
    assert await queue.get_job_counts() == expected
    assert await queue.get_job_counts("waiting", "failed") == {"waiting": 1, "failed": 0}
    assert list(await queue.get_job_counts("delayed")) == ["delayed"]


@pytest.mark.parametrize("call", ["counts", "jobs", "jobs-list"])
async def test_unknown_state_name_is_rejected(queue: Queue, call: str) -> None:
    calls = {
        "counts": lambda: queue.get_job_counts("waiting", "wating"),
        "jobs": lambda: queue.get_jobs("wating"),
        "jobs-list": lambda: queue.get_jobs(["waiting", "wating"]),
    }
    with pytest.raises(InvalidArgumentError, match=r"'wating'.*expected one of"):
        await calls[call]()


# ---------------------------------------------------------------------------- pause


async def test_pause_and_resume(queue: Queue, backend: Storage, clock: VirtualClock) -> None:
    assert not await queue.is_paused()
    await queue.pause()
    await queue.pause()
    assert await queue.is_paused()
    seen: list[str] = []

    async def proc(job: Job) -> None:
        seen.append(job.id)

    worker, task = await start_worker(backend, proc, clock)
    await asyncio.sleep(1)
    await queue.add("a")
    await queue.add("b", priority=1)
    await asyncio.sleep(60)
    assert seen == []
    assert await counts(queue) == {"waiting": 1, "prioritized": 1}
    assert (await backend.fetch_next(Q, FetchRequest("x", 1000), clock.now_ms())).job is None
    await queue.resume()
    assert not await queue.is_paused()
    # Resuming wakes the blocked worker at once (drain_delay is 5 s).
    await wait_for(lambda: completed_at_least(queue, 2), timeout_s=0.05, what="2 completions")
    assert seen == ["1", "2"]
    await stop_worker(worker, task)
    check_invariants(backend)


# ---------------------------------------------------------------------------- remove


async def test_remove_jobs_in_each_unlocked_state(queue: Queue, backend: Storage) -> None:
    now = queue.clock.now_ms()
    await queue.add("done")
    await take(backend, now, "t")
    await backend.finish(Q, "1", "t", Complete("1"), now)
    await queue.add("fails")
    await take(backend, now, "u")
    await backend.finish(Q, "2", "u", Fail("x"), now)
    await queue.add("w1")
    await queue.add("w2")
    await queue.add("w3")
    await queue.add("p", priority=4)
    await queue.add("d", delay=100)
    for job_id in ["1", "2", "4", "6", "7"]:
        assert await queue.remove(job_id) is True
        assert await queue.get_job_state(job_id) == "unknown"
        assert await queue.get_job(job_id) is None
    assert await queue.remove("4") is False
    assert await queue.remove("nope") is False
    assert await counts(queue) == {"waiting": 2}
    assert await fetch_order(backend, now + 1000) == ["3", "5"]
    removed = [e.fields["jobId"] for e in await backend.get_events(Q) if e.name == "removed"]
    assert removed == ["1", "2", "4", "6", "7"]
    check_invariants(backend)


async def test_remove_locked_active_job_is_refused(queue: Queue, backend: Storage) -> None:
    await queue.add("busy")
    await take(backend, queue.clock.now_ms(), "tok", lock_ms=5000)
    with pytest.raises(CorralError) as info:
        await queue.remove("1")
    assert str(info.value) == "Job 1 could not be removed because it is locked by another worker"
    assert not isinstance(info.value, InvalidArgumentError)
    assert await queue.get_job_state("1") == "active"
    await asyncio.sleep(5.001)  # the lock expires: removal is allowed (BullMQ: "without a lock")
    assert await queue.remove("1") is True
    assert await counts(queue) == {}
    check_invariants(backend)


# ---------------------------------------------------------------------------- retention


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        (True, []),
        (0, []),
        (2, ["4", "3"]),
        ({"count": 1}, ["4"]),
        ({"age": 3600, "count": 3}, ["4", "3", "2"]),
        (False, ["4", "3", "2", "1"]),
    ],
)
@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_retention_by_count(queue: Queue, keep: Any, kept: list[str], outcome: str) -> None:
    option = "remove_on_complete" if outcome == "completed" else "remove_on_fail"
    for i in range(4):
        await queue.add(f"j{i}", {"i": i}, **{option: keep})
    await process_all(queue, ok if outcome == "completed" else boom)
    assert [j.id for j in await queue.get_jobs(outcome)] == kept
    assert await counts(queue) == ({outcome: len(kept)} if kept else {})
    for job_id in ["1", "2", "3", "4"]:
        expected = outcome if job_id in kept else "unknown"
        assert await queue.get_job_state(job_id) == expected
        assert (await queue.get_job(job_id) is None) == (job_id not in kept)
    finished = [e.fields["jobId"] for e in await queue.backend.get_events(Q) if e.name == outcome]
    assert finished == ["1", "2", "3", "4"]  # the event is emitted even when the job is deleted
    check_invariants(queue.backend)


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_retention_by_age(queue: Queue, outcome: str) -> None:
    option = "remove_on_complete" if outcome == "completed" else "remove_on_fail"
    processor = ok if outcome == "completed" else boom
    keep = {option: {"age": 10, "count": 100}}
    await queue.add("a", **keep)
    await process_all(queue, processor)  # job 1 finishes at t1
    await asyncio.sleep(5)
    await queue.add("b", **keep)
    await process_all(queue, processor)  # t1 + ~6 s: job 1 is younger than 10 s, kept
    assert [j.id for j in await queue.get_jobs(outcome)] == ["2", "1"]
    await asyncio.sleep(7)
    await queue.add("c", **keep)
    await process_all(queue, processor)  # job 1 is now ~14 s old, job 2 ~8 s
    assert [j.id for j in await queue.get_jobs(outcome)] == ["3", "2"]
    assert await queue.get_job("1") is None
    check_invariants(queue.backend)


# ---------------------------------------------------------------------------- progress


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_progress(queue: Queue, clock: VirtualClock, kind: str) -> None:
    async def async_proc(job: Job) -> str:
        await job.update_progress(50)
        await job.update_progress({"step": 2})
        return "ok"

    def sync_proc(job: Job) -> str:
        job.update_progress_sync(50)
        job.update_progress_sync({"step": 2})
        return "ok"

    await queue.add("p")
    recorder = Recorder(clock, events={"progress"})
    processor = async_proc if kind == "async" else sync_proc
    worker, task = await start_worker(queue.backend, processor, clock, recorder=recorder)
    await wait_for(lambda: completed_at_least(queue, 1))
    await stop_worker(worker, task)
    reported = [(e.args[0].id, e.args[1]) for e in recorder.of("progress")]
    assert reported == [("1", 50), ("1", {"step": 2})]
    stored = await queue.get_job("1")
    assert stored is not None
    assert (stored.progress, stored.return_value) == ({"step": 2}, "ok")
    logged = [e.fields for e in await queue.backend.get_events(Q) if e.name == "progress"]
    assert logged == [{"jobId": "1", "data": "50"}, {"jobId": "1", "data": '{"step":2}'}]
    check_invariants(queue.backend)


async def test_progress_through_queue_job(queue: Queue) -> None:
    job = await queue.add("p")
    await job.update_progress([1, 2])
    assert job.progress == [1, 2]
    assert (await queue.get_job("1")).progress == [1, 2]  # type: ignore[union-attr]
    await queue.remove("1")
    with pytest.raises(CorralError, match="job 1 does not exist"):
        await job.update_progress(3)


# ---------------------------------------------------------------------------- events


async def test_event_log_for_a_job_life(queue: Queue, backend: Storage) -> None:
    await queue.add("plain")
    await queue.add("later", delay=500)
    await process_all(queue, ok)
    events = await backend.get_events(Q)
    keys = [tuple(int(p) for p in e.id.split("-")) for e in events]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)

    def life(job_id: str) -> list[str]:
        return [e.name for e in events if e.fields.get("jobId") == job_id]

    assert life("1") == ["added", "waiting", "active", "completed"]
    assert life("2") == ["added", "delayed", "waiting", "active", "completed"]
    completed = next(e for e in events if e.name == "completed" and e.fields["jobId"] == "1")
    assert completed.fields["returnvalue"] == '"done 1"'
    assert any(e.name == "drained" for e in events)


# ---------------------------------------------------------------------------- stalled


async def test_check_stalled_recovers_and_throttles(queue: Queue, backend: Storage) -> None:
    await queue.add("a")
    await queue.add("b")
    await take(backend, queue.clock.now_ms(), "tok", lock_ms=1000)
    assert not await queue.is_job_stalled("1")  # locked
    assert not await queue.is_job_stalled("2")  # waiting
    assert not await queue.is_job_stalled("404")
    first = await queue.check_stalled(stalled_interval=5000)
    assert (first.ran, first.recovered, first.failed) == (True, [], [])
    assert await backend.is_marked_stalled(Q, "1")
    throttled = await queue.check_stalled(stalled_interval=5000)
    assert (throttled.ran, throttled.recovered, throttled.failed) == (False, [], [])
    await asyncio.sleep(1.5)
    assert await queue.is_job_stalled("1")  # lock expired
    assert not (await queue.check_stalled(stalled_interval=5000)).ran  # still throttled
    await asyncio.sleep(4)
    second = await queue.check_stalled(stalled_interval=5000)
    assert (second.ran, second.recovered, second.failed) == (True, ["1"], [])
    assert await queue.get_job_state("1") == "waiting"
    assert not await queue.is_job_stalled("1")
    job = await queue.get_job("1")
    assert job is not None
    assert (job.stalled_counter, job.attempts_made) == (1, 0)
    assert await fetch_order(backend, queue.clock.now_ms()) == ["1", "2"]  # front of wait
    names = [e.name for e in await backend.get_events(Q) if e.fields.get("jobId") == "1"]
    assert names[-4:] == ["active", "waiting", "stalled", "active"]
    check_invariants(backend)


async def test_check_stalled_fails_over_the_limit(queue: Queue, backend: Storage) -> None:
    await queue.add("a")
    await take(backend, queue.clock.now_ms(), "tok", lock_ms=1000)
    assert (await queue.check_stalled(max_stalled_count=0, stalled_interval=1000)).ran
    await asyncio.sleep(2)
    result = await queue.check_stalled(max_stalled_count=0, stalled_interval=1000)
    assert (result.ran, result.recovered, result.failed) == (True, [], ["1"])
    job = await queue.get_job("1")
    assert job is not None
    assert await queue.get_job_state("1") == "failed"
    assert job.failed_reason == "job stalled more than allowable limit"
    assert (job.stalled_counter, job.finished_on) == (1, queue.clock.now_ms())
    check_invariants(backend)


async def test_one_marker_wakes_one_blocked_waiter_first_come_first_served(
    queue: Queue, backend: Storage
) -> None:
    """As Redis serves clients blocked in BZPOPMIN: the jobs of one operation set the marker
    once, which wakes the longest-waiting worker only; the next wakes the next."""
    first = asyncio.create_task(backend.wait_for_work(Q, 10_000))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(backend.wait_for_work(Q, 10_000))
    await asyncio.sleep(0.01)
    await queue.add_bulk([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    await asyncio.sleep(0.1)
    assert first.done()
    assert first.result() is True
    assert not second.done()
    await queue.add("d")
    await asyncio.sleep(0.1)
    assert second.done()
    assert second.result() is True
    check_invariants(backend)
