"""Private ``redis-server`` processes for the fault and cluster tests (imported as ``from
local_redis import ...``).

Each server runs on a free loopback port (never 6379, which other tests share) in a directory of
its own, and every wait here is bounded. Without a ``redis-server`` binary the tests skip, unless
CORRAL_REQUIRE_REDIS=1 (then they fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

#: Longest wait for a server to start answering or to exit.
START_TIMEOUT_S = 10.0


def require_binaries(*names: str) -> dict[str, str]:
    """The paths of the given programs; skips the test (fails it when CORRAL_REQUIRE_REDIS=1)
    if one is missing."""
    found = {name: shutil.which(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        problem = f"{', '.join(missing)} not found on PATH: these tests start their own servers"
        if os.environ.get("CORRAL_REQUIRE_REDIS") == "1":
            pytest.fail(f"{problem} (CORRAL_REQUIRE_REDIS=1)")
        pytest.skip(problem)
    return {name: path for name, path in found.items() if path is not None}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: Sequence[int] = (), *, cluster: bool = False) -> int:
    """A free loopback port other than 6379 (and, for a cluster node, whose bus port, +10000,
    is free too)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port == 6379 or port in taken:
            continue
        if cluster and (port + 10_000 > 65_535 or not _port_free(port + 10_000)):
            continue
        return port
    raise RuntimeError("no free loopback port found")


class RedisProcess:
    """One ``redis-server`` on ``127.0.0.1:port`` with its files in ``directory``.

    Args:
        directory: the server's working directory (AOF, RDB, nodes.conf, log).
        port: the port (see :func:`free_port`).
        options: extra configuration, e.g. ``{"appendonly": "yes"}``.
    """

    def __init__(self, directory: Path, port: int, options: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.port = port
        self.options = {"save": "", "appendonly": "no", **(options or {})}
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self) -> redis.Redis:
        """A synchronous client with short timeouts, for the test to drive the server."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=2, socket_timeout=5
        )

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        assert self.process is None or self.process.poll() is not None, "already running"
        args = [
            require_binaries("redis-server")["redis-server"],
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
        ]
        for name, value in self.options.items():
            args += [f"--{name}", value]
        self.process = subprocess.Popen(
            args, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{self.log}")
            try:
                with self.admin() as client:
                    client.ping()
                    if client.info("persistence").get("loading", 0) == 0:
                        return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer:\n{self.log}")
            time.sleep(0.02)

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: SIGKILL with ``crash`` (nothing flushed beyond what was written),
        else SIGTERM (a clean shutdown); waits (bounded) for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=START_TIMEOUT_S)

    def restart(self, *, crash: bool = False, down_s: float = 0.0) -> None:
        self.stop(crash=crash)
        time.sleep(down_s)
        self.start()


@contextlib.contextmanager
def redis_server(directory: Path, options: dict[str, str] | None = None) -> Iterator[RedisProcess]:
    """A started :class:`RedisProcess` on a free port, stopped on exit."""
    server = RedisProcess(directory, free_port(), options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisClusterProcesses:
    """A Redis Cluster of ``masters`` ``redis-server`` processes (no replicas) on free loopback
    ports, created with ``redis-cli --cluster create``; waits (bounded) until every node
    reports ``cluster_state:ok``."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes: list[RedisProcess] = []
        ports: list[int] = []
        for index in range(masters):
            port = free_port(ports, cluster=True)
            ports.append(port)
            options = {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": "2000",
            }
            self.nodes.append(RedisProcess(directory / f"node{index}", port, options))

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A URL of one node (a cluster client discovers the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        redis_cli = require_binaries("redis-server", "redis-cli")["redis-cli"]
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                [redis_cli, "--cluster", "create", *addresses, "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S * 3,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
            deadline = time.monotonic() + START_TIMEOUT_S * 3
            while not self._ready():
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for node in self.nodes:
            with node.admin() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if (
                    "cluster_state:ok" not in text
                    or "cluster_known_nodes:" + str(len(self.nodes)) not in text
                ):
                    return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class CuttingProxy:
    """A TCP proxy in front of a Redis server that can cut a client's connection in the middle
    of one call, at a chosen point:

    * ``after_reply=False``: the request is never forwarded (the call did not run);
    * ``after_reply=True``: the request runs on the server, then the connection is cut before
      the reply reaches the client (the call ran, its caller cannot know).

    Runs on the test's event loop. ``arm(marker)`` cuts the first connection whose request
    bytes contain ``marker`` (e.g. a script's SHA1, as sent by EVALSHA).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._trigger: tuple[bytes, bool, asyncio.Future[None]] | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def arm(self, marker: bytes, *, after_reply: bool) -> asyncio.Future[None]:
        """Cut the next connection that sends ``marker``; the future is done once it is cut."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._trigger = (marker, after_reply, done)
        return done

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers += [client_w, server_w]
        replies_seen = asyncio.Event()
        state = {"dropping": False}

        def cut() -> None:
            self.cuts += 1
            client_w.transport.abort()
            server_w.transport.abort()

        async def upstream() -> None:
            tail = b""
            while data := await client_r.read(65536):
                trigger = self._trigger
                if trigger is not None and trigger[0] in tail + data:
                    self._trigger = None
                    _, after_reply, done = trigger
                    if after_reply:
                        state["dropping"] = True
                        server_w.write(data)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(replies_seen.wait(), 5)
                        await asyncio.sleep(0.05)  # the rest of the batch runs too
                    cut()
                    if not done.done():
                        done.set_result(None)
                    return
                tail = data[-64:]
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if state["dropping"]:
                    replies_seen.set()
                    continue
                client_w.write(data)
                await client_w.drain()

        async def pump(side: Callable[[], Awaitable[None]]) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await side()
            client_w.close()
            server_w.close()

        for side in (upstream, downstream):
            task = asyncio.create_task(pump(side))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
