"""Readers on the memory backend (``corral.engine.storage.ReaderStorage``)."""

from __future__ import annotations

from collections.abc import Sequence

from corral.backends.memory.core import MemoryCore
from corral.backends.memory.store import priority_score
from corral.backends.zset import index_range
from corral.engine.states import JobState
from corral.engine.storage import LockInfo


class ReaderOps(MemoryCore):
    """What a caller can read of a queue and its jobs."""

    async def is_paused(self, queue: str) -> bool:
        with self._mutex:
            return self._store(queue).paused

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        with self._mutex:
            fields = self._store(queue).jobs.get(job_id)
            return None if fields is None else dict(fields)

    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        with self._mutex:
            return self._store(queue).states.get(job_id)

    async def get_counts(self, queue: str) -> dict[JobState, int]:
        with self._mutex:
            store = self._store(queue)
            return {
                JobState.WAITING: len(store.wait),
                JobState.PRIORITIZED: len(store.prioritized),
                JobState.DELAYED: len(store.delayed),
                JobState.ACTIVE: len(store.active),
                JobState.COMPLETED: len(store.completed),
                JobState.FAILED: len(store.failed),
                JobState.WAITING_CHILDREN: len(store.waiting_children),
            }

    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        with self._mutex:
            store = self._store(queue)
            if state is JobState.WAITING:
                newest_first = list(store.wait)
            elif state is JobState.ACTIVE:
                newest_first = list(reversed(store.active))
            else:
                return store.zset(state).range(start, end, desc=not asc)
            ordered = newest_first[::-1] if asc else newest_first
            return [ordered[i] for i in index_range(len(ordered), start, end)]

    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        with self._mutex:
            lock = self._lock_of(self._store(queue), job_id)
            return None if lock is None else LockInfo(lock[0], lock[1] - self._mutex.now)

    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        with self._mutex:
            return job_id in self._store(queue).stalled

    async def get_job_logs(
        self, queue: str, job_id: str, start: int, end: int, asc: bool
    ) -> tuple[list[str], int]:
        with self._mutex:
            rows = self._store(queue).logs.get(job_id, [])
            if asc:
                return [rows[i] for i in index_range(len(rows), start, end)], len(rows)
            # Newest first: the range counted from the newest row, as BullMQ mirrors it.
            newest_first = rows[::-1]
            return [newest_first[i] for i in index_range(len(rows), start, end)], len(rows)

    async def get_counts_per_priority(
        self, queue: str, priorities: Sequence[int]
    ) -> dict[int, int]:
        with self._mutex:
            store = self._store(queue)
            return {
                priority: (
                    store.prioritized.count_between(
                        priority_score(priority, 0), priority_score(priority + 1, 0) - 1
                    )
                    if priority
                    else len(store.wait)
                )
                for priority in dict.fromkeys(priorities)
            }
