"""SyncQueue answers misuse as Queue does (issue 13, item 16): the same did-you-mean for an
unknown option of ``add``, the same refusal of an id that is not a string, and the same
ClosedError once it, or the Redis backend it shares, was closed."""

from __future__ import annotations

import asyncio

import pytest

from corral import MemoryBackend, Queue, SyncQueue
from corral.backends.redis import RedisBackend
from corral.engine import ClosedError, InvalidArgumentError, UnknownOptionError


def test_an_unknown_keyword_to_add_suggests_the_option() -> None:
    with SyncQueue("sync", MemoryBackend()) as queue:
        with pytest.raises(UnknownOptionError, match=r"'attemps' \(did you mean 'attempts'\?\)"):
            queue.add("job", attemps=3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="attemps"):  # what Python raised before
            queue.add("job", attemps=3)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="job id must be a non-empty string"):
            queue.get_job(1)  # type: ignore[arg-type]
        assert queue.get_job_counts("waiting") == {"waiting": 0}


def test_a_closed_sync_queue_raises_what_a_closed_queue_raises() -> None:
    queue = SyncQueue("sync", MemoryBackend())
    queue.add("x")
    queue.close()
    with pytest.raises(ClosedError, match="SyncQueue 'sync' is closed"):
        queue.add("late")
    closed = Queue("sync", MemoryBackend())
    asyncio.run(closed.close())
    with pytest.raises(ClosedError, match="queue 'sync' is closed"):
        asyncio.run(closed.add("late"))


@pytest.mark.redis
def test_queues_on_a_redis_backend_closed_with_the_last_sync_queue_refuse(
    redis_url: str, key_prefix: str
) -> None:
    backend = RedisBackend.from_url(redis_url, prefix=key_prefix)
    with SyncQueue("sync", backend) as queue:
        queue.add("x")
    # Closing the last SyncQueue closed the backend: a queue made on it later says so
    # (before, it quietly opened new connections that nothing would close).
    closed = r"cannot be used: <RedisBackend .* is closed"
    with SyncQueue("sync", backend) as again, pytest.raises(ClosedError, match=closed):
        again.get_job_counts()
    with pytest.raises(ClosedError, match=closed):
        asyncio.run(Queue("sync", backend).add("y"))
