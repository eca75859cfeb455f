"""A Redis that is up but refuses operations: out of memory (``maxmemory`` with
``noeviction``), wrong credentials, a user without ACL permissions, an eviction policy that
deletes keys. Each test starts its own ``redis-server`` (see local_redis.py) and runs on a real
event loop.

Out of memory, Redis refuses a script as a whole only when it carries a shebang (Redis 7 script
flags); a flagless script is refused at its first memory-growing command, and not at all once it
has written something: ``finish`` dropped the lock and then completed the job past the limit,
while ``extend_locks`` (whose first write is SET) was refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from local_redis import RedisProcess, redis_server

from corral.backends.redis import RedisAuthenticationError, RedisBackend
from corral.engine.errors import StoreRefusedError
from corral.engine.states import JobState
from corral.engine.storage import Complete, FetchRequest, RetryNow, new_job

Q = "refusals"
PREFIX = "refuse"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with redis_server(tmp_path / "redis", {"maxmemory-policy": "noeviction"}) as started:
        yield started


def layout(admin: redis.Redis) -> dict[bytes, Any]:
    """Every key of the queue with its serialized value (locks by existence: their TTL runs)."""
    return {key: admin.dump(key) for key in sorted(admin.keys(f"{PREFIX}:*"))}


def run_out_of_memory(admin: redis.Redis) -> None:
    """Store filler keys (outside the queue's prefix), then cap maxmemory below what is used."""
    with admin.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.set(f"filler:{i}", "x" * 1000)
        pipe.execute()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used // 2))


def test_out_of_memory_refuses_every_writing_script_whole(server: RedisProcess) -> None:
    """Each operation that writes is refused before its first change, with an error naming the
    operation and the cause; remove (which frees memory) still runs."""

    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix=PREFIX)
        request = FetchRequest(None, 60_000, "w", token_prefix="w:")
        with server.admin() as admin:
            try:
                await backend.add_jobs(Q, [new_job("n", "{}", "{}", 1) for _ in range(6)])
                one = await backend.fetch_next(Q, request, 10)
                two = await backend.fetch_next(Q, request, 10)
                assert one.job is not None and two.job is not None
                await backend.check_stalled(Q, max_stalled_count=1, stalled_interval=1, now=10)
                admin.delete(backend.keys(Q).stalled_check)  # let the next check run
                run_out_of_memory(admin)
                before = layout(admin)
                job, token = one.job.job_id, one.job.token
                attempts: dict[str, Callable[[], Awaitable[Any]]] = {
                    "add_jobs": lambda: backend.add_jobs(Q, [new_job("n", "{}", "{}", 2)]),
                    "fetch_next": lambda: backend.fetch_next(Q, request, 20),
                    "finish": lambda: backend.finish(Q, job, token, Complete("1"), 20, request),
                    "extend_locks": lambda: backend.extend_locks(Q, [(job, token)], 60_000),
                    "release": lambda: backend.release(Q, job, token, 20),
                    "check_stalled": lambda: backend.check_stalled(
                        Q, max_stalled_count=1, stalled_interval=1, now=20
                    ),
                    "update_progress": lambda: backend.update_progress(Q, job, "50"),
                    "set_paused": lambda: backend.set_paused(Q, True),
                }
                for operation, attempt in attempts.items():
                    with pytest.raises(StoreRefusedError) as refused:
                        await attempt()
                    assert str(refused.value).startswith(
                        f"{operation} refused: Redis is out of memory"
                    ), refused.value
                    assert refused.value.operation == operation
                    assert layout(admin) == before, f"{operation} changed the queue"
                with pytest.raises(StoreRefusedError, match="^finish refused"):
                    await backend.finish(Q, job, token, RetryNow("x"), 20)
                assert layout(admin) == before
                # The reads still answer.
                assert (await backend.get_counts(Q))[JobState.ACTIVE] == 2
                assert await backend.remove(Q, "6") == 0
                assert await backend.get_job(Q, "6") is None
                # Memory back: the same operations go through.
                admin.config_set("maxmemory", "0")
                assert await backend.extend_locks(Q, [(job, token)], 60_000) == []
                assert await backend.finish(Q, job, token, Complete("1"), 30) == 0
            finally:
                admin.config_set("maxmemory", "0")
                await backend.close()

    asyncio.run(main())
