"""On a real Redis: a corral Worker's blocking connection carries BullMQ's client name, so
``CLIENT LIST`` (and Node's ``queue.getWorkers()``, bull-board) shows it; a Queue's connections
are not workers. Real time, real sockets (no virtual loop): the worker blocks in BZPOPMIN."""

from __future__ import annotations

import asyncio
import base64

import redis

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker


async def _noop(job: Job) -> None:
    return None


def _names(url: str) -> list[tuple[str, str]]:
    with redis.Redis.from_url(url, decode_responses=True) as admin:
        return [(c["name"], c["cmd"]) for c in admin.client_list()]


def test_worker_blocks_on_a_connection_named_as_bullmq(redis_url: str, key_prefix: str) -> None:
    queue_name = "mails/é"  # base64 of its UTF-8 bytes, with padding
    encoded = base64.b64encode(queue_name.encode()).decode()
    expected = f"{key_prefix}:{encoded}:w:sender"

    async def scenario() -> None:
        producer = RedisBackend.from_url(redis_url, prefix=key_prefix)
        consumer = RedisBackend.from_url(redis_url, prefix=key_prefix)
        queue = Queue(queue_name, producer)
        await queue.add("j", 1)  # the Queue's connection is open
        worker = Worker(queue_name, _noop, consumer, name="sender", drain_delay=2000)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(200):  # until the worker waits for work on its named connection
                if (expected, "bzpopmin") in _names(redis_url):
                    break
                await asyncio.sleep(0.01)
            named = [(n, cmd) for n, cmd in _names(redis_url) if n.startswith(key_prefix)]
            assert named == [(expected, "bzpopmin")]  # the worker's only; no Queue connection
            workers = await queue.get_workers()
            assert [(w["name"], w["rawname"]) for w in workers] == [(queue_name, expected)]
            assert await queue.get_job_counts("completed") == {"completed": 1}
        finally:
            await worker.close()
            await task
        assert not [n for n, _ in _names(redis_url) if n.startswith(key_prefix)]
        assert await queue.get_workers() == []
        await producer.close()
        await consumer.close()

    asyncio.run(scenario())
