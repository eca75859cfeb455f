"""What the sandbox tests share: an event recorder, bounded waits and process checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from corral import Worker
from corral.engine.worker import WORKER_EVENTS

# Generous bound for any single wait: child processes take a moment to start on a busy machine.
WAIT_S = 15.0


class Recorder:
    """Collects a worker's events, and wakes waiters when a condition on them holds."""

    def __init__(self, worker: Worker) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()
        for name in sorted(WORKER_EVENTS):
            worker.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[..., None]:
        def handle(*args: Any) -> None:
            self.events.append((name, args))
            self._changed.set()

        return handle

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [args for event, args in self.events if event == name]

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def stop(worker: Worker, runner: asyncio.Task[None], force: bool = False) -> None:
    async with asyncio.timeout(WAIT_S):
        await worker.close(force=force)
        await runner
