"""The core job flow on the memory backend: add, fetch, finish, lock renewal, release, the
stalled check and progress (``corral.engine.storage.JobFlowStorage``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from corral.backends.memory.dedup import DedupOps
from corral.backends.memory.limits import MAXED, LimitOps
from corral.backends.memory.parents import child_completed, parent_refusal
from corral.backends.memory.store import QueueStore
from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.job import decode_opts, next_count
from corral.engine.policy import stall_limit_exceeded
from corral.engine.states import JobState, Transition
from corral.engine.storage import (
    OUTCOME_KINDS,
    AddResult,
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    FetchResult,
    FinishResult,
    NewJob,
    Outcome,
    RetryLater,
    StalledCheck,
    finish_field,
    finish_record,
    parse_finish_record,
)

# Enum members read for every job, looked up once (see corral.backends.memory.core).
_OK: Final = ResultCode.OK
# The record of a finish that fetched no job, per outcome type (one lookup per finish).
_PLAIN_FINISH_RECORDS: Final = {kind: finish_record(name) for kind, name in OUTCOME_KINDS.items()}
_FETCH: Final = Transition.FETCH
_COMPLETE: Final = Transition.COMPLETE
_COMPLETED: Final = JobState.COMPLETED


class JobFlowOps(DedupOps, LimitOps):
    """The job flow's operations and their helpers."""

    def _fetch(
        self, queue: str, store: QueueStore, request: FetchRequest, token: str, now: int
    ) -> Fetched | int | None:
        """Take and lock the next ready job, or None (paused, maxed, or nothing ready), or the
        ms a rate limit holds fetches back (an int)."""
        # As BullMQ's moveToActive: due delayed jobs are promoted even while the queue is paused.
        if store.delayed.scores:
            self._promote_due(queue, store, now)
        # Rate limit, then global concurrency (corral.backends.memory.limits), before the pause.
        max_jobs = None
        if request.limiter is not None or store.limit_meta:
            verdict, max_jobs = self._gate(store, request)
            if verdict:
                return None if verdict == MAXED else verdict
        if store.paused:
            return None
        if store.wait:
            job_id = store.wait.pop()
        else:
            popped = store.prioritized.pop_min()
            if popped is None:
                return None
            job_id = popped
        self._move(queue, store, job_id, _FETCH)
        store.active[job_id] = None
        store.locks[job_id] = (token, self._mutex.now + request.lock_duration)
        fields = store.jobs[job_id]
        fields["processedOn"] = str(now)
        fields["ats"] = next_count(fields.get("ats"))
        if request.worker_name is not None:
            fields["pb"] = request.worker_name
        if max_jobs is not None:
            self._count_activation(store, request, fields, max_jobs)
        self._emit(store, ("active", "jobId", job_id, "prev", "waiting"))
        # More jobs are ready: the marker says so (unless it already does and nobody waits),
        # unless global concurrency is reached (BullMQ adds no marker then).
        if (
            (store.wait or store.prioritized.scores)
            and (store.waiters or store.marker.get("0") != 0)
            and not (store.limit_meta and self._maxed(store))
        ):
            self._signal(store)
        return Fetched(job_id, dict(fields), token)

    def _retry_now(self, queue: str, store: QueueStore, job_id: str, now: int) -> None:
        self._promote_due(queue, store, now)
        fields = store.jobs[job_id]
        priority = int(fields.get("priority") or 0)
        if priority:
            self._move(queue, store, job_id, Transition.RETRY_PRIORITIZED)
            self._push_prioritized(store, job_id, priority)
        else:
            self._move(queue, store, job_id, Transition.RETRY)
            lifo = decode_opts(fields.get("opts") or "{}").lifo
            self._push_wait(store, job_id, front=lifo)
        self._emit(store, ("waiting", "jobId", job_id, "prev", "active"))

    def _apply(
        self, queue: str, store: QueueStore, job_id: str, outcome: Outcome, now: int
    ) -> None:
        fields = store.jobs[job_id]
        # (_take_from_active, inlined: this runs once per job)
        del store.active[job_id]
        store.locks.pop(job_id, None)
        store.stalled.pop(job_id, None)
        fields["atm"] = next_count(fields.get("atm"))
        dedup_id = fields.get("deid")  # (read first: retention may delete the job)
        if isinstance(outcome, Complete):
            fields["returnvalue"] = outcome.return_value
            fields["finishedOn"] = str(now)
            self._move(queue, store, job_id, _COMPLETE)
            store.completed.add(job_id, now)
            self._emit(
                store,
                (
                    "completed",
                    "jobId",
                    job_id,
                    "returnvalue",
                    outcome.return_value,
                    "prev",
                    "active",
                ),
            )
            if "parentKey" in fields:  # (flows: in the same step, before retention)
                child_completed(self, queue, job_id, fields, outcome.return_value, now)
            if not outcome.keep.keeps_all:
                self._trim(queue, store, _COMPLETED, outcome.keep, now)
            if dedup_id is not None:
                self._dedup_finished(queue, store, dedup_id, job_id, now)
        elif isinstance(outcome, Fail):
            fields["stacktrace"] = outcome.stacktrace
            try:
                attempts = decode_opts(fields.get("opts") or "{}").attempts
            except (TypeError, ValueError):  # options another producer wrote: as Lua's tonumber
                attempts = 0
            self._finish_failed(queue, store, job_id, outcome.reason, outcome.keep, now)
            if int(fields["atm"]) >= attempts:
                self._emit(
                    store, ("retries-exhausted", "jobId", job_id, "attemptsMade", fields["atm"])
                )
            if dedup_id is not None:
                self._dedup_finished(queue, store, dedup_id, job_id, now)
        else:
            fields["failedReason"] = outcome.reason
            fields["stacktrace"] = outcome.stacktrace
            if isinstance(outcome, RetryLater):
                due = now + outcome.delay_ms
                fields["delay"] = str(outcome.delay_ms)
                self._move(queue, store, job_id, Transition.RETRY_LATER)
                self._push_delayed(store, job_id, due)
                self._emit(store, ("delayed", "jobId", job_id, "delay", str(due)))
            else:
                self._retry_now(queue, store, job_id, now)
        if not store.active and not store.wait and not store.prioritized.scores:
            self._emit(store, ("drained",))

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            job_ids: list[str] = []
            created: list[bool] = []
            ready = False  # a job became ready to fetch: waiters are signalled once, at the end
            try:
                for job in jobs:
                    custom_id = job[7]
                    store.id_counter += 1
                    job_id = custom_id or str(store.id_counter)
                    if job_id in store.jobs:
                        self._emit(store, ("duplicated", "jobId", job_id))
                        job_ids.append(job_id)
                        created.append(False)
                        continue
                    dedup_id = None
                    if '"de":' in job[2]:  # (deduplication: see backends/memory/dedup.py)
                        owner, dedup_id = self._deduplicate(queue, store, job, job_id)
                        if owner is not None:
                            job_ids.append(owner)
                            created.append(False)
                            continue
                    ready = self._enqueue_new(queue, store, job, job_id, dedup_id) or ready
                    job_ids.append(job_id)
                    created.append(True)
            finally:  # the jobs stored before an error are ready all the same
                if ready and self._may_signal(store):
                    self._signal(store)
            return AddResult(job_ids, created)

    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            fetched = self._fetch(
                queue, store, request, request.lock_token(self._token_numbers), now
            )
            if isinstance(fetched, int):
                return FetchResult(None, rate_limit_ms=fetched)
            if fetched is not None or store.paused or (store.limit_meta and self._maxed(store)):
                return FetchResult(fetched)
            first = store.delayed.first()
            return FetchResult(None, None if first is None else first[0] // 4096)

    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        with self._mutex:
            store = self._queues.get(queue) or self._store(queue)
            next_token = None if fetch is None else fetch.lock_token(self._token_numbers)
            # (flows: a parent completes only when its children did; checked before the lock,
            # as BullMQ's moveToFinished does)
            if store.flows and job_id in store.flows and isinstance(outcome, Complete):
                refused = parent_refusal(store.flows[job_id])
                if refused is not None:
                    return refused
            lock = store.locks.get(job_id)
            # The owner's finish is recognised here; anything else gets _check_owner's verdict.
            if (
                lock is None
                or lock[0] != token
                or lock[1] <= self._mutex.now
                or job_id not in store.active
            ):
                code = self._check_owner(store, job_id, token)
                if code is not _OK:
                    repeated = self._repeated_finish(store, job_id, token, outcome, fetch)
                    return code if repeated is None else repeated
            record_field = finish_field(token)
            store.jobs[job_id][record_field] = _PLAIN_FINISH_RECORDS[type(outcome)]
            self._apply(queue, store, job_id, outcome, now)
            if fetch is None or next_token is None:  # (None together: the second is for mypy)
                return _OK
            fetched = self._fetch(queue, store, fetch, next_token, now)
            if not isinstance(fetched, Fetched):  # (none ready, or held back by a limit)
                return _OK
            fields = store.jobs.get(job_id)
            if fields is not None:  # (retention may have deleted it)
                kind = OUTCOME_KINDS[type(outcome)]
                fields[record_field] = finish_record(kind, (fetched.job_id, fetched.token))
            return fetched

    def _repeated_finish(
        self,
        store: QueueStore,
        job_id: str,
        token: str,
        outcome: Outcome,
        fetch: FetchRequest | None,
    ) -> FinishResult | None:
        """The answer to a finish already applied under ``token`` with this kind of outcome (its
        reply was lost): ``OK``, or the job it fetched if that still holds the lock it got (re-armed
        for ``fetch.lock_duration``, as a fresh fetch's); None if it is no such repeat."""
        fields = store.jobs.get(job_id)
        if fields is None or "finish-not-idempotent" in self.planted_bugs:
            return None
        record = fields.get(finish_field(token))
        if record is None:
            return None
        kind, fetched = parse_finish_record(record)
        if kind != OUTCOME_KINDS[type(outcome)]:
            return None
        if fetched is None or fetch is None:
            return _OK
        next_id, next_token = fetched
        lock = self._lock_of(store, next_id)
        if lock is None or lock[0] != next_token:
            return _OK
        store.locks[next_id] = (next_token, self._mutex.now + fetch.lock_duration)
        return Fetched(next_id, dict(store.jobs[next_id]), next_token)

    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        with self._mutex:
            store = self._store(queue)
            expires = self._mutex.now + lock_duration
            lost = []
            for job_id, token in locks:
                lock = self._lock_of(store, job_id)
                if "renew-without-owner" in self.planted_bugs and job_id in store.active:
                    lock = (token, 0)
                if lock is not None and lock[0] == token:
                    store.locks[job_id] = (token, expires)
                    store.stalled.pop(job_id, None)
                else:
                    lost.append(token)
            return lost

    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            code = self._check_owner(store, job_id, token)
            if code is ResultCode.OK:
                self._take_from_active(store, job_id)
                self._move(queue, store, job_id, Transition.RELEASE)
                self._push_wait(store, job_id, front=True)
                self._emit(store, ("waiting", "jobId", job_id, "prev", "active"))
            return code

    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        with self._mutex:
            store = self._store(queue)
            server_now = self._mutex.now
            if store.stalled_check_until > server_now:
                return StalledCheck(ran=False, recovered=[], failed=[])
            store.stalled_check_until = server_now + stalled_interval
            marked, store.stalled = store.stalled, {}
            recovered: list[str] = []
            failed: list[str] = []
            for job_id in marked:
                if self._lock_of(store, job_id) is not None or job_id not in store.active:
                    continue
                self._take_from_active(store, job_id)
                fields = store.jobs[job_id]
                stalled_counter = int(fields.get("stc") or 0) + 1
                fields["stc"] = str(stalled_counter)
                # A job of a live job scheduler is never failed for stalling (BullMQ 6.7):
                # failing it could stop its schedule.
                scheduler_id = fields.get("rjk")
                scheduled = scheduler_id is not None and (
                    scheduler_id in store.repeat or scheduler_id in store.schedulers
                )
                if (
                    stall_limit_exceeded(stalled_counter, max_stalled_count)
                    and not scheduled
                    and "no-stall-limit" not in self.planted_bugs
                ):
                    # BullMQ 6 reports every stall it finds, the one over the limit too.
                    self._emit(store, ("stalled", "jobId", job_id))
                    opts = decode_opts(fields.get("opts") or "{}")
                    dedup_id = fields.get("deid")
                    self._finish_failed(
                        queue, store, job_id, STALLED_LIMIT_REASON, opts.remove_on_fail, now
                    )
                    if dedup_id is not None:
                        self._dedup_finished(queue, store, dedup_id, job_id, now)
                    failed.append(job_id)
                else:
                    self._move(queue, store, job_id, Transition.RECOVER_STALLED)
                    self._push_wait(store, job_id, front=True)
                    self._emit(
                        store,
                        ("waiting", "jobId", job_id, "prev", "active"),
                        ("stalled", "jobId", job_id),
                    )
                    recovered.append(job_id)
            if "lose-stalled-mark" not in self.planted_bugs:
                store.stalled = dict.fromkeys(store.active)
            return StalledCheck(ran=True, recovered=recovered, failed=failed)

    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            fields["progress"] = progress
            self._emit(store, ("progress", "jobId", job_id, "data", progress))
            return ResultCode.OK
