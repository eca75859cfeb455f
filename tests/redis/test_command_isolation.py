"""One call that cannot be sent never fails the calls batched with it (issue 13, item 2).

The Queue API refuses what Redis cannot take, but the command queue must hold on its own: a
call whose arguments cannot be packed (here a lone surrogate, past the API's checks) fails
alone, whichever batch it lands in, with a plain client (the pump) and with a single-connection
client (redis-py's pipelines), on fakeredis and on the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
import redis.asyncio

from corral.backends.redis import RedisBackend
from corral.backends.redis.fake import virtual_fakeredis
from corral.engine import InvalidArgumentError, Queue
from corral.engine.storage import new_job
from corral.sim.loop import VirtualClock, VirtualTimeLoop

Q = "q"
GOOD = 10


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Keep virtual time still while real I/O is in flight (see VirtualTimeRedis)."""
    loop = asyncio.get_running_loop()
    with loop.external_work() if isinstance(loop, VirtualTimeLoop) else contextlib.nullcontext():
        yield


@contextlib.asynccontextmanager
async def redis_backend(
    kind: str, single: bool, clock: VirtualClock, url: str, prefix: str
) -> AsyncIterator[RedisBackend]:
    if kind == "fakeredis":
        with virtual_fakeredis(clock):
            client: Any = fakeredis.aioredis.FakeRedis(
                server=fakeredis.FakeServer(),
                decode_responses=True,
                single_connection_client=single,
            )
            backend = RedisBackend(client, url="fakeredis://")
            try:
                yield backend
            finally:
                await backend.close()
                await client.aclose()
        return
    client = redis.asyncio.Redis.from_url(
        url, decode_responses=True, single_connection_client=single
    )
    backend = RedisBackend(client, prefix=prefix)
    try:
        yield backend
    finally:
        with held():
            await backend.close()
            await client.aclose()


@pytest.fixture(params=["fakeredis", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    return ""


@pytest.mark.parametrize("single", [False, True], ids=["pump", "pipeline"])
@pytest.mark.parametrize("bad_at", [0, 3, 5, GOOD])
async def test_an_unpackable_call_fails_alone(
    kind: str, url: str, key_prefix: str, clock: VirtualClock, single: bool, bad_at: int
) -> None:
    async with redis_backend(kind, single, clock, url, key_prefix) as backend:
        assert backend._commands._direct is not single  # the path under test
        with held():
            await backend.get_counts(Q)  # scripts loaded, connection made

            async def add(name: str) -> list[str]:
                job = new_job(name, "null", "{}", clock.now_ms())
                return (await backend.add_jobs(Q, [job])).job_ids

            good = [f"good-{n}" if n % 2 else f"gööd-{n}" for n in range(GOOD)]  # UTF-8 is fine
            names = [*good]
            names.insert(bad_at, "bad-\ud800")
            results = await asyncio.gather(*map(add, names), return_exceptions=True)
            bad = results.pop(bad_at)
            assert isinstance(bad, UnicodeEncodeError), bad
            assert all(isinstance(r, list) for r in results), results
            counts = await backend.get_counts(Q)
            assert sum(counts.values()) == GOOD
            stored = [(await backend.get_job(Q, str(n)) or {}).get("name") for n in range(1, 11)]
            assert sorted(stored, key=str) == sorted(good)


async def test_the_api_refuses_it_first_and_nothing_else_fails(
    kind: str, url: str, key_prefix: str, clock: VirtualClock
) -> None:
    async with redis_backend(kind, False, clock, url, key_prefix) as backend:
        queue = Queue(Q, backend, clock=clock)
        with held():
            names = [f"good-{n}" for n in range(GOOD)]
            names.insert(5, "bad-\ud800")
            results = await asyncio.gather(
                *(queue.add(name) for name in names), return_exceptions=True
            )
            assert isinstance(results.pop(5), InvalidArgumentError)
            assert not [r for r in results if isinstance(r, BaseException)]
            assert await queue.get_job_counts("waiting") == {"waiting": GOOD}
