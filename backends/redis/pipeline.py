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
the calls itself and writes them as soon as they are queued, in small batches (several in
flight), and the replies are parsed one by one with the client's response callbacks, each call
answered as soon as its reply is parsed (with hiredis, in the connection's ``data_received``
itself, see :class:`_ReplyFeed`; else by a reader task of the connection): what redis-py's
``execute_command`` and ``Pipeline`` do, without their per-command bookkeeping, which cost more
client CPU than everything else per job (see bench/compare/). Small batches answered one reply at
a time keep the server and the client busy at once, as ioredis does for Node BullMQ: the server
runs one batch while the client handles the replies of another, where one big batch per round
made them take turns. A cluster client or a single-connection client goes through redis-py's
own calls, one batch at a time.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from redis._parsers.encoders import Encoder
from redis._parsers.hiredis import _AsyncHiredisParser
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Calls per write, at most (direct mode). Small batches keep the calls of many concurrent
#: callers (a worker's slots) from moving in lockstep: the server runs one batch while the
#: client handles the replies of another. 4 was best of 2/3/4/8/16 at concurrency 10 and 50
#: (bench/compare/README.md).
_MAX_BATCH: Final = 4
#: Batches written and not yet answered, at most (direct mode); bounds the client's buffers.
_MAX_IN_FLIGHT: Final = 16

_Batch = list[tuple[tuple[Any, ...], asyncio.Future[Any]]]


class Head:
    """The leading arguments that many calls share (a script call's ``EVALSHA``, SHA1, key count,
    keys and key base), packed once per encoding: pass it as a call's first argument.

    Args:
        args: the arguments it stands for.
    """

    __slots__ = ("_packed", "args")

    def __init__(self, *args: str | int) -> None:
        self.args = args
        self._packed: dict[tuple[str, str], bytes] = {}

    def packed(self, encoding: str, errors: str) -> bytes:
        """The arguments in RESP (without the array header), strings in ``encoding``."""
        packed = self._packed.get((encoding, errors))
        if packed is None:
            out: list[bytes] = []
            _pack_arguments(out, self.args, encoding, errors, _no_encoder)
            packed = self._packed[encoding, errors] = b"".join(out)
        return packed


def _expand(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A call's arguments with its :class:`Head` (if any) spelled out."""
    head = args[0]
    return (*head.args, *args[1:]) if type(head) is Head else args


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
        self._pending: _Batch = []
        self._again: _Batch = []  # EVALSHA calls answered NOSCRIPT, to send first as EVAL
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._scripts: dict[str, str] = {}
        self._functions: dict[str, tuple[str, str]] = {}
        self._direct = isinstance(client, Redis) and not client.single_connection_client

    def add_script(self, sha: str, text: str) -> None:
        """Make a script's text known, to load it again on NOSCRIPT."""
        self._scripts[sha] = text

    def add_function(self, name: str, library: str, text: str) -> None:
        """Make a Redis function's library known, with the same program as a script's text:
        an FCALL answered "Function not found" (a FUNCTION FLUSH, a restarted server without
        persistence) loads the library again and is itself run as EVAL of the text."""
        self._functions[name] = (library, text)

    def _recovery(self, args: tuple[Any, ...], result: Any) -> list[tuple[Any, ...]] | None:
        """What to send instead of a script or function call ``args`` (its :class:`Head` spelled
        out) that failed with ``result`` because the server lacks the program: the call as
        EVAL, after the library's FUNCTION LOAD for a function; None for any other result."""
        if isinstance(result, NoScriptError) and args[1] in self._scripts:
            return [("EVAL", self._scripts[args[1]], *args[2:])]
        if (
            args[0] == "FCALL"
            and isinstance(result, ResponseError)
            and str(result).startswith("Function not found")
            and args[1] in self._functions
        ):
            library, text = self._functions[args[1]]
            return [("FUNCTION", "LOAD", "REPLACE", library), ("EVAL", text, *args[2:])]
        return None

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command (``args`` as for ``execute_command``); the future gets its parsed
        reply or its error (a ``ResponseError`` of its own, or the batch's connection error)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, reply))
        if self._sender is None or self._sender.done():
            self._wake = asyncio.Event()  # of this loop: a backend may outlive a loop
            self._sender = loop.create_task(self._send(), name="corral-redis-sender")
        else:
            self._wake.set()
        return reply

    async def _send(self) -> None:
        if self._direct:
            await self._pump()
            return
        while self._pending:
            # redis-py packs a pipeline whole: one call it cannot pack would fail them all. Only
            # a string can fail to pack (the API checks the rest), and only one not ASCII.
            encoder = self._client.get_encoder()
            batch = [
                call
                for call in self._pending
                if _ascii_only(call[0]) or _pack_call(encoder, call) is not None
            ]
            self._pending = []
            if not batch:
                continue
            try:
                results = await self._run([_expand(args) for args, _ in batch])
            except asyncio.CancelledError:
                _cancel(batch)
                raise
            except Exception as exc:
                _fail(batch, exc)
                continue
            for (_, reply), result in zip(batch, results, strict=True):
                _settle(reply, result)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run commands in order; reply errors are returned in place, connection errors raise.
        EVALSHA calls answered NOSCRIPT are run again as EVAL of their scripts' text."""
        results = await self._pipeline(commands)
        recoveries = [
            (i, recovery)
            for i, result in enumerate(results)
            if (recovery := self._recovery(commands[i], result)) is not None
        ]
        if recoveries:
            # EVAL runs the script and caches it again on the server that lacked it. Unlike
            # SCRIPT LOAD (which names no key), it is routed by the call's keys, so in Redis
            # Cluster it reaches the node that answered NOSCRIPT.
            again = await self._pipeline([call for _, recovery in recoveries for call in recovery])
            position = 0
            for i, recovery in recoveries:
                position += len(recovery)
                results[i] = again[position - 1]  # (the call's own answer comes last)
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
        """The writer with a plain client: writes what is queued as soon as it is queued, in
        batches of at most ``_MAX_BATCH`` and while fewer than ``_MAX_IN_FLIGHT`` batches await
        their replies, on one pooled connection held while there is work, whose :class:`_Link`
        answers the calls one reply at a time."""
        link: _Link | None = None
        try:
            while True:
                if link is not None and link.broken:
                    link = None
                queue = self._again or self._pending
                if queue and (link is None or len(link.in_flight) < _MAX_IN_FLIGHT):
                    batch = queue[:_MAX_BATCH]
                    del queue[:_MAX_BATCH]
                    try:
                        if link is None:
                            link = _Link(self, await self._get_connection())
                    except asyncio.CancelledError:
                        _cancel(batch)
                        raise
                    except Exception as exc:  # nothing of this batch was written
                        _fail(batch, exc)
                        continue
                    batch, packed = _pack_batch(link.connection.encoder, batch)
                    if batch:
                        link.write(batch, packed)
                    continue
                if not queue and (link is None or not link.in_flight):
                    return
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            if link is not None:
                link.abandon()
            raise
        finally:
            if link is not None and not link.broken:
                await link.release()

    async def _get_connection(self) -> Connection:
        client = self._client
        assert isinstance(client, Redis)
        get: Callable[[], Awaitable[Connection]] = client.connection_pool.get_connection
        connection = await get()
        stream = getattr(connection, "_reader", None)
        if isinstance(stream, asyncio.StreamReader) and stream.at_eof():
            # The server closed it while it sat in the pool (a restart): the pool hands it out
            # as it is, and the first write would fail. Connect again first.
            reconnect: Callable[[], Awaitable[None]] = connection.connect  # untyped in redis-py
            await connection.disconnect()
            await reconnect()
        return connection

    async def _read_reply(self, connection: Connection, args: tuple[Any, ...]) -> Any:
        """The next reply on ``connection``, parsed as the client parses ``args[0]``'s; an
        error reply is returned, not raised."""
        try:
            reply = await connection.read_response()
        except ResponseError as exc:  # a reply: the connection is fine
            return exc
        reply = self._parse(args, reply)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply

    def _parse(self, args: tuple[Any, ...], reply: Any) -> Any:
        """``reply`` as the client's response callback for ``args[0]`` makes it."""
        name = args[0].args[0] if type(args[0]) is Head else args[0]
        callback = self._client.response_callbacks.get(str(name))
        return reply if callback is None else callback(reply)

    def _answer(self, args: tuple[Any, ...], reply: asyncio.Future[Any], result: Any) -> None:
        """Answer one call; an EVALSHA answered NOSCRIPT (an FCALL answered "Function not
        found") is queued again, before every call not yet sent, as EVAL of its script's text
        (with the same future; after a FUNCTION LOAD of its library)."""
        recovery = None
        if isinstance(result, ResponseError):  # (NoScriptError is one)
            recovery = self._recovery(_expand(args), result)
        if recovery is None:
            _settle(reply, result)
            return
        loop = asyncio.get_running_loop()
        for call in recovery[:-1]:  # (a FUNCTION LOAD: nobody awaits its own reply)
            ignored: asyncio.Future[Any] = loop.create_future()
            ignored.add_done_callback(_retrieve)
            self._again.append((call, ignored))
        self._again.append((recovery[-1], reply))
        self._wake.set()

    async def close(self) -> None:
        """Wait for the commands already queued to be sent."""
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.shield(sender)


class _Link:
    """One pooled connection of a :class:`CommandQueue` (direct mode), the batches written on
    it whose replies are still due, in order, and what reads them (a :class:`_ReplyFeed`, or a
    reader task where redis-py parses without hiredis).

    A failed write or read breaks the link: the connection is closed (replies still due on it
    must never be read as another call's) and handed back, and every call still due fails with
    the error; the writer then takes a new connection for what is queued next.
    """

    def __init__(self, commands: CommandQueue, connection: Connection) -> None:
        self.commands = commands
        self.connection = connection
        self.in_flight: collections.deque[_Batch] = collections.deque()
        self.broken = False
        self._reader: asyncio.Task[None] | None = None
        # With hiredis, the replies are parsed as the data arrives, in the connection's
        # data_received callback: their callers then run in the next turn of the loop, where a
        # reader task would take one turn more to wake (see _ReplyFeed).
        self._feed = _ReplyFeed.attach(self)

    def write(self, batch: _Batch, packed: bytes) -> None:
        """Write ``batch`` (already packed) and have its replies read."""
        self.in_flight.append(batch)
        try:
            # redis-py's send_packed_command would await drain(), which never waits for a
            # connected socket with room in its buffer: writelines is what it does.
            # Its buffer is bounded by _MAX_IN_FLIGHT batches of _MAX_BATCH calls.
            writer = self.connection._writer
            if writer is None:
                raise RedisConnectionError("the connection is closed")
            writer.writelines((packed,))
        except Exception as exc:
            self._break(exc)
            return
        if self._feed is None and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(
                self._read(), name="corral-redis-reader"
            )

    async def _read(self) -> None:
        commands, connection = self.commands, self.connection
        try:
            while True:
                if not self.in_flight:
                    # The callers just answered run before this resumes, and usually call
                    # again at once: staying saves starting a new reader (one more turn of
                    # the event loop, a costly poll on a busy machine) for their batch.
                    await asyncio.sleep(0)
                    if not self.in_flight:
                        return
                args = self.in_flight[0][0][0]
                self.answer_next(await commands._read_reply(connection, args))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break(exc)

    def answer_next(self, result: Any) -> None:
        """Answer the oldest call still due with its reply (parsed, or an awaitable of it)."""
        batch = self.in_flight[0]
        args, reply = batch.pop(0)
        if inspect.isawaitable(result):  # no response callback of the commands we send
            _answer_later(self.commands, args, reply, result)
        else:
            self.commands._answer(args, reply, result)
        if not batch:
            # After the answers: their callers, woken first, queue their next calls before
            # the writer looks (or it would find nothing and let go of the connection).
            self.in_flight.popleft()
            self.commands._wake.set()

    def _break(self, exc: Exception) -> None:
        if self.broken:
            return
        self.broken = True
        for batch in self.in_flight:
            _fail(batch, exc)
        self.in_flight.clear()
        self.commands._wake.set()
        _spawn(self._close())

    async def _close(self) -> None:
        await self.connection.disconnect(nowait=True)
        await self.release()

    async def release(self) -> None:
        """Hand the connection back to the pool."""
        if self._feed is not None:
            self._feed.detach()
        client = self.commands._client
        assert isinstance(client, Redis)
        await client.connection_pool.release(self.connection)

    def abandon(self) -> None:
        """The writer was cancelled: cancel every call still due and close the connection."""
        if self._reader is not None:
            self._reader.cancel()
        for batch in self.in_flight:
            _cancel(batch)
        self.in_flight.clear()
        self.broken = True
        _spawn(self._close())


def _settle(reply: asyncio.Future[Any], result: Any) -> None:
    """Give a call its reply (an error reply is raised to the caller)."""
    if reply.done():
        return  # the caller was cancelled: the command ran, nobody waits
    if isinstance(result, Exception):
        reply.set_exception(result)
    else:
        reply.set_result(result)


class _ReplyFeed:
    """Parses a link's replies in the connection's ``data_received`` and answers their calls.

    redis-py reads a connection through an ``asyncio.StreamReader``, which its protocol feeds
    from ``data_received``. While the link holds the connection, its stream's ``feed_data``,
    ``feed_eof`` and ``set_exception`` are this object's (instance attributes over the class's
    methods, removed again when the connection goes back to the pool), feeding a hiredis reader
    made as redis-py makes its own (used only where redis-py parses with hiredis). The socket
    timeout is kept by a watchdog timer: calls still due when it has seen no reply for a whole
    timeout fail with redis-py's ``TimeoutError`` (so after one to two timeouts of silence).
    """

    def __init__(self, link: _Link, stream: asyncio.StreamReader, reader: Any) -> None:
        self._link = link
        self._stream = stream
        self._reader = reader
        self._push_type: type | None = None
        self._timeout = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._replies = self._replies_seen = 0
        self._detached = False
        stream.__dict__.update(
            feed_data=self._feed_data,
            feed_eof=self._feed_eof,
            set_exception=self._set_exception,
        )

    @classmethod
    def attach(cls, link: _Link) -> _ReplyFeed | None:
        connection = link.connection
        parser = getattr(connection, "_parser", None)
        stream = getattr(connection, "_reader", None)
        if (
            not isinstance(parser, _AsyncHiredisParser)
            or not isinstance(stream, asyncio.StreamReader)
            or getattr(stream, "_buffer", None)  # unread data: not a clean connection
        ):
            return None
        import hiredis  # present: redis-py chose its hiredis parser

        options: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": parser.parse_error,
        }
        if connection.encoder.decode_responses:
            options["encoding"] = connection.encoder.encoding
            options["errors"] = connection.encoder.encoding_errors
        feed = cls(link, stream, hiredis.Reader(**options))
        feed._push_type = getattr(hiredis, "PushNotification", None)
        timeout = connection.socket_timeout
        if timeout:
            feed._timeout = timeout
            feed._watchdog = asyncio.get_running_loop().call_later(timeout, feed._watch)
        return feed

    def _watch(self) -> None:
        link = self._link
        if link.broken or self._detached:
            return
        if link.in_flight and self._replies == self._replies_seen:
            host = getattr(link.connection, "host", "?")
            port = getattr(link.connection, "port", "?")
            link._break(RedisTimeoutError(f"Timeout reading from {host}:{port}"))
            return
        self._replies_seen = self._replies
        self._watchdog = asyncio.get_running_loop().call_later(self._timeout, self._watch)

    def detach(self) -> None:
        """Give the stream its own methods back."""
        self._detached = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for name in ("feed_data", "feed_eof", "set_exception"):
            self._stream.__dict__.pop(name, None)

    def _feed_data(self, data: bytes) -> None:
        link = self._link
        commands = link.commands
        try:
            self._reader.feed(data)
            while True:
                reply = self._reader.gets()
                if reply is False:
                    break
                self._replies += 1
                if self._push_type is not None and type(reply) is self._push_type:
                    continue  # RESP3 push (none is asked for on this connection)
                if not link.in_flight:
                    raise InvalidResponse("Redis sent a reply that no call was waiting for")
                if not isinstance(reply, ResponseError):
                    reply = commands._parse(link.in_flight[0][0][0], reply)
                link.answer_next(reply)
        except Exception as exc:
            link._break(exc)

    def _feed_eof(self) -> None:
        asyncio.StreamReader.feed_eof(self._stream)  # for redis-py's health check
        self._link._break(RedisConnectionError("Connection closed by server."))

    def _set_exception(self, exc: Exception) -> None:
        asyncio.StreamReader.set_exception(self._stream, exc)
        self._link._break(RedisConnectionError(f"Error while reading from socket: {exc}"))


def _answer_later(
    commands: CommandQueue, args: tuple[Any, ...], future: asyncio.Future[Any], reply: Any
) -> None:
    """Answer a call when its response callback's awaitable is done."""

    async def answer() -> None:
        try:
            result = await reply
        except Exception as exc:
            result = exc
        commands._answer(args, future, result)

    _spawn(answer())


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` as a task of its own, kept alive until done (the loop holds tasks only
    weakly)."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


#: Tasks of _spawn, kept alive until done.
_BACKGROUND: set[asyncio.Task[None]] = set()


def _cancel(batch: _Batch) -> None:
    for _, reply in batch:
        reply.cancel()


def _pack_batch(encoder: Encoder, batch: _Batch) -> tuple[_Batch, bytes]:
    """The calls of ``batch`` that can be packed, and them packed (see :func:`_pack`). A call
    that cannot be (an argument Redis cannot take, a string the encoding cannot encode) fails
    alone with its error: the others of its batch go out as if it had not been made."""
    try:
        return batch, _pack(encoder, [args for args, _ in batch])
    except Exception:
        pass  # rare: pack the calls one by one to find those at fault
    packed = [(call, _pack_call(encoder, call)) for call in batch]
    return (
        [call for call, data in packed if data is not None],
        b"".join(data for _, data in packed if data is not None),
    )


def _pack_call(encoder: Encoder, call: tuple[tuple[Any, ...], asyncio.Future[Any]]) -> bytes | None:
    """One call packed, or None when it cannot be: the call then fails with the error."""
    try:
        return _pack(encoder, [call[0]])
    except Exception as exc:
        _settle(call[1], exc)
        return None


def _ascii_only(args: tuple[Any, ...]) -> bool:
    """Whether no argument is a string with a character beyond ASCII (a :class:`Head` counts
    as packable: it is packed the same for every call)."""
    return all(type(arg) is not str or arg.isascii() for arg in args)


def _pack(encoder: Encoder, commands: list[tuple[Any, ...]]) -> bytes:
    """The commands in RESP, as redis-py's ``pack_command`` writes them (strings in the
    encoder's encoding); plain strings and ints are encoded here, anything else by the
    encoder (which also refuses what Redis cannot take)."""
    encoding, errors = encoder.encoding, encoder.encoding_errors
    encode: Callable[[Any], bytes | memoryview] = encoder.encode  # untyped in redis-py
    out: list[bytes] = []
    for args in commands:
        head = args[0]
        if type(head) is Head:
            out += (b"*%d\r\n" % (len(head.args) + len(args) - 1), head.packed(encoding, errors))
            args = args[1:]
        else:
            if isinstance(head, str) and " " in head:  # "SCRIPT LOAD": two arguments
                args = (*head.split(), *args[1:])
            out.append(b"*%d\r\n" % len(args))
        _pack_arguments(out, args, encoding, errors, encode)
    return b"".join(out)


def _pack_arguments(
    out: list[bytes],
    args: tuple[Any, ...],
    encoding: str,
    errors: str,
    encode: Callable[[Any], bytes | memoryview],
) -> None:
    """Append ``args`` to ``out`` in RESP. (One loop rather than a call per argument: packing
    is the client's largest cost per job after the event loop.)"""
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
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))


def _no_encoder(arg: Any) -> bytes:
    raise TypeError(f"a Head takes only str, int and bytes arguments, not {type(arg).__name__}")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an unawaited reply's error as seen (asyncio would log it as never retrieved)."""
    if not future.cancelled():
        future.exception()


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
