"""Conformance: the API answers alike wherever it can be misused (issue 13, items 12 and 16).

Unknown options suggest the right name in ``add`` as in ``add_bulk``; readers refuse an id that
is not a string as ``add`` does; a closed queue, or one whose Redis backend was closed, refuses
to work instead of quietly opening new connections; ``get_jobs`` fills a page from further in
the range when a listed job's hash is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from helpers import QUEUE

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine import ClosedError, InvalidArgumentError, Queue, UnknownOptionError
from corral.engine.job import KeepJobs
from corral.engine.storage import Complete, FetchRequest, Storage
from corral.sim.loop import VirtualClock, VirtualTimeLoop

Q = QUEUE

#: Every Queue method that takes a job id.
ID_READERS = ["get_job", "get_job_state", "is_job_stalled", "remove"]


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


async def delete_job_hash(backend: Storage, job_id: str) -> None:
    """Delete a job's hash behind the queue's back (another client, a manual DEL), leaving its
    id listed in its state."""
    if isinstance(backend, MemoryBackend):
        del backend._store(Q).jobs[job_id]
        return
    redis_backend = getattr(backend, "inner", backend)  # the real-server wrapper holds it
    assert isinstance(redis_backend, RedisBackend)
    loop = asyncio.get_running_loop()
    # Real I/O on a virtual-time loop: hold virtual time still until the reply is in.
    hold = loop.external_work() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext()
    with hold:
        assert await redis_backend.client.delete(redis_backend.keys(Q).job(job_id)) == 1


# ---------------------------------------------------------------------------- item 12


@pytest.mark.parametrize(
    ("start", "end", "asc", "expected"),
    [
        (0, 2, True, ["1", "3", "4"]),  # the case: 2 gone, 4 fills the page
        (1, 2, True, ["3", "4"]),
        (2, 3, False, ["3", "1"]),  # newest first: 5 4 [3 2] → 3, then 1 fills
        (0, 9, True, ["1", "3", "4", "5"]),  # short only where the list ends
        (3, 4, False, ["1"]),
        (0, -1, True, ["1", "3", "4", "5"]),
    ],
)
@pytest.mark.parametrize("state", ["waiting", "delayed", "completed"])
async def test_get_jobs_fills_the_page_when_a_listed_hash_vanished(
    queue: Queue, clock: VirtualClock, state: str, start: int, end: int, asc: bool, expected: Any
) -> None:
    for n in range(1, 6):
        if state == "completed":
            await queue.add(str(n))
            await asyncio.sleep(0.001)
        else:
            await queue.add(str(n), delay=60_000 + n if state == "delayed" else 0)
    if state == "completed":
        await _complete_all(queue, clock)
    await delete_job_hash(queue.backend, "2")
    jobs = await queue.get_jobs(state, start, end, asc=asc)
    assert [job.id for job in jobs] == expected
    assert [job.name for job in jobs] == expected


async def _complete_all(queue: Queue, clock: VirtualClock) -> None:
    for n in range(1, 6):
        fetched = await queue.backend.fetch_next(Q, FetchRequest(f"t{n}", 30_000), clock.now_ms())
        assert fetched.job is not None
        await asyncio.sleep(0.001)
        done = Complete("null", KeepJobs())
        await queue.backend.finish(Q, fetched.job.job_id, f"t{n}", done, clock.now_ms())


async def test_get_jobs_with_several_hashes_gone_and_several_states(queue: Queue) -> None:
    await queue.add_bulk([{"name": str(n)} for n in range(1, 9)])
    await queue.add("p", priority=1)
    for job_id in ("1", "2", "4"):
        await delete_job_hash(queue.backend, job_id)
    jobs = await queue.get_jobs(["waiting", "prioritized"], 0, 2, asc=True)
    assert [job.id for job in jobs] == ["3", "5", "6", "9"]


# ---------------------------------------------------------------------------- item 16


async def test_an_unknown_keyword_to_add_suggests_the_option(queue: Queue) -> None:
    with pytest.raises(UnknownOptionError) as info:
        await queue.add("job", None, attemps=3)  # type: ignore[arg-type]
    assert str(info.value) == "unknown job option 'attemps' (did you mean 'attempts'?)"
    # The same error as add_bulk gives, and still the TypeError Python raised before.
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, TypeError)
    with pytest.raises(UnknownOptionError) as bulk:
        await queue.add_bulk([{"name": "job", "opts": {"attemps": 3}}])
    assert str(bulk.value) == "add_bulk entry 0: " + str(info.value)
    assert not any((await queue.get_job_counts()).values())


@pytest.mark.parametrize("method", ID_READERS)
@pytest.mark.parametrize("job_id", [1, None, b"1", "", 1.0])
async def test_readers_refuse_an_id_that_is_not_a_string(
    queue: Queue, method: str, job_id: Any
) -> None:
    await queue.add("job")  # job "1" exists
    with pytest.raises(InvalidArgumentError, match="job id must be a non-empty string"):
        await getattr(queue, method)(job_id)
    assert await queue.get_job_state("1") == "waiting"


async def test_an_integer_id_is_told_to_be_a_string(queue: Queue) -> None:
    with pytest.raises(InvalidArgumentError, match=r"got 1 \(job ids are strings: '1'\)"):
        await queue.get_job(1)  # type: ignore[arg-type]


QUEUE_CALLS: list[tuple[str, Any]] = [
    ("add", lambda q: q.add("x")),
    ("add_bulk", lambda q: q.add_bulk([{"name": "x"}])),
    ("get_job", lambda q: q.get_job("1")),
    ("get_job_state", lambda q: q.get_job_state("1")),
    ("get_job_counts", lambda q: q.get_job_counts()),
    ("get_jobs", lambda q: q.get_jobs()),
    ("is_paused", lambda q: q.is_paused()),
    ("is_job_stalled", lambda q: q.is_job_stalled("1")),
    ("pause", lambda q: q.pause()),
    ("resume", lambda q: q.resume()),
    ("remove", lambda q: q.remove("1")),
    ("check_stalled", lambda q: q.check_stalled()),
]


@pytest.mark.parametrize(("name", "call"), QUEUE_CALLS, ids=[name for name, _ in QUEUE_CALLS])
async def test_a_closed_queue_refuses_to_work(queue: Queue, name: str, call: Any) -> None:
    job = await queue.add("x")
    await queue.close()
    await queue.close()  # idempotent
    assert queue.closed
    assert "closed" in repr(queue)
    with pytest.raises(ClosedError, match="queue 'q' is closed"):
        await call(queue)
    with pytest.raises(ClosedError):
        await job.update_progress(50)
    assert isinstance(ClosedError("x"), RuntimeError)
    # Other queues on the backend are not affected.
    assert await Queue(Q, queue.backend).get_job_counts("waiting") == {"waiting": 1}


@pytest.mark.parametrize("backend", ["fakeredis", "redis"], indirect=True)
@pytest.mark.parametrize(("name", "call"), QUEUE_CALLS, ids=[name for name, _ in QUEUE_CALLS])
async def test_a_queue_on_a_closed_redis_backend_refuses_to_work(
    queue: Queue, name: str, call: Any
) -> None:
    await queue.add("x")
    await queue.backend.close()
    with pytest.raises(
        ClosedError, match=r"queue 'q' cannot be used: .*<RedisBackend .* is closed"
    ):
        await call(queue)


async def test_a_queue_on_a_closed_memory_backend_goes_on(clock: VirtualClock) -> None:
    # MemoryBackend.close() releases nothing: its data stays for the other users of the
    # backend (a SyncQueue closing its last queue closes it), so it stays usable.
    backend = MemoryBackend(clock=clock)
    queue = Queue(Q, backend, clock=clock)
    await backend.close()
    assert (await queue.add("x")).id == "1"
