"""Redis-specific behaviour of RedisBackend: BullMQ's key layout, the Lua sources, NOSCRIPT
reload, blocking waits on their own connection, unreachable servers, and the fakeredis clock.

Tests taking ``backend`` run on fakeredis (virtual clock) and on the real server at
CORRAL_REDIS_URL (see tests/conftest.py); the ``real_*`` tests run in real time on the real
server and skip when none answers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
import redis.asyncio

from corral.backends.redis import RedisBackend, RedisUnavailableError
from corral.backends.redis.fake import virtual_fakeredis
from corral.backends.redis.keys import KEY_TYPES, QueueKeys
from corral.backends.redis.scripts import SCRIPT_NAMES, load_library, load_source, used_part
from corral.engine import Job, Queue, Worker
from corral.engine.errors import ResultCode
from corral.engine.states import JobState, Transition
from corral.engine.storage import Complete, Fail, FetchRequest, RetryLater, Storage
from corral.sim.loop import VirtualClock, VirtualTimeLoop

Q = "q"
REDIS_BACKENDS = pytest.mark.parametrize("backend", ["fakeredis", "redis"], indirect=True)


def redis_of(backend: Storage) -> RedisBackend:
    """The RedisBackend behind a test backend (the real-server one comes wrapped)."""
    inner = getattr(backend, "inner", backend)
    assert isinstance(inner, RedisBackend)
    return inner


class Held:
    """A client whose calls keep virtual time still until the reply is in (a real server's
    reply takes real time; see VirtualTimeRedis in tests/conftest.py)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            assert isinstance(loop, VirtualTimeLoop)
            with loop.external_work():
                return await method(*args, **kwargs)

        return call


def client_of(backend: Storage) -> Any:
    """The backend's client, safe to use from a virtual-time test."""
    return Held(redis_of(backend).client)


# ---------------------------------------------------------------------------- Lua sources


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_header_names_its_keys_and_valid_transitions(name: str) -> None:
    source = load_source(name)
    assert all(key in KEY_TYPES for key in source.keys)
    for transition in source.transitions:
        assert transition in Transition.__members__, f"{name}.lua: {transition}"
    body = source.text
    assert "ARGV:" in body
    assert "Returns:" in body
    assert "'TIME'" not in body.upper().replace('"', "'")  # Lua never reads the server clock


def test_every_transition_is_performed_by_some_script() -> None:
    performed = {t for name in SCRIPT_NAMES for t in load_source(name).transitions}
    assert performed == set(Transition.__members__)


def test_includes_are_pruned_to_what_the_script_reaches() -> None:
    library = (
        "local LIMIT = 10\n"
        "local TABLE = {a = 1,\n  b = 2}\n"
        "local function leaf(x)\n  return x + LIMIT\nend\n"
        "-- (a comment naming unused() does not keep it)\n"
        "local function unused(x)\n  return TABLE[x]\nend\n"
        "local function used(x)\n  return leaf(x)\nend\n"
        "local HOOKS = {}\n"
        "HOOKS.on = function(x)\n  return used(x)\nend\n"
    )
    kept = used_part(library, "return 1\n")
    # The hook is not a definition, so it stays, and with it what it reaches.
    assert "local function used(" in kept
    assert "local function leaf(" in kept
    assert "local LIMIT = 10" in kept
    assert "local HOOKS = {}" in kept
    assert "local function unused(" not in kept
    assert "TABLE" not in kept
    # A helper of an include that finish.lua never reaches is left out of its program.
    assert "local function deduplicate(" not in load_source("finish").text
    assert "local function deduplicate(" in load_source("add_jobs").text


@pytest.mark.redis
def test_one_function_library_holds_every_script(redis_url: str) -> None:
    """On Redis 7 every script is a function of one library, with its script's flags; each
    function sets the flow hooks only for a script that includes "flows", and clears the
    batched marker flags that "common" keeps between calls."""
    library = load_library()
    assert set(library.functions) == set(SCRIPT_NAMES)
    assert all(
        name.startswith("corral_") and name.endswith(library.name[len("corral_") :])
        for name in library.functions.values()
    )
    with redis.Redis.from_url(redis_url) as admin:
        admin.function_load(library.text, replace=True)
        (entry,) = admin.function_list(library=library.name)
    fields = dict(zip(entry[::2], entry[1::2], strict=True))
    flags = {}
    for function in fields[b"functions"]:
        described = dict(zip(function[::2], function[1::2], strict=True))
        flags[described[b"name"].decode()] = {flag.decode() for flag in described[b"flags"]}
    assert flags == {library.functions[name]: set(load_source(name).flags) for name in SCRIPT_NAMES}
    assert flags[library.functions["get_counts"]] == {"no-writes"}
    for name in SCRIPT_NAMES:
        start = library.text.index(f"function_name = '{library.functions[name]}'")
        preamble = library.text[
            start : library.text.index("\n", library.text.index("FLOW.", start)) + 1
        ]
        hooks_set = "= FLOW_HOOKS.child_failed" in preamble
        assert hooks_set == ("flows" in load_source(name).includes), name
    assert library.text.count("batch_ready, made_ready = false, false\n") == len(SCRIPT_NAMES) + 1


def test_key_schema() -> None:
    keys = QueueKeys.of("bull", "emails")
    assert (keys.wait, keys.stalled_check, keys.marker) == (
        "bull:emails:wait",
        "bull:emails:stalled-check",
        "bull:emails:marker",
    )
    assert (keys.job("42"), keys.lock("42")) == ("bull:emails:42", "bull:emails:42:lock")
    assert [keys.key(suffix) for suffix in KEY_TYPES] == [
        f"bull:emails:{suffix}" for suffix in KEY_TYPES
    ]


# ---------------------------------------------------------------------------- layout


@REDIS_BACKENDS
async def test_layout_matches_bullmq_names_and_types(backend: Storage, clock: VirtualClock):
    store = redis_of(backend)
    client = client_of(backend)
    queue = Queue(Q, backend, clock=clock)
    now = clock.now_ms()

    async def take(token: str, name: str | None = None) -> str:
        fetched = await backend.fetch_next(Q, FetchRequest(token, 30_000, name), now)
        assert fetched.job is not None
        return fetched.job.job_id

    await queue.add("plain", {"n": 1})
    await queue.add("prio", priority=2)
    await queue.add("later", delay=60_000)
    assert await take("w:1", "w1") == "1"
    await backend.finish(Q, "1", "w:1", Complete('"done"'), now)
    assert await take("w:2") == "2"
    await backend.finish(Q, "2", "w:2", RetryLater(5_000, "oops", '["trace"]'), now)
    await queue.add("fails")
    assert await take("w:3") == "4"
    await backend.finish(Q, "4", "w:3", Fail("bad"), now)
    await queue.add("active")
    assert await take("w:4") == "5"
    await queue.check_stalled(stalled_interval=30_000)
    await queue.add("waits")
    await queue.add("prio2", priority=1)
    await queue.rate_limit(60_000)  # the limiter window (a string with a TTL)
    await queue.pause()

    keys = store.keys(Q)
    types = {
        key.removeprefix(keys.base): await client.type(key)
        for key in await client.keys(f"{keys.base}*")
    }
    assert types == {
        # (no job scheduler was made: no ``repeat`` set; waiting-children exists only with a
        # parent)
        **{
            suffix: kind
            for suffix, kind in KEY_TYPES.items()
            if suffix not in ("marker", "repeat", "waiting-children")
        },
        **{str(n): "hash" for n in range(1, 8)},
        "5:lock": "string",
    }  # the marker is deleted while paused
    assert await client.get(keys.id) == "7"
    assert await client.get(keys.pc) == "2"
    assert await client.hgetall(keys.meta) == {"paused": "1"}
    assert await client.lrange(keys.wait, 0, -1) == ["6"]
    assert await client.lrange(keys.active, 0, -1) == ["5"]
    assert await client.smembers(keys.stalled) == {"5"}
    assert await client.zrange(keys.prioritized, 0, -1, withscores=True) == [("7", 2**32 + 2)]
    assert await client.zrange(keys.delayed, 0, -1, withscores=True) == [
        ("2", (now + 5_000) * 4096),
        ("3", (now + 60_000) * 4096),
    ]
    assert await client.zrange(keys.completed, 0, -1, withscores=True) == [("1", now)]
    assert await client.zrange(keys.failed, 0, -1, withscores=True) == [("4", now)]
    assert await client.get(keys.lock("5")) == "w:4"
    assert 0 < await client.pttl(keys.lock("5")) < 30_000
    assert await client.get(keys.stalled_check) == str(now)
    assert 0 < await client.pttl(keys.stalled_check) < 30_000

    assert await client.hgetall(keys.job("1")) == {
        "name": "plain",
        "data": '{"n":1}',
        "opts": '{"attempts":1,"delay":0}',
        "timestamp": str(now),
        "delay": "0",
        "priority": "0",
        "processedOn": str(now),
        "ats": "1",
        "pb": "w1",
        "atm": "1",
        "returnvalue": '"done"',
        "finishedOn": str(now),
        "fin:w:1": "complete:",  # corral's record of that finish (Node ignores it)
    }
    retried = await client.hgetall(keys.job("2"))
    assert (retried["delay"], retried["failedReason"], retried["atm"]) == ("5000", "oops", "1")
    assert json.loads(retried["stacktrace"]) == ["trace"]
    failed = await client.hgetall(keys.job("4"))
    assert (failed["failedReason"], failed["finishedOn"]) == ("bad", str(now))

    events = [fields for _, fields in await client.xrange(keys.events)]
    assert all("event" in fields for fields in events)
    assert events[:2] == [
        {"event": "added", "jobId": "1", "name": "plain"},
        {"event": "waiting", "jobId": "1"},
    ]
    assert {"event": "completed", "jobId": "1", "returnvalue": '"done"', "prev": "active"} in events
    assert {"event": "delayed", "jobId": "2", "delay": str(now + 5_000)} in events
    assert {"event": "failed", "jobId": "4", "failedReason": "bad", "prev": "active"} in events
    assert events[-1] == {"event": "paused"}


@REDIS_BACKENDS
async def test_marker_members_are_ready_and_next_due(backend: Storage, clock: VirtualClock):
    client = client_of(backend)
    queue = Queue(Q, backend, clock=clock)
    await queue.add("later", delay=2_000)
    marker = redis_of(backend).keys(Q).marker
    due = clock.now_ms() + 2_000
    assert await client.zrange(marker, 0, -1, withscores=True) == [("1", due)]
    await queue.add("now")
    assert await client.zrange(marker, 0, -1, withscores=True) == [("0", 0), ("1", due)]
    assert await backend.wait_for_work(Q, 1_000)  # consumes "0"
    assert await client.zrange(marker, 0, -1) == ["1"]


# ---------------------------------------------------------------------------- scripts


@REDIS_BACKENDS
async def test_scripts_are_loaded_again_after_script_flush(backend: Storage, clock: VirtualClock):
    client = client_of(backend)
    queue = Queue(Q, backend, clock=clock)
    await queue.add("a")
    await client.script_flush()
    sha = hashlib.sha1(load_source("add_jobs").text.encode()).hexdigest()
    assert await client.script_exists(sha) == [False]
    job = await queue.add("b")  # NOSCRIPT, loaded again, run
    assert job.id == "2"
    assert await queue.get_job_counts("waiting") == {"waiting": 2}
    await client.script_flush()
    # Several scripts at once in one pipelined batch, each reloading on its own.
    results = await asyncio.gather(
        backend.get_counts(Q), queue.add("c"), backend.get_state(Q, "1"), queue.get_job("2")
    )
    assert results[1].id == "3"
    assert results[2] == "waiting"


# ---------------------------------------------------------------------------- waiting


async def test_wait_for_work_times_out_and_wakes_in_virtual_time(clock: VirtualClock):
    with virtual_fakeredis(clock):
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        backend = RedisBackend(client)
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            assert not await backend.wait_for_work(Q, 250)
            assert loop.time() - start == pytest.approx(0.25)

            async def add_later() -> None:
                await asyncio.sleep(0.1)
                await Queue(Q, backend, clock=clock).add("x")

            adder = asyncio.create_task(add_later())
            start = loop.time()
            assert await backend.wait_for_work(Q, 5_000)
            assert loop.time() - start == pytest.approx(0.1)
            await adder
            # Other calls are not held up by a blocked wait (it has its own connection).
            waiting = asyncio.create_task(backend.wait_for_work(Q, 5_000))
            await asyncio.sleep(0.01)
            assert (await backend.get_counts(Q))[JobState.WAITING] == 1
            assert not waiting.done()
            waiting.cancel()
        finally:
            await backend.close()
            await client.aclose()


def test_real_wait_for_work_blocks_on_its_own_connection(redis_url: str, key_prefix: str):
    async def main() -> None:
        backend = RedisBackend.from_url(redis_url, prefix=key_prefix)
        try:
            assert backend._blocking_pool.connection_kwargs["socket_timeout"] is None
            started = time.monotonic()
            assert not await backend.wait_for_work(Q, 100)
            assert time.monotonic() - started >= 0.09
            waiting = asyncio.create_task(backend.wait_for_work(Q, 5_000))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert sum((await backend.get_counts(Q)).values()) == 0  # not blocked
            assert time.monotonic() - started < 1
            queue = Queue(Q, backend)
            await queue.add("wake")
            assert await asyncio.wait_for(waiting, 2)
            await asyncio.sleep(0)
        finally:
            await backend.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- errors


def test_unreachable_server_names_the_url() -> None:
    async def main() -> None:
        url = "redis://user:secret@127.0.0.1:1/0"
        backend = RedisBackend.from_url(url, socket_connect_timeout=1)
        try:
            with pytest.raises(RedisUnavailableError) as info:
                await backend.get_counts(Q)
            message = str(info.value)
            assert "redis://user:***@127.0.0.1:1/0" in message
            assert "secret" not in message
            with pytest.raises(RedisUnavailableError, match=re.escape("127.0.0.1:1")):
                await Queue(Q, backend).add("x")
            with pytest.raises(RedisUnavailableError, match=re.escape("127.0.0.1:1")):
                await backend.wait_for_work(Q, 10)
        finally:
            await backend.close()

    asyncio.run(main())


def test_client_without_url_is_named_by_host_and_port() -> None:
    client = redis.asyncio.Redis(host="10.0.0.7", port=6390, db=2)
    assert RedisBackend(client).url == "redis://10.0.0.7:6390/2"


@REDIS_BACKENDS
async def test_bytes_clients_work_too(backend: Storage, clock: VirtualClock):
    store = redis_of(backend)
    kwargs: dict[str, Any] = dict(store.client.connection_pool.connection_kwargs)
    kwargs["decode_responses"] = False
    pool = redis.asyncio.ConnectionPool(
        connection_class=store.client.connection_pool.connection_class, **kwargs
    )
    bytes_backend = RedisBackend(redis.asyncio.Redis(connection_pool=pool), prefix=store.prefix)
    # On the real server, wrapped like the fixture's backend (see VirtualTimeRedis).
    raw: Any = bytes_backend if backend is store else type(backend)(bytes_backend)
    try:
        queue = Queue(Q, raw, clock=clock)
        job = await queue.add("bytes", {"x": 1})
        fetched = await raw.fetch_next(Q, FetchRequest("t", 1_000, "w"), clock.now_ms())
        assert fetched.job is not None
        assert fetched.job.fields["name"] == "bytes"
        assert await raw.get_state(Q, job.id) == "active"
        assert (await raw.get_lock(Q, job.id)) is not None
        result = await raw.finish(Q, job.id, "t", Complete("1"), clock.now_ms())
        assert result is ResultCode.OK
        assert [e.name for e in await raw.get_events(Q)][-1] == "drained"
        assert await raw.get_job_ids(Q, JobState.COMPLETED, 0, -1, True) == [job.id]
    finally:
        await raw.close()
        await pool.disconnect()


# ---------------------------------------------------------------------------- fakeredis clock


async def test_virtual_fakeredis_expires_keys_like_redis_at_whole_milliseconds(
    clock: VirtualClock,
) -> None:
    with virtual_fakeredis(clock):
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        try:
            await client.set("k", "v", px=1_000)
            assert await client.pttl("k") == 1_000
            await asyncio.sleep(1.0)  # now == set time + PX: Redis still has it
            assert (await client.get("k"), await client.pttl("k")) == ("v", 0)
            await asyncio.sleep(0.001)
            assert await client.get("k") is None
            await client.xadd("s", {"a": "b"})
            (entry_id, _), *_ = await client.xrange("s")
            assert entry_id == f"{clock.now_ms()}-0"
        finally:
            await client.aclose()
    assert time.time() > 0  # the real clock is back


async def test_a_cancelled_wait_does_not_consume_a_later_marker(clock: VirtualClock) -> None:
    with virtual_fakeredis(clock):
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        backend = RedisBackend(client)
        try:
            waiting = asyncio.create_task(backend.wait_for_work(Q, 5_000))
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await Queue(Q, backend, clock=clock).add("x")
            await asyncio.sleep(1)
            assert await client.zrange(backend.keys(Q).marker, 0, -1) == ["0"]
            assert await backend.wait_for_work(Q, 10)
        finally:
            await backend.close()
            await client.aclose()


@REDIS_BACKENDS
async def test_deferred_failure_left_by_node_bullmq_fails_on_pickup(
    backend: Storage, clock: VirtualClock
):
    """What Node BullMQ >= 5.53.2 leaves behind: a job back in wait with ``defa`` set."""
    queue = Queue(Q, backend, clock=clock)
    job = await queue.add("j", attempts=3)
    await client_of(backend).hset(redis_of(backend).keys(Q).job(job.id), "defa", "too stalled")
    called: list[str] = []

    async def work(job: Job) -> None:
        called.append(job.id)

    worker = Worker(Q, work, backend, clock=clock, rng=random.Random(1))
    failures: list[str] = []
    worker.on("failed", lambda job, error: failures.append(str(error)))
    task = asyncio.create_task(worker.run())
    while not failures:
        await asyncio.sleep(0.01)
    await worker.close()
    await task
    assert (called, failures) == ([], ["too stalled"])
    stored = await queue.get_job(job.id)
    assert stored is not None
    assert await queue.get_job_state(job.id) == "failed"  # remaining attempts are ignored
    assert (stored.failed_reason, stored.deferred_failure) == ("too stalled", None)
    assert (stored.attempts_made, stored.attempts_started) == (1, 1)


@REDIS_BACKENDS
async def test_calls_take_effect_in_call_order(backend: Storage, clock: VirtualClock):
    queue = Queue(Q, backend, clock=clock)
    await queue.add_bulk([{"name": str(n)} for n in range(6)])
    now = clock.now_ms()
    fetched = await asyncio.gather(
        *(backend.fetch_next(Q, FetchRequest(f"t{n}", 1_000), now) for n in range(6))
    )
    assert [f.job.job_id for f in fetched if f.job] == ["1", "2", "3", "4", "5", "6"]


async def test_a_cancelled_call_is_still_applied(clock: VirtualClock) -> None:
    with virtual_fakeredis(clock):
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        backend = RedisBackend(client)
        try:
            queue = Queue(Q, backend, clock=clock)
            adding = asyncio.create_task(queue.add("x"))
            await asyncio.sleep(0)  # the call is made (queued), its reply not yet in
            adding.cancel()
            with pytest.raises(asyncio.CancelledError):
                await adding
            assert await backend.get_state(Q, "1") == "waiting"
        finally:
            await backend.close()
            await client.aclose()
