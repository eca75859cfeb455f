"""SyncQueue: the blocking producer API, called from plain threads (no event loop in the test).

Each behaviour runs on the memory backend and on the real Redis server (skipped, or failed under
CORRAL_REQUIRE_REDIS=1, when none answers)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral import CorralError, InvalidArgumentError, MemoryBackend, Queue, SyncQueue, Worker
from corral.backends.redis import RedisBackend
from corral.engine.job import Job
from corral.engine.states import JobState
from corral.engine.storage import Storage

THREADS = 8
ADDS_PER_THREAD = 200

BackendFactory = Callable[[], Storage]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_backend(request: pytest.FixtureRequest) -> BackendFactory:
    """Makes backends of one kind: memory, or Redis under the test's own key prefix."""
    if request.param == "memory":
        return MemoryBackend
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("key_prefix")
    return lambda: RedisBackend.from_url(url, prefix=prefix)


@pytest.fixture
def queue(make_backend: BackendFactory) -> Iterator[SyncQueue]:
    with SyncQueue("sync", make_backend()) as sync_queue:
        yield sync_queue


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("corral-sync")]


def test_many_threads_add_at_once(queue: SyncQueue) -> None:
    def add_many(thread: int) -> list[str]:
        return [queue.add("job", {"t": thread, "i": i}).id for i in range(ADDS_PER_THREAD)]

    with ThreadPoolExecutor(THREADS) as pool:
        ids = [job_id for batch in pool.map(add_many, range(THREADS)) for job_id in batch]

    assert len(ids) == THREADS * ADDS_PER_THREAD
    assert len(set(ids)) == len(ids)
    assert queue.get_job_counts("waiting", "active")["waiting"] == len(ids)
    some = queue.get_job(ids[-1])
    assert some is not None
    assert some.data == {"t": THREADS - 1, "i": ADDS_PER_THREAD - 1}


def test_threads_mixing_every_call(queue: SyncQueue) -> None:
    def work(thread: int) -> None:
        bulk = queue.add_bulk(
            [{"name": "bulk", "data": i, "opts": {"priority": 1 + i}} for i in range(5)]
        )
        delayed = queue.add("later", thread, delay=60_000)
        mine = queue.add("mine", thread, job_id=f"custom-{thread}")
        assert queue.add("mine", "ignored", job_id=f"custom-{thread}").data == thread
        assert queue.get_job_state(bulk[0].id) == "prioritized"
        assert queue.get_job_state(delayed.id) == "delayed"
        assert queue.remove(mine.id) is True
        assert queue.remove(mine.id) is False
        assert queue.get_job(mine.id) is None
        assert queue.is_job_stalled(delayed.id) is False

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))

    counts = queue.get_job_counts()
    assert counts == {
        "waiting": 0,
        "prioritized": 5 * THREADS,
        "delayed": THREADS,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "waiting-children": 0,
    }
    assert len(queue.get_jobs("delayed")) == THREADS
    assert len(queue.get_jobs(["prioritized", "delayed"], 0, 1, asc=True)) == 4
    queue.pause()
    assert queue.is_paused()
    queue.resume()
    assert not queue.is_paused()
    check = queue.check_stalled()
    assert check.ran
    assert (check.recovered, check.failed) == ([], [])


def test_bad_input_raises_the_queue_errors_unchanged(queue: SyncQueue) -> None:
    with pytest.raises(InvalidArgumentError) as expected:
        asyncio.run(Queue("sync", MemoryBackend()).add("job", delay=-1))
    with pytest.raises(InvalidArgumentError) as raised:
        queue.add("job", delay=-1)
    assert str(raised.value) == str(expected.value)
    with pytest.raises(InvalidArgumentError, match="did you mean"):
        queue.add_bulk([{"name": "job", "opts": {"atempts": 3}}])
    with pytest.raises(InvalidArgumentError, match="attempts"):
        queue.add("job", attempts=0)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        queue.add("job", {1, 2})
    with pytest.raises(InvalidArgumentError, match="unknown job state"):
        queue.get_job_counts("nope")
    with pytest.raises(InvalidArgumentError, match="max_stalled_count"):
        queue.check_stalled(max_stalled_count=-1)
    assert queue.get_job_counts() == dict.fromkeys(queue.get_job_counts(), 0)  # nothing stored


def test_removing_a_job_a_worker_holds_raises_corral_error(make_backend: BackendFactory) -> None:
    backend = make_backend()
    with SyncQueue("sync", backend) as queue:
        job = queue.add("slow")
        started = threading.Event()
        release = threading.Event()

        def slow(_job: Job) -> str:
            started.set()
            release.wait(10)
            return "done"

        async def process() -> None:
            worker_backend = make_backend() if isinstance(backend, RedisBackend) else backend
            worker = Worker("sync", slow, worker_backend)
            runner = asyncio.create_task(worker.run())
            assert await asyncio.to_thread(started.wait, 10)
            try:
                with pytest.raises(CorralError, match="locked"):
                    await asyncio.to_thread(queue.remove, job.id)
                assert await asyncio.to_thread(queue.get_job_state, job.id) == "active"
            finally:
                release.set()
                await worker.close()
                await runner
                if worker_backend is not backend:
                    await worker_backend.close()

        asyncio.run(process())
        assert queue.get_job_state(job.id) == "completed"


def test_jobs_added_by_a_sync_queue_are_processed_by_an_async_worker(
    make_backend: BackendFactory,
) -> None:
    producer_backend = make_backend()
    jobs = 50

    async def consume() -> dict[str, int]:
        # A worker on its own loop (and, for Redis, its own connections), while another
        # thread adds through the SyncQueue.
        backend = (
            producer_backend if isinstance(producer_backend, MemoryBackend) else make_backend()
        )
        results: dict[str, int] = {}
        all_done = asyncio.Event()

        def on_completed(job: Job, result: int) -> None:
            results[job.id] = result
            if len(results) == jobs:
                all_done.set()

        async def double(job: Job) -> int:
            return int(job.data) * 2

        worker = Worker("sync", double, backend, concurrency=4)
        worker.on("completed", on_completed)
        runner = asyncio.create_task(worker.run())

        def produce() -> None:
            with SyncQueue("sync", producer_backend) as queue:
                for i in range(jobs):
                    queue.add("double", i)

        try:
            await asyncio.to_thread(produce)
            await asyncio.wait_for(all_done.wait(), 30)
        finally:
            await worker.close()
            await runner
            if backend is not producer_backend:
                await backend.close()
        return results

    results = asyncio.run(consume())
    assert sorted(results.values()) == [2 * i for i in range(jobs)]
    reader = producer_backend if isinstance(producer_backend, MemoryBackend) else make_backend()
    with SyncQueue("sync", reader) as queue:
        assert queue.get_job_counts("waiting", "completed") == {"waiting": 0, "completed": jobs}
        done = queue.get_job(next(iter(results)))
        assert done is not None
        assert done.return_value == results[done.id]


def test_queues_on_one_backend_share_one_thread_until_the_last_closes() -> None:
    before = len(_sync_threads())
    backend = MemoryBackend()
    first, second = SyncQueue("a", backend), SyncQueue("b", backend)
    first.add("x")
    second.add("y")
    other = SyncQueue("c", MemoryBackend())
    other.add("z")
    assert len(_sync_threads()) == before + 2
    first.close()
    assert second.get_job_counts("waiting") == {"waiting": 1}
    assert len(_sync_threads()) == before + 2
    second.close()
    other.close()
    assert len(_sync_threads()) == before
    # A new SyncQueue on the same backend starts a new thread, and the data is still there.
    with SyncQueue("a", backend) as again:
        assert again.get_job_counts("waiting") == {"waiting": 1}


def test_a_queue_that_is_never_called_starts_no_thread() -> None:
    before = len(_sync_threads())
    with SyncQueue("idle", MemoryBackend()) as queue:
        assert len(_sync_threads()) == before
    assert queue.closed
    assert len(_sync_threads()) == before


def test_close_waits_for_calls_in_flight_and_later_calls_are_refused() -> None:
    gate = threading.Event()

    class SlowBackend(MemoryBackend):
        async def get_counts(self, queue: str) -> dict[JobState, int]:
            await asyncio.to_thread(gate.wait, 10)
            return await super().get_counts(queue)

    queue = SyncQueue("slow", SlowBackend())
    with ThreadPoolExecutor(2) as pool:
        counting = pool.submit(queue.get_job_counts)
        while queue._in_flight == 0:
            time.sleep(0.001)
        closing = pool.submit(queue.close)
        assert not closing.done()
        gate.set()
        assert counting.result(10)["waiting"] == 0
        closing.result(10)
    assert queue.closed
    assert "closed" in repr(queue)
    with pytest.raises(RuntimeError, match="is closed"):
        queue.add("late")
    queue.close()  # idempotent


def test_jobs_it_returns_report_progress_from_any_thread(queue: SyncQueue) -> None:
    job = queue.add("tracked")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(job.update_progress_sync, {"percent": 50}).result(10)
    again = queue.get_job(job.id)
    assert again is not None
    assert again.progress == {"percent": 50}


def test_a_forked_child_is_told_to_make_its_own_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    with SyncQueue("forked", MemoryBackend()) as queue:
        queue.add("before fork")
        parent = os.getpid()
        monkeypatch.setattr(os, "getpid", lambda: parent + 1)
        with pytest.raises(RuntimeError, match="fork"):
            queue.add("in the child")
        monkeypatch.undo()
        assert queue.get_job_counts("waiting") == {"waiting": 1}


@pytest.mark.redis
def test_from_url_owns_its_backend(redis_url: str, key_prefix: str) -> None:
    with SyncQueue.from_url("sync", redis_url, prefix=key_prefix) as queue:
        job = queue.add("job", {"x": 1})
        assert isinstance(queue.backend, RedisBackend)
        assert queue.backend.prefix == key_prefix
    assert queue.closed
    with SyncQueue.from_url("sync", redis_url, prefix=key_prefix) as again:
        stored = again.get_job(job.id)
        assert stored is not None
        assert stored.data == {"x": 1}


def test_an_unreachable_redis_raises_its_error() -> None:
    from corral.backends.redis import RedisUnavailableError

    with (
        SyncQueue.from_url("sync", "redis://127.0.0.1:1/0", socket_connect_timeout=1) as queue,
        pytest.raises(RedisUnavailableError, match="cannot reach Redis"),
    ):
        queue.add("job")
