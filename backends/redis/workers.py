"""Which workers serve a queue, on Redis (``corral.engine.storage.WorkerStorage``): as BullMQ,
by the names of their connections in ``CLIENT LIST``.

A registered worker gets a connection of its own for the blocking wait for work
(:meth:`~corral.backends.redis.notifications.NotificationOps.wait_for_work`), named
``<prefix>:<base64(queue)>[:w:<worker name>]`` by ``CLIENT SETNAME`` on every (re)connect
(redis-py sends it when a connection opens), exactly as BullMQ names a worker's blocking
connection; so Node's ``getWorkers`` and bull-board list corral's workers, and corral lists
Node's. The other connections (commands, a Queue's, QueueEvents' reads) stay unnamed: they are
not workers. A worker that dies takes its connection, and so its entry, with it.

On a Redis Cluster the connections stay unnamed (as in BullMQ, issue #3340) and ``get_workers``
reads the client list of the node the client talks to by default.
"""

from __future__ import annotations

from redis.asyncio import ConnectionPool, Redis

from corral.backends.redis.core import RedisCore, reaching
from corral.engine.storage.workers import is_worker_of, worker_client_name


class WorkerOps(RedisCore):
    """Which workers serve a queue: the named connections in ``CLIENT LIST``."""

    @reaching
    async def register_worker(self, queue: str, worker_name: str | None) -> str:
        """Open the worker's named blocking connection (see the module docs)."""
        registration = str(next(self._worker_numbers))
        if self._blocking_pool is None:  # a cluster: see the module docs
            return registration
        kwargs = {
            **self._blocking_pool.connection_kwargs,
            "client_name": worker_client_name(self.prefix, queue, worker_name),
        }
        pool = ConnectionPool(connection_class=self._blocking_pool.connection_class, **kwargs)
        client = Redis(connection_pool=pool)
        try:
            await client.ping()  # connect now: the worker is listed before its first wait
        except BaseException:
            await client.aclose()
            await pool.disconnect()
            raise
        self._worker_clients.setdefault(queue, {})[registration] = client
        return registration

    async def unregister_worker(self, queue: str, registration: str) -> None:
        """Close the worker's named connection."""
        client = self._worker_clients.get(queue, {}).pop(registration, None)
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()

    @reaching
    async def get_workers(self, queue: str) -> list[dict[str, str]]:
        """The ``CLIENT LIST`` entries of the workers of ``queue``, as BullMQ's ``getWorkers``."""
        workers = []
        for entry in await self.client.client_list():
            raw = str(entry.get("name", ""))
            if is_worker_of(raw, self.prefix, queue):
                workers.append(
                    {**{k: str(v) for k, v in entry.items()}, "name": queue, "rawname": raw}
                )
        return workers
