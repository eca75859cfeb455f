"""RedisBackend on Redis Cluster: a 3-master cluster of ``redis-server`` processes the module
starts on free loopback ports (see local_redis.py).

As BullMQ documents, a queue works on a cluster when every one of its keys lives in one hash
slot: the prefix or the queue name carries a hash tag (``{bull}``). Without one the backend
refuses, naming the fix, before anything is sent (instead of a CROSSSLOT error inside a
script). The tests run the basics of the conformance suite with short real TTLs (add, process,
priority, delayed, retry with backoff, stalled recovery, blocking waits on the node that owns
the queue's marker) and a multi-queue workload spread over all three nodes.

Plain ``def`` tests running ``asyncio.run`` on a real event loop; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from local_redis import RedisClusterProcesses, free_port
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from corral.backends.redis import RedisBackend, RedisUnavailableError
from corral.engine import Job, Queue, Worker
from corral.engine.errors import InvalidArgumentError
from corral.engine.states import JobState
from corral.engine.storage import FetchRequest

Q = "q"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A 3-master Redis Cluster for the module's tests (each test uses its own prefixes)."""
    processes = RedisClusterProcesses(tmp_path_factory.mktemp("cluster"), masters=3)
    processes.start()
    try:
        yield processes
    finally:
        processes.stop()


def tagged(name: str) -> str:
    """A fresh hash-tagged prefix."""
    return f"{{{name}-{uuid.uuid4().hex[:8]}}}"


async def until(condition: Callable[[], Awaitable[bool]], what: str, limit: float = DEADLINE_S):
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.02)


def start(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(worker.close(), 10)
    await asyncio.wait_for(task, 10)


def owner_port(cluster: RedisClusterProcesses, key: str) -> int:
    """The port of the master that serves ``key``'s slot."""
    slot = key_slot(key.encode())
    with cluster.nodes[0].admin() as admin:
        for first, last, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                return int(master[1])
    raise AssertionError(f"no node serves slot {slot}")


def keys_by_port(cluster: RedisClusterProcesses, prefix: str) -> dict[int, int]:
    """How many keys under ``prefix`` each node holds (nodes holding none left out)."""
    found = {}
    for node in cluster.nodes:
        with node.admin() as admin:
            count = sum(1 for _ in admin.scan_iter(match=f"{prefix}:*", count=1000))
        if count:
            found[node.port] = count
    return found


# ---------------------------------------------------------------------------- the hash-tag rule


def test_untagged_keys_are_refused_with_the_fix_named(cluster: RedisClusterProcesses) -> None:
    async def main() -> None:
        backend = RedisBackend.from_url(cluster.url, cluster=True)  # prefix "bull": no tag
        try:
            assert backend.cluster
            assert repr(backend) == f"<RedisBackend {cluster.url} prefix='bull'>"
            for call in (
                lambda: Queue("emails", backend).add("x"),
                lambda: backend.get_counts("emails"),
                lambda: backend.wait_for_work("emails", 10),
            ):
                with pytest.raises(InvalidArgumentError) as info:
                    await call()
                message = str(info.value)
                assert "Redis Cluster needs every key of a queue in one hash slot" in message
                assert "prefix='{bull}'" in message
                assert "'{emails}'" in message
            assert keys_by_port(cluster, "bull") == {}  # nothing was sent

            # A hash tag in the queue name is enough ...
            queue_name = tagged("emails")
            job = await Queue(queue_name, backend).add("x")
            assert await backend.get_state(queue_name, job.id) is JobState.WAITING
            assert len(keys_by_port(cluster, f"bull:{queue_name}")) == 1
            # ... and "{}" or an unclosed brace is no tag at all.
            for name in ("{}emails", "{emails"):
                with pytest.raises(InvalidArgumentError, match="hash tag"):
                    await Queue(name, backend).add("x")
        finally:
            await backend.close()

    asyncio.run(main())


def test_a_cluster_client_can_be_passed_in(cluster: RedisClusterProcesses) -> None:
    async def main() -> None:
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[1], decode_responses=True)
        prefix = tagged("client")
        backend = RedisBackend(client, prefix=prefix)
        try:
            assert backend.url == f"redis://127.0.0.1:{cluster.ports[1]} (cluster)"
            job = await Queue(Q, backend).add("x", {"n": 1})
            stored = await backend.get_job(Q, job.id)
            assert stored is not None
            assert stored["data"] == '{"n":1}'
            assert list(keys_by_port(cluster, prefix)) == [owner_port(cluster, prefix)]
        finally:
            await backend.close()
            await client.aclose()

    asyncio.run(main())


def test_an_evicting_node_is_warned_about(cluster: RedisClusterProcesses) -> None:
    """The eviction policy is read from every node: one node under allkeys-lru is enough for a
    warning (a queue's slot may be on it)."""

    async def main() -> None:
        backend = RedisBackend.from_url(cluster.url, prefix=tagged("policy"), cluster=True)
        try:
            await backend.get_counts(Q)
            (warning,) = await backend.server_warnings()
            assert "maxmemory-policy is 'allkeys-lru', not 'noeviction'" in warning
        finally:
            await backend.close()

    node = cluster.nodes[2]
    with node.admin() as admin:
        admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        asyncio.run(main())
    finally:
        with node.admin() as admin:
            admin.config_set("maxmemory-policy", "noeviction")


def test_unreachable_cluster_names_the_url() -> None:
    url = f"redis://127.0.0.1:{free_port()}"

    async def main() -> None:
        backend = RedisBackend.from_url(url, "{bull}", cluster=True, socket_connect_timeout=1)
        try:
            with pytest.raises(RedisUnavailableError, match=f"cannot reach Redis at {url}"):
                await Queue(Q, backend).add("x")
        finally:
            await backend.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- conformance basics


def test_basics_on_a_cluster(cluster: RedisClusterProcesses) -> None:
    """Add, process, priority, delayed, retry with backoff, stalled recovery, and blocking
    waits, on one queue whose slot lives on one of the three nodes."""
    prefix = tagged("basics")

    async def main() -> None:
        backend = RedisBackend.from_url(cluster.url, prefix=prefix, cluster=True)
        queue = Queue(Q, backend)
        order: list[str] = []
        failures_left = {"retry": 2}

        async def process(job: Job) -> Any:
            order.append(job.name)
            if job.name == "retry" and failures_left["retry"] > 0:
                failures_left["retry"] -= 1
                raise RuntimeError("not yet")
            return {"done": job.name}

        try:
            # A job left active by a worker that died: its 500 ms lock lapses.
            await queue.add("stalled")
            taken = await backend.fetch_next(Q, FetchRequest("dead:1", 500, None), _now())
            assert taken.job is not None
            lock = await backend.get_lock(Q, taken.job.job_id)
            assert lock is not None
            assert lock.token == "dead:1"
            # Priority: served in priority order (wait first, then 1, 2, 3).
            for name, priority in (("p3", 3), ("p1", 1), ("plain", 0), ("p2", 2)):
                await queue.add(name, priority=priority)
            # The queue's keys live on one node, the one that serves the tag.
            assert list(keys_by_port(cluster, prefix)) == [owner_port(cluster, prefix)]

            worker = Worker(
                Q,
                process,
                backend,
                lock_duration=1_000,
                stalled_interval=300,
                drain_delay=20_000,  # an idle worker is woken by the marker, not by polling
            )
            stalled: list[str] = []
            errors: list[BaseException] = []
            worker.on("stalled", lambda job_id, previous: stalled.append(job_id))
            worker.on("error", lambda error, job: errors.append(error))
            task = start(worker)
            await until(lambda: _completed(queue, 5), "the first jobs")
            assert order[:4] == ["plain", "p1", "p2", "p3"]
            assert stalled == [taken.job.job_id]
            recovered = await queue.get_job(taken.job.job_id)
            assert recovered is not None
            assert recovered.stalled_counter == 1

            # Delayed (woken by the marker's due time) and retried with backoff.
            delayed = await queue.add("delayed", delay=400)
            assert await queue.get_job_state(delayed.id) == "delayed"
            retried = await queue.add("retry", attempts=3, backoff={"type": "fixed", "delay": 150})
            await until(lambda: _completed(queue, 7), "the delayed and retried jobs")
            done = await queue.get_job(delayed.id)
            assert done is not None
            assert done.processed_on is not None
            assert done.processed_on - done.timestamp >= 400
            retried_job = await queue.get_job(retried.id)
            assert retried_job is not None
            assert retried_job.attempts_made == 3
            assert retried_job.return_value == {"done": "retry"}

            # The idle worker blocks on the marker on the right node and wakes for a new job
            # long before its 20 s drain delay.
            await asyncio.sleep(0.3)
            late = await queue.add("late")
            await until(lambda: _completed(queue, 8), "the job added to an idle queue", 10)
            assert await queue.get_job_state(late.id) == "completed"
            await stop(worker, task)

            assert errors == []
            counts = await queue.get_job_counts()
            assert counts["completed"] == 8
            assert sum(counts.values()) == 8
            events = await backend.get_events(Q)
            assert sum(1 for e in events if e.name == "completed") == 8
            assert any(e.name == "stalled" for e in events)
            assert await backend.get_lock(Q, late.id) is None
        finally:
            await backend.close()

    asyncio.run(main())


def _now() -> int:
    return int(time.time() * 1000)


async def _completed(queue: Queue, count: int) -> bool:
    return (await queue.get_job_counts())["completed"] >= count


def test_wait_for_work_blocks_on_the_node_owning_the_marker(
    cluster: RedisClusterProcesses,
) -> None:
    """One tagged prefix per master: each backend's BZPOPMIN waits on the node that serves its
    marker, and wakes when a job is added there."""
    prefixes = _prefixes_on_every_node(cluster, per_node=1)

    async def main() -> None:
        backends = [RedisBackend.from_url(cluster.url, prefix=p, cluster=True) for p in prefixes]
        try:
            assert not await backends[0].wait_for_work(Q, 100)  # times out
            for backend in backends:
                waiting = asyncio.create_task(backend.wait_for_work(Q, 5_000))
                await asyncio.sleep(0.1)
                assert not waiting.done()
                await Queue(Q, backend).add("wake")
                assert await asyncio.wait_for(waiting, 5)
                # XREAD BLOCK on the queue's event stream goes to the same node.
                events = await backend.wait_for_events(Q, "0-0", 1_000)
                assert [e.name for e in events][:1] == ["added"]
        finally:
            for backend in backends:
                await backend.close()

    asyncio.run(main())


def _prefixes_on_every_node(cluster: RedisClusterProcesses, per_node: int) -> list[str]:
    """Tagged prefixes, ``per_node`` of them on each master."""
    by_port: dict[int, list[str]] = collections.defaultdict(list)
    while any(len(by_port[port]) < per_node for port in cluster.ports):
        prefix = tagged("multi")
        port = owner_port(cluster, prefix)
        if len(by_port[port]) < per_node:
            by_port[port].append(prefix)
    return [prefix for port in cluster.ports for prefix in by_port[port]]


# ---------------------------------------------------------------------------- multi-queue load


def test_multi_queue_workload_spread_over_the_nodes(cluster: RedisClusterProcesses) -> None:
    """Six queues under six hash-tagged prefixes, two per master; two workers per queue (one
    on a shared cluster client, one on its own); every job completes exactly once, and every
    queue's keys stay on the node that serves its tag."""
    prefixes = _prefixes_on_every_node(cluster, per_node=2)
    jobs_per_queue = 40

    async def main() -> None:
        shared = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
        own = [RedisBackend.from_url(cluster.url, prefix=p, cluster=True) for p in prefixes]
        backends = [RedisBackend(shared, prefix=p) for p in prefixes]
        executions: collections.Counter[tuple[str, str]] = collections.Counter()
        errors: list[BaseException] = []
        rng = random.Random(7)
        try:
            ids: dict[str, list[str]] = {}
            for prefix, backend in zip(prefixes, backends, strict=True):
                jobs = await Queue(Q, backend).add_bulk(
                    [{"name": "n", "data": {"i": i}} for i in range(jobs_per_queue)]
                )
                ids[prefix] = [job.id for job in jobs]

            def processor(prefix: str) -> Callable[[Job], Awaitable[int]]:
                async def process(job: Job) -> int:
                    executions[prefix, job.id] += 1
                    await asyncio.sleep(rng.random() * 0.005)
                    return int(job.data["i"])

                return process

            running = []
            for prefix, mine, theirs in zip(prefixes, backends, own, strict=True):
                for backend in (mine, theirs):
                    worker = Worker(Q, processor(prefix), backend, concurrency=3)
                    worker.on("error", lambda error, job: errors.append(error))
                    running.append((worker, start(worker)))

            async def all_done() -> bool:
                counts = [await b.get_counts(Q) for b in backends]
                return all(c[JobState.COMPLETED] == jobs_per_queue for c in counts)

            await until(all_done, "every queue's jobs")
            for worker, task in running:
                await stop(worker, task)

            assert errors == []
            assert set(executions.values()) == {1}
            assert len(executions) == len(prefixes) * jobs_per_queue
            for prefix, backend in zip(prefixes, backends, strict=True):
                counts = await backend.get_counts(Q)
                assert counts[JobState.COMPLETED] == jobs_per_queue
                assert sum(counts.values()) == jobs_per_queue
                events = await backend.get_events(Q)
                completions = collections.Counter(
                    e.fields["jobId"] for e in events if e.name == "completed"
                )
                assert completions == collections.Counter(dict.fromkeys(ids[prefix], 1))
                assert list(keys_by_port(cluster, prefix)) == [owner_port(cluster, prefix)]
            owners = {owner_port(cluster, prefix) for prefix in prefixes}
            assert owners == set(cluster.ports)  # the load was spread over every master
        finally:
            for backend in own + backends:
                await backend.close()
            await shared.aclose()

    asyncio.run(main())
