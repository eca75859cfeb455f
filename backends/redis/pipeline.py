"""Commands reach Redis in the order they were called, pipelined (like ioredis).

A connection pool lets a command called later overtake one called earlier (one waits for a new
connection, the other finds a free one). For a queue that matters: two workers asking for the
next job must be served in the order they asked, as the memory backend (which applies each
operation the moment it is called) serves them. So every command
of a :class:`~corral.backends.redis.backend.RedisBackend` (except the blocking wait) goes
through one :class:`CommandQueue`: a call is queued at once, in order; a sender task writes
everything queued so far as one pipeline on one connection, and whatever is called meanwhile
goes out in the next batch. One round trip serves many concurrent calls, so concurrency costs
little.

A call whose caller is cancelled is still sent (it was made, as with the memory backend); only
its reply is dropped.

With a plain ``Redis`` client the sender keeps one pooled connection while it has work, packs
each batch itself and reads the replies back one by one, giving them the client's response
callbacks: what redis-py's ``execute_command`` and ``Pipeline`` do, without their per-command
bookkeeping, which cost more client CPU than everything else per job (see bench/compare/). It
also writes the next batch before reading the replies of the one before (two batches in
flight), so that the server runs one batch while the client handles the replies of the other
instead of the two taking turns. A cluster client or a single-connection client goes through
redis-py's own calls, one batch at a time.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import NoScriptError, ResponseError

#: Batches written and not yet answered, at most (direct mode).
_BATCHES_IN_FLIGHT: Final = 2

_Batch = list[tuple[tuple[Any, ...], asyncio.Future[Any]]]


class CommandQueue:
    """Sends the commands of one client in call order, batching concurrent calls.

    EVALSHA of a script made known with :meth:`add_script` survives NOSCRIPT (a SCRIPT FLUSH or
    a restarted server): the sender repeats the call itself as EVAL of the script's text (which
    caches it again), so even a call whose caller is gone is applied.

    Args:
        client: the client whose connection pool the batches use (one connection at a time).
    """

    def __init__(self, client: Redis | RedisCluster) -> None:
        self._client = client
        self._execute: Callable[..., Awaitable[Any]] = client.execute_command
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None
        self._scripts: dict[str, str] = {}
        self._direct = isinstance(client, Redis) and not client.single_connection_client

    def add_script(self, sha: str, text: str) -> None:
        """Make a script's text known, to load it again on NOSCRIPT."""
        self._scripts[sha] = text

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (``args`` as for ``execute_command``); the future gets its parsed
        reply or its error (a ``ResponseError`` of its own, or the batch's connection error)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, reply))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send(), name="corral-redis-sender")
        return reply

    async def _send(self) -> None:
        if self._direct:
            await self._pump()
            return
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._run([args for args, _ in batch])
            except asyncio.CancelledError:
                for _, reply in batch:
                    reply.cancel()
                raise
            except Exception as exc:
                for _, reply in batch:
                    if not reply.done():
                        reply.set_exception(_copy(exc))
                continue
            for (_, reply), result in zip(batch, results, strict=True):
                if reply.done():
                    continue  # the caller was cancelled: the command ran, nobody waits
                if isinstance(result, Exception):
                    reply.set_exception(result)
                else:
                    reply.set_result(result)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in order; reply errors are returned in place, connection errors raise.
        EVALSHA calls answered NOSCRIPT are run again as EVAL of their scripts' text."""
        results = await self._pipeline(commands)
        missing = [
            i
            for i, result in enumerate(results)
            if isinstance(result, NoScriptError) and commands[i][1] in self._scripts
        ]
        if missing:
            # EVAL runs the script and caches it again on the server that lacked it. Unlike
            # SCRIPT LOAD (which names no key), it is routed by the call's keys, so in Redis
            # Cluster it reaches the node that answered NOSCRIPT.
            again = await self._pipeline(
                [("EVAL", self._scripts[commands[i][1]], *commands[i][2:]) for i in missing]
            )
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await self._execute(*commands[0])]
            except ResponseError as exc:  # a reply: the connection is fine
                return [exc]
        async with self._client.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            return list(await pipe.execute(raise_on_error=False))

    async def _pump(self) -> None:
        """The sender with a plain client: writes each batch as soon as it is queued while
        fewer than ``_BATCHES_IN_FLIGHT`` batches await their replies, and reads the replies in
        order, all on one pooled connection held while there is work."""
        client = self._client
        assert isinstance(client, Redis)
        pool = client.connection_pool
        get_connection: Callable[[], Awaitable[Connection]] = pool.get_connection  # untyped
        in_flight: collections.deque[_Batch] = collections.deque()
        connection: Connection | None = None
        try:
            while self._pending or in_flight:
                if self._pending and len(in_flight) < _BATCHES_IN_FLIGHT:
                    batch, self._pending = self._pending, []
                    try:
                        if connection is None:
                            connection = await get_connection()
                        packed = _pack(connection, [args for args, _ in batch])
                    except asyncio.CancelledError:
                        for _, reply in batch:
                            reply.cancel()
                        raise
                    except Exception as exc:  # nothing of this batch was written
                        _fail(batch, exc)
                        continue
                    in_flight.append(batch)
                    try:
                        await connection.send_packed_command(packed, check_health=False)
                    except Exception as exc:
                        await self._drop(connection, in_flight, exc)
                        connection = None
                    continue
                assert connection is not None
                batch = in_flight[0]
                try:
                    replies = [await self._read_reply(connection, args) for args, _ in batch]
                except Exception as exc:
                    await self._drop(connection, in_flight, exc)
                    connection = None
                    continue
                in_flight.popleft()
                self._deliver(batch, replies)
        except asyncio.CancelledError:
            for batch in in_flight:
                for _, reply in batch:
                    reply.cancel()
            if connection is not None:
                await connection.disconnect(nowait=True)  # its replies will not be read
            raise
        finally:
            if connection is not None:
                await pool.release(connection)

    async def _read_reply(self, connection: Connection, args: tuple[Any, ...]) -> Any:
        """The next reply on ``connection``, parsed as the client parses ``args[0]``'s; an
        error reply is returned, not raised."""
        try:
            reply = await connection.read_response()
        except ResponseError as exc:  # a reply: the connection is fine
            return exc
        callback = self._client.response_callbacks.get(args[0])
        if callback is not None:
            reply = callback(reply)
            if inspect.isawaitable(reply):
                reply = await reply
        return reply

    async def _drop(
        self, connection: Connection, in_flight: collections.deque[_Batch], exc: Exception
    ) -> None:
        """A write or read failed: close the connection (the replies still due on it must never
        be read as another call's), hand it back, and fail every batch written on it."""
        await connection.disconnect(nowait=True)
        assert isinstance(self._client, Redis)
        await self._client.connection_pool.release(connection)
        for batch in in_flight:
            _fail(batch, exc)
        in_flight.clear()

    def _deliver(self, batch: _Batch, replies: list[Any]) -> None:
        """Answer the calls of a batch; an EVALSHA answered NOSCRIPT is queued again, first,
        as EVAL of its script's text (with the same future)."""
        again: _Batch = []
        for (args, reply), result in zip(batch, replies, strict=True):
            if (
                isinstance(result, NoScriptError)
                and args[0] == "EVALSHA"
                and args[1] in self._scripts
            ):
                again.append((("EVAL", self._scripts[args[1]], *args[2:]), reply))
            elif reply.done():
                continue  # the caller was cancelled: the command ran, nobody waits
            elif isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)
        if again:
            self._pending[:0] = again

    async def close(self) -> None:
        """Wait for the commands already queued to be sent."""
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.shield(sender)


def _pack(connection: Connection, commands: list[tuple[Any, ...]]) -> bytes:
    """The commands in RESP, as redis-py's ``pack_command`` writes them (strings in the
    connection's encoding); plain strings and ints are encoded here, anything else by the
    connection's encoder (which also refuses what Redis cannot take)."""
    encoder = connection.encoder
    encoding, errors = encoder.encoding, encoder.encoding_errors
    encode: Callable[[Any], bytes | memoryview] = encoder.encode  # untyped in redis-py
    out: list[bytes] = []
    for args in commands:
        if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD": two arguments
            args = (*args[0].split(), *args[1:])
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            kind = type(arg)
            if kind is str:
                data = arg.encode(encoding, errors)
            elif kind is int:
                data = b"%d" % arg
            elif kind is bytes:
                data = arg
            else:
                data = bytes(encode(arg))
            out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def _fail(batch: _Batch, exc: Exception) -> None:
    for _, reply in batch:
        if not reply.done():
            reply.set_exception(_copy(exc))


def _copy(exc: Exception) -> Exception:
    """A fresh exception of the same kind, so that callers do not share one traceback."""
    try:
        clone = type(exc)(*exc.args)
    except Exception:
        return exc
    clone.__cause__ = exc.__cause__
    return clone
