"""What a RedisBackend learns about its server once, and how it names the server's refusals.

Before its first operation a backend reads the server's version (Redis 6.2 does not know the
``#!lua`` shebang of the scripts, see :mod:`corral.backends.redis.scripts`) and its
``maxmemory-policy``: under any policy but ``noeviction`` Redis deletes keys to make room, job
hashes among them, so the backend warns (as BullMQ does). Either may be hidden from the
client's user (ACLs, managed Redis renaming CONFIG): then the version is taken as 7 and the
policy is unknown, and no warning is given.

:func:`refusal` turns the error replies of a server that is up but will not carry out an
operation (out of memory, missing ACL permissions, read-only replica, failing persistence)
into :class:`~corral.engine.errors.StoreRefusedError` naming the operation and the cause.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from corral.engine.errors import StoreRefusedError

logger = logging.getLogger("corral.backends.redis")

#: The one eviction policy under which Redis never deletes a queue's keys on its own.
SAFE_POLICY: Final = "noeviction"


@dataclasses.dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a backend read about its server.

    Attributes:
        version: ``redis_version`` as (major, minor), or None when INFO was refused.
        eviction_policies: ``maxmemory-policy`` of each node answering (one for a single
            server), empty when neither CONFIG GET nor INFO was allowed.
    """

    version: tuple[int, int] | None
    eviction_policies: tuple[str, ...]

    @property
    def script_flags(self) -> bool:
        """Whether the server knows the scripts' shebang (Redis 7 or later; assumed when the
        version is unknown)."""
        return self.version is None or self.version >= (7, 0)

    def warnings(self) -> list[str]:
        """What is unsafe about this server for a queue (one text per problem)."""
        unsafe = sorted({policy for policy in self.eviction_policies if policy != SAFE_POLICY})
        return [eviction_warning(policy) for policy in unsafe]


def eviction_warning(policy: str) -> str:
    """The warning for a server whose ``maxmemory-policy`` is ``policy`` (not noeviction)."""
    return (
        f"Redis maxmemory-policy is {policy!r}, not 'noeviction': when memory runs short Redis "
        f"deletes keys, job hashes and locks among them, so jobs lose their data, run twice or "
        f"have their ids reused. Set 'maxmemory-policy noeviction' on this server"
    )


def as_text(value: Any) -> str:
    """A reply value as text (redis-py gives bytes without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _version(text: str) -> tuple[int, int] | None:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _per_node(reply: Any, cluster: bool) -> list[dict[Any, Any]]:
    """A reply sent to every node of a cluster comes back as ``{node: reply}``."""
    if cluster and isinstance(reply, dict) and all(isinstance(v, dict) for v in reply.values()):
        return list(reply.values())
    return [reply] if isinstance(reply, dict) else []


async def read_server(client: Redis | RedisCluster) -> ServerFacts:
    """Read the server's version and eviction policy (every node's, on a cluster).

    Raises:
        redis.exceptions.ConnectionError: and the like, when the server cannot be reached (the
            caller maps them); a refused INFO or CONFIG is not an error.
    """
    cluster = isinstance(client, RedisCluster)
    target: dict[str, Any] = {"target_nodes": RedisCluster.ALL_NODES} if cluster else {}
    versions: list[tuple[int, int]] = []
    try:
        for info in _per_node(await client.info("server", **target), cluster):
            version = _version(as_text(info.get("redis_version", "")))
            if version is not None:
                versions.append(version)
    except redis_errors.ResponseError:  # NOPERM, or INFO renamed away
        pass
    policies: list[str] = []
    try:
        for config in _per_node(await client.config_get("maxmemory-policy", **target), cluster):
            policies += [as_text(value) for value in config.values()]
    except redis_errors.ResponseError:
        # CONFIG is often refused (ACL, managed Redis); INFO memory shows the policy too.
        try:
            for info in _per_node(await client.info("memory", **target), cluster):
                if "maxmemory_policy" in info:
                    policies.append(as_text(info["maxmemory_policy"]))
        except redis_errors.ResponseError:
            pass
    return ServerFacts(min(versions) if versions else None, tuple(policies))


#: Error replies of a server that is up but refuses to carry out a command, with the cause
#: each names. (AuthenticationError is a ConnectionError in redis-py: see the backend.)
_REFUSALS: Final[tuple[tuple[type[redis_errors.RedisError], str], ...]] = (
    (redis_errors.OutOfMemoryError, "Redis is out of memory (used memory > maxmemory)"),
    (redis_errors.ReadOnlyError, "Redis is a read-only replica"),
)


def refusal(
    operation: str, exc: redis_errors.ResponseError, key_pattern: str
) -> StoreRefusedError | None:
    """The refusal ``exc`` stands for, naming ``operation``, or None for any other reply.

    Args:
        operation: the storage operation refused (e.g. ``"extend_locks"``).
        exc: the server's error reply.
        key_pattern: the keys the operation touches (``<prefix>:<queue>:*``), named when the
            user lacks permission for them.
    """
    for kind, cause in _REFUSALS:
        if isinstance(exc, kind):
            return StoreRefusedError(operation, cause)
    text = str(exc)
    if isinstance(exc, redis_errors.NoPermissionError):
        return StoreRefusedError(
            operation,
            f"the Redis user lacks a permission ({text.split(' script: ')[0]}); a queue needs "
            f"read and write access to the keys '{key_pattern}' and the commands EVAL, EVALSHA, "
            f"SCRIPT LOAD, BZPOPMIN and XREAD",
        )
    if text.startswith("MISCONF"):
        return StoreRefusedError(operation, "Redis cannot persist to disk (MISCONF)")
    return None
