"""Faults a production user meets with Redis, each against a ``redis-server`` the test starts on
its own loopback port (see local_redis.py): the server restarted under a running worker (with
and without persistence), a connection cut in the middle of a script call, the script cache
flushed, a slow server, one silent past the socket timeout, and an unreachable one.

Each test is a plain function running ``asyncio.run`` on a real event loop with the system
clock: real servers take real time, which the virtual-time loop of ``async def`` tests cannot
drive. Every wait is bounded.

Exactly-once completion is judged from the store: finishing a job logs one ``completed`` event
in the queue's events stream, so every job must be completed with exactly one such event, even
when a worker re-ran it (delivery is at-least-once) or never heard back from its finish.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_redis import CuttingProxy, RedisProcess, free_port, redis_server
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from corral.backends.redis import RedisBackend, RedisUnavailableError
from corral.backends.redis import core as redis_core
from corral.backends.redis.scripts import SCRIPT_NAMES, load_library, load_source
from corral.engine import Job, Queue, Worker
from corral.engine.errors import LockLostError
from corral.engine.states import JobState

Q = "faults"
#: Longest wait for a workload to finish (it normally takes a few seconds).
DEADLINE_S = 30.0


# ---------------------------------------------------------------------------- helpers


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server with the AOF on (``appendfsync always``) and DEBUG allowed."""
    options = {"appendonly": "yes", "appendfsync": "always", "enable-debug-command": "local"}
    with redis_server(tmp_path / "redis", options) as started:
        yield started


@pytest.fixture
def volatile_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server without persistence (no AOF, no RDB snapshots)."""
    with redis_server(tmp_path / "redis") as started:
        yield started


class Counting:
    """A backend that records every storage call: ``(monotonic time, name, error or None)``."""

    def __init__(self, inner: RedisBackend) -> None:
        self.inner = inner
        self.calls: list[tuple[float, str, BaseException | None]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await target(*args, **kwargs)
            except Exception as exc:
                self.calls.append((time.monotonic(), name, exc))
                raise
            self.calls.append((time.monotonic(), name, None))
            return result

        return call

    def failed(self, start: float, end: float, names: frozenset[str] | None = None) -> list[str]:
        """Names of the calls that failed between ``start`` and ``end``."""
        return [
            name
            for at, name, error in self.calls
            if error is not None and start <= at <= end and (names is None or name in names)
        ]


class Run:
    """A worker on ``Q`` with bookkeeping: executions per job id and the errors it emitted."""

    def __init__(self, backend: Any, process: Callable[[Job], Awaitable[Any]], **options: Any):
        self.executions: collections.Counter[str] = collections.Counter()
        self.errors: list[BaseException] = []
        self.lock_renewals_failed: list[list[str]] = []

        async def processor(job: Job) -> Any:
            self.executions[job.id] += 1
            return await process(job)

        self.worker = Worker(Q, processor, backend, **options)
        self.worker.on("error", lambda error, job: self.errors.append(error))
        self.worker.on("lock_renewal_failed", self.lock_renewals_failed.append)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())

    async def stop(self) -> None:
        await asyncio.wait_for(self.worker.close(), 10)
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def until(condition: Callable[[], Awaitable[bool]], what: str, limit: float = DEADLINE_S):
    """Poll ``condition`` until true (a poll that meets a connection error counts as false)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            if await condition():
                return
        except RedisUnavailableError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.05)


async def all_completed(backend: RedisBackend, ids: list[str]) -> bool:
    counts = await backend.get_counts(Q)
    return counts[JobState.COMPLETED] == len(ids)


async def assert_completed_exactly_once(backend: RedisBackend, ids: list[str]) -> None:
    """Every job is completed, with its processor's result, and the store logged exactly one
    completion per job; nothing else is left in the queue."""
    counts = await backend.get_counts(Q)
    assert counts[JobState.COMPLETED] == len(ids), counts
    assert sum(counts.values()) == len(ids), counts
    queue = Queue(Q, backend)
    for job_id in ids:
        job = await queue.get_job(job_id)
        assert job is not None, job_id
        assert job.return_value == int(job_id), job_id
        assert job.attempts_made == 1, (job_id, job.attempts_made)  # stalls use no attempts
    events = await backend.get_events(Q, count=100_000)
    completions = collections.Counter(e.fields["jobId"] for e in events if e.name == "completed")
    assert completions == collections.Counter(dict.fromkeys(ids, 1))


async def add_jobs(backend: RedisBackend, count: int) -> list[str]:
    queue = Queue(Q, backend)
    jobs = await queue.add_bulk([{"name": "n", "data": {}} for _ in range(count)])
    return [job.id for job in jobs]


def returns_id(seconds: float) -> Callable[[Job], Awaitable[int]]:
    async def process(job: Job) -> int:
        await asyncio.sleep(seconds)
        return int(job.id)

    return process


def names_url(errors: list[BaseException], url: str) -> None:
    """Every connection error is a RedisUnavailableError naming ``url``."""
    unavailable = [e for e in errors if isinstance(e, RedisUnavailableError)]
    assert unavailable, errors
    for error in unavailable:
        assert f"cannot reach Redis at {url}" in str(error), error
    others = [e for e in errors if not isinstance(e, RedisUnavailableError | LockLostError)]
    assert not others, others


def preload_functions(server: RedisProcess) -> dict[str, bytes]:
    """Load the scripts' function library (so that no call meets "Function not found");
    return the function names by script name, as the backend's FCALLs send them."""
    library = load_library()
    with server.admin() as admin:
        admin.function_load(library.text, replace=True)
    return {name: library.functions[name].encode() for name in SCRIPT_NAMES}


# ---------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("crash", [False, True], ids=["shutdown", "kill-9"])
def test_restart_with_appendonly_loses_nothing_and_the_worker_backs_off(
    server: RedisProcess, crash: bool
) -> None:
    """Redis goes down for 2 s under a busy worker and comes back from its AOF: every job
    added before completes exactly once; meanwhile the worker's failing calls are spaced by
    its backoff, not a busy loop."""
    down_s = 2.0

    async def main() -> None:
        backend = Counting(RedisBackend.from_url(server.url, prefix="restart"))
        try:
            ids = await add_jobs(backend.inner, 60)
            run = Run(
                backend,
                returns_id(0.02),
                concurrency=4,
                lock_duration=1_500,
                stalled_interval=500,
            )
            run.start()
            await until(lambda: _some_completed(backend.inner, 10), "the first completions")
            went_down = time.monotonic()
            await asyncio.to_thread(server.restart, crash=crash, down_s=down_s)
            came_back = time.monotonic()
            await until(lambda: all_completed(backend.inner, ids), "every job to complete")
            await run.stop()

            await assert_completed_exactly_once(backend.inner, ids)
            names_url(run.errors, server.url)
            # The fetch loop's calls while the server was down: 100 ms after the first failure,
            # then doubling (100, 200, 400, 800 ms ...), so a 2 s outage costs about 5; a busy
            # loop would make thousands. The other calls, the stalled checks (every 500 ms) and
            # lock renewals, stay within a few per second; each of the 4 finishes in flight is
            # sent again after 50-100 ms, then doubling, while its lock (1.5 s) may hold: at
            # most 7 sends each (at 0, 50, 150, 350, 750, 1250 and 1500 ms at the soonest).
            outage = backend.failed(went_down, came_back)
            fetching = backend.failed(
                went_down, came_back, frozenset({"fetch_next", "wait_for_work"})
            )
            finishing = [name for name in outage if name == "finish"]
            others = [name for name in outage if name != "finish"]
            outage_s = came_back - went_down
            assert 1 <= len(fetching) <= 8, (outage_s, fetching)
            assert len(others) <= 10 * outage_s + 4, (outage_s, collections.Counter(outage))
            assert len(finishing) <= 4 * 7, (outage_s, len(finishing))
        finally:
            await backend.inner.close()

    asyncio.run(main())


async def _some_completed(backend: RedisBackend, count: int) -> bool:
    return (await backend.get_counts(Q))[JobState.COMPLETED] >= count


def test_restart_without_persistence_loses_everything_and_the_worker_carries_on(
    volatile_server: RedisProcess,
) -> None:
    """Without persistence a restarted Redis is empty: waiting jobs, the active job and its
    lock are gone (the README says so). The worker reconnects, meets an empty script cache,
    and processes what is added afterwards."""

    async def main() -> None:
        backend = RedisBackend.from_url(volatile_server.url, prefix="volatile")
        try:
            await add_jobs(backend, 5)
            started = asyncio.Event()
            release = asyncio.Event()

            async def process(job: Job) -> int:
                if job.id == "1":
                    started.set()
                    await release.wait()  # held across the restart
                return int(job.id)

            run = Run(backend, process, lock_duration=5_000, stalled_interval=500)
            run.start()
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.to_thread(volatile_server.restart, down_s=0.5)

            assert sum((await backend.get_counts(Q)).values()) == 0  # all gone
            assert await backend.get_job(Q, "1") is None
            assert await backend.get_lock(Q, "1") is None
            release.set()  # job 1 finishes on an empty server: "Missing key for job 1"
            await until(lambda: _has(run.errors, LockLostError), "job 1's finish to be refused", 10)
            ids = await add_jobs(backend, 5)
            await until(lambda: all_completed(backend, ids), "the new jobs to complete")
            await run.stop()

            assert ids == ["1", "2", "3", "4", "5"]  # the id counter was lost too
            await assert_completed_exactly_once(backend, ids)
            (refused,) = [e for e in run.errors if isinstance(e, LockLostError)]
            assert str(refused) == "Missing key for job 1. moveToFinished"
        finally:
            await backend.close()

    asyncio.run(main())


async def _has(errors: list[BaseException], kind: type[BaseException]) -> bool:
    return any(isinstance(error, kind) for error in errors)


# ---------------------------------------------------------------------------- cut connections


@pytest.mark.parametrize(
    ("script", "after_reply", "orphan_stalls"),
    [
        # fetch_next ran (job 1 locked and active) but its reply was lost: the worker never
        # learns of job 1, whose lock lapses; the stalled check puts it back; it runs once.
        ("fetch_next", True, 1),
        # finish ran (job 1 completed, job 2 fetched and locked in the same call) but its
        # reply was lost: the worker sends it again and gets the same answer, job 2 included,
        # which it runs under the lock it got: nothing stalls.
        ("finish", True, 0),
        # finish never reached the server: the worker sends it again while job 1's lock
        # holds; it is applied then, and job 1 runs once.
        ("finish", False, 0),
    ],
    ids=["fetch-reply-lost", "finish-reply-lost", "finish-request-lost"],
)
def test_connection_cut_in_the_middle_of_a_script_call(
    server: RedisProcess, script: str, after_reply: bool, orphan_stalls: int
) -> None:
    functions = preload_functions(server)

    async def main() -> None:
        proxy = CuttingProxy(server.port)
        await proxy.start()
        backend = RedisBackend.from_url(proxy.url, prefix="cut")
        try:
            ids = await add_jobs(backend, 6)
            cut = proxy.arm(functions[script], after_reply=after_reply)
            run = Run(backend, returns_id(0.01), lock_duration=1_000, stalled_interval=300)
            run.start()
            await asyncio.wait_for(cut, 10)
            await until(lambda: all_completed(backend, ids), "every job to complete")
            await run.stop()

            assert proxy.cuts == 1
            await assert_completed_exactly_once(backend, ids)
            names_url(run.errors, proxy.url)
            orphan = "2" if (script, after_reply) == ("finish", True) else "1"
            job = await Queue(Q, backend).get_job(orphan)
            assert job is not None
            assert job.stalled_counter == orphan_stalls
            assert all(run.executions[i] == 1 for i in ids), run.executions
        finally:
            await backend.close()
            await proxy.close()

    asyncio.run(main())


def test_clients_killed_repeatedly_under_load(server: RedisProcess) -> None:
    """``CLIENT KILL TYPE normal`` from an admin connection every 150 ms while two workers
    process jobs: calls in flight fail (the ones whose reply was lost included), the workers
    reconnect, and every job still completes exactly once."""

    async def main() -> None:
        backend_a = RedisBackend.from_url(server.url, prefix="kill")
        backend_b = RedisBackend.from_url(server.url, prefix="kill")
        stop = threading.Event()
        kills: list[int] = []

        def killer() -> None:
            with server.admin() as admin:
                while not stop.wait(0.15):
                    kills.append(int(admin.client_kill_filter(_type="normal", skipme=True)))

        try:
            ids = await add_jobs(backend_a, 200)
            options = {"concurrency": 4, "lock_duration": 1_000, "stalled_interval": 300}
            runs = [Run(b, returns_id(0.005), **options) for b in (backend_a, backend_b)]
            for run in runs:
                run.start()
            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            try:
                await asyncio.sleep(1.5)
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, 5)
            await until(lambda: all_completed(backend_a, ids), "every job to complete")
            for run in runs:
                await run.stop()

            assert sum(kills) >= 5, kills  # connections were really killed
            await assert_completed_exactly_once(backend_a, ids)
            errors = [error for run in runs for error in run.errors]
            names_url(errors, server.url)
        finally:
            await backend_a.close()
            await backend_b.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- scripts, slowness


@pytest.mark.parametrize("programs", ["scripts", "functions"])
def test_program_cache_flushed_while_running(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch, programs: str
) -> None:
    """The server's programs flushed five times under a busy worker; the worker never sees an
    error and every job completes once:

    - ``scripts`` (the backend runs EVALSHA, as on Redis Cluster or where FUNCTION is refused):
      SCRIPT FLUSH; the next EVALSHA of each script meets NOSCRIPT and runs again as EVAL,
      which caches it again;
    - ``functions`` (the backend's FCALLs, on Redis 7): FUNCTION FLUSH; the next FCALL meets
      "Function not found", its library is loaded again and the call runs as EVAL.
    """
    finish = load_source("finish")
    if programs == "scripts":
        monkeypatch.setattr(redis_core, "load_functions", _refused)

    def flush(admin: Any) -> None:
        if programs == "scripts":
            admin.script_flush()
        else:
            admin.function_flush()

    def loaded(admin: Any) -> bool:
        if programs == "scripts":
            return admin.script_exists(hashlib.sha1(finish.text.encode()).hexdigest()) == [True]
        return load_library().name in _libraries(admin)

    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix="flush")
        try:
            ids = await add_jobs(backend, 100)
            run = Run(backend, returns_id(0.02), concurrency=2)
            run.start()
            with server.admin() as admin:
                # The backend runs its programs as asked (functions only where they load).
                assert bool(_libraries(admin)) == (programs == "functions")
                for _ in range(5):
                    await asyncio.sleep(0.05)
                    await asyncio.to_thread(flush, admin)
                # The work was not over when the programs were last flushed ...
                assert (await backend.get_counts(Q))[JobState.COMPLETED] < len(ids)
                await until(lambda: all_completed(backend, ids), "every job to complete")
                await run.stop()
                assert loaded(admin)  # ... and they were loaded again
                # The server did answer NOSCRIPT, or "ERR Function not found".
                error = "errorstat_NOSCRIPT" if programs == "scripts" else "errorstat_ERR"
                assert admin.info("errorstats").get(error, {"count": 0})["count"] >= 1
            assert run.errors == []
            await assert_completed_exactly_once(backend, ids)
        finally:
            await backend.close()

    asyncio.run(main())


async def _refused(client: Redis) -> bool:
    return False


def _libraries(admin: Any) -> set[str]:
    return {
        entry[entry.index(b"library_name") + 1].decode()
        if isinstance(entry, list)
        else str(entry["library_name"])
        for entry in admin.function_list(library="corral_*")
    }


async def until_asleep(port: int) -> None:
    """Return once the server at ``port`` has stopped answering (its ``DEBUG SLEEP`` began)."""
    # No retries: redis-py would otherwise resend the probe until the server answers.
    probe = Redis(host="127.0.0.1", port=port, socket_timeout=0.05, retry=Retry(NoBackoff(), 0))
    try:
        for _ in range(200):
            try:
                await probe.ping()
            except RedisTimeoutError:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the server on port {port} kept answering: it never slept")
    finally:
        await probe.aclose()


def test_slow_redis_calls_wait_and_long_locks_survive(server: RedisProcess) -> None:
    """``DEBUG SLEEP 2`` blocks the server while a job runs (its lock renewal is due during the
    pause) and a producer adds a job: the calls wait and then proceed, nothing errs, and a lock
    of 6 s, well above the pause, survives."""

    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix="slow")
        try:
            (first,) = await add_jobs(backend, 1)
            running = asyncio.Event()

            async def process(job: Job) -> int:
                running.set()
                await asyncio.sleep(4 if job.id == first else 0)
                return int(job.id)

            stalled: list[str] = []
            run = Run(
                backend, process, lock_duration=6_000, lock_renew_time=2_000, stalled_interval=500
            )
            run.worker.on("stalled", lambda job_id, previous: stalled.append(job_id))
            run.start()
            await asyncio.wait_for(running.wait(), 10)
            await asyncio.sleep(0.5)
            with server.admin() as admin:
                sleeping = asyncio.create_task(
                    asyncio.to_thread(admin.execute_command, "DEBUG", "SLEEP", "2")
                )
                await until_asleep(server.port)  # (a fixed pause lost the race on a busy VM)
                before = time.monotonic()
                ids = [first, *await add_jobs(backend, 1)]
                waited = time.monotonic() - before
                await asyncio.wait_for(sleeping, 10)
            await until(lambda: all_completed(backend, ids), "both jobs to complete")
            await run.stop()

            assert waited >= 1.0, waited  # the add waited for the server to wake up
            assert run.errors == []
            assert run.lock_renewals_failed == []
            assert stalled == []
            await assert_completed_exactly_once(backend, ids)
            assert run.executions == collections.Counter(dict.fromkeys(ids, 1))
        finally:
            await backend.close()

    asyncio.run(main())


def test_a_server_silent_past_the_socket_timeout_fails_the_call_then_recovers(
    server: RedisProcess,
) -> None:
    """With the client's ``socket_timeout`` at 0.3 s, ``DEBUG SLEEP 1.5`` makes a call wait in
    vain: it fails with RedisUnavailableError saying it timed out (after one to two timeouts of
    silence), and once the server is awake the next call works on a fresh connection."""

    async def main() -> None:
        client = Redis(host="127.0.0.1", port=server.port, socket_timeout=0.3)
        backend = RedisBackend(client, prefix="timeout", url=server.url)
        try:
            await add_jobs(backend, 1)
            with server.admin() as admin:
                sleeping = asyncio.create_task(
                    asyncio.to_thread(admin.execute_command, "DEBUG", "SLEEP", "1.5")
                )
                await until_asleep(server.port)  # (a fixed pause lost the race on a busy VM)
                before = time.monotonic()
                with pytest.raises(RedisUnavailableError, match="Timeout reading"):
                    await backend.get_counts(Q)
                waited = time.monotonic() - before
                await asyncio.wait_for(sleeping, 10)
            assert 0.25 <= waited < 1.2, waited
            assert (await backend.get_counts(Q))[JobState.WAITING] == 1
        finally:
            await backend.close()
            await client.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------------------- unreachable


def test_unreachable_server_errors_name_the_url_and_the_worker_backs_off() -> None:
    """No server at the URL (connection refused): connecting is lazy, so construction succeeds
    and the first call raises RedisUnavailableError naming the URL (password redacted); a
    worker reports the same error, spaced by its backoff."""
    port = free_port()
    url = f"redis://app:s3cret@127.0.0.1:{port}/0"
    shown = f"redis://app:***@127.0.0.1:{port}/0"

    async def main() -> None:
        backend = RedisBackend.from_url(url, prefix="nowhere")
        try:
            with pytest.raises(RedisUnavailableError) as info:
                await Queue(Q, backend).add("x")
            assert f"cannot reach Redis at {shown}" in str(info.value)
            assert "s3cret" not in str(info.value)
            run = Run(backend, returns_id(0), skip_stalled_check=True)
            run.start()
            await asyncio.sleep(1.6)
            await run.stop()
            # 0, 100, 300, 700, 1500 ms: five fetches in 1.6 s, not a busy loop.
            assert 3 <= len(run.errors) <= 6, run.errors
            assert all(f"cannot reach Redis at {shown}" in str(e) for e in run.errors)
        finally:
            await backend.close()

    asyncio.run(main())
