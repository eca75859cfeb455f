"""Conformance: bad input is refused with a clear InvalidArgumentError naming the problem, and
nothing is stored (no job, no event, the id counter untouched)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from helpers import QUEUE, Recorder, check_invariants, start_worker, stop_worker

from corral.engine import InvalidArgumentError, Job, Queue, Worker
from corral.engine.storage import Storage
from corral.sim.loop import VirtualClock

Q = QUEUE


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


async def assert_nothing_stored(queue: Queue) -> None:
    assert not any((await queue.get_job_counts()).values())
    assert await queue.get_job("1") is None
    assert await queue.backend.get_events(Q) == []
    # Validation happens before the id counter is touched: the next job still gets id 1.
    assert (await queue.add("after")).id == "1"
    check_invariants(queue.backend)


async def noop(job: Job) -> None:
    return None


def test_invalid_argument_error_is_a_value_error() -> None:
    assert issubclass(InvalidArgumentError, ValueError)


@pytest.mark.parametrize(
    ("name", "message"), [("", "non-empty"), ("a:b", "must not contain ':'"), (None, "string")]
)
@pytest.mark.parametrize("kind", ["queue", "worker"])
def test_bad_queue_name(backend: Storage, name: Any, message: str, kind: str) -> None:
    build = Queue if kind == "queue" else lambda n, b: Worker(n, noop, b)
    with pytest.raises(InvalidArgumentError, match="queue name") as info:
        build(name, backend)
    assert message in str(info.value)


ADD_CASES = [
    # (add kwargs, data, fragments the message must contain)
    ({"job_id": "42"}, None, ["'42'", "integer"]),
    ({"job_id": "-7"}, None, ["'-7'", "integer"]),
    ({"job_id": "a:b"}, None, ["'a:b'", "':'"]),
    ({"job_id": ""}, None, ["job id", "non-empty"]),
    ({}, {1, 2}, ["data of job", "JSON"]),
    ({}, {"x": float("nan")}, ["data of job", "JSON"]),
    ({}, [float("inf")], ["data of job", "JSON"]),
    ({}, {"o": object()}, ["data of job", "JSON"]),
    ({"delay": -1}, None, ["delay", "-1"]),
    ({"delay": datetime.timedelta(seconds=-1)}, None, ["delay", "-1000"]),
    ({"delay": 1.5}, None, ["delay", "1.5"]),
    ({"attempts": 0}, None, ["attempts", ">= 1", "0"]),
    ({"attempts": -3}, None, ["attempts", "-3"]),
    ({"attempts": True}, None, ["attempts", "True"]),
    ({"attempts": 1.0}, None, ["attempts", "1.0"]),
    ({"priority": -1}, None, ["priority", "2097151", "-1"]),
    ({"priority": 2**21}, None, ["priority", "2097151", "2097152"]),
    ({"priority": 1.5}, None, ["priority", "1.5"]),
    ({"priority": False}, None, ["priority", "False"]),
    ({"backoff": lambda n: n * 1000}, None, ["backoff", "backoff_strategy"]),
    ({"backoff": -5}, None, ["backoff", "-5"]),
    ({"backoff": "fast"}, None, ["backoff", "'fast'"]),
    ({"backoff": {"type": "fixed", "dealy": 5}}, None, ["backoff", "dealy"]),
    ({"backoff": {"type": "fixed", "delay": -5}}, None, ["backoff delay", "-5"]),
    ({"backoff": {"type": "fixed", "delay": 5, "jitter": 2}}, None, ["jitter", "2"]),
    ({"backoff": {"type": "", "delay": 5}}, None, ["backoff type"]),
    ({"remove_on_complete": -1}, None, ["remove_on_complete", "-1"]),
    ({"remove_on_complete": "yes"}, None, ["remove_on_complete", "'yes'"]),
    ({"remove_on_fail": {"agee": 5}}, None, ["remove_on_fail", "agee"]),
    ({"remove_on_fail": {"age": -5}}, None, ["remove_on_fail", "age", "-5"]),
    ({"lifo": "yes"}, None, ["lifo", "'yes'"]),
    ({"lifo": 0}, None, ["lifo", "0"]),
]


@pytest.mark.parametrize(
    ("kwargs", "data", "fragments"), ADD_CASES, ids=[str(i) for i in range(len(ADD_CASES))]
)
async def test_add_rejects(
    queue: Queue, kwargs: dict[str, Any], data: Any, fragments: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await queue.add("job", data, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    await assert_nothing_stored(queue)


@pytest.mark.parametrize(
    ("kwargs", "data", "fragments"), ADD_CASES, ids=[str(i) for i in range(len(ADD_CASES))]
)
async def test_add_bulk_rejects_and_names_the_entry(
    queue: Queue, kwargs: dict[str, Any], data: Any, fragments: list[str]
) -> None:
    entries = [{"name": "ok", "data": 1}, {"name": "ok2"}, {"name": "x", "data": data}]
    entries[2]["opts"] = kwargs
    with pytest.raises(InvalidArgumentError) as info:
        await queue.add_bulk(entries)
    message = str(info.value)
    assert "entry 2" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    await assert_nothing_stored(queue)


async def test_bad_job_name(queue: Queue) -> None:
    with pytest.raises(InvalidArgumentError, match="job name must be a string"):
        await queue.add(123)  # type: ignore[arg-type]
    await assert_nothing_stored(queue)


async def test_unknown_option_in_add_bulk_suggests_the_name(queue: Queue) -> None:
    expected = r"entry 1: unknown job option 'atempts' \(did you mean 'attempts'\?\)"
    with pytest.raises(InvalidArgumentError, match=expected):
        await queue.add_bulk([{"name": "a"}, {"name": "b", "opts": {"atempts": 3}}])
    await assert_nothing_stored(queue)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"nmae": "x"}, "unknown key(s) ['nmae']"),
        ({"data": 1}, "has no name"),
        ("just-a-name", "must be a mapping"),
        ({"name": "x", "opts": 5}, "opts must be a mapping"),
    ],
)
async def test_malformed_add_bulk_entry(queue: Queue, entry: Any, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await queue.add_bulk([{"name": "fine"}, entry])
    assert "entry 1" in str(info.value)
    assert fragment in str(info.value)
    await assert_nothing_stored(queue)


async def test_unknown_keyword_to_add_is_a_type_error(queue: Queue) -> None:
    with pytest.raises(TypeError, match="atempts"):
        await queue.add("job", None, atempts=3)  # type: ignore[call-arg]
    await assert_nothing_stored(queue)


async def test_unencodable_result_fails_the_job_without_retry(
    queue: Queue, clock: VirtualClock
) -> None:
    runs: list[int] = []

    async def returns_a_set(job: Job) -> set[int]:
        runs.append(clock.now_ms())
        return {1, 2}

    await queue.add("job", attempts=3, backoff=10)
    recorder = Recorder(clock, events={"failed"})
    worker, task = await start_worker(queue.backend, returns_a_set, clock, recorder=recorder)
    await recorder.wait("failed")
    await asyncio.sleep(1)  # time enough for a retry (backoff 10 ms) that must not happen
    await stop_worker(worker, task)
    job = await queue.get_job("1")
    assert job is not None
    assert await queue.get_job_state("1") == "failed"
    assert job.failed_reason is not None
    assert "return value of job 1" in job.failed_reason
    assert "JSON" in job.failed_reason
    assert (job.attempts_made, job.attempts_started, len(runs)) == (1, 1, 1)
    assert job.return_value is None
    assert [e.args[0].id for e in recorder.of("failed")] == ["1"]
    check_invariants(queue.backend)


async def test_unencodable_progress_is_refused(queue: Queue) -> None:
    job = await queue.add("job")
    await job.update_progress(10)
    with pytest.raises(InvalidArgumentError, match=r"progress of job 1.*JSON"):
        await job.update_progress({1, 2})
    assert (await queue.get_job("1")).progress == 10  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"lock_duration": 0}, "lock_duration"),
        ({"lock_duration": -1}, "lock_duration"),
        ({"max_stalled_count": -1}, "max_stalled_count"),
        ({"stalled_interval": 0}, "stalled_interval"),
        ({"drain_delay": 0}, "drain_delay"),
        ({"lock_duration": 1000, "lock_renew_time": 2000}, "lock_renew_time"),
        ({"lock_renew_time": 0}, "lock_renew_time"),
    ],
)
def test_bad_worker_options(backend: Storage, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        Worker(Q, noop, backend, **kwargs)


def test_processor_must_be_callable(backend: Storage) -> None:
    with pytest.raises(InvalidArgumentError, match="processor must be callable"):
        Worker(Q, "noop", backend)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "suggestion"),
    [("complete", "completed"), ("lockRenewalFailed", "lock_renewal_failed"), ("stall", "stalled")],
)
def test_unknown_worker_event(backend: Storage, event: str, suggestion: str) -> None:
    worker = Worker(Q, noop, backend)
    with pytest.raises(ValueError, match=f"unknown event '{event}'") as info:
        worker.on(event, print)
    assert f"did you mean '{suggestion}'" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_stalled_count": -1}, "max_stalled_count"),
        ({"stalled_interval": 0}, "stalled_interval"),
        ({"stalled_interval": -5}, "stalled_interval"),
    ],
)
async def test_bad_check_stalled_arguments(
    queue: Queue, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        await queue.check_stalled(**kwargs)
    await assert_nothing_stored(queue)
