"""The Redis backend on an in-process fakeredis server, as a store the simulator (and the
Hypothesis state machine) can use wherever they use the memory backend.

:class:`FakeRedisStore` is a Storage whose calls run the production
:class:`~corral.backends.redis.backend.RedisBackend` (its Lua scripts, its command pipeline, its
blocking waits) against a ``fakeredis`` server. It adds what the simulator's oracle reads from
``MemoryBackend``:

- **Atomic calls that never suspend.** The redis-py client and fakeredis live on a loop of their
  own, a :class:`~corral.sim.simloop.SimLoop` reading the same virtual time as the caller (the
  *server loop*). A call creates its task there and steps that loop until no callback is ready:
  fakeredis answers in memory, without real I/O and without time passing, so every call is
  complete when the caller's coroutine returns, and returns without ever suspending, exactly
  like the memory backend's. Only the blocking waits (``wait_for_work``'s BZPOPMIN,
  ``wait_for_events``' XREAD BLOCK) may stay pending: their task stays on the server loop, whose
  timers (the block timeouts) the simulator fires in virtual time (:meth:`next_due`,
  :meth:`step`), and a write that wakes them completes them within that write's call.
- **Transitions.** The scripts are loaded with a transition log
  (:class:`~corral.backends.redis.scripts.Instrumentation`): each script names every state change
  it makes, in order, in a list that this store drains after each call and hands to
  :attr:`transition_listener` (the memory backend's listener signature), after checking that the
  script's header declares that transition. The log also keeps an index of where each job is.
  A flow's script moves jobs of several queues (``add_flow`` stores a tree across queues, a
  child's ``finish`` releases a parent in another queue): the log of the queue the script was
  called on holds all its moves, in the order made, each naming the job's queue, so one drain
  delivers every queue's changes in the memory backend's order. Each entry also carries the
  job's ``processed`` children at that moment: :meth:`parent_processed` answers from it while
  the move is being delivered, as the memory backend answers inside the move.
- **Reads for the oracle and structural checks**: :meth:`job_fields`, :meth:`check` and
  :meth:`check_jobs` (``corral.backends.redis.checks``, plus agreement with the index). The
  transition log is drained by the same script that reads the layout around the jobs it names,
  and that read answers ``job_fields`` and ``check_jobs`` for those jobs until the next call.

fakeredis must follow the store's clock while the store is used:
``with corral.backends.redis.fake.virtual_fakeredis(clock): ...`` around the run.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import fakeredis
import fakeredis.aioredis

from corral.backends.memory import TransitionListener
from corral.backends.redis.backend import RedisBackend
from corral.backends.redis.checks import Layout, LoggedTransition, check_layout, read_layout
from corral.backends.redis.keys import DEFAULT_PREFIX
from corral.backends.redis.scripts import SCRIPT_NAMES, Instrumentation, load_source
from corral.engine.errors import ResultCode
from corral.engine.flows import Dependencies
from corral.engine.states import JobState
from corral.engine.storage import (
    AddResult,
    FetchRequest,
    FetchResult,
    FinishResult,
    FlowAdded,
    FlowNode,
    LockInfo,
    NewJob,
    ObliterateResult,
    Outcome,
    SchedulerRecord,
    SchedulerUpsert,
    StalledCheck,
    StoredEvent,
)
from corral.sim.simloop import SimLoop

T = TypeVar("T")


class SuspendedCallError(RuntimeError):
    """A non-blocking call did not complete without time passing (a bug, never expected)."""


class FakeRedisStore:
    """The Redis backend over a fresh fakeredis server, with calls that complete at once.

    Args:
        now: world time in seconds, for the server loop (defaults to a stopped clock at 0,
            enough when no blocking wait is used).
        planted_bugs: deliberate bugs compiled into the scripts (see
            :data:`corral.backends.redis.scripts.PLANTABLE_BUGS`).
        loop: the server loop to use (a store that replaces another shares its loop, so that
            waits still blocked on the old server time out as they would).
        prefix: the key prefix.
    """

    def __init__(
        self,
        now: Callable[[], float] = lambda: 0.0,
        *,
        planted_bugs: frozenset[str] = frozenset(),
        loop: SimLoop | None = None,
        prefix: str = DEFAULT_PREFIX,
        token_numbers: Iterator[int] | None = None,
    ) -> None:
        self.loop = loop or SimLoop(now)
        self.server = fakeredis.FakeServer()
        self.client = fakeredis.aioredis.FakeRedis(server=self.server, decode_responses=True)
        self.planted_bugs = planted_bugs
        self.backend = RedisBackend(
            self.client,
            prefix,
            url="fakeredis://",
            instrumentation=Instrumentation(transition_log=True, planted_bugs=planted_bugs),
            token_numbers=token_numbers,
        )
        #: Called on every state change, as ``MemoryBackend.transition_listener``.
        self.transition_listener: TransitionListener | None = None
        #: Where each job of each queue is, as the transition log says.
        self.index: dict[str, dict[str, JobState]] = {}
        self._seen: tuple[str, Layout] | None = None  # the read after the last call
        self._moving: tuple[str, LoggedTransition] | None = None  # the move being delivered

    def __repr__(self) -> str:
        return f"<FakeRedisStore prefix={self.backend.prefix!r}>"

    # ------------------------------------------------------------------ driving the loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server loop to completion, without time passing.

        Raises:
            SuspendedCallError: if it waits for time to pass.
        """
        task = self.loop.create_task(coro)
        self.loop.settle()
        if not task.done():
            task.cancel()
            self.loop.settle()
            raise SuspendedCallError(f"{coro!r} waited for time to pass on fakeredis")
        return task.result()

    def next_due(self) -> float | None:
        """World time at which the server loop next has work (a blocked wait's timeout)."""
        return self.loop.next_due()

    def step(self) -> None:
        """Fire the server loop's timers that are due and settle what follows."""
        due = self.loop.next_due()
        if due is not None and due <= self.loop.time():
            self.loop.step()
            self.loop.settle()

    async def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        self._seen = None
        task = self.loop.create_task(coro)
        self.loop.settle()
        if task.done():
            return task.result()
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        task.add_done_callback(functools.partial(_pass_on, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            task.cancel()
            self.loop.settle()
            raise

    def _mutate(self, op: str, queue: str, coro: Coroutine[Any, Any, T]) -> T:
        self._seen = None
        try:
            return self.run(coro)
        finally:  # what a failing call changed before it failed is reported too
            self._deliver(op, queue)

    def _deliver(self, op: str, queue: str) -> None:
        """Drain the log of the queue ``op`` was called on (which holds its moves in every
        queue) and deliver each move to the index of the job's queue and the listener."""
        layout = self.run(read_layout(self.client, self.backend.keys(queue), (), drain_log=True))
        self._seen = (queue, layout)
        declared = load_source(op).transitions if op in SCRIPT_NAMES else ()
        for move in layout.log:
            if move.transition.name not in declared:
                raise AssertionError(
                    f"{op}.lua made {move.transition.name} on job {move.job_id}, which its "
                    f"header does not declare ({', '.join(declared) or 'none'})"
                )
            self._record(self._queue_named(move.base), move)

    def _queue_named(self, base: str) -> str:
        """The queue whose keys start with ``base`` (``<prefix>:<queue>:``)."""
        head = self.backend.prefix + ":"
        if not (base.startswith(head) and base.endswith(":")):
            raise AssertionError(f"a script logged a move in {base!r}, outside prefix {head!r}")
        return base[len(head) : -1]

    def _record(self, queue: str, move: LoggedTransition) -> None:
        index = self.index.setdefault(queue, {})
        if move.target is None:
            index.pop(move.job_id, None)
        else:
            index[move.job_id] = move.target
        if self.transition_listener is not None:
            self._moving = (queue, move)
            try:
                self.transition_listener(
                    queue, move.job_id, move.transition, move.source, move.target, move.fields
                )
            finally:
                self._moving = None

    # ------------------------------------------------------------------ Storage operations

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        return self._mutate("add_jobs", queue, self.backend.add_jobs(queue, jobs))

    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        return self._mutate("fetch_next", queue, self.backend.fetch_next(queue, request, now))

    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        call = self.backend.finish(queue, job_id, token, outcome, now, fetch)
        return self._mutate("finish", queue, call)

    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        call = self.backend.extend_locks(queue, locks, lock_duration)
        return self._mutate("extend_locks", queue, call)

    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        return self._mutate("release", queue, self.backend.release(queue, job_id, token, now))

    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        call = self.backend.check_stalled(
            queue, max_stalled_count=max_stalled_count, stalled_interval=stalled_interval, now=now
        )
        return self._mutate("check_stalled", queue, call)

    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        call = self.backend.update_progress(queue, job_id, progress)
        return self._mutate("update_progress", queue, call)

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        return self._mutate("remove", queue, self.backend.remove(queue, job_id))

    async def set_paused(self, queue: str, paused: bool) -> None:
        self._mutate("set_paused", queue, self.backend.set_paused(queue, paused))

    async def upsert_job_scheduler(
        self, queue: str, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        call = self.backend.upsert_job_scheduler(queue, upsert, now)
        return self._mutate("add_job_scheduler", queue, call)

    async def update_job_scheduler(
        self,
        queue: str,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        call = self.backend.update_job_scheduler(
            queue, scheduler_id, producer_id, next_millis, job_opts, now
        )
        return self._mutate("update_job_scheduler", queue, call)

    async def remove_job_scheduler(self, queue: str, scheduler_id: str, now: int) -> bool:
        call = self.backend.remove_job_scheduler(queue, scheduler_id, now)
        return self._mutate("remove_job_scheduler", queue, call)

    async def get_job_scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        return self.run(self.backend.get_job_scheduler(queue, scheduler_id))

    async def get_job_schedulers(
        self, queue: str, start: int, end: int, asc: bool
    ) -> list[SchedulerRecord]:
        return self.run(self.backend.get_job_schedulers(queue, start, end, asc))

    async def get_job_schedulers_count(self, queue: str) -> int:
        return self.run(self.backend.get_job_schedulers_count(queue))

    async def retry_job(
        self,
        queue: str,
        job_id: str,
        state: JobState,
        *,
        reset_attempts_made: bool,
        reset_attempts_started: bool,
        now: int,
    ) -> ResultCode:
        call = self.backend.retry_job(
            queue,
            job_id,
            state,
            reset_attempts_made=reset_attempts_made,
            reset_attempts_started=reset_attempts_started,
            now=now,
        )
        return self._mutate("retry_job", queue, call)

    async def promote_job(self, queue: str, job_id: str, now: int) -> ResultCode:
        return self._mutate("promote_job", queue, self.backend.promote_job(queue, job_id, now))

    async def update_data(self, queue: str, job_id: str, data: str) -> ResultCode:
        return self._mutate("update_data", queue, self.backend.update_data(queue, job_id, data))

    async def change_priority(
        self, queue: str, job_id: str, priority: int, lifo: bool
    ) -> ResultCode:
        call = self.backend.change_priority(queue, job_id, priority, lifo)
        return self._mutate("change_priority", queue, call)

    async def change_delay(self, queue: str, job_id: str, delay: int, now: int) -> ResultCode:
        call = self.backend.change_delay(queue, job_id, delay, now)
        return self._mutate("change_delay", queue, call)

    async def add_log(self, queue: str, job_id: str, row: str, keep_logs: int | None) -> int | None:
        return self._mutate("add_log", queue, self.backend.add_log(queue, job_id, row, keep_logs))

    async def move_jobs_to_wait(
        self, queue: str, state: JobState, count: int, timestamp: int, now: int
    ) -> bool:
        call = self.backend.move_jobs_to_wait(queue, state, count, timestamp, now)
        return self._mutate("move_jobs_to_wait", queue, call)

    async def clean(self, queue: str, state: JobState, timestamp: int, limit: int) -> list[str]:
        return self._mutate("clean", queue, self.backend.clean(queue, state, timestamp, limit))

    async def drain(self, queue: str, delayed: bool) -> None:
        self._mutate("drain", queue, self.backend.drain(queue, delayed))

    async def obliterate(self, queue: str, count: int, force: bool) -> ObliterateResult:
        return self._mutate("obliterate", queue, self.backend.obliterate(queue, count, force))

    async def trim_events(self, queue: str, max_length: int) -> int:
        return self._mutate("trim_events", queue, self.backend.trim_events(queue, max_length))

    async def register_worker(self, queue: str, worker_name: str | None) -> str:
        return self.run(self.backend.register_worker(queue, worker_name))

    async def unregister_worker(self, queue: str, registration: str) -> None:
        self.run(self.backend.unregister_worker(queue, registration))

    async def get_workers(self, queue: str) -> list[dict[str, str]]:
        return self.run(self.backend.get_workers(queue))

    async def get_job_logs(
        self, queue: str, job_id: str, start: int, end: int, asc: bool
    ) -> tuple[list[str], int]:
        return self.run(self.backend.get_job_logs(queue, job_id, start, end, asc))

    async def get_counts_per_priority(
        self, queue: str, priorities: Sequence[int]
    ) -> dict[int, int]:
        return self.run(self.backend.get_counts_per_priority(queue, priorities))

    async def is_paused(self, queue: str) -> bool:
        return self.run(self.backend.is_paused(queue))

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        return self.run(self.backend.get_job(queue, job_id))

    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        return self.run(self.backend.get_state(queue, job_id))

    async def get_counts(self, queue: str) -> dict[JobState, int]:
        return self.run(self.backend.get_counts(queue))

    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        return self.run(self.backend.get_job_ids(queue, state, start, end, asc))

    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        return self.run(self.backend.get_lock(queue, job_id))

    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        return self.run(self.backend.is_marked_stalled(queue, job_id))

    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        return self.run(self.backend.get_events(queue, after, count))

    async def last_event_id(self, queue: str) -> str:
        return self.run(self.backend.last_event_id(queue))

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        return await self._blocking(self.backend.wait_for_events(queue, after, timeout_ms, count))

    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        return await self._blocking(self.backend.wait_for_work(queue, timeout_ms, registration))

    async def set_rate_limit(self, queue: str, ttl_ms: int) -> None:
        self._mutate("limit_settings", queue, self.backend.set_rate_limit(queue, ttl_ms))

    async def get_rate_limit_ttl(self, queue: str, max_jobs: int | None) -> int:
        return self.run(self.backend.get_rate_limit_ttl(queue, max_jobs))

    async def remove_rate_limit_key(self, queue: str) -> int:
        return self._mutate("limit_settings", queue, self.backend.remove_rate_limit_key(queue))

    async def set_queue_meta(self, queue: str, fields: dict[str, int]) -> None:
        self._mutate("limit_settings", queue, self.backend.set_queue_meta(queue, fields))

    async def get_queue_meta(self, queue: str, names: tuple[str, ...]) -> list[str | None]:
        return self.run(self.backend.get_queue_meta(queue, names))

    async def remove_queue_meta(self, queue: str, names: tuple[str, ...]) -> None:
        self._mutate("limit_settings", queue, self.backend.remove_queue_meta(queue, names))

    async def move_to_wait(self, queue: str, job_id: str, token: str) -> tuple[ResultCode, int]:
        return self._mutate("move_to_wait", queue, self.backend.move_to_wait(queue, job_id, token))

    async def get_deduplication_job_id(self, queue: str, dedup_id: str) -> str | None:
        return self.run(self.backend.get_deduplication_job_id(queue, dedup_id))

    async def remove_deduplication_key(self, queue: str, dedup_id: str) -> int:
        return self.run(self.backend.remove_deduplication_key(queue, dedup_id))

    def flow_queue_key(self, queue: str) -> str:
        return self.backend.flow_queue_key(queue)

    async def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        if not nodes:  # (no script runs)
            return self.run(self.backend.add_flow(nodes, now))
        # (the script logs the moves it makes in every queue in its first node's queue's log)
        return self._mutate("add_flow", nodes[0].queue, self.backend.add_flow(nodes, now))

    async def get_dependencies(self, queue: str, job_id: str) -> Dependencies:
        return self.run(self.backend.get_dependencies(queue, job_id))

    async def remove_child_dependency(self, queue: str, job_id: str) -> int:
        call = self.backend.remove_child_dependency(queue, job_id)
        return self._mutate("remove_child_dependency", queue, call)

    async def move_to_waiting_children(
        self, queue: str, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        call = self.backend.move_to_waiting_children(queue, job_id, token, child_key, now)
        return self._mutate("move_to_waiting_children", queue, call)

    async def move_to_delayed(
        self, queue: str, job_id: str, token: str, delay: int, now: int
    ) -> ResultCode:
        call = self.backend.move_to_delayed(queue, job_id, token, delay, now)
        return self._mutate("move_to_delayed", queue, call)

    async def close(self) -> None:
        """Nothing to release: the data stays for other users of this store."""

    def shut(self) -> None:
        """Close the client and its connections (the server loop stays open)."""

        async def close() -> None:
            await self.backend.close()
            await self.client.aclose()

        self.run(close())

    # ------------------------------------------------------------------ inspection

    def job_fields(self, queue: str, job_id: str) -> Mapping[str, str] | None:
        """The job's hash, or None."""
        seen = self._seen
        if seen is not None and seen[0] == queue and job_id in seen[1].placements:
            return seen[1].jobs.get(job_id)
        return self.run(self.backend.get_job(queue, job_id))

    def parent_processed(self, queue: str, job_id: str) -> dict[str, str]:
        """A parent's processed children (child key -> result): while its move is being
        delivered, as they were at that moment (as ``MemoryBackend.parent_processed`` reads
        them inside the operation); otherwise as they are now."""
        moving = self._moving
        if moving is not None and moving[0] == queue and moving[1].job_id == job_id:
            return dict(moving[1].processed)
        key = self.backend.keys(queue).base + job_id + ":processed"
        return self.run(_hgetall(self.client, key))

    def queues(self) -> list[str]:
        """Names of the queues a state change was seen in."""
        return list(self.index)

    def check(self) -> None:
        """Assert every structural invariant of every queue (:func:`check_queue`), that every
        job is where the transition log put it, and that no queue's log holds a move that was
        never delivered (each call's moves, in every queue, are drained from one log).

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        for queue, index in self.index.items():
            keys = self.backend.keys(queue)
            layout = self.run(read_layout(self.client, keys, drain_log=True))
            if layout.log:
                moves = ", ".join(f"{m.transition.name} {m.job_id}" for m in layout.log[:5])
                raise AssertionError(f"queue {queue!r}: moves never delivered: {moves}")
            check_layout(queue, layout, index)

    def check_jobs(self, queue: str, job_ids: Iterable[str]) -> None:
        """A cheaper :meth:`check` for after one operation: the sizes against the index, the
        stalled set, and the placement of the given jobs.

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        index = self.index.get(queue)
        if index is None:
            return
        seen = self._seen
        ids = set(job_ids)
        if seen is not None and seen[0] == queue and ids <= seen[1].placements.keys():
            layout = seen[1]
        else:
            layout = self.run(read_layout(self.client, self.backend.keys(queue), ids))
        check_layout(queue, layout, index, job_count=len(index))


async def _hgetall(client: fakeredis.aioredis.FakeRedis, key: str) -> dict[str, str]:
    return {str(field): str(value) for field, value in (await client.hgetall(key)).items()}


def _pass_on(waiter: asyncio.Future[T], task: asyncio.Task[T]) -> None:
    """Give ``task``'s outcome to ``waiter`` (a future of another loop)."""
    if waiter.done():
        return
    if task.cancelled():
        waiter.cancel()
    elif task.exception() is not None:
        waiter.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        waiter.set_result(task.result())


__all__ = ["FakeRedisStore", "SuspendedCallError"]
