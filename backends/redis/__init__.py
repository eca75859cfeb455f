"""The Redis backend: BullMQ's key layout, driven by corral's own Lua scripts.

``RedisBackend.from_url("redis://localhost:6379", prefix="bull")`` or
``RedisBackend(redis.asyncio.Redis(...))``; on Redis Cluster,
``RedisBackend.from_url("redis://node:7000", prefix="{bull}", cluster=True)`` or
``RedisBackend(redis.asyncio.cluster.RedisCluster(...), prefix="{bull}")`` (a hash tag in the
prefix or the queue names is required). Needs the ``redis`` extra (``pip install
corral[redis]``).
"""

from corral.backends.redis.backend import (
    RedisAuthenticationError,
    RedisBackend,
    RedisUnavailableError,
)
from corral.backends.redis.keys import DEFAULT_PREFIX, QueueKeys

__all__ = [
    "DEFAULT_PREFIX",
    "QueueKeys",
    "RedisAuthenticationError",
    "RedisBackend",
    "RedisUnavailableError",
]
