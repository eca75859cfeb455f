"""Queue: the producer and administration API of one queue."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Never

from corral.engine.clock import Clock, SystemClock, system_random
from corral.engine.errors import (
    ClosedError,
    CorralError,
    InvalidArgumentError,
    ResultCode,
    removal_result,
)
from corral.engine.flows import ParentLink, parent_link_from_options, refused_parent
from corral.engine.inputs import check_utf8, lookup_job_id, unknown_option_error
from corral.engine.job import (
    JOB_OPTION_NAMES,
    Duration,
    Job,
    JobOptions,
    duration_ms,
    encode_json,
    validate_queue_name,
)
from corral.engine.policy import failure_outcome
from corral.engine.queue_limits import QueueLimits
from corral.engine.queue_operations import QueueOperations
from corral.engine.queue_schedulers import QueueSchedulers
from corral.engine.states import UNKNOWN, JobState
from corral.engine.storage import (
    Fetched,
    FetchRequest,
    FlowNode,
    NewJob,
    Outcome,
    StalledCheck,
    Storage,
    new_job,
)

#: The legacy ``repeat`` option of ``add`` (removed in BullMQ 6, where it is silently ignored).
LEGACY_REPEAT_REMOVED = (
    "the repeat option was removed in BullMQ 6: use "
    "queue.upsert_job_scheduler(scheduler_id, repeat, template) instead"
)
_BULK_ENTRY_KEYS = frozenset({"name", "data", "opts"})
# ``add``'s keyword defaults; jobs added with exactly these skip validation and re-encoding.
_DEFAULT_OPTIONS: dict[str, Any] = {
    "delay": 0,
    "priority": 0,
    "attempts": 1,
    "backoff": None,
    "job_id": None,
    "remove_on_complete": False,
    "remove_on_fail": False,
    "lifo": False,
    "keep_logs": None,
    "deduplication": None,
    "parent": None,
    "fail_parent_on_failure": False,
    "continue_parent_on_failure": False,
    "ignore_dependency_on_failure": False,
    "remove_dependency_on_failure": False,
}
_DEFAULT_JOB_OPTIONS = JobOptions()
_DEFAULT_OPTS_JSON = encode_json(_DEFAULT_JOB_OPTIONS.to_json(), "job options")


@dataclasses.dataclass(frozen=True, slots=True)
class JobLogs:
    """A page of a job's log, as BullMQ's ``getJobLogs`` returns it.

    Attributes:
        logs: the rows asked for.
        count: how many rows the job's log holds in all.
    """

    logs: list[str]
    count: int


def _is_default(options: Mapping[str, Any]) -> bool:
    """Whether ``options`` are exactly ``add``'s defaults, types included: ``0 == False`` in
    Python, but ``remove_on_complete=0`` means "keep none", not the default "keep all"."""
    return options.keys() == _DEFAULT_OPTIONS.keys() and all(
        type(options[key]) is type(value) and options[key] == value
        for key, value in _DEFAULT_OPTIONS.items()
    )


class Queue(QueueOperations, QueueLimits, QueueSchedulers):
    """Adds jobs to a queue and inspects or administers it.

    Args:
        name: the queue's name (no ``:``).
        backend: where the queue is stored (``MemoryBackend()``, ``RedisBackend.from_url(...)``).
        clock: source of the timestamps written into jobs; the system clock by default.
    """

    def __init__(self, name: str, backend: Storage, *, clock: Clock | None = None) -> None:
        self.name = validate_queue_name(name)
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        # One bound method shared by every Job this queue makes (a new one per Job is an object
        # for the garbage collector to track: a fifth of the cost of adding a job).
        self._progress_writer = self._write_progress
        self._closed = False
        # A backend that can be closed for good says so with a ``closed`` attribute (the Redis
        # backend; closing the memory backend releases nothing). Asked once: add checks it.
        self._closable = hasattr(backend, "closed")

    def __repr__(self) -> str:
        return f"<Queue {self.name!r}{' closed' if self._closed else ''}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def qualified_name(self) -> str:
        """The queue's key ``<prefix>:<name>`` (BullMQ's ``qualifiedName``): what a child's
        ``parent={"id": ..., "queue": ...}`` names its parent's queue by."""
        return self.backend.flow_queue_key(self.name)

    def _check_open(self) -> None:
        """Refuse to work once this queue, or the backend it stores jobs in, was closed (a
        closed Redis backend would otherwise quietly open new connections)."""
        if self._closed:
            raise ClosedError(f"queue {self.name!r} is closed")
        if self._closable and self.backend.closed:  # type: ignore[attr-defined]
            raise ClosedError(f"queue {self.name!r} cannot be used: {self.backend!r} is closed")

    # ------------------------------------------------------------------ adding

    def _new_job(self, name: str, data: Any, options: Mapping[str, Any] | None, now: int) -> NewJob:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"job name must be a string, got {name!r}")
        if not name.isascii():
            check_utf8(name, "job name")
        if not options or _is_default(options):
            # (new_job()'s tuple, built in place: this runs once per job)
            return (
                name,
                encode_json(data, "data of job {!r}", name),
                _DEFAULT_OPTS_JSON,
                now,
                0,
                0,
                False,
                None,
            )
        opts = JobOptions.build(options)  # validates: before the data, whose encoding may fail
        return new_job(
            name,
            encode_json(data, "data of job {!r}", name),
            encode_json(opts.to_json(), "job options"),
            now,
            opts.delay,
            opts.priority,
            opts.lifo,
            opts.job_id,
        )

    async def add(
        self,
        name: str,
        data: Any = None,
        *,
        delay: Duration = 0,
        priority: int = 0,
        attempts: int = 1,
        backoff: Any = None,
        job_id: str | None = None,
        remove_on_complete: bool | int | Mapping[str, int] = False,
        remove_on_fail: bool | int | Mapping[str, int] = False,
        lifo: bool = False,
        keep_logs: int | None = None,
        deduplication: Mapping[str, Any] | None = None,
        parent: Mapping[str, str] | None = None,
        fail_parent_on_failure: bool = False,
        continue_parent_on_failure: bool = False,
        ignore_dependency_on_failure: bool = False,
        remove_dependency_on_failure: bool = False,
        **unknown: Never,
    ) -> Job:
        """Add one job and return it.

        Args:
            name: the job's name (free text, for processors that dispatch on it).
            data: any JSON-encodable value.
            delay: milliseconds (or a timedelta) before the job may run.
            priority: 0 for none (served first), else 1..2^21−1 (lower runs earlier).
            attempts: total tries, at least 1.
            backoff: delay between tries: ms (fixed), ``{"type": "fixed" | "exponential" |
                <custom>, "delay": ms, "jitter": 0..1}``, or a :class:`Backoff`.
            job_id: a custom id (not an integer, no ``:``); adding an existing id returns the
                existing job unchanged.
            remove_on_complete: retention of completed jobs: True (delete), a count to keep,
                or ``{"age": seconds, "count": n}``.
            remove_on_fail: the same for failed jobs.
            lifo: put the job at the front of the wait list.
            keep_logs: how many rows ``job.log`` keeps (the newest); None keeps them all.
            deduplication: ``{"id": ..., "ttl": ms, "extend": bool, "replace": bool,
                "reschedule": bool, "keep_last_if_active": bool}``: while another job holds
                the id, the add is dropped and returns that job (see docs/deduplication.md
                and :mod:`corral.engine.deduplication`).
            parent: ``{"id": ..., "queue": "<prefix>:<queue name>"}``: add the job as a child
                of that existing job (a flow; see :mod:`corral.engine.flow_producer`).
            fail_parent_on_failure: a final failure of this child fails its parent.
            continue_parent_on_failure: a final failure releases the parent to run at once.
            ignore_dependency_on_failure: a final failure counts as done for the parent (the
                reason is kept: ``get_ignored_children_failures``).
            remove_dependency_on_failure: a final failure counts as done, recorded nowhere.

        Raises:
            InvalidArgumentError: on invalid options or data that JSON cannot encode; nothing
                is stored then. An unknown option raises its subclass
                :class:`~corral.engine.errors.UnknownOptionError` (also a ``TypeError``), which
                suggests the closest option name.
            ClosedError: if the queue or its backend was closed.
        """
        # (``**unknown`` is typed Never so that type checkers still flag a misspelt option.)
        if unknown:
            if "repeat" in unknown:
                raise InvalidArgumentError(LEGACY_REPEAT_REMOVED)
            raise unknown_option_error(unknown, JOB_OPTION_NAMES)
        options = {
            "delay": delay,
            "priority": priority,
            "attempts": attempts,
            "backoff": backoff,
            "job_id": job_id,
            "remove_on_complete": remove_on_complete,
            "remove_on_fail": remove_on_fail,
            "lifo": lifo,
            "keep_logs": keep_logs,
            "deduplication": deduplication,
            "parent": parent,
            "fail_parent_on_failure": fail_parent_on_failure,
            "continue_parent_on_failure": continue_parent_on_failure,
            "ignore_dependency_on_failure": ignore_dependency_on_failure,
            "remove_dependency_on_failure": remove_dependency_on_failure,
        }
        new = self._new_job(name, data, options, self.clock.now_ms())
        if parent is None:
            return (await self._add([new]))[0]
        return (await self._add_children([new], [parent_link_from_options(options)]))[0]

    async def add_bulk(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Add several jobs atomically: ``[{"name": ..., "data": ..., "opts": {...}}, ...]``.

        ``opts`` takes the keyword options of :meth:`add`. Every entry is validated before
        anything is stored.
        """
        now = self.clock.now_ms()
        new_jobs: list[NewJob] = []
        links: list[ParentLink | None] = []
        append, new_job = new_jobs.append, self._new_job  # (looked up once: per job below)
        for index, entry in enumerate(jobs):
            if type(entry) is not dict and not isinstance(entry, Mapping):
                raise InvalidArgumentError(f"add_bulk entry {index} must be a mapping: {entry!r}")
            if not _BULK_ENTRY_KEYS.issuperset(entry):
                unknown = set(entry) - _BULK_ENTRY_KEYS
                raise InvalidArgumentError(
                    f"add_bulk entry {index} has unknown key(s) {sorted(unknown)}; "
                    "expected name, data and opts"
                )
            if "name" not in entry:
                raise InvalidArgumentError(f"add_bulk entry {index} has no name")
            opts = entry.get("opts")
            if opts and type(opts) is not dict and not isinstance(opts, Mapping):
                raise InvalidArgumentError(f"add_bulk entry {index}: opts must be a mapping")
            try:
                append(new_job(entry["name"], entry.get("data"), opts, now))
                if opts and "parent" in opts:  # (a child: the rare case, checked per entry)
                    links.extend([None] * (len(new_jobs) - len(links) - 1))
                    links.append(parent_link_from_options(opts))
            except InvalidArgumentError as exc:  # (of its kind: UnknownOptionError stays one)
                raise type(exc)(f"add_bulk entry {index}: {exc}") from exc
        if links:  # children of existing parents: stored as one flow (all or nothing)
            links.extend([None] * (len(new_jobs) - len(links)))
            return await self._add_children(new_jobs, links)
        return await self._add(new_jobs)

    async def _add_children(
        self, new_jobs: Sequence[NewJob], links: Sequence[ParentLink | None]
    ) -> list[Job]:
        """Add jobs of which some are children of existing parents, atomically (a flow)."""
        self._check_open()
        nodes = [
            FlowNode(self.name, new, link, False) for new, link in zip(new_jobs, links, strict=True)
        ]
        added = await self.backend.add_flow(nodes, self.clock.now_ms())
        refused_parent(added, "addJob")
        jobs = await self._jobs_added(new_jobs, added.job_ids, added.created)
        for job, link in zip(jobs, links, strict=True):
            if link is not None:  # (as stored: the new job's hash is built from new_jobs)
                job._set_field("parentKey", link.key)
                job._set_field("parent", link.field())
        return jobs

    async def _add(self, new_jobs: Sequence[NewJob]) -> list[Job]:
        if self._closed or (self._closable and self.backend.closed):  # type: ignore[attr-defined]
            self._check_open()  # (its test, inlined: this runs once per add)
        added = await self.backend.add_jobs(self.name, new_jobs)
        return await self._jobs_added(new_jobs, added.job_ids, added.created)

    async def _jobs_added(
        self, new_jobs: Sequence[NewJob], job_ids: Sequence[str], created_flags: Sequence[bool]
    ) -> list[Job]:
        jobs = []
        for new, job_id, created in zip(new_jobs, job_ids, created_flags, strict=True):
            if created:
                job = Job._added(self.name, job_id, new, self._progress_writer)
                job._host = self
                jobs.append(job)
            else:
                existing = await self.get_job(job_id)
                if existing is None and '"de":' in new[2]:
                    # Deduplicated on a key that outlives its owner (throttle): as BullMQ,
                    # the owner's id with the caller's payload.
                    existing = Job._added(self.name, job_id, new, self._progress_writer)
                if existing is None:  # removed in between: report what was asked for
                    raise CorralError(f"job {job_id} vanished while being added")
                jobs.append(existing)
        return jobs

    # ------------------------------------------------------------------ reading

    def _job(self, job_id: str, fields: Mapping[str, str]) -> Job:
        job = Job(self.name, job_id, fields, self._progress_writer)
        job._host = self
        return job

    # The job's host (corral.engine.job_operations.JobHost): jobs read here make their calls
    # through the queue.

    def failure_outcome(self, job: Job, error: BaseException) -> Outcome:
        """The normal retry decision for a failed attempt of ``job`` (no custom backoff: a
        job whose backoff needs the worker's strategy fails without retry)."""
        return failure_outcome(
            job.opts,
            job.attempts_made,
            error,
            system_random(),
            job=job,
            previous_stacktrace=job.stacktrace,
        )

    def next_fetch(self, token: str) -> FetchRequest | None:
        """A queue takes no jobs: finishes through it fetch none."""
        return None

    async def adopt(self, fetched: Fetched) -> Job | None:
        """A fetched job, made a job of this queue."""
        return Job(self.name, fetched.job_id, fetched.fields, self._progress_writer, fetched.token)

    async def _write_progress(self, job_id: str, progress: str) -> None:
        self._check_open()
        code = await self.backend.update_progress(self.name, job_id, progress)
        if code is not ResultCode.OK:
            raise CorralError(f"cannot update progress: job {job_id} does not exist")

    async def get_job(self, job_id: str) -> Job | None:
        """The job with this id, or None.

        Raises:
            InvalidArgumentError: if ``job_id`` is not a non-empty string (ids are strings:
                ``"1"``, not ``1``); the other readers below check it alike.
        """
        self._check_open()
        if not lookup_job_id(job_id):
            return None
        fields = await self.backend.get_job(self.name, job_id)
        return None if fields is None else self._job(job_id, fields)

    async def get_waiting_children(self, start: int = 0, end: int = -1) -> list[Job]:
        """Parents waiting for their children (BullMQ's ``getWaitingChildren``)."""
        return await self.get_jobs(JobState.WAITING_CHILDREN, start, end)

    async def get_job_state(self, job_id: str) -> str:
        """One of waiting, prioritized, delayed, active, completed, failed, waiting-children,
        or unknown."""
        self._check_open()
        if not lookup_job_id(job_id):
            return UNKNOWN
        state = await self.backend.get_state(self.name, job_id)
        return UNKNOWN if state is None else state.value

    async def get_job_counts(self, *states: str | JobState) -> dict[str, int]:
        """Number of jobs per state (all states when none are named)."""
        self._check_open()
        counts = await self.backend.get_counts(self.name)
        wanted = [_parse_state(s) for s in states] or list(JobState)
        return {state.value: counts[state] for state in wanted}

    async def get_jobs(
        self,
        states: str | JobState | Sequence[str | JobState] | None = None,
        start: int = 0,
        end: int = -1,
        *,
        asc: bool = False,
    ) -> list[Job]:
        """Jobs in the given states; the range applies to each state, newest first by default.

        A job removed between listing and reading is left out and, when ``end`` is not
        negative, the page filled from further in the state's list (as BullMQ 5.81 and later
        do), so it is short only where the list ends.
        """
        self._check_open()
        if states is None:
            wanted = list(JobState)
        elif isinstance(states, str):
            wanted = [_parse_state(states)]
        else:
            wanted = [_parse_state(s) for s in states]
        jobs: list[Job] = []
        for state in wanted:
            await self._read_page(jobs, state, start, end, asc)
        return jobs

    async def _read_page(
        self, jobs: list[Job], state: JobState, start: int, end: int, asc: bool
    ) -> None:
        """Append the jobs at ``start..end`` of ``state``'s list (Redis range rules) to
        ``jobs``; for each listed job found gone, read one more from past ``end`` (unless
        ``end`` counts from the list's end: that range has no fixed size to fill)."""
        seen: set[str] = set()  # the list may shift between reads: never return a job twice
        while True:
            missing = 0
            for job_id in await self.backend.get_job_ids(self.name, state, start, end, asc):
                fields = None if job_id in seen else await self.backend.get_job(self.name, job_id)
                if fields is None:
                    missing += 1
                else:
                    seen.add(job_id)
                    jobs.append(self._job(job_id, fields))
            if not missing or end < 0:  # complete, or a range relative to the list's end
                return
            start, end = end + 1, end + missing

    async def get_job_logs(
        self, job_id: str, start: int = 0, end: int = -1, asc: bool = True
    ) -> JobLogs:
        """Rows ``start..end`` of a job's log (Redis range rules: ``end`` inclusive, negative
        indexes count from the end), oldest first; with ``asc=False`` the range counts from the
        newest row, newest first. A job without a log (or none at all) has ``count`` 0.

        Raises:
            InvalidArgumentError: for a job id that is not a non-empty string, or a non-int
                ``start``/``end``.
        """
        self._check_open()
        for label, index in (("start", start), ("end", end)):
            if not isinstance(index, int) or isinstance(index, bool):
                raise InvalidArgumentError(f"{label} must be an int, got {index!r}")
        if not lookup_job_id(job_id):
            return JobLogs([], 0)
        rows, count = await self.backend.get_job_logs(self.name, job_id, start, end, bool(asc))
        return JobLogs(rows, count)

    async def is_paused(self) -> bool:
        """Whether the queue is paused."""
        self._check_open()
        return await self.backend.is_paused(self.name)

    async def is_job_stalled(self, job_id: str) -> bool:
        """True if the job is active but holds no lock: its worker lost it, and the next
        stalled check that finds it marked will recover it."""
        self._check_open()
        if not lookup_job_id(job_id):
            return False
        if await self.backend.get_state(self.name, job_id) is not JobState.ACTIVE:
            return False
        return await self.backend.get_lock(self.name, job_id) is None

    # ------------------------------------------------------------------ administration

    async def pause(self) -> None:
        """Stop workers from taking jobs (adds still land in wait)."""
        self._check_open()
        await self.backend.set_paused(self.name, True)

    async def resume(self) -> None:
        """Let workers take jobs again and wake them."""
        self._check_open()
        await self.backend.set_paused(self.name, False)

    async def remove(self, job_id: str) -> bool:
        """Delete a job; return False if it did not exist.

        Raises:
            CorralError: if the job is locked by a worker (it is being processed).
            JobSchedulerError: if the job is a scheduler's current iteration (BullMQ's -8).
        """
        self._check_open()
        if not lookup_job_id(job_id):
            return False
        code = await self.backend.remove(self.name, job_id)
        return removal_result(code, job_id)

    async def get_deduplication_job_id(self, dedup_id: str) -> str | None:
        """The id of the job that holds the deduplication id now (``de:<id>``), or None."""
        self._check_open()
        return await self.backend.get_deduplication_job_id(self.name, _dedup_id(dedup_id))

    async def remove_deduplication_key(self, dedup_id: str) -> int:
        """Release a deduplication id whoever holds it, so that the next add with it is stored
        (1 if a key was deleted, else 0). Deduplication is off for that id until then."""
        self._check_open()
        return await self.backend.remove_deduplication_key(self.name, _dedup_id(dedup_id))

    async def check_stalled(
        self, max_stalled_count: int = 1, stalled_interval: Duration = 30_000
    ) -> StalledCheck:
        """Run one stalled check now (subject to the shared throttle).

        Returns:
            ``.recovered`` (ids moved back to wait) and ``.failed`` (ids failed for stalling
            more than ``max_stalled_count`` times); ``.ran`` is False when throttled.
        """
        self._check_open()
        if max_stalled_count < 0:
            raise InvalidArgumentError(f"max_stalled_count must be >= 0: {max_stalled_count}")
        return await self.backend.check_stalled(
            self.name,
            max_stalled_count=max_stalled_count,
            stalled_interval=duration_ms(stalled_interval, "stalled_interval", allow_zero=False),
            now=self.clock.now_ms(),
        )

    async def close(self) -> None:
        """Release the queue's resources (the backend stays open for others); idempotent.

        Calls after closing raise :class:`~corral.engine.errors.ClosedError`, as do calls on a
        queue whose backend was closed.
        """
        self._closed = True


def _dedup_id(dedup_id: object) -> str:
    """Check a deduplication id given to a query: a non-empty UTF-8 string."""
    if not isinstance(dedup_id, str) or not dedup_id:
        raise InvalidArgumentError(f"deduplication id must be a non-empty string, got {dedup_id!r}")
    if not dedup_id.isascii():
        check_utf8(dedup_id, "deduplication id")
    return dedup_id


def _parse_state(state: str | JobState) -> JobState:
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise InvalidArgumentError(
            f"unknown job state {state!r}; expected one of {names}"
        ) from None
