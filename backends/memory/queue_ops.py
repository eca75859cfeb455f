"""Operator calls on a whole queue, on the memory backend
(``corral.engine.storage.OperatorStorage``)."""

from __future__ import annotations

from corral.backends.memory.core import MemoryCore


class QueueOps(MemoryCore):
    """Calls an operator makes on a queue."""

    async def set_paused(self, queue: str, paused: bool) -> None:
        with self._mutex:
            store = self._store(queue)
            if paused == store.paused:
                return
            store.paused = paused
            if paused:
                store.marker.clear()
                self._emit(store, ("paused",))
            else:
                if store.wait or store.prioritized:
                    self._signal(store)
                first = store.delayed.first()
                if first is not None:
                    self._signal(store, "1", first[0] // 4096)
                self._emit(store, ("resumed",))
