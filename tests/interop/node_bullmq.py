"""Drive the Node BullMQ scripts in ``node/`` as subprocesses (helpers for the interop tests).

The scripts take one JSON argument and print JSON lines. Everything here runs on a real-time
asyncio loop (the interop tests call ``asyncio.run`` themselves), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "node"
INSTALL_HINT = "run `npm ci --prefix tests/interop --no-audit --no-fund`"

Record = dict[str, Any]


def pinned() -> dict[str, str]:
    """The npm packages ``package.json`` pins, with their versions."""
    package = json.loads((HERE / "package.json").read_text())
    return dict(package["dependencies"])


def pinned_bullmq() -> str:
    """The bullmq version ``package.json`` pins."""
    return pinned()["bullmq"]


def node_problem() -> str | None:
    """Why the Node BullMQ scripts (and the bull-board recipe) cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is not installed (no `node` on PATH)"
    # Every pinned package, at its version: a node_modules installed before a package was
    # pinned (bull-board came later than bullmq) must not pass for current.
    for package, version in pinned().items():
        installed = HERE / "node_modules" / package / "package.json"
        if not installed.is_file():
            npm = "" if shutil.which("npm") else " (and npm is not installed)"
            return (
                f"the pinned npm packages are not installed in tests/interop ({package} is "
                f"missing){npm}: {INSTALL_HINT}"
            )
        found = json.loads(installed.read_text())["version"]
        if found != version:
            return (
                f"{package} {found} is installed in tests/interop but package.json pins "
                f"{version}: {INSTALL_HINT}"
            )
    return None


def require_node() -> str:
    """The path of ``node``; skips the test (fails it when CORRAL_REQUIRE_NODE=1) if the
    pinned BullMQ cannot run."""
    problem = node_problem()
    if problem is not None:
        if os.environ.get("CORRAL_REQUIRE_NODE") == "1":
            pytest.fail(f"{problem} (CORRAL_REQUIRE_NODE=1)")
        pytest.skip(problem)
    node = shutil.which("node")
    assert node is not None
    return node


async def poll(condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    """Wait (short real sleeps) until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


class NodeScript:
    """One running script: its JSON-line records as they arrive, and its stderr."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.records: list[Record] = []
        self._stderr = bytearray()
        self._changed = asyncio.Event()
        self._eof = False
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    def __repr__(self) -> str:
        return f"<NodeScript {self.name} pid={self.process.pid}>"

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    def events(self, name: str) -> list[Record]:
        """The records whose ``event`` is ``name``, in order."""
        return [record for record in self.records if record.get("event") == name]

    def _explain(self, limit: int = 4000) -> str:
        printed = repr(self.records)
        if len(printed) > limit:
            printed = "..." + printed[-limit:]
        return (
            f"{self.name} (exit code {self.process.returncode}) printed {printed}; "
            f"stderr: {self.stderr.strip()[-limit:]!r}"
        )

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            text = line.decode(errors="replace").strip()
            if text:
                try:
                    record = json.loads(text)
                except ValueError:
                    record = {"event": "unparsed", "text": text}
                self.records.append(record)
                self._changed.set()
        self._eof = True
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self._stderr += line

    async def wait_for(
        self, predicate: Callable[[Record], bool], timeout: float = 15.0, what: str = ""
    ) -> Record:
        """The first record (seen so far or arriving) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            for record in self.records:
                if predicate(record):
                    return record
            if self._eof:
                raise AssertionError(
                    f"{self.name} ended before {what or 'the record'}: " + self._explain()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what or 'a record'} from "
                    + self._explain()
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_event(self, name: str, timeout: float = 15.0) -> Record:
        """The first record of event ``name``."""
        return await self.wait_for(lambda r: r.get("event") == name, timeout, f"event {name!r}")

    async def finish(self, timeout: float = 20.0) -> list[Record]:
        """Wait for the script to exit by itself (code 0); return its records."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s: " + self._explain()
            ) from None
        await asyncio.gather(*self._readers)
        if self.process.returncode != 0:
            raise AssertionError(f"{self.name} failed: " + self._explain())
        return self.records

    async def kill(self) -> None:
        """SIGKILL the script (a worker dying mid-job: no cleanup runs) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.gather(*self._readers)


class Node:
    """Starts the scripts with a shared base configuration (Redis URL, prefix, queue)."""

    def __init__(self, node: str, **base: Any) -> None:
        self.node = node
        self.base = base
        self.started: list[NodeScript] = []

    async def start(
        self, script: str, env: dict[str, str] | None = None, **config: Any
    ) -> NodeScript:
        """Start ``node/<script>.mjs`` with the base configuration updated by ``config`` (and
        ``env`` added to its environment)."""
        process = await asyncio.create_subprocess_exec(
            self.node,
            str(SCRIPTS / f"{script}.mjs"),
            json.dumps({**self.base, **config}),
            cwd=SCRIPTS,
            env={**os.environ, **env} if env else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started = NodeScript(script, process)
        self.started.append(started)
        return started

    async def run(self, script: str, timeout: float = 20.0, **config: Any) -> NodeScript:
        """Run a script to its end."""
        started = await self.start(script, timeoutMs=int(timeout * 1000), **config)
        await started.finish(timeout + 5)
        return started

    async def add(self, jobs: list[Record]) -> list[str]:
        """Add jobs with Node BullMQ (``{name, data, opts}``, BullMQ's options); their ids."""
        producer = await self.run("producer", jobs=jobs)
        return [str(job_id) for job_id in (await producer.wait_event("added"))["ids"]]

    async def inspect(self, ids: list[str]) -> tuple[Record, dict[str, Record]]:
        """Node BullMQ's view: the queue's job counts, and ``{id: {state, job}}``."""
        inspector = await self.run("inspect", ids=ids)
        counts = (await inspector.wait_event("counts"))["counts"]
        return counts, {str(r["id"]): r for r in inspector.events("job")}

    async def ops(self, *calls: Record, timeout: float = 20.0) -> list[Record]:
        """Make Node BullMQ's operator calls (``node/ops.mjs``) one after another; for each,
        ``{"event": "done", "value": ...}`` or ``{"event": "refused", "message": ...}``."""
        script = await self.run("ops", timeout, ops=list(calls))
        return [r for r in script.records if r.get("event") in ("done", "refused")]

    async def board(self, queues: list[str]) -> tuple[NodeScript, str]:
        """Start the bull-board recipe (``node/board.mjs``) over ``queues`` on a free port;
        the script and the board's base URL."""
        board = await self.start(
            "board",
            env={
                "REDIS_URL": self.base["url"],
                "PREFIX": self.base["prefix"],
                "QUEUES": ",".join(queues),
                "PORT": "0",
            },
        )
        line = await board.wait_for(
            lambda r: str(r.get("text", "")).startswith("bull-board on "), what="the board's URL"
        )
        return board, str(line["text"]).removeprefix("bull-board on ").rstrip("/")

    async def aclose(self) -> None:
        """Kill whatever is still running."""
        for script in self.started:
            await script.kill()


async def http(method: str, url: str) -> tuple[int, Any]:
    """One HTTP request (in a thread: urllib blocks); the status and the JSON body (None if
    empty), error statuses included."""

    def call() -> tuple[int, Any]:
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return status, json.loads(body) if body.strip() else None

    return await asyncio.to_thread(call)


@contextlib.asynccontextmanager
async def node_scripts(node: str, **base: Any) -> AsyncIterator[Node]:
    runner = Node(node, **base)
    try:
        yield runner
    finally:
        await runner.aclose()
