"""Conformance: deduplication (BullMQ 6.7's ``deduplication`` option) on every backend — simple,
throttle (ttl, extend), debounce (replace), reschedule, keep_last_if_active, the release of
``de:<id>`` on finish and removal, stale-key recovery, the events and the refusals."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from helpers import QUEUE, check_invariants

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine import InvalidArgumentError, Queue
from corral.engine.errors import ResultCode, UnknownOptionError
from corral.engine.job import KeepJobs
from corral.engine.storage import Complete, Fail, FetchRequest, RetryNow, Storage
from corral.sim.loop import VirtualClock, VirtualTimeLoop

Q = QUEUE


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


async def events(backend: Storage, *names: str) -> list[tuple[str, dict[str, str]]]:
    return [(e.name, e.fields) for e in await backend.get_events(Q) if e.name in names]


async def take(backend: Storage, now: int, token: str = "tok") -> str:
    result = await backend.fetch_next(Q, FetchRequest(token, 60_000), now)
    assert result.job is not None
    return result.job.job_id


async def complete(backend: Storage, job_id: str, now: int, token: str = "tok") -> None:
    assert await backend.finish(Q, job_id, token, Complete('"ok"'), now) is ResultCode.OK


async def raw_dedup_key(backend: Storage, dedup_id: str, owner: str) -> None:
    """Write ``de:<id>`` = ``owner`` with no TTL, as another producer could (test-only)."""
    if isinstance(backend, MemoryBackend):
        backend._store(Q).dedup[dedup_id] = (owner, None)
        return
    inner = getattr(backend, "inner", backend)
    assert isinstance(inner, RedisBackend)
    loop = asyncio.get_running_loop()
    hold = loop.external_work() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
    with hold:
        await inner.client.set(inner.keys(Q).base + "de:" + dedup_id, owner)


# ---------------------------------------------------------------------------- simple mode


async def test_simple_duplicate_returns_the_owner_and_logs_deduplicated(
    queue: Queue, backend: Storage
) -> None:
    first = await queue.add("a", {"v": 1}, deduplication={"id": "d1"})
    second = await queue.add("a", {"v": 2}, deduplication={"id": "d1"})
    assert (first.id, second.id) == ("1", "1")
    assert second.data == {"v": 1}  # the stored job, not the caller's payload
    assert await queue.get_job_counts("waiting") == {"waiting": 1}
    assert await queue.get_deduplication_job_id("d1") == "1"
    assert await events(backend, "deduplicated") == [
        ("deduplicated", {"jobId": "1", "deduplicationId": "d1", "deduplicatedJobId": "2"})
    ]
    # A deduplicated add still consumes an id number, as in BullMQ.
    assert (await queue.add("b")).id == "3"
    check_invariants(backend)


async def test_stored_fields_are_bullmqs(queue: Queue) -> None:
    options = {"id": "d", "ttl": 500, "extend": True, "keep_last_if_active": True}
    job = await queue.add("a", deduplication=options)
    stored = await queue.get_job(job.id)
    assert stored is not None
    assert stored.fields["deid"] == "d"
    assert json.loads(stored.fields["opts"])["de"] == {
        "id": "d",
        "ttl": 500,
        "extend": True,
        "keepLastIfActive": True,
    }
    assert stored.opts.deduplication is not None
    assert stored.opts.deduplication.keep_last_if_active


async def test_simple_key_is_released_when_the_owner_completes(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    await queue.add("a", deduplication={"id": "d"})
    await take(backend, now)
    assert (await queue.add("a", deduplication={"id": "d"})).id == "1"  # active: still held
    await complete(backend, "1", now)
    assert await queue.get_deduplication_job_id("d") is None
    assert (await queue.add("a", deduplication={"id": "d"})).id == "3"
    check_invariants(backend)


async def test_simple_key_survives_retries_and_goes_with_the_final_failure(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    await queue.add("a", attempts=2, deduplication={"id": "d"})
    await take(backend, now, "t1")
    assert await backend.finish(Q, "1", "t1", RetryNow("no"), now) is ResultCode.OK
    assert await queue.get_deduplication_job_id("d") == "1"
    await take(backend, now, "t2")
    assert await backend.finish(Q, "1", "t2", Fail("no"), now) is ResultCode.OK
    assert await queue.get_deduplication_job_id("d") is None
    check_invariants(backend)


async def test_removal_releases_only_the_owners_key(queue: Queue, backend: Storage) -> None:
    await queue.add("a", deduplication={"id": "d"})
    assert await queue.remove_deduplication_key("d") == 1
    assert await queue.remove_deduplication_key("d") == 0
    await queue.add("b", deduplication={"id": "d"})  # job 2 now holds the id
    assert await queue.remove("1") is True  # not the owner: the key stays
    assert await queue.get_deduplication_job_id("d") == "2"
    assert await queue.remove("2") is True
    assert await queue.get_deduplication_job_id("d") is None
    check_invariants(backend)


async def test_a_key_whose_owner_is_gone_is_recovered(queue: Queue, backend: Storage) -> None:
    await raw_dedup_key(backend, "d", "ghost")
    job = await queue.add("a", deduplication={"id": "d"})
    assert job.id == "1"
    assert await queue.get_job_state("1") == "waiting"
    assert await queue.get_deduplication_job_id("d") == "1"
    assert await events(backend, "deduplicated") == []


async def test_add_bulk_deduplicates_within_the_batch(queue: Queue, backend: Storage) -> None:
    jobs = await queue.add_bulk(
        [{"name": "a", "data": i, "opts": {"deduplication": {"id": "d"}}} for i in range(3)]
    )
    assert [job.id for job in jobs] == ["1", "1", "1"]
    assert await queue.get_job_counts("waiting") == {"waiting": 1}
    check_invariants(backend)


# ---------------------------------------------------------------------------- throttle


@pytest.mark.virtual_ttl
async def test_throttle_outlives_the_job_until_its_ttl(queue: Queue, backend: Storage) -> None:
    now = queue.clock.now_ms()
    await queue.add("a", deduplication={"id": "t", "ttl": 1000})
    await take(backend, now)
    await complete(backend, "1", now)
    await asyncio.sleep(0.5)
    dropped = await queue.add("a", {"late": True}, deduplication={"id": "t", "ttl": 1000})
    assert dropped.id == "1"
    assert await queue.get_deduplication_job_id("t") == "1"
    await asyncio.sleep(0.5)  # 1000 ms after the claim: the key has expired
    assert await queue.get_deduplication_job_id("t") is None
    assert (await queue.add("a", deduplication={"id": "t", "ttl": 1000})).id == "3"
    check_invariants(backend)


@pytest.mark.virtual_ttl
async def test_throttle_owner_deleted_returns_the_owner_id_with_the_callers_payload(
    queue: Queue,
) -> None:
    now = queue.clock.now_ms()
    await queue.add("a", remove_on_complete=True, deduplication={"id": "t", "ttl": 1000})
    await take(queue.backend, now)
    outcome = Complete('"ok"', KeepJobs(count=0))  # (a worker passes the job's retention)
    assert await queue.backend.finish(Q, "1", "tok", outcome, now) is ResultCode.OK
    assert await queue.get_job("1") is None
    dropped = await queue.add("a", {"mine": 1}, deduplication={"id": "t", "ttl": 1000})
    assert (dropped.id, dropped.data) == ("1", {"mine": 1})


@pytest.mark.virtual_ttl
async def test_extend_restarts_the_ttl_on_each_duplicate(queue: Queue, backend: Storage) -> None:
    option = {"id": "e", "ttl": 1000, "extend": True}
    await queue.add("a", deduplication=option)
    await asyncio.sleep(0.8)
    assert (await queue.add("a", deduplication=option)).id == "1"  # extends to t + 1800
    await asyncio.sleep(0.8)
    assert (await queue.add("a", deduplication=option)).id == "1"  # t + 1600: extends again
    await asyncio.sleep(0.999)
    assert await queue.get_deduplication_job_id("e") == "1"
    await asyncio.sleep(0.001)
    assert await queue.get_deduplication_job_id("e") is None
    dedups = await events(backend, "deduplicated")
    assert [fields["deduplicatedJobId"] for _, fields in dedups] == ["2", "3"]


# ---------------------------------------------------------------------------- debounce


async def test_debounce_replaces_the_delayed_owner_and_the_last_data_wins(
    queue: Queue, backend: Storage
) -> None:
    option = {"id": "b", "ttl": 5000, "extend": True, "replace": True}
    for i in range(3):
        await queue.add("a", {"i": i}, delay=1000, deduplication=option)
    assert [job.id for job in await queue.get_jobs("delayed")] == ["3"]
    last = await queue.get_job("3")
    assert last is not None
    assert last.data == {"i": 2}
    assert await queue.get_job("1") is None
    assert await queue.get_deduplication_job_id("b") == "3"
    log = [
        (e.name, e.fields.get("jobId"), e.fields.get("deduplicatedJobId"), e.fields.get("prev"))
        for e in await backend.get_events(Q)
        if e.fields.get("jobId") in ("2", "3") or e.name in ("removed", "deduplicated")
    ]
    assert log == [
        ("removed", "1", None, "delayed"),
        ("deduplicated", "2", "1", None),
        ("added", "2", None, None),
        ("delayed", "2", None, None),
        ("removed", "2", None, "delayed"),
        ("deduplicated", "3", "2", None),
        ("added", "3", None, None),
        ("delayed", "3", None, None),
    ]
    check_invariants(backend)


async def test_replace_of_an_owner_no_longer_delayed_is_dropped_silently(
    queue: Queue, backend: Storage
) -> None:
    option = {"id": "b", "replace": True}
    await queue.add("a", {"i": 0}, deduplication=option)  # waiting, not delayed
    dropped = await queue.add("a", {"i": 1}, delay=100, deduplication=option)
    assert dropped.id == "1"
    assert await events(backend, "deduplicated", "removed") == []
    assert await queue.get_job_counts("waiting", "delayed") == {"waiting": 1, "delayed": 0}


async def test_reschedule_moves_the_delayed_owner_and_keeps_its_data(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    await queue.add("a", {"v": 1}, delay=5000, deduplication={"id": "r"})
    again = await queue.add("a", {"v": 2}, delay=100, deduplication={"id": "r", "reschedule": True})
    assert again.id == "1"
    job = await queue.get_job("1")
    assert job is not None
    assert (job.data, job.delay) == ({"v": 1}, 100)
    assert await events(backend, "deduplicated", "delayed") == [
        ("delayed", {"jobId": "1", "delay": str(now + 5000)}),
        ("deduplicated", {"jobId": "1", "deduplicationId": "r", "deduplicatedJobId": "2"}),
        ("delayed", {"jobId": "1", "delay": str(now + 100)}),
    ]
    result = await backend.fetch_next(Q, FetchRequest("tok", 1000), now + 100)
    assert result.job is not None
    assert result.job.job_id == "1"
    check_invariants(backend)


# ---------------------------------------------------------------------------- keep last if active


async def test_keep_last_if_active_parks_the_last_add_and_runs_it_after_the_owner(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    option = {"id": "k", "keep_last_if_active": True}
    await queue.add("a", {"v": 0}, deduplication=option)
    assert (await queue.add("a", {"v": 1}, deduplication=option)).id == "1"  # 1 is pending
    await take(backend, now)
    assert (await queue.add("a", {"v": 2}, deduplication=option)).id == "1"  # parked
    assert (await queue.add("a", {"v": 3}, deduplication=option)).id == "1"  # latest wins
    assert await queue.get_job_counts("waiting", "active") == {"waiting": 0, "active": 1}
    await complete(backend, "1", now)
    # The parked job takes the next counter value (four adds used 1..4).
    assert [job.id for job in await queue.get_jobs("waiting")] == ["5"]
    parked = await queue.get_job("5")
    assert parked is not None
    assert parked.data == {"v": 3}
    assert parked.fields["deid"] == "k"
    assert await queue.get_deduplication_job_id("k") == "5"
    dedups = await events(backend, "deduplicated")
    assert [fields["deduplicatedJobId"] for _, fields in dedups] == ["2", "3", "4"]
    check_invariants(backend)


async def test_keep_last_if_active_keeps_a_parked_custom_id(queue: Queue, backend: Storage) -> None:
    now = queue.clock.now_ms()
    option = {"id": "k", "keep_last_if_active": True}
    await queue.add("a", deduplication=option)
    await take(backend, now)
    await queue.add("a", {"v": 9}, job_id="next-one", deduplication=option)
    await complete(backend, "1", now)
    parked = await queue.get_job("next-one")
    assert parked is not None
    assert parked.data == {"v": 9}
    assert await queue.get_job_state("next-one") == "waiting"


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"debounce": {"id": "x"}}, UnknownOptionError, "Debounce option has been removed. "),
        ({"deduplication": {}}, InvalidArgumentError, "Deduplication id must be provided"),
        ({"deduplication": {"ttl": 5}}, InvalidArgumentError, "Deduplication id must be"),
        ({"deduplication": {"id": 3}}, InvalidArgumentError, "deduplication id must be a str"),
        ({"deduplication": {"id": "x", "ttl": 0}}, InvalidArgumentError, "ttl must be an int"),
        ({"deduplication": {"id": "x", "ttl": "5"}}, InvalidArgumentError, "ttl must be an int"),
        ({"deduplication": {"id": "x", "replace": 1}}, InvalidArgumentError, "replace must be"),
        ({"deduplication": {"id": "x", "keepLast": True}}, InvalidArgumentError, "unknown dedup"),
        ({"deduplication": "x"}, InvalidArgumentError, "deduplication must be a dict"),
    ],
)
async def test_bad_deduplication_options_are_refused_and_store_nothing(
    queue: Queue, backend: Storage, options: dict[str, Any], error: type[Exception], text: str
) -> None:
    await queue.add("kept", deduplication={"id": "x"})
    with pytest.raises(error, match=text.replace(".", r"\.")):
        await queue.add("a", **options)
    with pytest.raises(error, match=text.replace(".", r"\.")):
        await queue.add_bulk([{"name": "a", "opts": options}])
    assert await queue.get_job_counts("waiting") == {"waiting": 1}
    assert await queue.get_deduplication_job_id("x") == "1"
    assert await events(backend, "deduplicated") == []


async def test_dedup_queries_check_the_id(queue: Queue) -> None:
    for bad in ("", 5, None):
        with pytest.raises(InvalidArgumentError, match="deduplication id must be a non-empty"):
            await queue.get_deduplication_job_id(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="deduplication id must be a non-empty"):
            await queue.remove_deduplication_key(bad)  # type: ignore[arg-type]


@pytest.mark.virtual_ttl
async def test_failing_for_stalls_releases_the_key_and_stores_the_parked_job(
    queue: Queue, backend: Storage
) -> None:
    now = queue.clock.now_ms()
    option = {"id": "s", "keep_last_if_active": True}
    await queue.add("a", deduplication=option)
    result = await backend.fetch_next(Q, FetchRequest("dead", 1000), now)  # its owner dies
    assert result.job is not None
    await queue.add("a", {"v": "parked"}, deduplication=option)
    assert (await queue.check_stalled(0, 1000)).failed == []  # marks job 1
    await asyncio.sleep(1.0)  # the lock and the throttle expire
    assert (await queue.check_stalled(0, 1000)).failed == ["1"]
    assert await queue.get_job_state("1") == "failed"
    [parked] = await queue.get_jobs("waiting")
    assert parked.data == {"v": "parked"}
    assert await queue.get_deduplication_job_id("s") == parked.id
    check_invariants(backend)
