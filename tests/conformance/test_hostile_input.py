"""Conformance: what a caller sends can never corrupt what is stored (issue 13, part A).

Custom ids that name a key of the queue's layout, strings Redis cannot take, data nested too
deeply: each is refused at the API with an InvalidArgumentError naming the problem, alike on
every backend, and nothing is stored; one refused call never fails another.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import QUEUE, Recorder, check_invariants, start_worker, stop_worker, stored_job

from corral.engine import InvalidArgumentError, Job, Queue, Worker
from corral.engine.inputs import MAX_JSON_DEPTH, RESERVED_JOB_IDS
from corral.engine.storage import FetchRequest, Storage
from corral.sim.loop import VirtualClock

Q = QUEUE
RESERVED = sorted(RESERVED_JOB_IDS)


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


async def assert_nothing_stored(queue: Queue) -> None:
    """No job, no event, and the queue still works: the next job gets id 1 and is listed."""
    assert not any((await queue.get_job_counts()).values())
    assert await queue.backend.get_events(Q) == []
    assert (await queue.add("after")).id == "1"
    assert [job.id for job in await queue.get_jobs("waiting")] == ["1"]
    check_invariants(queue.backend)


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep."""
    value: Any = "core"
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("job_id", RESERVED)
async def test_a_custom_id_naming_a_queue_key_is_refused(queue: Queue, job_id: str) -> None:
    for attempt in (
        lambda: queue.add("x", job_id=job_id),
        lambda: queue.add_bulk([{"name": "ok"}, {"name": "x", "opts": {"job_id": job_id}}]),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            await attempt()
        assert repr(job_id) in str(info.value)
        assert "reserved" in str(info.value)
    await assert_nothing_stored(queue)


async def test_readers_never_read_a_queue_structure_as_a_job(
    queue: Queue, clock: VirtualClock
) -> None:
    # Give the queue every kind of key: wait, active, delayed, prioritized, completed,
    # failed, stalled marks, the id counter, pc, meta, events and the marker.
    await queue.add_bulk([{"name": str(n)} for n in range(4)])
    await queue.add("later", delay=60_000)
    await queue.add("urgent", priority=3)
    await queue.pause()
    counts = await queue.get_job_counts()
    for job_id in RESERVED:
        assert await queue.get_job(job_id) is None, job_id
        assert await queue.get_job_state(job_id) == "unknown", job_id
        assert await queue.is_job_stalled(job_id) is False, job_id
        assert await queue.remove(job_id) is False, job_id
    assert await queue.get_job_counts() == counts
    assert await queue.is_paused()
    assert (await queue.add("after")).id == "7"
    check_invariants(queue.backend)


async def test_an_id_naming_a_job_sub_key_reads_as_no_job(
    queue: Queue, clock: VirtualClock
) -> None:
    await queue.add("x")
    fetched = await queue.backend.fetch_next(Q, FetchRequest("t", 30_000), clock.now_ms())
    assert fetched.job is not None  # job 1 is active: its lock key 1:lock exists
    for reader, answer in [
        (queue.get_job, None),
        (queue.get_job_state, "unknown"),
        (queue.is_job_stalled, False),
        (queue.remove, False),
    ]:
        assert await reader("1:lock") == answer, reader
    assert (await queue.backend.get_lock(Q, "1")) is not None
    check_invariants(queue.backend)


# ---------------------------------------------------------------------------- item 2


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda q: q.add("bad\ud800"), "job name"),
        (lambda q: q.add("x", job_id="id-\udc80"), "custom job id"),
        (lambda q: q.add_bulk([{"name": "ok"}, {"name": "\udfff"}]), "entry 1: job name"),
        (lambda q: q.add_bulk([{"name": "ok", "opts": {"job_id": "\ud800x"}}]), "custom job id"),
    ],
)
async def test_a_string_utf8_cannot_encode_is_refused(queue: Queue, call: Any, what: str) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be encoded as UTF-8") as info:
        await call(queue)
    assert what in str(info.value)
    await assert_nothing_stored(queue)


def test_a_queue_name_utf8_cannot_encode_is_refused(backend: Storage) -> None:
    with pytest.raises(InvalidArgumentError, match=r"queue name .* UTF-8"):
        Queue("q\ud800", backend)


async def test_data_with_a_lone_surrogate_is_stored_escaped_and_read_back(queue: Queue) -> None:
    # JSON escapes it (\ud800), so Redis can store it: accepted on every backend alike.
    data = {"text": "a\ud800b", "\udc80key": ["é", "\U0001f600"]}
    job = await queue.add("é-name", data, job_id="ключ")
    assert (await stored_job(queue, job.id)).data == data
    assert (await stored_job(queue, "ключ")).name == "é-name"


async def test_one_refused_call_never_fails_the_calls_beside_it(queue: Queue) -> None:
    async def good(n: int) -> str:
        return (await queue.add(f"good-{n}", {"n": n})).id

    async def bad() -> str:
        return (await queue.add("bad\ud800")).id

    calls = [good(n) for n in range(5)] + [bad()] + [good(n) for n in range(5, 10)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[5], InvalidArgumentError)
    good_results = results[:5] + results[6:]
    assert all(isinstance(r, str) for r in good_results), good_results
    assert (await queue.get_job_counts("waiting")) == {"waiting": 10}


async def test_a_failure_reason_utf8_cannot_encode_is_stored_escaped(
    queue: Queue, clock: VirtualClock
) -> None:
    async def fails(job: Job) -> None:
        raise ValueError("cannot read file b'\\x80': \udc80")  # as os.fsdecode makes it

    await queue.add("job")
    recorder = Recorder(clock, events={"failed"})
    worker, task = await start_worker(queue.backend, fails, clock, recorder=recorder)
    await recorder.wait("failed")
    await stop_worker(worker, task)
    job = await stored_job(queue, "1")
    assert await queue.get_job_state("1") == "failed"
    assert job.failed_reason == "cannot read file b'\\x80': \\udc80"
    check_invariants(queue.backend)


# ---------------------------------------------------------------------------- item 7


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 985, 5_000])
async def test_data_nested_too_deeply_is_refused(queue: Queue, depth: int) -> None:
    with pytest.raises(InvalidArgumentError, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        await queue.add("deep", nested(depth))
    with pytest.raises(InvalidArgumentError, match="entry 1: data of job 'deep'"):
        await queue.add_bulk([{"name": "ok"}, {"name": "deep", "data": {"a": nested(depth)}}])
    with pytest.raises(InvalidArgumentError, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        await queue.add("deep", {"text": ']}"\\' * 300, "deep": nested(depth - 1)})
    await assert_nothing_stored(queue)


async def test_data_nested_to_the_limit_is_stored_and_read_back(queue: Queue) -> None:
    value = {
        "wide": [nested(5)] * 200,
        "deep": nested(MAX_JSON_DEPTH - 1),  # in the object: MAX_JSON_DEPTH levels in all
        "text": '[{"\\' * 300,  # brackets, quotes and backslashes in a string nest nothing
    }
    job = await queue.add("deep", value)
    assert (await stored_job(queue, job.id)).data == value


async def test_a_result_nested_too_deeply_fails_its_job_and_the_worker_goes_on(
    queue: Queue, clock: VirtualClock
) -> None:
    async def returns(job: Job) -> Any:
        return nested(job.data)

    await queue.add("too-deep", 2_000, attempts=3)
    await queue.add("fine", 3)
    recorder = Recorder(clock, events={"failed", "completed"})
    worker, task = await start_worker(queue.backend, returns, clock, recorder=recorder)
    await recorder.wait("completed")
    await stop_worker(worker, task)
    failed = await stored_job(queue, "1")
    assert await queue.get_job_state("1") == "failed"
    assert failed.failed_reason is not None
    assert "return value of job 1" in failed.failed_reason
    assert f"nested deeper than {MAX_JSON_DEPTH}" in failed.failed_reason
    assert failed.attempts_made == 1  # not retried: the same result would fail again
    assert (await stored_job(queue, "2")).return_value == nested(3)
    check_invariants(queue.backend)


def test_a_worker_name_utf8_cannot_encode_is_refused(backend: Storage) -> None:
    # The name is stored as the jobs' ``pb`` field: on Redis it would fail every finish.
    with pytest.raises(InvalidArgumentError, match=r"worker name .* UTF-8"):
        Worker("q", lambda job: None, backend, name="w\ud800")
    with pytest.raises(InvalidArgumentError, match="worker name must be a string"):
        Worker("q", lambda job: None, backend, name=7)  # type: ignore[arg-type]
