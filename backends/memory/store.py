"""The memory backend's data: one queue's structures (in BullMQ's Redis shapes), the scores of
its sorted sets, and the lock every operation runs under."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Final, Protocol

from corral.backends.zset import ZSet
from corral.engine.clock import Clock
from corral.engine.states import JobState

#: How many due delayed jobs one operation promotes at most (BullMQ: 1,000).
PROMOTE_LIMIT: Final = 1000
#: How many finished jobs one retention pass deletes at most (BullMQ's ``keepJobs.limit``).
TRIM_LIMIT: Final = 1000
#: Length of the event log (BullMQ's default ``maxLenEvents``).
MAX_EVENTS: Final = 10_000


def delayed_score(due_ms: int, sequence: int) -> int:
    """BullMQ's delayed score: due time × 4096 plus a per-millisecond sequence."""
    return due_ms * 4096 + sequence


def priority_score(priority: int, counter: int) -> int:
    """BullMQ's prioritized score: priority × 2^32 plus the queue's counter."""
    return priority * 2**32 + (counter & 0xFFFFFFFF)


@dataclasses.dataclass(eq=False, slots=True)
class QueueStore:
    """One queue's structures. ``wait`` is a list with index 0 at the left (newest) end; jobs
    are taken from the right. ``active`` is an ordered dict standing for a list whose left end
    is the last inserted key. ``states`` indexes where each job is (checked by ``check()``)."""

    wait: collections.deque[str] = dataclasses.field(default_factory=collections.deque)
    active: dict[str, None] = dataclasses.field(default_factory=dict)
    prioritized: ZSet = dataclasses.field(default_factory=ZSet)
    delayed: ZSet = dataclasses.field(default_factory=ZSet)
    completed: ZSet = dataclasses.field(default_factory=ZSet)
    failed: ZSet = dataclasses.field(default_factory=ZSet)
    stalled: dict[str, None] = dataclasses.field(default_factory=dict)
    jobs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    states: dict[str, JobState] = dataclasses.field(default_factory=dict)
    locks: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    paused: bool = False
    stalled_check_until: int = 0
    id_counter: int = 0
    priority_counter: int = 0
    marker: dict[str, int] = dataclasses.field(default_factory=dict)
    waiters: collections.deque[asyncio.Future[bool]] = dataclasses.field(
        default_factory=collections.deque
    )
    # (ms, sequence, name, field, value, field, value, ...) — ints, then strings: StoredEvent
    # objects and their dicts are only built when the log is read.
    events: collections.deque[tuple[Any, ...]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=MAX_EVENTS)
    )
    last_event_ms: int = 0
    last_event_seq: int = 0
    event_waiters: collections.deque[asyncio.Future[bool]] = dataclasses.field(
        default_factory=collections.deque
    )
    # Each job's log rows (BullMQ's ``<job>:logs`` list), oldest first; deleted with the job.
    logs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # Deduplication: ``de:<id>`` as id -> (owner job id, expiry by the store clock or None),
    # ``dn:<id>`` as id -> the parked job's hash (name, data, opts, jid).
    dedup: dict[str, tuple[str, int | None]] = dataclasses.field(default_factory=dict)
    dedup_next: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # Rate limits and global concurrency (corral.backends.memory.limits): the ``meta`` fields
    # max/duration/concurrency, and the ``limiter`` window counter (0: no key) with its expiry
    # by the store clock (None: no TTL).
    limit_meta: dict[str, str] = dataclasses.field(default_factory=dict)
    limiter_count: int = 0
    limiter_expires: int | None = None
    #: Job schedulers: ``repeat`` (id scored by its current slot) and each one's hash.
    repeat: ZSet = dataclasses.field(default_factory=ZSet)
    schedulers: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # Flows: parents waiting for children (BullMQ's ``waiting-children`` zset), and each
    # parent's children by outcome (its ``:dependencies``, ``:processed``, ``:failed`` and
    # ``:unsuccessful`` keys); deleted with the parent.
    waiting_children: ZSet = dataclasses.field(default_factory=ZSet)
    flows: dict[str, ParentKeys] = dataclasses.field(default_factory=dict)

    def zset(self, state: JobState) -> ZSet:
        return {
            JobState.PRIORITIZED: self.prioritized,
            JobState.DELAYED: self.delayed,
            JobState.COMPLETED: self.completed,
            JobState.FAILED: self.failed,
            JobState.WAITING_CHILDREN: self.waiting_children,
        }[state]


@dataclasses.dataclass(eq=False, slots=True)
class ParentKeys:
    """A parent's children, by job key: ``dependencies`` pending (an ordered set),
    ``processed`` return values, ``failed`` reasons (ignored failures), ``unsuccessful``
    failure times (``fail_parent_on_failure`` children)."""

    dependencies: dict[str, None] = dataclasses.field(default_factory=dict)
    processed: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    unsuccessful: dict[str, int] = dataclasses.field(default_factory=dict)


class _Clocked(Protocol):
    clock: Clock


class OperationLock:
    """The backend's re-entrant lock, and what lasts for one operation (its outermost hold).

    ``now`` is the store clock, read when the operation starts and frozen for all of it (as
    Redis 7 freezes time within a script): every lock expiry and event id an operation sets
    uses it. ``marked`` collects the queues whose marker was set while a worker waited, and
    ``serve(marked)`` runs when the operation ends, still under the lock. (Entered once per
    job: kept small.)
    """

    __slots__ = ("_backend", "_depth", "_lock", "_serve", "marked", "now")

    def __init__(self, backend: _Clocked, serve: Callable[[list[QueueStore]], None]) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._backend = backend
        self._serve = serve
        self.now = 0
        self.marked: list[QueueStore] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        if not self._depth:
            try:
                self.now = self._backend.clock.now_ms()
            except BaseException:
                self._lock.release()  # a failing clock must not leave the store locked
                raise
        self._depth += 1

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self._depth -= 1
        if self._depth:
            self._lock.release()
            return
        try:
            if self.marked:
                self._serve(self.marked)
        finally:
            self._lock.release()


def resolve_waiter(waiter: asyncio.Future[bool]) -> None:
    loop = waiter.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        waiter.set_result(True)
    else:
        loop.call_soon_threadsafe(_set_if_pending, waiter, True)


def _set_if_pending(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def expire_waiter(waiter: asyncio.Future[bool]) -> None:
    _set_if_pending(waiter, False)


def event_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)
