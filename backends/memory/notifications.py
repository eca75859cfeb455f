"""The event log and the work marker on the memory backend
(``corral.engine.storage.NotificationStorage``)."""

from __future__ import annotations

import asyncio

from corral.backends.memory.core import MemoryCore
from corral.backends.memory.store import event_key, expire_waiter
from corral.engine.storage import StoredEvent


class NotificationOps(MemoryCore):
    """Reading and waiting for events, and waiting for work."""

    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        with self._mutex:
            events = self._store(queue).events
            after_key = (-1, -1) if after is None else event_key(after)
            selected = []
            for entry in events:
                ms, seq, name = entry[0], entry[1], entry[2]
                if (ms, seq) > after_key:
                    pairs = dict(zip(entry[3::2], entry[4::2], strict=True))
                    selected.append(StoredEvent(f"{ms}-{seq}", name, pairs))
                    if len(selected) == count:
                        break
            return selected

    async def last_event_id(self, queue: str) -> str:
        with self._mutex:
            events = self._store(queue).events
            return f"{events[-1][0]}-{events[-1][1]}" if events else "0-0"

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        events = await self.get_events(queue, after, count)
        if events or timeout_ms <= 0:
            return events
        with self._mutex:
            store = self._store(queue)
            # Re-read under the lock: an event logged since the first read must not be missed.
            if store.events and (store.events[-1][0], store.events[-1][1]) > event_key(after):
                waiter = None
            else:
                waiter = asyncio.get_running_loop().create_future()
                store.event_waiters.append(waiter)
        if waiter is not None:
            timer = waiter.get_loop().call_later(timeout_ms / 1000, expire_waiter, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                with self._mutex:
                    if waiter in store.event_waiters:
                        store.event_waiters.remove(waiter)
        return await self.get_events(queue, after, count)

    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        with self._mutex:
            store = self._store(queue)
            if self._consume_marker(store):
                return True
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            store.waiters.append(waiter)
            self._blocked_since[waiter] = next(self._block_numbers)
        timer = waiter.get_loop().call_later(timeout_ms / 1000, expire_waiter, waiter)
        try:
            woken = await waiter
        except asyncio.CancelledError:
            with self._mutex:
                if waiter in store.waiters:
                    store.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and waiter.result():
                    self._signal(store)  # served, but nobody is left to act on it: pass it on
            raise
        finally:
            timer.cancel()
            self._blocked_since.pop(waiter, None)
        if not woken:
            with self._mutex:
                if waiter in store.waiters:
                    store.waiters.remove(waiter)
        return woken
