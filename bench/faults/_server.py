"""A private ``redis-server`` for the fault measurements (tests/redis/local_redis.py's)."""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "redis"))
from local_redis import RedisProcess


@contextlib.contextmanager
def private_server(port: int, options: dict[str, str] | None = None) -> Iterator[RedisProcess]:
    """A fresh server on ``127.0.0.1:port`` (refused if the port is taken), stopped after."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is taken: these scripts start a server of their own")
    with tempfile.TemporaryDirectory() as directory:
        server = RedisProcess(Path(directory), port, options)
        server.start()
        try:
            yield server
        finally:
            server.stop()
