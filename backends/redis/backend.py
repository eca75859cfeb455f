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

import asyncio
import functools
import inspect
import itertools
import json
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection

from corral.backends.redis.keys import DEFAULT_PREFIX, QueueKeys
from corral.backends.redis.pipeline import CommandQueue
from corral.backends.redis.scripts import Instrumentation, Scripts
from corral.backends.redis.server import ServerFacts, as_text, logger, read_server, refusal
from corral.engine.errors import (
    STALLED_LIMIT_REASON,
    CorralError,
    InvalidArgumentError,
    ResultCode,
)
from corral.engine.inputs import check_utf8
from corral.engine.states import JobState
from corral.engine.storage import (
    AddResult,
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    FetchResult,
    FinishResult,
    LockInfo,
    NewJob,
    Outcome,
    RetryLater,
    StalledCheck,
    StoredEvent,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Shortest BZPOPMIN block (seconds): 0 would mean "forever".
_MIN_BLOCK_S = 0.001


#: A client RedisBackend accepts: one server, or a Redis Cluster.
Client = Redis | RedisCluster


class RedisUnavailableError(CorralError, ConnectionError):
    """Redis could not be reached (refused, timed out, connection lost); names the URL. A
    ``ConnectionError``, which tells the worker that a finish may be sent again."""


class RedisAuthenticationError(CorralError):
    """Redis refused the client's credentials (wrong password or user, or none given)."""


def _hash_tag(base: str) -> str | None:
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


def _px(ms: int) -> int:
    """The PX giving a key the engine's lifetime of ``ms`` (see the module docstring)."""
    return max(ms - 1, 1)


def _json_pairs(encoded: str | bytes) -> dict[str, str]:
    """A hash sent by a script as the JSON array ``[field, value, ...]`` (one bulk string parses
    much faster than a nested reply); cjson writes an empty table as ``{}``."""
    flat = json.loads(
        encoded.decode("utf-8", "surrogateescape") if isinstance(encoded, bytes) else encoded
    )
    if not flat:
        return {}
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))


def _fetched(raw: Sequence[Any], token: str) -> Fetched | None:
    if raw[0] != 1:
        return None
    # A repeated finish returns the job its first run fetched, with that run's token.
    return Fetched(as_text(raw[1]), _json_pairs(raw[2]), as_text(raw[3]) if len(raw) > 3 else token)


def _fetch_result(raw: Sequence[Any], token: str) -> FetchResult:
    if raw[0] == 1:
        return FetchResult(_fetched(raw, token))
    return FetchResult(None, int(raw[1]) if len(raw) > 1 else None)


def _fetch_args(request: FetchRequest, token: str) -> list[str | int]:
    name = request.worker_name
    return [token, _px(request.lock_duration), "0" if name is None else "1", name or ""]


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


def _reaching(
    method: Callable[Concatenate[RedisBackend, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[RedisBackend, _P], Coroutine[Any, Any, _T]]:
    """Read the server's facts before the first operation, and name what goes wrong: the
    client's connection errors become :class:`RedisUnavailableError`, rejected credentials
    :class:`RedisAuthenticationError`, and a server refusing the operation (out of memory, a
    missing ACL permission) :class:`~corral.engine.errors.StoreRefusedError`."""

    operation = method.__name__

    async def call(self: RedisBackend, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
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


class RedisBackend:
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

    async def _read_server(self) -> None:
        """Read the server's facts once, before the first operation: load the scripts without
        their shebang on Redis 6, and log a warning for an eviction policy that loses jobs."""
        async with self._server_lock:
            if self._server is not None:
                return
            facts = await read_server(self.client)
            if not facts.script_flags:
                self._scripts = Scripts(self.client, self._commands, self._instrumentation, False)
            for warning in facts.warnings():
                logger.warning("%s: %s", self.url, warning)
            self._server = facts

    def _authentication_failed(self, exc: BaseException) -> RedisAuthenticationError:
        return RedisAuthenticationError(f"authentication failed at Redis {self.url}: {exc}")

    @_reaching
    async def server_warnings(self) -> list[str]:
        """What is unsafe about the server for a queue: today, an eviction policy other than
        ``noeviction`` (each problem once, as logged before the first operation)."""
        assert self._server is not None  # read by @_reaching
        return self._server.warnings()

    def keys(self, queue: str) -> QueueKeys:
        """The keys of ``queue``."""
        keys = self._keys.get(queue)
        if keys is None:
            keys = QueueKeys.of(self.prefix, queue)
            if self.cluster and _hash_tag(keys.base) is None:
                raise InvalidArgumentError(
                    f"Redis Cluster needs every key of a queue in one hash slot, but the keys "
                    f"of queue {queue!r} under prefix {self.prefix!r} ({keys.base}...) carry "
                    f"no hash tag and would spread over slots. Put a hash tag in the prefix "
                    f"(prefix='{{{self.prefix}}}') or in the queue name ('{{{queue}}}'), as "
                    f"BullMQ documents for Redis Cluster"
                )
            self._keys[queue] = keys
        return keys

    # ----------------------------------------------------------------- Storage operations

    @_reaching
    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        """Store new jobs atomically, in order (``ADD``, ``ADD_PRIORITIZED``, ``ADD_DELAYED``)."""
        if not jobs:
            return AddResult([], [])
        args: list[str | int] = []
        for name, data, opts, timestamp, delay, priority, lifo, job_id in jobs:
            args += [
                name,
                data,
                opts,
                timestamp,
                delay,
                priority,
                "1" if lifo else "0",
                job_id or "",
            ]
        raw = await self._scripts.run("add_jobs", self.keys(queue), args)
        return AddResult(
            [as_text(job_id) for job_id in raw[::2]], [flag == 1 for flag in raw[1::2]]
        )

    @_reaching
    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        """Promote due delayed jobs, then take and lock the next job (``FETCH``)."""
        token = request.lock_token(self._token_numbers)
        args = [*_fetch_args(request, token), now]
        return _fetch_result(await self._scripts.run("fetch_next", self.keys(queue), args), token)

    @_reaching
    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        """Apply an attempt's outcome if ``token`` holds the lock; optionally fetch the next job
        in the same script."""
        count: int | str = ""
        age: int | str = ""
        delay: int | str = ""
        stacktrace = ""
        if isinstance(outcome, Complete):
            kind, text = "complete", outcome.return_value
            keep = outcome.keep
        else:
            text, stacktrace = outcome.reason, outcome.stacktrace
            if isinstance(outcome, Fail):
                kind, keep = "fail", outcome.keep
            else:
                keep = None
                if isinstance(outcome, RetryLater):
                    kind, delay = "retry_later", outcome.delay_ms
                else:
                    kind = "retry_now"
        if keep is not None:
            count = "" if keep.count is None else keep.count
            age = "" if keep.age_ms is None else keep.age_ms
        args: list[str | int] = [job_id, token, now, kind, text, stacktrace, count, age, delay]
        if fetch is None:
            args.append("0")
        else:
            next_token = fetch.lock_token(self._token_numbers)
            args += ["1", *_fetch_args(fetch, next_token)]
        raw = await self._scripts.run("finish", self.keys(queue), args)
        code = ResultCode(raw[0])
        if fetch is None or code is not ResultCode.OK:
            return code
        return _fetched(raw[1], next_token) or code

    @_reaching
    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        """Re-arm the locks that still hold their token; return the tokens that lost theirs."""
        if not locks:
            return []
        args: list[str | int] = [_px(lock_duration)]
        for job_id, token in locks:
            args += [job_id, token]
        raw = await self._scripts.run("extend_locks", self.keys(queue), args)
        return [as_text(token) for token in raw]

    @_reaching
    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        """Put an owned active job back at the front of wait (``RELEASE``)."""
        raw = await self._scripts.run("release", self.keys(queue), [job_id, token])
        return ResultCode(raw)

    @_reaching
    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        """One throttled two-phase stalled check (``RECOVER_STALLED`` or ``FAIL``)."""
        args: list[str | int] = [max_stalled_count, _px(stalled_interval), now]
        raw = await self._scripts.run(
            "check_stalled", self.keys(queue), [*args, STALLED_LIMIT_REASON]
        )
        return StalledCheck(
            ran=raw[0] == 1,
            recovered=[as_text(job_id) for job_id in raw[1]],
            failed=[as_text(job_id) for job_id in raw[2]],
        )

    @_reaching
    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        """Store a job's progress and log a ``progress`` event."""
        raw = await self._scripts.run("update_progress", self.keys(queue), [job_id, progress])
        return ResultCode(raw)

    @_reaching
    async def remove(self, queue: str, job_id: str) -> ResultCode:
        """Delete a job that holds no lock (``REMOVE``)."""
        return ResultCode(await self._scripts.run("remove", self.keys(queue), [job_id]))

    @_reaching
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from the queue."""
        await self._scripts.run("set_paused", self.keys(queue), ["1" if paused else "0"])

    @_reaching
    async def is_paused(self, queue: str) -> bool:
        """Whether the queue is paused (``meta.paused``)."""
        return bool(await self._commands.call("HEXISTS", self.keys(queue).meta, "paused"))

    @_reaching
    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        """The job's hash fields, or None (also when the key holds no hash: an id such as
        ``"7:lock"`` names another key, never a job, as on the memory backend)."""
        try:
            raw = await self._commands.call("HGETALL", self.keys(queue).job(job_id))
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            return None
        return {as_text(k): as_text(v) for k, v in raw.items()} if raw else None

    @_reaching
    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        """Where the job is, or None."""
        raw = await self._scripts.run("get_state", self.keys(queue), [job_id])
        return None if raw is None else JobState(as_text(raw))

    @_reaching
    async def get_counts(self, queue: str) -> dict[JobState, int]:
        """The number of jobs in each state."""
        sizes = await self._scripts.run("get_counts", self.keys(queue), [])
        states = (
            JobState.WAITING,
            JobState.PRIORITIZED,
            JobState.DELAYED,
            JobState.ACTIVE,
            JobState.COMPLETED,
            JobState.FAILED,
        )
        return {state: int(size) for state, size in zip(states, sizes, strict=True)}

    @_reaching
    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        """A range of the ids in one state; descending (``asc=False``) is newest first."""
        keys = self.keys(queue)
        if state in (JobState.WAITING, JobState.ACTIVE):
            key = keys.wait if state is JobState.WAITING else keys.active
            if not asc:  # the left end of both lists is the newest
                return [as_text(i) for i in await self._commands.call("LRANGE", key, start, end)]
            # Index i counted from the oldest end is index -(i + 1) from the left; Redis clamps
            # the mirrored range exactly as it would the original one.
            ids = await self._commands.call("LRANGE", key, -(end + 1), -(start + 1))
            return [as_text(i) for i in reversed(ids)]
        command = "ZRANGE" if asc else "ZREVRANGE"
        ids = await self._commands.call(command, keys.key(state.value), start, end)
        return [as_text(i) for i in ids]

    @_reaching
    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        """The job's lock and the milliseconds until it is gone, or None."""
        raw = await self._scripts.run("get_lock", self.keys(queue), [job_id])
        if not raw:
            return None
        token, pttl = as_text(raw[0]), int(raw[1])
        return LockInfo(token, pttl + 1 if pttl >= 0 else pttl)

    @_reaching
    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        """Whether the last stalled check marked the job."""
        return bool(await self._commands.call("SISMEMBER", self.keys(queue).stalled, job_id))

    @_reaching
    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        """Events after stream id ``after`` (from the start when None), oldest first."""
        start = "-"
        if after is not None:
            ms, _, seq = after.partition("-")
            start = f"{int(ms)}-{int(seq or 0) + 1}"
        entries = await self._commands.call(
            "XRANGE", self.keys(queue).events, start, "+", "COUNT", count
        )
        return _stream_events(entries)

    @_reaching
    async def last_event_id(self, queue: str) -> str:
        """The newest stream id of the queue's events, or ``"0-0"``."""
        newest = await self._commands.call(
            "XREVRANGE", self.keys(queue).events, "+", "-", "COUNT", 1
        )
        return as_text(newest[0][0]) if newest else "0-0"

    @_reaching
    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        """Events after stream id ``after``, blocking (XREAD BLOCK) up to ``timeout_ms``."""
        key = self.keys(queue).events
        reply: Any = await self._blocking.xread({key: after}, count=count, block=max(timeout_ms, 1))
        return [event for _stream, entries in reply or () for event in _stream_events(entries)]

    @_reaching
    async def wait_for_work(self, queue: str, timeout_ms: int) -> bool:
        """Block on the queue's marker (BZPOPMIN) and consume it; False after ``timeout_ms``."""
        timeout = max(timeout_ms / 1000, _MIN_BLOCK_S)
        return await self._blocking.bzpopmin(self.keys(queue).marker, timeout) is not None

    async def close(self) -> None:
        """Send what is queued, then close the blocking connections, and the client if
        :meth:`from_url` made it. Queues on a closed backend refuse to work (the client would
        quietly connect again)."""
        self.closed = True
        await self._commands.close()
        await self._blocking.aclose()
        if self._blocking_pool is not None:
            await self._blocking_pool.disconnect()
        if self._owns_client:
            await self.client.aclose()


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


def _stream_events(entries: Any) -> list[StoredEvent]:
    """Decode stream entries ``[(id, {field: value})]``; the ``event`` field is the name."""
    events = []
    for entry_id, raw in entries:
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        name = fields.pop("event", "")
        events.append(StoredEvent(as_text(entry_id), name, fields))
    return events
