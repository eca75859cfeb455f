"""Rate limits and global concurrency on the memory backend
(``corral.engine.storage.LimitStorage``, and the gate ``_fetch`` passes through).

The window counter and its TTL stand for BullMQ's ``limiter`` key (expiry by the store clock,
as Redis PX), ``limit_meta`` for the ``meta`` fields ``max``, ``duration`` and ``concurrency``;
the decisions are :mod:`corral.engine.limits`'s.
"""

from __future__ import annotations

from typing import Final

from corral.backends.memory.core import MemoryCore
from corral.backends.memory.store import QueueStore
from corral.engine.errors import ResultCode
from corral.engine.limits import (
    MANUAL_LIMIT_COUNT,
    counts_activation,
    effective_duration,
    effective_max,
    is_maxed,
    limited_for_ms,
    opens_window,
    rate_limit_ttl,
)
from corral.engine.states import Transition
from corral.engine.storage import FetchRequest

#: ``_gate``'s verdict when global concurrency stops the fetch.
MAXED: Final = -1


class LimitOps(MemoryCore):
    """The limiter window, the limit settings, and giving a rate-limited job back."""

    # ----------------------------------------------------------------- helpers (lock held)

    def _window(self, store: QueueStore) -> tuple[int | None, int]:
        """The counter (None: no key) and its PTTL (-2 no key, -1 no TTL); an expired window
        is deleted on sight, as Redis would. As a Redis key with ``PX d`` (BullMQ's window), it
        lives through its last millisecond: at ``start + d`` it is there with PTTL 0."""
        if not store.limiter_count:
            return None, -2
        expires = store.limiter_expires
        if expires is None:
            return store.limiter_count, -1
        left = expires - self._mutex.now
        if left < 0:
            store.limiter_count, store.limiter_expires = 0, None
            return None, -2
        return store.limiter_count, left

    def _maxed(self, store: QueueStore) -> bool:
        if "ignore-global-concurrency" in self.planted_bugs:
            return False
        concurrency = store.limit_meta.get("concurrency")
        return concurrency is not None and is_maxed(concurrency, len(store.active))

    def _gate(self, store: QueueStore, request: FetchRequest) -> tuple[int, int | None]:
        """moveToActive's checks, in its order: ``(verdict, max applied)``, the verdict being
        the ms a rate limit holds fetches back, :data:`MAXED`, or 0 (go on to pause, pop)."""
        max_jobs = effective_max(store.limit_meta.get("max"), request.limiter)
        if max_jobs is not None:
            count, ttl = self._window(store)
            if count is not None and count >= max_jobs and ttl == 0:
                # Full and expiring this very millisecond: BullMQ deletes it, so that this
                # activation opens a new window.
                store.limiter_count, store.limiter_expires = 0, None
            delay = limited_for_ms(max_jobs, count or 0, ttl)
            if delay:
                return delay, max_jobs
        if self._maxed(store):
            return MAXED, max_jobs
        return 0, max_jobs

    def _count_activation(
        self, store: QueueStore, request: FetchRequest, fields: dict[str, str], max_jobs: int | None
    ) -> None:
        """INCR the window counter for an activation; the first of a window sets its TTL."""
        if "no-shared-limiter" in self.planted_bugs:
            return
        if not counts_activation(max_jobs, fields):
            return
        self._window(store)  # (drops an expired window first)
        store.limiter_count += 1
        if opens_window(store.limiter_count):
            duration = effective_duration(store.limit_meta.get("duration"), request.limiter)
            store.limiter_expires = self._mutex.now + duration if duration else None

    def _wake(self, store: QueueStore) -> None:
        """Set the marker if jobs are ready and the queue may serve them."""
        if (store.wait or store.prioritized.scores) and not store.paused and not self._maxed(store):
            self._signal(store)

    # ----------------------------------------------------------------- LimitStorage

    async def set_rate_limit(self, queue: str, ttl_ms: int) -> None:
        with self._mutex:
            store = self._store(queue)
            store.limiter_count = MANUAL_LIMIT_COUNT
            store.limiter_expires = self._mutex.now + ttl_ms

    async def get_rate_limit_ttl(self, queue: str, max_jobs: int | None) -> int:
        with self._mutex:
            store = self._store(queue)
            count, ttl = self._window(store)
            return rate_limit_ttl(max_jobs, store.limit_meta.get("max"), count, ttl)

    async def remove_rate_limit_key(self, queue: str) -> int:
        with self._mutex:
            store = self._store(queue)
            count, _ = self._window(store)
            store.limiter_count, store.limiter_expires = 0, None
            self._wake(store)
            return 0 if count is None else 1

    async def set_queue_meta(self, queue: str, fields: dict[str, int]) -> None:
        with self._mutex:
            store = self._store(queue)
            store.limit_meta.update({name: str(value) for name, value in fields.items()})
            self._wake(store)

    async def get_queue_meta(self, queue: str, names: tuple[str, ...]) -> list[str | None]:
        with self._mutex:
            meta = self._store(queue).limit_meta
            return [meta.get(name) for name in names]

    async def remove_queue_meta(self, queue: str, names: tuple[str, ...]) -> None:
        with self._mutex:
            store = self._store(queue)
            for name in names:
                store.limit_meta.pop(name, None)
            self._wake(store)

    async def move_to_wait(self, queue: str, job_id: str, token: str) -> tuple[ResultCode, int]:
        with self._mutex:
            store = self._store(queue)
            code = self._check_owner(store, job_id, token)
            if code is not ResultCode.OK:
                return code, 0
            self._take_from_active(store, job_id)
            priority = int(store.jobs[job_id].get("priority") or 0)
            if priority:
                # Counter 0: ahead of every job of its priority (BullMQ's pushBackJobWithPriority).
                self._move(queue, store, job_id, Transition.RATE_LIMITED_PRIORITIZED)
                store.prioritized.add(job_id, priority * 2**32)
            else:
                self._move(queue, store, job_id, Transition.RATE_LIMITED)
                store.wait.append(job_id)  # (the right end is served next: the front)
            self._wake(store)
            self._emit(store, ("waiting", "jobId", job_id, "prev", "active"))
            _, ttl = self._window(store)
            return code, max(ttl, 0)
