"""RedisBackend: the Storage protocol on Redis, in BullMQ's layout.

Every mutating operation is one Lua script (``lua/<operation>.lua``), so it is atomic on the
server; the reads that span several keys are a script (``get_state``) or a MULTI transaction.
Timestamps written into jobs are the callers' ``now``; lock and throttle TTLs are the server's
own (``PX``), and Lua never calls TIME.

Expiry boundary: Redis keeps a key alive through its expiry millisecond (it is gone when
``now > set_time + PX``), whereas the engine's contract (and the memory backend) treats a lock
taken at ``t`` for ``d`` ms as held during ``[t, t + d)``. Locks and the stalled-check throttle
are therefore set with ``PX d - 1``, which gives exactly ``[t, t + d)`` at Redis's millisecond
resolution, and :meth:`RedisBackend.get_lock` reports ``PTTL + 1`` (the milliseconds until the
lock is gone). A 1 ms lock (``PX 1``) is the one exception: it lives 2 ms.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from corral.backends.redis.core import (
    Client,
    RedisAuthenticationError,
    RedisUnavailableError,
    reaching,
)
from corral.backends.redis.dedup import DedupOps
from corral.backends.redis.flows import FlowOps
from corral.backends.redis.job_flow import JobFlowOps
from corral.backends.redis.job_ops import JobOps
from corral.backends.redis.keys import DEFAULT_PREFIX
from corral.backends.redis.limits import LimitOps
from corral.backends.redis.notifications import NotificationOps
from corral.backends.redis.queue_ops import QueueOps
from corral.backends.redis.readers import ReaderOps
from corral.backends.redis.schedulers import SchedulerOps
from corral.backends.redis.workers import WorkerOps

__all__ = ["RedisAuthenticationError", "RedisBackend", "RedisUnavailableError"]


class RedisBackend(
    FlowOps,
    JobFlowOps,
    ReaderOps,
    NotificationOps,
    JobOps,
    QueueOps,
    DedupOps,
    WorkerOps,
    LimitOps,
    SchedulerOps,
):
    """Storage on a Redis server (6.2 or later), shared with Node BullMQ.

    Args:
        client: a ``redis.asyncio.Redis`` client (``decode_responses`` either way), or a
            ``redis.asyncio.cluster.RedisCluster`` client for Redis Cluster.
        prefix: the key prefix (BullMQ's default ``"bull"``).
        url: how to name the server in errors (derived from the client when not given).
        instrumentation: hooks compiled into the Lua scripts (a transition log, planted
            bugs) for tests and the simulator; production leaves it out.
        token_numbers: the numbers of the lock tokens it mints (see ``FetchRequest``), which
            must never repeat. Defaults to a count of its own from 1; a store standing in for
            one that restarted takes the old one's, as a Redis client outlives its server.

    Commands go out in call order, pipelined on one connection at a time (see
    :mod:`~corral.backends.redis.pipeline`). A second connection pool with the client's settings
    (and no socket timeout) serves the blocking ``BZPOPMIN`` of :meth:`wait_for_work`, so a
    waiting worker never holds up other calls.

    Redis Cluster: as in BullMQ, every key of a queue must live in one hash slot, so the prefix
    or the queue name must carry a hash tag (``prefix="{bull}"``, or a queue named
    ``"{emails}"``); on a cluster client, an operation on a queue whose keys would spread over
    slots raises :class:`~corral.engine.errors.InvalidArgumentError` saying so, before anything
    is sent. Scripts and blocking waits go to the node that owns the queue's slot (the blocking
    waits through a second cluster client with the same nodes and no socket timeout).
    """

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, *, cluster: bool = False, **options: Any
    ) -> RedisBackend:
        """Connect to the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        With ``cluster=True``, ``url`` names one node of a Redis Cluster (``redis://`` or
        ``rediss://``; the client discovers the others) and the prefix or the queue names must
        carry a hash tag (see the class docs).

        Connecting is lazy: an unreachable server shows up as :class:`RedisUnavailableError`
        (naming ``url``) on the first operation. ``options`` go to ``Redis.from_url`` (or
        ``RedisCluster.from_url``).
        """
        options.setdefault("decode_responses", True)
        # Bytes another producer stored that are not UTF-8 must not make a whole reply (a
        # fetched job) unreadable: they arrive as lone surrogates, and the worker fails that job.
        options.setdefault("encoding_errors", "surrogateescape")
        client: Client = (
            RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
        )
        backend = cls(client, prefix, url=url)
        backend._owns_client = True
        return backend

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url} prefix={self.prefix!r}>"

    @reaching
    async def server_warnings(self) -> list[str]:
        """What is unsafe about the server for a queue: today, an eviction policy other than
        ``noeviction`` (each problem once, as logged before the first operation)."""
        assert self._server is not None  # read by @reaching
        return self._server.warnings()

    async def close(self) -> None:
        """Send what is queued, then close the blocking connections, and the client if
        :meth:`from_url` made it. Queues on a closed backend refuse to work (the client would
        quietly connect again)."""
        self.closed = True
        for queue, registered in list(self._worker_clients.items()):
            for registration in list(registered):
                await self.unregister_worker(queue, registration)
        await self._commands.close()
        await self._blocking.aclose()
        if self._blocking_pool is not None:
            await self._blocking_pool.disconnect()
        if self._owns_client:
            await self.client.aclose()
