"""Which workers serve a queue, on the memory backend (``corral.engine.storage.WorkerStorage``).

Redis knows a worker by its open connection; an in-process store has none, so workers register
when they start and unregister when they close. A worker whose process dies without closing
(the simulator's crash) stays listed until someone unregisters it: the simulator, which knows
its processes, does that for a crash.
"""

from __future__ import annotations

from corral.backends.memory.core import MemoryCore
from corral.engine.storage.workers import DEFAULT_CLIENT_PREFIX, worker_client_name


class WorkerOps(MemoryCore):
    """Which workers serve a queue: a registry standing for Redis's ``CLIENT LIST``."""

    async def register_worker(self, queue: str, worker_name: str | None) -> str:
        with self._mutex:
            registration = str(next(self._worker_numbers))
            name = worker_client_name(DEFAULT_CLIENT_PREFIX, queue, worker_name)
            self._workers.setdefault(queue, {})[registration] = (name, self._mutex.now)
            return registration

    async def unregister_worker(self, queue: str, registration: str) -> None:
        with self._mutex:
            self._workers.get(queue, {}).pop(registration, None)

    async def get_workers(self, queue: str) -> list[dict[str, str]]:
        with self._mutex:
            now = self._mutex.now
            return [
                {
                    "id": registration,
                    "name": queue,
                    "rawname": name,
                    "age": str(max(now - since, 0) // 1000),
                }
                for registration, (name, since) in self._workers.get(queue, {}).items()
            ]
