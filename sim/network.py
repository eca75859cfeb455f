"""The simulated network between a process and the store, at the Storage boundary.

A :class:`Connection` is what a simulated process's Worker or Queue gets as its backend. Every
Storage call becomes a request message that travels to the store with seeded latency, runs there
as one atomic operation, and comes back as a reply message. The world decides each message's
fate from the faults active when it is sent: dropped (partition), delivered but its reply lost
(asymmetric partition), or delayed (latency spike). A call whose reply never comes fails in the
process after ``command_timeout`` with :class:`SimulatedConnectionError`, as a real client's
socket timeout would. Messages on one connection stay in order, as on a TCP connection; the
blocking wait for work travels on a connection of its own, as Redis clients do it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from corral.engine.errors import ResultCode
from corral.engine.flows import DEFAULT_PREFIX, Dependencies
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

if TYPE_CHECKING:
    import asyncio


class SimulatedConnectionError(ConnectionError):
    """A storage call got no reply in time (the simulated socket timed out)."""


class Transport(Protocol):
    """What a connection needs from the world: send a request and get a future for its reply."""

    def request(
        self, process: str, lane: str, op: str, args: tuple[Any, ...], timeout_ms: float
    ) -> asyncio.Future[Any]: ...


class Connection:
    """A Storage whose every call crosses the simulated network to the store."""

    def __init__(self, transport: Transport, process: str, command_timeout_ms: int) -> None:
        self._transport = transport
        self.process = process
        self.command_timeout_ms = command_timeout_ms

    async def _call(self, op: str, *args: Any, lane: str = "main", extra_ms: float = 0) -> Any:
        return await self._transport.request(
            self.process, lane, op, args, self.command_timeout_ms + extra_ms
        )

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        return cast(AddResult, await self._call("add_jobs", queue, list(jobs)))

    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        return cast(FetchResult, await self._call("fetch_next", queue, request, now))

    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        result = await self._call("finish", queue, job_id, token, outcome, now, fetch)
        return cast(FinishResult, result)

    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        return cast(list[str], await self._call("extend_locks", queue, list(locks), lock_duration))

    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        return cast(ResultCode, await self._call("release", queue, job_id, token, now))

    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        result = await self._call("check_stalled", queue, max_stalled_count, stalled_interval, now)
        return cast(StalledCheck, result)

    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        return cast(ResultCode, await self._call("update_progress", queue, job_id, progress))

    async def remove(self, queue: str, job_id: str) -> ResultCode:
        return cast(ResultCode, await self._call("remove", queue, job_id))

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._call("set_paused", queue, paused)

    # The operator calls travel like the rest (retry_job's keywords go by position: the world
    # spells them out again at the store).

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
        args = (queue, job_id, state, reset_attempts_made, reset_attempts_started, now)
        return cast(ResultCode, await self._call("retry_job", *args))

    async def promote_job(self, queue: str, job_id: str, now: int) -> ResultCode:
        return cast(ResultCode, await self._call("promote_job", queue, job_id, now))

    async def update_data(self, queue: str, job_id: str, data: str) -> ResultCode:
        return cast(ResultCode, await self._call("update_data", queue, job_id, data))

    async def change_priority(
        self, queue: str, job_id: str, priority: int, lifo: bool
    ) -> ResultCode:
        return cast(ResultCode, await self._call("change_priority", queue, job_id, priority, lifo))

    async def change_delay(self, queue: str, job_id: str, delay: int, now: int) -> ResultCode:
        return cast(ResultCode, await self._call("change_delay", queue, job_id, delay, now))

    async def add_log(self, queue: str, job_id: str, row: str, keep_logs: int | None) -> int | None:
        return cast("int | None", await self._call("add_log", queue, job_id, row, keep_logs))

    async def get_job_logs(
        self, queue: str, job_id: str, start: int, end: int, asc: bool
    ) -> tuple[list[str], int]:
        result = await self._call("get_job_logs", queue, job_id, start, end, asc)
        return cast("tuple[list[str], int]", result)

    async def get_counts_per_priority(
        self, queue: str, priorities: Sequence[int]
    ) -> dict[int, int]:
        result = await self._call("get_counts_per_priority", queue, list(priorities))
        return cast("dict[int, int]", result)

    async def move_jobs_to_wait(
        self, queue: str, state: JobState, count: int, timestamp: int, now: int
    ) -> bool:
        result = await self._call("move_jobs_to_wait", queue, state, count, timestamp, now)
        return cast(bool, result)

    async def clean(self, queue: str, state: JobState, timestamp: int, limit: int) -> list[str]:
        return cast(list[str], await self._call("clean", queue, state, timestamp, limit))

    async def drain(self, queue: str, delayed: bool) -> None:
        await self._call("drain", queue, delayed)

    async def obliterate(self, queue: str, count: int, force: bool) -> ObliterateResult:
        return cast(ObliterateResult, await self._call("obliterate", queue, count, force))

    async def trim_events(self, queue: str, max_length: int) -> int:
        return cast(int, await self._call("trim_events", queue, max_length))

    async def is_paused(self, queue: str) -> bool:
        return cast(bool, await self._call("is_paused", queue))

    async def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        return cast("dict[str, str] | None", await self._call("get_job", queue, job_id))

    async def get_state(self, queue: str, job_id: str) -> JobState | None:
        return cast("JobState | None", await self._call("get_state", queue, job_id))

    async def get_counts(self, queue: str) -> dict[JobState, int]:
        return cast(dict[JobState, int], await self._call("get_counts", queue))

    async def get_job_ids(
        self, queue: str, state: JobState, start: int, end: int, asc: bool
    ) -> list[str]:
        return cast(list[str], await self._call("get_job_ids", queue, state, start, end, asc))

    async def get_lock(self, queue: str, job_id: str) -> LockInfo | None:
        return cast("LockInfo | None", await self._call("get_lock", queue, job_id))

    async def is_marked_stalled(self, queue: str, job_id: str) -> bool:
        return cast(bool, await self._call("is_marked_stalled", queue, job_id))

    async def get_events(
        self, queue: str, after: str | None = None, count: int = 1000
    ) -> list[StoredEvent]:
        return cast(list[StoredEvent], await self._call("get_events", queue, after, count))

    async def last_event_id(self, queue: str) -> str:
        return cast(str, await self._call("last_event_id", queue))

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        result = await self._call(
            "wait_for_events", queue, after, timeout_ms, count, lane="events", extra_ms=timeout_ms
        )
        return cast(list[StoredEvent], result)

    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        result = await self._call(
            "wait_for_work", queue, timeout_ms, registration, lane="blocking", extra_ms=timeout_ms
        )
        return cast(bool, result)

    async def get_deduplication_job_id(self, queue: str, dedup_id: str) -> str | None:
        return cast("str | None", await self._call("get_deduplication_job_id", queue, dedup_id))

    async def remove_deduplication_key(self, queue: str, dedup_id: str) -> int:
        return cast(int, await self._call("remove_deduplication_key", queue, dedup_id))

    async def set_rate_limit(self, queue: str, ttl_ms: int) -> None:
        await self._call("set_rate_limit", queue, ttl_ms)

    async def get_rate_limit_ttl(self, queue: str, max_jobs: int | None) -> int:
        return cast(int, await self._call("get_rate_limit_ttl", queue, max_jobs))

    async def remove_rate_limit_key(self, queue: str) -> int:
        return cast(int, await self._call("remove_rate_limit_key", queue))

    async def set_queue_meta(self, queue: str, fields: dict[str, int]) -> None:
        await self._call("set_queue_meta", queue, fields)

    async def get_queue_meta(self, queue: str, names: tuple[str, ...]) -> list[str | None]:
        return cast("list[str | None]", await self._call("get_queue_meta", queue, names))

    async def remove_queue_meta(self, queue: str, names: tuple[str, ...]) -> None:
        await self._call("remove_queue_meta", queue, names)

    async def move_to_wait(self, queue: str, job_id: str, token: str) -> tuple[ResultCode, int]:
        return cast(
            "tuple[ResultCode, int]", await self._call("move_to_wait", queue, job_id, token)
        )

    async def upsert_job_scheduler(
        self, queue: str, upsert: SchedulerUpsert, now: int
    ) -> tuple[str, int] | ResultCode:
        result = await self._call("upsert_job_scheduler", queue, upsert, now)
        return cast("tuple[str, int] | ResultCode", result)

    async def update_job_scheduler(
        self,
        queue: str,
        scheduler_id: str,
        producer_id: str,
        next_millis: int | None,
        job_opts: str,
        now: int,
    ) -> str | None:
        result = await self._call(
            "update_job_scheduler", queue, scheduler_id, producer_id, next_millis, job_opts, now
        )
        return cast("str | None", result)

    async def remove_job_scheduler(self, queue: str, scheduler_id: str, now: int) -> bool:
        return cast(bool, await self._call("remove_job_scheduler", queue, scheduler_id, now))

    async def get_job_scheduler(self, queue: str, scheduler_id: str) -> SchedulerRecord | None:
        result = await self._call("get_job_scheduler", queue, scheduler_id)
        return cast("SchedulerRecord | None", result)

    async def get_job_schedulers(
        self, queue: str, start: int, end: int, asc: bool
    ) -> list[SchedulerRecord]:
        result = await self._call("get_job_schedulers", queue, start, end, asc)
        return cast(list[SchedulerRecord], result)

    async def get_job_schedulers_count(self, queue: str) -> int:
        return cast(int, await self._call("get_job_schedulers_count", queue))

    def flow_queue_key(self, queue: str) -> str:
        """The queue's key under BullMQ's default prefix, which every simulated store uses (a
        local answer: it needs no round trip)."""
        return f"{DEFAULT_PREFIX}:{queue}"

    async def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        return cast(FlowAdded, await self._call("add_flow", list(nodes), now))

    async def get_dependencies(self, queue: str, job_id: str) -> Dependencies:
        return cast(Dependencies, await self._call("get_dependencies", queue, job_id))

    async def remove_child_dependency(self, queue: str, job_id: str) -> int:
        return cast(int, await self._call("remove_child_dependency", queue, job_id))

    async def move_to_waiting_children(
        self, queue: str, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        result = await self._call("move_to_waiting_children", queue, job_id, token, child_key, now)
        return cast(int, result)

    async def move_to_delayed(
        self, queue: str, job_id: str, token: str, delay: int, now: int
    ) -> ResultCode:
        result = await self._call("move_to_delayed", queue, job_id, token, delay, now)
        return cast(ResultCode, result)

    async def close(self) -> None:
        """Nothing to close: connections live as long as their process."""
