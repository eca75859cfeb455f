"""QueueEvents across a dropped Redis connection: it reports the error and resumes after the last
event it delivered, so nothing is skipped and nothing is delivered twice. Runs against a private
``redis-server`` (see local_redis.py) on a real event loop, every wait bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_redis import RedisProcess, redis_server

from corral.backends.redis import RedisBackend
from corral.engine import Queue, QueueEvent, QueueEvents


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with redis_server(tmp_path / "redis") as started:
        yield started


def test_events_resume_after_the_connection_is_killed(server: RedisProcess) -> None:
    async def scenario() -> None:
        backend = RedisBackend.from_url(server.url, prefix="ev")
        try:
            queue = Queue("q", backend)
            listener = QueueEvents("q", backend, last_event_id="0-0", block=200, retry_delay=100)
            errors: list[BaseException] = []
            listener.on("error", lambda error, _: errors.append(error))
            heard: list[QueueEvent] = []

            async def listen() -> None:
                async for event in listener:
                    heard.append(event)
                    if len(heard) == 12:  # added + waiting for 6 jobs
                        return

            reading = asyncio.create_task(listen())
            for n in range(3):
                await queue.add(f"before-{n}")
            while len(heard) < 6:
                await asyncio.sleep(0.01)
            # Cut every client connection (the listener's blocking XREAD among them), then add
            # while the listener is reconnecting.
            admin = server.admin()
            try:
                killed = admin.client_kill_filter(_type="normal", skipme=True)
            finally:
                admin.close()
            assert killed >= 1
            for n in range(3):
                for _ in range(50):  # the producer's own connection was cut too
                    try:
                        await queue.add(f"after-{n}")
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
            await asyncio.wait_for(reading, 15)
            assert errors, "the dropped connection was not reported"
            names = [(e.name, e.job_id) for e in heard]
            assert names == [(kind, str(j)) for j in range(1, 7) for kind in ("added", "waiting")]
            assert len({e.id for e in heard}) == 12
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
