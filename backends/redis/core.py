"""What every operation of the Redis backend stands on: the client, the scripts, the keys of
each queue, and :func:`reaching`, which names what goes wrong on the way to the server."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection

from corral.backends.redis.keys import DEFAULT_PREFIX, QueueKeys
from corral.backends.redis.pipeline import CommandQueue
from corral.backends.redis.scripts import Instrumentation, Scripts, load_functions
from corral.backends.redis.server import ServerFacts, logger, read_server, refusal
from corral.engine.errors import (
    CorralError,
    InvalidArgumentError,
)
from corral.engine.inputs import check_utf8

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Self = TypeVar("_Self", bound="RedisCore")

#: A client RedisBackend accepts: one server, or a Redis Cluster.
Client = Redis | RedisCluster


class RedisUnavailableError(CorralError, ConnectionError):
    """Redis could not be reached (refused, timed out, connection lost); names the URL. A
    ``ConnectionError``, which tells the worker that a finish may be sent again."""


class RedisAuthenticationError(CorralError):
    """Redis refused the client's credentials (wrong password or user, or none given)."""


def hash_tag(base: str) -> str | None:
    """The hash tag every key starting with ``base`` shares, or None.

    Redis Cluster hashes only the part of a key between its first ``{`` and the first ``}``
    after it, when that part is not empty. Every key of a queue (and of its jobs) starts with
    ``<prefix>:<queue>:``, so they all share one slot exactly when that base holds a complete,
    non-empty tag.
    """
    start = base.find("{")
    if start < 0:
        return None
    end = base.find("}", start + 1)
    return base[start + 1 : end] if end > start + 1 else None


def px(ms: int) -> int:
    """The PX giving a key the engine's lifetime of ``ms`` (see the module docstring)."""
    return max(ms - 1, 1)


def _redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _describe(client: Client) -> str:
    """A URL-like name of the server a client talks to, for error messages."""
    if isinstance(client, RedisCluster):
        nodes = ",".join(f"{node.host}:{node.port}" for node in client.startup_nodes)
        return f"redis://{nodes} (cluster)"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


def _is_fakeredis(client: Client) -> bool:
    """Whether ``client`` talks to fakeredis (its own class, or a plain Redis client built on a
    fakeredis connection class)."""
    pool = getattr(client, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", object)
    return any(kind.__module__.startswith("fakeredis") for kind in (type(client), connection_class))


def reaching(
    method: Callable[Concatenate[_Self, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_Self, _P], Coroutine[Any, Any, _T]]:
    """Read the server's facts before the first operation, and name what goes wrong: the
    client's connection errors become :class:`RedisUnavailableError`, rejected credentials
    :class:`RedisAuthenticationError`, and a server refusing the operation (out of memory, a
    missing ACL permission) :class:`~corral.engine.errors.StoreRefusedError`."""

    operation = method.__name__

    async def call(self: _Self, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            if self._server is None:
                await self._read_server()
            return await method(self, *args, **kwargs)
        except redis_errors.AuthenticationError as exc:  # a ConnectionError in redis-py
            raise self._authentication_failed(exc) from exc
        except redis_errors.ResponseError as exc:
            queue = args[0] if args and isinstance(args[0], str) else ""
            refused = refusal(operation, exc, f"{self.prefix}:{queue or '*'}:*")
            if refused is None:
                raise
            raise refused from exc
        except (
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            redis_errors.ClusterDownError,
        ) as exc:
            raise RedisUnavailableError(f"cannot reach Redis at {self.url}: {exc}") from exc
        except redis_errors.RedisClusterException as exc:
            # "Redis Cluster cannot be connected ...": no node answered.
            reason = exc.__cause__ or exc.__context__
            if isinstance(reason, redis_errors.AuthenticationError):
                raise self._authentication_failed(reason) from exc
            if not isinstance(reason, redis_errors.ConnectionError | OSError):
                raise
            raise RedisUnavailableError(f"cannot reach Redis at {self.url}: {exc}") from exc

    functools.update_wrapper(call, method)
    return call


class RedisCore:
    """The backend's connection state; the operations of each concern are mixed in over it (see
    :class:`~corral.backends.redis.backend.RedisBackend`)."""

    def __init__(
        self,
        client: Client,
        prefix: str = DEFAULT_PREFIX,
        *,
        url: str | None = None,
        instrumentation: Instrumentation | None = None,
        token_numbers: Iterator[int] | None = None,
    ):
        if not prefix:
            raise InvalidArgumentError("the Redis key prefix must not be empty")
        check_utf8(prefix, "the Redis key prefix")
        self.client = client
        self.prefix = prefix
        self.url = _redacted(url) if url is not None else _describe(client)
        self.cluster = isinstance(client, RedisCluster)
        self._owns_client = False
        #: Set by :meth:`close`; a Queue on a closed backend refuses to work.
        self.closed = False
        self._commands = CommandQueue(client)
        self._instrumentation = instrumentation or Instrumentation()
        # fakeredis neither compiles the scripts' shebang nor has maxmemory: nothing to read.
        fake = _is_fakeredis(client)
        self._scripts = Scripts(client, self._commands, self._instrumentation, not fake)
        self._server: ServerFacts | None = ServerFacts(None, ()) if fake else None
        self._server_lock = asyncio.Lock()
        self._keys: dict[str, QueueKeys] = {}
        # Minted client-side; the request's prefix (a Worker's id) keeps them apart across
        # processes.
        self._token_numbers = itertools.count(1) if token_numbers is None else token_numbers
        self._blocking_pool: ConnectionPool | None = None
        #: queue -> registration -> the named blocking client of a worker (the workers concern).
        self._worker_clients: dict[str, dict[str, Redis]] = {}
        self._worker_numbers = itertools.count(1)
        self._blocking: Client
        if isinstance(client, RedisCluster):
            self._blocking = _blocking_cluster_client(client)
        else:
            pool = client.connection_pool
            # No socket timeout: a read may legitimately wait as long as the BZPOPMIN blocks.
            blocking_kwargs = {**pool.connection_kwargs, "socket_timeout": None}
            self._blocking_pool = ConnectionPool(
                connection_class=pool.connection_class, **blocking_kwargs
            )
            self._blocking = Redis(connection_pool=self._blocking_pool)

    async def _read_server(self) -> None:
        """Read the server's facts once, before the first operation: load the scripts without
        their shebang on Redis 6, as one function library on Redis 7 (a single server), and log
        a warning for an eviction policy that loses jobs."""
        async with self._server_lock:
            if self._server is not None:
                return
            facts = await read_server(self.client)
            if not facts.script_flags:
                self._scripts = Scripts(self.client, self._commands, self._instrumentation, False)
            elif (
                # (Redis Cluster would need each library on every primary: scripts there. An
                # instrumented backend, for tests, keeps its variants off the server.)
                isinstance(self.client, Redis)
                and self._instrumentation == Instrumentation()
                and await load_functions(self.client)
            ):
                self._scripts = Scripts(
                    self.client, self._commands, self._instrumentation, functions=True
                )
            for warning in facts.warnings():
                logger.warning("%s: %s", self.url, warning)
            self._server = facts

    def _authentication_failed(self, exc: BaseException) -> RedisAuthenticationError:
        return RedisAuthenticationError(f"authentication failed at Redis {self.url}: {exc}")

    def _work_client(self, queue: str, registration: str | None) -> Client:
        """What a worker of ``queue`` blocks on for work: its own named connection when it is
        registered (see :mod:`corral.backends.redis.workers`), else the shared blocking pool."""
        if registration is None:
            return self._blocking
        return self._worker_clients.get(queue, {}).get(registration, self._blocking)

    def keys(self, queue: str) -> QueueKeys:
        """The keys of ``queue``."""
        keys = self._keys.get(queue)
        if keys is None:
            keys = QueueKeys.of(self.prefix, queue)
            if self.cluster and hash_tag(keys.base) is None:
                raise InvalidArgumentError(
                    f"Redis Cluster needs every key of a queue in one hash slot, but the keys "
                    f"of queue {queue!r} under prefix {self.prefix!r} ({keys.base}...) carry "
                    f"no hash tag and would spread over slots. Put a hash tag in the prefix "
                    f"(prefix='{{{self.prefix}}}') or in the queue name ('{{{queue}}}'), as "
                    f"BullMQ documents for Redis Cluster"
                )
            self._keys[queue] = keys
        return keys


def _blocking_cluster_client(client: RedisCluster) -> RedisCluster:
    """A cluster client like ``client`` (same startup nodes, credentials, TLS and encoding)
    but without a socket timeout, for blocking commands; it routes each by its key's slot."""
    accepted = inspect.signature(RedisCluster.__init__).parameters
    options = {
        name: value
        for name, value in client.connection_kwargs.items()
        if name in accepted and name not in ("self", "host", "port", "startup_nodes")
    }
    options["socket_timeout"] = None
    connection_class = client.connection_kwargs.get("connection_class")
    options["ssl"] = isinstance(connection_class, type) and issubclass(
        connection_class, SSLConnection
    )
    options["address_remap"] = getattr(client.nodes_manager, "address_remap", None)
    nodes = [ClusterNode(node.host, node.port) for node in client.startup_nodes]
    return RedisCluster(startup_nodes=nodes, **options)
