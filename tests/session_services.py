"""The services a test session needs, found or provided: a Redis server and the Node packages
of the interop tests (a pytest plugin that ``tests/conftest.py`` registers).

* Redis: the server at ``CORRAL_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) when one
  answers; otherwise, when a ``redis-server`` binary is on PATH, a private one the session starts
  on the first test that needs Redis (free loopback port, no persistence, a temporary directory
  of its own) and stops at the end. ``CORRAL_REDIS_URL`` is then set to it for subprocesses.
* Node: when the session collected interop tests, ``tests/interop/node_modules`` is missing and
  ``npm`` is on PATH, ``npm ci --prefix tests/interop`` runs once.
* Whatever is still missing makes its tests skip (fail under CORRAL_REQUIRE_REDIS=1 /
  CORRAL_REQUIRE_NODE=1, see conftest.py and interop/node_bullmq.py), and the session ends
  with one loud line: how many tests skipped for want of what, and what to install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

TESTS = Path(__file__).resolve().parent
INTEROP = TESTS / "interop"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
NPM_CI = ("ci", "--no-audit", "--no-fund")

#: What to install for each missing service, keyed by words of the skip reasons that name it.
INSTALL = {
    "redis": "redis-server (apt-get install redis-server / brew install redis), or point "
    "CORRAL_REDIS_URL at a server",
    "node": "Node.js and npm (the interop tests then run `npm ci --prefix tests/interop`)",
}


def _needs(reason: str) -> str | None:
    """The missing service a skip reason names ("redis", "node"), or None."""
    if "Node.js" in reason or "npm" in reason:
        return "node"
    if "Redis" in reason or "redis-server" in reason:
        return "redis"
    return None


def _local_redis() -> ModuleType:
    """tests/redis/local_redis.py, imported under the name its own tests import it by."""
    if "local_redis" not in sys.modules:
        path = TESTS / "redis" / "local_redis.py"
        spec = importlib.util.spec_from_file_location("local_redis", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["local_redis"] = module
        spec.loader.exec_module(module)
    return sys.modules["local_redis"]


def _answers(url: str) -> str | None:
    """Why the Redis server at ``url`` cannot be used, or None if it answers PING."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as probe:
            probe.ping()
    except redis.RedisError as exc:
        return f"no Redis server answers at {url}: {exc}"
    return None


def install_node_packages(interop: Path, npm: str | None) -> str | None:
    """Run ``npm ci`` in ``interop`` if its ``node_modules`` is missing and npm exists.

    Returns:
        A line for the session to print (what was done, or why it failed), or None if there
        was nothing to do.
    """
    if npm is None or (interop / "node_modules").exists():
        return None
    done = subprocess.run(
        [npm, *NPM_CI, "--prefix", str(interop)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return f"`npm ci --prefix {interop}` failed ({done.returncode}): {done.stderr[-500:]}"
    return f"installed the interop tests' npm packages (npm ci --prefix {interop})"


class SessionServices:
    """The plugin: one per session (see the module docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.url = os.environ.get("CORRAL_REDIS_URL", DEFAULT_REDIS_URL)
        self.notes: list[str] = []
        self.skipped: dict[str, int] = {}
        self._problem: str | None = None
        self._probed = False
        self._server: Any = None  # local_redis.RedisProcess
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    def redis_problem(self) -> str | None:
        """Why no Redis server can be used by the tests, or None (then :attr:`url` is one).
        Found once per session, starting a private server if need be."""
        if not self._probed:
            self._probed = True
            self._problem = _answers(self.url)
            if self._problem is not None and shutil.which("redis-server") is not None:
                self._start_private_server()
        return self._problem

    def _start_private_server(self) -> None:
        local_redis = _local_redis()
        self._directory = tempfile.TemporaryDirectory(prefix="corral-test-redis-")
        server = local_redis.RedisProcess(Path(self._directory.name), local_redis.free_port())
        try:
            server.start()
        except RuntimeError as exc:
            self._problem = f"{self._problem}; a private redis-server did not start: {exc}"
            self._directory.cleanup()
            return
        self._server = server
        self.notes.append(
            f"{self._problem}: the tests used a private redis-server at {server.url} "
            f"(in {self._directory.name}, stopped at the end)"
        )
        self.url = server.url
        self._problem = None
        os.environ["CORRAL_REDIS_URL"] = server.url  # for the tests' own subprocesses

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if any(item.get_closest_marker("interop") for item in session.items):
            note = install_node_packages(INTEROP, shutil.which("npm"))
            if note is not None:
                self.notes.append(note)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple):
            service = _needs(str(report.longrepr[2]))
            if service is not None:
                self.skipped[service] = self.skipped.get(service, 0) + 1

    def loud_line(self) -> str | None:
        """The end-of-session line about tests skipped for want of a service, or None."""
        if not self.skipped:
            return None
        total = sum(self.skipped.values())
        parts = [
            f"{n} need{'s' if n == 1 else ''} {INSTALL[service]}"
            for service, n in sorted(self.skipped.items())
        ]
        return (
            f"corral: {total} TEST{'' if total == 1 else 'S'} SKIPPED, NOT RUN, for want of a "
            f"service: {'; '.join(parts)}. Install it and run pytest again."
        )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
        lines = [*self.notes, *filter(None, [self.loud_line()])]
        if not lines:
            return
        # After the final "N passed, M skipped" line, where it cannot be missed.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        for line in lines:
            loud = line is lines[-1] and self.skipped
            if reporter is not None:
                reporter.write_line(line, red=bool(loud), bold=bool(loud))
            else:
                print(line, file=sys.stderr)
