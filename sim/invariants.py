"""The simulator's oracle: safety invariants checked after every event, and liveness at the end.

The oracle watches the store from outside. It sees every storage operation as it executes (who
asked, with which token, what came back) and every state transition the store performs, and keeps
its own record of who holds each job's lock and until when. It never asks the backend whether a
move was allowed; it judges from what it saw, so a backend bug (planted or real) shows up as a
violation:

- a finish, release or renewal accepted for a token that is not the job's current lock holder, or
  after that lock expired: a *zombie commit* (two processes both hold a valid lock);
- a job completed twice: a *duplicate completion*;
- a move that is not in the transition table, or that starts from another state than the one the
  oracle last saw;
- ``stc``, ``ats`` or ``atm`` going down;
- a job recovered with ``stc > max_stalled_count``, or failed for stalling without it;
- a job recovered from a stall while its lock was still live;
- anything the backend's own ``check()`` finds;
- an operator call (retry, promote, change priority or delay, clean, drain, remove, ...) that
  moves a job whose lock is live (rule 3 of the transition table; only ``obliterate`` with
  ``force`` may), or that deletes a job without saying so (``remove`` answering other than OK,
  ``clean`` not returning the id); a job deleted by anything but an operator's ``remove``,
  ``clean``, ``drain`` or ``obliterate`` (or retention). What operators delete is counted
  (``removed_by_operator``), never lost: those are deliberate losses.

A job an operator sends back to run again (``REPROCESS``) may complete once more, and its
attempt counters may restart when the call asked for it.

Re-executions (a processor starting again on a job that already ran) are counted, not forbidden:
delivery is at least once; completion must be exactly once. A *rerun* is the narrower case of a
processor starting again on an attempt whose outcome was never stored (not a retry); scenarios
whose faults cannot take a lock away (``Scenario.expect_no_reruns``: lost finish messages, no
crash, every outage shorter than the lock) forbid reruns and stall recoveries.

A finish sent again after its reply was lost is answered like the first, moving nothing: the
oracle accepts such a repeat only for a token whose finish it saw applied, and only with the job
that finish fetched (whose lock it re-arms), and it refuses a store that rejects such a repeat.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from corral.engine.errors import STALLED_LIMIT_REASON, ResultCode
from corral.engine.states import JobState, Transition, allowed_moves
from corral.engine.storage import (
    AddResult,
    Fetched,
    FetchRequest,
    FinishResult,
    StalledCheck,
    next_job,
    result_code,
)
from corral.sim.dedup_watch import DedupWatch
from corral.sim.flow_watch import FlowWatch

COVERAGE_GOALS = {
    "stall_while_owner_alive": "a job recovered from a stall while its old owner was still alive",
    "late_finish_rejected": "a finish by a process that had lost the lock, rejected",
    "failed_by_stall_limit": "a job failed because it stalled more than max_stalled_count",
    "lock_renewal_failed": "a lock renewal that found the lock gone or taken",
    "forced_close_requeue": "a job given back by a worker closed with force",
}

_ALLOWED = allowed_moves()
_COUNTERS = ("atm", "ats", "stc")
#: The moves operator calls make (rule 3: none from a live lock, bar a forced obliterate).
OPERATOR_TRANSITIONS: Final = frozenset(
    {
        Transition.REMOVE,
        Transition.REPROCESS,
        Transition.REPROCESS_PRIORITIZED,
        Transition.CHANGE_PRIORITY,
        Transition.CHANGE_PRIORITY_TO_WAIT,
        Transition.CHANGE_DELAY,
        Transition.CLEAN,
        Transition.DRAIN,
        Transition.OBLITERATE,
    }
)
#: Deletions an operator makes on purpose, and the calls allowed to make each.
DELIBERATE_LOSSES: Final = {
    Transition.REMOVE: "remove",
    Transition.CLEAN: "clean",
    Transition.DRAIN: "drain",
    Transition.OBLITERATE: "obliterate",
}
_REPROCESS = (Transition.REPROCESS, Transition.REPROCESS_PRIORITIZED)


@dataclasses.dataclass
class _Track:
    state: JobState | None = None
    token: str | None = None
    owner: str | None = None
    lock_until: int = 0
    completions: int = 0
    executions: int = 0
    retries: int = 0  # attempts that ended in a retry (the next run is not a rerun)
    # token of each finish applied -> (outcome type, (id, token) of the job it fetched or None)
    finishes: dict[str, tuple[type, tuple[str, str] | None]] = dataclasses.field(
        default_factory=dict
    )
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    removed_from: JobState | None = None  # where an operator deleted it from
    # An operator sent it back or deleted it: a finish sent again may then find it changed.
    operated: bool = False

    @property
    def final_state(self) -> JobState | None:
        """Where the job is, or where it was when an operator deleted it."""
        return self.state if self.state is not None else self.removed_from


class Oracle:
    """Independent bookkeeping of locks, transitions and counters, and the violations found."""

    def __init__(
        self,
        max_stalled_count: int,
        is_alive: Callable[[str], bool],
        *,
        expect_no_reruns: bool = False,
        schedulers: Collection[str] = (),
    ) -> None:
        self.max_stalled_count = max_stalled_count
        #: Live job schedulers: their iterations are never failed for stalling.
        self.schedulers = frozenset(schedulers)
        self._is_alive = is_alive
        self.expect_no_reruns = expect_no_reruns
        self.reruns = 0
        self.finishes_repeated = 0
        self.jobs: dict[str, _Track] = {}
        self.violations: list[str] = []
        self.coverage: collections.Counter[str] = collections.Counter()
        self.zombie_commits = 0
        self.duplicate_completions = 0
        self.stalls_recovered = 0
        self.lost_to_store_restart = 0
        self.removed_by_operator = 0
        self.removed_unfinished = 0  # of those, the ones that had not completed or failed
        self._touched: list[str] = []
        # The moves of the current operation: (job, transition, source, target).
        self._moves: list[tuple[str, Transition, JobState | None, JobState | None]] = []
        self._open: set[str] = set()  # jobs that exist and are not finished
        self._before: dict[str, _Track] = {}
        # Every lock token a fetch was given, across store restarts: a token handed out twice
        # could let a stale owner's finish pass for the new owner's.
        self._tokens_given: set[str] = set()
        #: Deduplication's promises (see corral.sim.dedup_watch).
        self.dedup = DedupWatch(self._violate)
        #: The rate-limit and global-concurrency watch, in scenarios that set limits.
        self.limits: LimitWatch | None = None
        #: The flows watch, in scenarios that add flows (corral.sim.flow_watch).
        self.flows: FlowWatch | None = None

    # ------------------------------------------------------------------ what the store does

    def on_transition(
        self,
        job_id: str,
        transition: Transition,
        source: JobState | None,
        target: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        """Called by the store for every state change, before the operation returns."""
        track = self.jobs.setdefault(job_id, _Track())
        if (source, target) not in _ALLOWED:
            self._violate(f"job {job_id}: {transition.name} moved {source} -> {target}")
        if source != track.state:
            self._violate(
                f"job {job_id}: {transition.name} started from {source}, "
                f"but the job was last seen {track.state}"
            )
        track.state = target
        self.dedup.on_transition(job_id, source, target, fields)
        self._moves.append((job_id, transition, source, target))
        if transition in DELIBERATE_LOSSES:
            track.removed_from = source
            track.operated = True
        if transition in _REPROCESS:
            track.operated = True
            # Sent back to run again on purpose: one more run, and one more completion if it
            # had completed, are no duplicates.
            track.retries += 1
            if source is JobState.COMPLETED:
                track.completions -= 1
        if target is None or target.is_terminal:
            self._open.discard(job_id)
        else:
            self._open.add(job_id)
        stc = int(fields.get("stc") or 0)
        scheduled = fields.get("rjk") in self.schedulers
        if (
            transition is Transition.RECOVER_STALLED
            and stc > self.max_stalled_count
            and not scheduled
        ):
            self._violate(
                f"job {job_id}: recovered with stc={stc} > max_stalled_count="
                f"{self.max_stalled_count} (it should have failed)"
            )
        if transition is Transition.FAIL and fields.get("failedReason") == STALLED_LIMIT_REASON:
            if stc <= self.max_stalled_count:
                self._violate(f"job {job_id}: failed for stalling with only stc={stc}")
            self.coverage["failed_by_stall_limit"] += 1
        if transition is Transition.COMPLETE:
            track.completions += 1
            if track.completions > 1:
                self.duplicate_completions += 1
                self._violate(f"job {job_id}: completed {track.completions} times")
        if transition in (
            Transition.RETRY,
            Transition.RETRY_LATER,
            Transition.RETRY_PRIORITIZED,
        ):
            track.retries += 1
        if transition in (
            Transition.COMPLETE,
            Transition.FAIL,
            Transition.RETRY,
            Transition.RETRY_LATER,
            Transition.RETRY_PRIORITIZED,
            Transition.RECOVER_STALLED,
            Transition.RELEASE,
            Transition.RATE_LIMITED,
            Transition.RATE_LIMITED_PRIORITIZED,
        ):
            track.token = None
        if self.limits is not None:
            self.limits.on_transition(transition, source, target, self._violate)
        if self.flows is not None:
            self.flows.on_transition(job_id, transition, source, fields)
        self._touched.append(job_id)

    def on_op(self, process: str, op: str, args: tuple[Any, ...], result: Any, now: int) -> None:
        """Called after each storage operation executed at the store (``now``: store clock)."""
        if op == "fetch_next":
            self._activated(process, args[1], result.job, now)
        elif op == "finish":
            self._finished(process, args, result, now)
        elif op == "extend_locks":
            self._renewed(process, args[1], args[2], result, now)
        elif op == "release":
            if result is ResultCode.OK:
                self.coverage["forced_close_requeue"] += 1
        elif op == "check_stalled":
            self._checked(result, now)
        elif op == "add_jobs":
            self._added(args[1], result)
        elif op == "add_flow" and self.flows is not None:
            self.flows.on_add_flow(args[0], result)
        self._operated(op, args, result, now)

    def _added(self, jobs: list[Any], result: AddResult) -> None:
        def state_of(job_id: str) -> JobState | None:
            track = self.jobs.get(job_id)
            return None if track is None else track.state

        self.dedup.on_add(jobs, result, state_of)

    def _operated(self, op: str, args: tuple[Any, ...], result: Any, now: int) -> None:
        """Rule 3 and the deliberate losses, for whatever operation just ran."""
        forced = op == "obliterate" and bool(args[2])
        deleted = []
        for job_id, transition, source, target in self._moves:
            if transition not in OPERATOR_TRANSITIONS:
                continue
            before = self._before.get(job_id)
            if (
                source is JobState.ACTIVE
                and not forced
                and before is not None
                and before.token is not None
                and now < before.lock_until
            ):
                self._violate(
                    f"job {job_id}: {op} made {transition.name} while {before.owner} held its "
                    f"lock ({before.lock_until - now} ms left)"
                )
            if target is None:
                if DELIBERATE_LOSSES.get(transition) != op:
                    self._violate(f"job {job_id}: deleted by {transition.name} in {op}")
                deleted.append(job_id)
                if source is None or not source.is_terminal:
                    self.removed_unfinished += 1
        self.removed_by_operator += len(deleted)
        if op == "remove" and (result is ResultCode.OK) != (deleted == [args[1]]):
            self._violate(f"job {args[1]}: remove answered {result!r} but deleted {deleted}")
        elif op == "clean" and sorted(result) != sorted(deleted):
            self._violate(f"clean answered {sorted(result)} but deleted {sorted(deleted)}")
        elif op == "retry_job" and result is ResultCode.OK:
            # Asked to start the attempt counters again: they may go down once.
            track = self.jobs.setdefault(args[1], _Track())
            for name, reset in (("atm", args[3]), ("ats", args[4])):
                if reset:
                    track.counters.pop(name, None)

    def _owner_check(self, what: str, job_id: str, token: str, track: _Track, now: int) -> None:
        if track.token != token:
            self._violate(
                f"job {job_id}: {what} accepted for token {token}, but the lock belongs to "
                f"{track.token}"
            )
            self.zombie_commits += 1
        elif now >= track.lock_until:
            self._violate(
                f"job {job_id}: {what} accepted for token {token} {now - track.lock_until} ms "
                "after its lock expired"
            )
            self.zombie_commits += 1

    def _activated(
        self, process: str, request: FetchRequest, fetched: Fetched | None, now: int
    ) -> None:
        if fetched is None:
            return
        token = fetched.token
        if request.token is not None and token != request.token:
            self._violate(f"job {fetched.job_id}: locked with {token}, asked for {request.token}")
        elif request.token is None and not token.startswith(request.token_prefix):
            self._violate(f"job {fetched.job_id}: minted {token} lacks {request.token_prefix!r}")
        if token in self._tokens_given:
            self._violate(f"job {fetched.job_id}: lock token {token} handed out twice")
        self._tokens_given.add(token)
        track = self.jobs.setdefault(fetched.job_id, _Track())
        track.token, track.owner = fetched.token, process
        track.lock_until = now + request.lock_duration

    def _finished(
        self, process: str, args: tuple[Any, ...], result: FinishResult, now: int
    ) -> None:
        job_id, token, fetch = args[1], args[2], args[5]
        fetched = next_job(result)
        track = self.jobs.setdefault(job_id, _Track())
        outcome_type = type(args[3])
        if result_code(result) is not ResultCode.OK:
            self.coverage["late_finish_rejected"] += 1
            first = track.finishes.get(token)
            if first is not None and first[0] is outcome_type and not track.operated:
                self._violate(
                    f"job {job_id}: its finish by {token}, sent again, was refused "
                    f"({result_code(result).name}) although it had been applied"
                )
        elif job_id not in self._touched:  # accepted, and nothing moved: a repeat
            self._repeated(job_id, token, track, fetched, fetch, now)
            return
        else:
            # The transition already cleared the token; judge against what it was before.
            self._owner_check("finish", job_id, token, self._before.get(job_id, track), now)
            taken = None if fetched is None else (fetched.job_id, fetched.token)
            track.finishes[token] = (outcome_type, taken)
        if fetch is not None:
            self._activated(process, fetch, fetched, now)

    def _repeated(
        self,
        job_id: str,
        token: str,
        track: _Track,
        fetched: Fetched | None,
        fetch: FetchRequest | None,
        now: int,
    ) -> None:
        self.finishes_repeated += 1
        if token not in track.finishes:
            self._violate(
                f"job {job_id}: a finish by {token} was accepted without moving the job, "
                "and no finish by that token was applied before"
            )
            return
        if fetched is None or fetch is None:
            return
        if track.finishes[token][1] != (fetched.job_id, fetched.token):
            self._violate(
                f"job {job_id}: its repeated finish returned job {fetched.job_id} "
                f"({fetched.token}), not {track.finishes[token][1]}"
            )
            return
        taken = self.jobs.setdefault(fetched.job_id, _Track())
        self._owner_check("repeated finish (re-arm)", fetched.job_id, fetched.token, taken, now)
        taken.lock_until = now + fetch.lock_duration

    def _renewed(
        self,
        process: str,
        pairs: list[tuple[str, str]],
        lock_duration: int,
        lost: list[str],
        now: int,
    ) -> None:
        if lost:
            self.coverage["lock_renewal_failed"] += 1
        lost_tokens = set(lost)
        for job_id, token in pairs:
            if token in lost_tokens:
                continue
            track = self.jobs.setdefault(job_id, _Track())
            self._owner_check("lock renewal", job_id, token, track, now)
            track.token, track.lock_until = token, now + lock_duration

    def _checked(self, result: StalledCheck, now: int) -> None:
        if self.expect_no_reruns:
            for job_id in result.recovered + result.failed:
                self._violate(f"job {job_id}: found stalled, yet no lock could lapse")
        for job_id in result.recovered:
            self.stalls_recovered += 1
            before = self._before.get(job_id)
            if before is None:
                continue
            if now < before.lock_until:
                self._violate(
                    f"job {job_id}: recovered from {before.owner} while its lock was live "
                    f"({before.lock_until - now} ms left)"
                )
            if before.owner is not None and self._is_alive(before.owner):
                self.coverage["stall_while_owner_alive"] += 1

    # ------------------------------------------------------------------ operation framing

    def begin_op(self) -> None:
        """Snapshot lock holders before an operation (the operation's transitions clear them)."""
        self._before = {
            job_id: _Track(token=t.token, owner=t.owner, lock_until=t.lock_until)
            for job_id, t in self._held.items()
        }
        self._touched = []
        self._moves = []

    @property
    def _held(self) -> dict[str, _Track]:
        return {
            job_id: self.jobs[job_id]
            for job_id in self._open
            if self.jobs[job_id].token is not None
        }

    @property
    def touched(self) -> list[str]:
        """The jobs the current operation moved so far (a live list until ``end_op``)."""
        return self._touched

    def end_op(self, fields_of: Callable[[str], Mapping[str, str] | None]) -> None:
        """Check that the counters of the jobs the operation touched never went down."""
        for job_id in self._touched:
            track = self.jobs[job_id]
            fields = fields_of(job_id)
            if fields is None:
                continue
            for name in _COUNTERS:
                value = int(fields.get(name) or 0)
                if value < track.counters.get(name, 0):
                    self._violate(
                        f"job {job_id}: {name} went down from {track.counters[name]} to {value}"
                    )
                track.counters[name] = value
        self._touched = []
        self._moves = []

    # ------------------------------------------------------------------ processes and results

    def on_execution(self, job_id: str) -> None:
        """A processor started on ``job_id``."""
        track = self.jobs.setdefault(job_id, _Track())
        track.executions += 1
        if track.executions > track.retries + 1:
            self.reruns += 1
            if self.expect_no_reruns:
                self._violate(
                    f"job {job_id}: its processor ran again on an attempt that had no outcome "
                    f"stored (run {track.executions}), yet no lock could lapse"
                )

    def forget_store(self) -> None:
        """The store restarted without persistence: what it held is gone, by design."""
        for track in self.jobs.values():
            if track.state is not None and not track.state.is_terminal:
                self.lost_to_store_restart += 1
        self.jobs = {}
        self._open = set()
        self.dedup = DedupWatch(self._violate)

    def unfinished(self) -> list[str]:
        """Jobs that exist and are not completed or failed (but for the parents a flow leaves
        waiting by design: :meth:`FlowWatch.waiting_by_design`)."""
        return sorted(self._open - self._waiting_by_design())

    @property
    def has_unfinished(self) -> bool:
        """Whether any job exists that is not completed or failed (as :meth:`unfinished`)."""
        if self.flows is None:
            return bool(self._open)
        excused = self._waiting_by_design()
        return any(job_id not in excused for job_id in self._open)

    def _waiting_by_design(self) -> set[str]:
        if self.flows is None:
            return set()
        return self.flows.waiting_by_design(self.state_of)

    def state_of(self, job_id: str) -> JobState | None:
        """The state the oracle last saw ``job_id`` in."""
        track = self.jobs.get(job_id)
        return None if track is None else track.state

    def _violate(self, message: str) -> None:
        self.violations.append(message)


class LimitWatch:
    """The rate-limit and global-concurrency invariants, judged from the transitions.

    Rate limit: BullMQ's window is fixed, opened by the first activation after the previous
    window closed, and lasts ``duration`` ms by the store's clock; no such window may hold more
    than ``max`` starts (FETCH transitions). (A sliding window of the same length may see up to
    twice ``max`` across a boundary, as with BullMQ: that is the fixed window's nature, not a
    violation.) Global concurrency: never more than ``concurrency`` jobs in ``active`` (BullMQ
    counts stalled jobs still there, and so does this).

    Args:
        rate_limit: ``(max, duration ms)`` that applies to every fetch, or None.
        concurrency: the global concurrency, or None.
        store_now_ms: the store's clock.
    """

    def __init__(
        self,
        rate_limit: tuple[int, int] | None,
        concurrency: int | None,
        store_now_ms: Callable[[], int],
    ) -> None:
        self.rate_limit = rate_limit
        self.concurrency = concurrency
        self._now = store_now_ms
        self._window_end = -1
        self._window_starts = 0
        self.active = 0
        self.peak_active = 0
        self.fullest_window = 0

    def on_transition(
        self,
        transition: Transition,
        source: JobState | None,
        target: JobState | None,
        violate: Callable[[str], None],
    ) -> None:
        """Account one state change; report a broken limit through ``violate``."""
        self.active += (target is JobState.ACTIVE) - (source is JobState.ACTIVE)
        if self.concurrency is not None and self.active > self.concurrency:
            violate(f"global concurrency: {self.active} jobs active, more than {self.concurrency}")
        self.peak_active = max(self.peak_active, self.active)
        if transition is not Transition.FETCH or self.rate_limit is None:
            return
        limit, duration = self.rate_limit
        now = self._now()
        if now >= self._window_end:
            self._window_end, self._window_starts = now + duration, 0
        self._window_starts += 1
        self.fullest_window = max(self.fullest_window, self._window_starts)
        if self._window_starts > limit:
            violate(
                f"rate limit: {self._window_starts} jobs started in the window ending at "
                f"{self._window_end} ms, more than {limit} per {duration} ms"
            )
