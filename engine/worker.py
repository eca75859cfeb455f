"""Worker: fetches jobs, runs the processor, keeps their locks alive, and recovers stalled jobs.

One worker runs ``concurrency`` *slots*. Each slot loops: take a job (or wait to be woken), run
the processor, apply the outcome — and, in the same storage call, take the next job. Only one
slot at a time blocks waiting for work, so an idle worker holds one wait, not ``concurrency``.

Beside the slots run two timers: the lock renewer (one batch ``extend_locks`` call per tick for
every lock due for renewal) and the stalled checker (a check at start, then one per
``stalled_interval``, throttled across all workers of the queue by the store).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.checker import StalledChecker
from corral.engine.clock import Clock, SystemClock, system_random
from corral.engine.errors import (
    STEP_ERROR_NAMES,
    CorralError,
    InvalidArgumentError,
    LockLostError,
    ResultCode,
    StoreRefusedError,
    UnrecoverableError,
    finish_error_text,
)
from corral.engine.escapes import PROCESS_EXITS, escaped_failure
from corral.engine.events import EventEmitter, Handler
from corral.engine.finishing import RETRIED_FINISH_ERRORS, WorkerFinishing
from corral.engine.job import Duration, Job, KeepJobs, decode_opts, encode_json
from corral.engine.job_decoding import undecodable_reason
from corral.engine.limits import DEFAULT_MAXIMUM_RATE_LIMIT_DELAY, Limiter, window_ms
from corral.engine.lock_renewal import LockRenewer
from corral.engine.loop_turns import LoopTurns
from corral.engine.loop_watch import (
    LoopWatch,
    lag_threshold_ms,
    lock_lost_after_block,
    warn_blocked,
)
from corral.engine.manual_fetch import ManualFetching, no_processor
from corral.engine.policy import (
    BackoffStrategy,
    failure_outcome,
    keep_jobs,
)
from corral.engine.rate_limited import RateLimitedWorker, is_rate_limit_error
from corral.engine.running import Processor, ProcessorCalls, ProcessorRunner, Running
from corral.engine.storage import (
    OUTCOME_COMMANDS,
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    Outcome,
    Storage,
)
from corral.engine.worker_config import worker_config
from corral.engine.worker_idle import IdleSlots
from corral.engine.worker_pause import PausableWorker, PauseGate
from corral.engine.worker_presence import register, unregister

# Processor and ProcessorRunner are re-exported: they lived here before corral.engine.running.
__all__ = ["WORKER_EVENTS", "Processor", "ProcessorRunner", "Worker"]

# A slot that keeps finding work without ever suspending yields to the loop after this many
# jobs or this much loop time, whichever comes first; the time is read every few jobs only
# (a power of two: the mask below). A yield costs a poll of the selector, so not too often.
_YIELD_EVERY_JOBS: Final = 64
_YIELD_AFTER_S: Final = 0.002
_TIME_CHECK_MASK: Final = 3  # read the loop time every 4 jobs
# Read for every job, looked up once (an Enum class attribute is slow on Python 3.11).
_OK: Final = ResultCode.OK
_PENDING: Final = ResultCode.PENDING_DEPENDENCIES
_FAILED_CHILDREN: Final = ResultCode.FAILED_CHILDREN

#: Events a Worker emits (see ``Worker.on``).
WORKER_EVENTS: Final = frozenset(
    {
        "active",
        "completed",
        "paused",
        "resumed",
        "failed",
        "progress",
        "stalled",
        "locks_renewed",
        "lock_renewal_failed",
        "loop_blocked",
        "drained",
        "error",
        "closed",
    }
)


class Worker(ManualFetching, PausableWorker, IdleSlots, WorkerFinishing, RateLimitedWorker):
    """Processes the jobs of one queue.

    Args:
        queue_name: the queue to work on.
        processor: ``async def`` or plain ``def`` taking a :class:`Job`; its return value
            (JSON-encodable) becomes the job's result. Plain functions run in a thread pool,
            never on the event loop. None for manual processing: the worker cannot ``run()``,
            and the caller takes jobs with ``get_next_job`` (see
            :mod:`corral.engine.manual_fetch`).
        backend: the queue's storage.
        concurrency: how many jobs run at once.
        lock_duration: lock TTL in ms; a job whose lock lapses is recovered as stalled.
        lock_renew_time: renewal period in ms (default ``lock_duration / 2``); the renewal timer
            ticks every half period and re-arms the locks not renewed for half a period.
        stalled_interval: ms between stalled checks (also the shared throttle's TTL).
        max_stalled_count: stalls a job may survive; one more fails it.
        skip_stalled_check: do not run the stalled checker.
        skip_lock_renewal: never renew locks (jobs must finish within ``lock_duration``).
        drain_delay: longest single wait for work in ms before fetching again.
        name: stored as ``pb`` ("processed by") on the jobs this worker takes, and part of
            the name under which ``Queue.get_workers`` lists the worker.
        clock: timestamps source (system clock by default).
        rng: randomness for lock tokens and backoff jitter.
        backoff_strategy: custom backoff for job backoff types other than fixed/exponential.
        executor: thread pool for plain-function processors (one of ``concurrency`` threads by
            default).
        sandboxed: run each job in a child process (``corral.sandbox``): the processor must
            then be a ``"package.module:function"`` name or a top-level function importable by
            name. A processor given as such a name without ``sandboxed`` is imported here.
        processor_runner: runs the processor instead of the worker (the seam ``sandboxed``
            uses; e.g. a ``corral.sandbox.SandboxedRunner`` with chosen options). The worker
            closes it when it stops.
        remove_on_complete: retention of completed jobs that have none of their own (as the
            job option: True, a count, or ``{"age": seconds, "count": n}``); BullMQ's
            precedence: the job's own option wins.
        remove_on_fail: the same for failed jobs.
        limiter: ``{"max": n, "duration": ms}``: at most ``n`` jobs start per window across
            all workers of the queue (enforced by the store, see ``corral.engine.limits``).
        maximum_rate_limit_delay: longest single wait (ms) of a rate-limited worker.
    """

    def __init__(
        self,
        queue_name: str,
        processor: Processor | str | None,
        backend: Storage,
        *,
        concurrency: int = 1,
        lock_duration: Duration = 30_000,
        lock_renew_time: Duration | None = None,
        stalled_interval: Duration = 30_000,
        max_stalled_count: int = 1,
        skip_stalled_check: bool = False,
        skip_lock_renewal: bool = False,
        drain_delay: Duration = 5_000,
        name: str | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        backoff_strategy: BackoffStrategy | None = None,
        executor: concurrent.futures.Executor | None = None,
        sandboxed: bool = False,
        processor_runner: ProcessorRunner | None = None,
        remove_on_complete: bool | int | Mapping[str, int] | KeepJobs | None = None,
        remove_on_fail: bool | int | Mapping[str, int] | KeepJobs | None = None,
        limiter: Limiter | dict[str, Any] | None = None,
        maximum_rate_limit_delay: Duration = DEFAULT_MAXIMUM_RATE_LIMIT_DELAY,
    ) -> None:
        config = worker_config(
            queue_name,
            processor,
            concurrency=concurrency,
            lock_duration=lock_duration,
            lock_renew_time=lock_renew_time,
            stalled_interval=stalled_interval,
            max_stalled_count=max_stalled_count,
            skip_stalled_check=skip_stalled_check,
            skip_lock_renewal=skip_lock_renewal,
            drain_delay=drain_delay,
            name=name,
            sandboxed=sandboxed,
            processor_runner=processor_runner,
            remove_on_complete=remove_on_complete,
            remove_on_fail=remove_on_fail,
        )
        # Plain attributes, not properties over the config: the per-job code reads some of them.
        self.queue_name = config.queue_name
        self.processor = config.processor
        self.backend = backend
        self.concurrency = config.concurrency
        self.lock_duration = config.lock_duration
        self.lock_renew_time = config.lock_renew_time
        self.stalled_interval = config.stalled_interval
        self.max_stalled_count = config.max_stalled_count
        self.skip_stalled_check = config.skip_stalled_check
        self.skip_lock_renewal = config.skip_lock_renewal
        self.drain_delay = config.drain_delay
        self.name = config.name
        self.remove_on_complete = config.remove_on_complete
        self.remove_on_fail = config.remove_on_fail
        self.limiter = Limiter.build(limiter)
        self.maximum_rate_limit_delay = window_ms(
            maximum_rate_limit_delay, "maximum_rate_limit_delay"
        )
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or system_random()
        self.id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self._backoff_strategy = backoff_strategy
        self._calls = ProcessorCalls(
            self.processor or no_processor,
            config.processor_runner,
            executor,
            threads=self.concurrency,
            thread_name_prefix=f"corral-{self.queue_name}",
        )
        # Called per job: an attribute each, read without going through _calls.
        self._direct_processor = self._calls.direct
        # Fields another producer wrote may not decode; a store that holds only what corral's
        # API encoded says so, and its jobs skip the check (a parse of every job's data).
        self._check_decoding = not getattr(backend, "holds_only_encoded_fields", False)
        self._start_processor = self._calls.start
        # (the raw ``opts`` of the last job that returned None, its stored outcome): see _success
        self._null_outcome: tuple[str | None, Complete] = (
            "{}",
            Complete(
                "null", keep_jobs(decode_opts("{}").remove_on_complete, self.remove_on_complete)
            ),
        )
        self._events = EventEmitter(WORKER_EVENTS)
        # One bound method for every job (not a new one per job, which the GC must then track).
        self._progress_writer = self._write_progress
        # Asked for every job: the live handler lists, tested for emptiness.
        self._on_active = self._events.listeners("active")
        self._on_completed = self._events.listeners("completed")
        self._on_failed = self._events.listeners("failed")
        self._checker = StalledChecker(
            self.queue_name,
            backend,
            stalled_interval=self.stalled_interval,
            max_stalled_count=self.max_stalled_count,
            clock=self.clock,
            events=self._events,
        )
        self._fetch_request: FetchRequest  # made when the worker starts (see run)
        self._fetch_errors = 0  # consecutive failed fetches or waits
        self._refused_writes = 0  # consecutive writes the store refused (fetch, renewal)
        self._running: dict[str, Running] = {}  # by lock token
        self._renewer = LockRenewer(
            self.queue_name,
            backend,
            self._running,
            lock_duration=self.lock_duration,
            lock_renew_time=self.lock_renew_time,
            clock=self.clock,
            events=self._events,
            store_answered=self._store_answered,
        )
        # Ordered (a dict, not a set) so that closing cancels slots in a reproducible order.
        self._idle_slots: dict[asyncio.Task[None], None] = {}
        self._block = asyncio.Lock()
        self._timers: list[asyncio.Task[None]] = []
        self._slots: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self._force = False
        # A KeyboardInterrupt or SystemExit a processor raised: run() re-raises it once closed.
        self._exit: BaseException | None = None
        self._drained = False
        self._stopped: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_turns: LoopTurns | None = None
        self._loop_watch: LoopWatch  # made when the worker starts (see run)
        self._loop_thread = 0
        self._pause = PauseGate()
        self._registration: str | None = None  # in the store's list of workers (get_workers)
        self._waiting_for_work: set[asyncio.Task[None]] = set()
        # BullMQ's limitUntil: no fetch before this time (ms), set by a job given back
        # with RateLimitError while the queue's window still runs (see rate_limited).
        self._limit_until = 0

    def __repr__(self) -> str:
        return f"<Worker {self.queue_name!r} id={self.id} concurrency={self.concurrency}>"

    # ------------------------------------------------------------------ public API

    def on(self, event: str, handler: Handler) -> Handler:
        """Register a handler for a worker event.

        Events and their arguments: ``active(job)``, ``completed(job, result)``,
        ``failed(job, error)`` (every failed attempt), ``progress(job, value)``,
        ``stalled(job_id, previous_state)``, ``locks_renewed(job_ids)``,
        ``lock_renewal_failed(job_ids)``, ``loop_blocked(ms, job_ids)`` (the event loop was
        blocked long enough to endanger locks, while these jobs ran; also logged as a warning),
        ``drained()``, ``error(error, job_or_none)``, ``paused()`` and ``resumed()`` (this
        worker's :meth:`pause` and :meth:`resume`), ``closed()``.
        """
        return self._events.on(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Unregister a handler."""
        self._events.off(event, handler)

    @property
    def running_jobs(self) -> list[Job]:
        """The jobs this worker is running now."""
        return [running.job for running in self._running.values()]

    @property
    def is_running(self) -> bool:
        """True between ``run()`` starting and the worker having closed."""
        return self._started and not (self._stopped is not None and self._stopped.is_set())

    def cancel_job(self, job_id: str, reason: str = "cancelled by worker.cancel_job") -> bool:
        """Signal the running processor of ``job_id`` to stop (through ``job.cancellation``).

        The processor decides how to stop; whatever it then raises fails the attempt as usual.
        Returns False if this worker is not running that job.
        """
        found = False
        for running in self._running.values():
            if running.job.id == job_id:
                running.job.cancellation.cancel(reason)
                found = True
        return found

    async def run(self) -> None:
        """Process jobs until :meth:`close` is called. Cancelling ``run`` closes with force."""
        if self.processor is None:
            raise RuntimeError(
                "this worker has no processor: take jobs with get_next_job(token) instead"
            )
        if self._started:
            raise RuntimeError("this worker has already been started")
        self._started = True
        self._loop = self._calls.loop = asyncio.get_running_loop()
        self._loop_turns = LoopTurns(self._loop)
        self._loop_watch = LoopWatch(
            self._loop, lag_threshold_ms(self.lock_duration), self._loop_blocked, self._running
        )
        self._loop_thread = threading.get_ident()
        # One request for every fetch: the store mints each lock token, "<worker id>:<number>".
        self._fetch_request = FetchRequest(
            None,
            self.lock_duration,
            self.name,
            self.id + ":",
            None if self.limiter is None else self.limiter.pair,
        )
        self._stopped = asyncio.Event()
        if self._closing:
            self._stopped.set()
            return
        self._registration = await register(self.backend, self.queue_name, self.name, self._events)
        if not self.skip_stalled_check:
            self._timers.append(asyncio.create_task(self._stalled_check_timer()))
        if not self.skip_lock_renewal:
            self._timers.append(asyncio.create_task(self._renewer.timer()))
        self._slots = [asyncio.create_task(self._slot()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*self._slots)
            if self._exit is not None:
                raise self._exit
        except asyncio.CancelledError:
            self._closing = self._force = True
            for slot in self._slots:
                slot.cancel()
            await asyncio.gather(*self._slots, return_exceptions=True)
            raise
        finally:
            await self._shutdown()

    async def close(self, force: bool = False) -> None:
        """Stop taking jobs and wait for the worker to finish.

        Without ``force``, running jobs finish normally (their locks are still renewed). With
        ``force``, their processors are cancelled, their locks released and the jobs put back at
        the front of wait at once, with no stall counted.
        """
        self._begin_close(force)
        if self._stopped is not None:
            await self._stopped.wait()
        elif not self._started:  # a worker for manual fetching: its stalled-check timer
            await self.stop_timers()

    def _begin_close(self, force: bool) -> None:
        self._closing = True
        self._force = self._force or force
        for slot in list(self._idle_slots):
            slot.cancel()
        if self._force:
            for running in list(self._running.values()):
                if not running.finishing:
                    running.slot.cancel()

    # ------------------------------------------------------------------ slots

    async def _slot(self) -> None:
        this = asyncio.current_task()
        assert this is not None
        loop = asyncio.get_running_loop()
        fetched: Fetched | None = None
        # Fast processors on an in-process backend may never suspend: the slot then yields
        # now and then so that the other slots, the lock renewer and the stalled checker still
        # run. A slot that suspends anyway (waiting for Redis) sees the loop's turns go by
        # and never yields for nothing: an idle turn costs a poll of the selector.
        turns = self._loop_turns
        assert turns is not None
        seen = turns.mark()
        unyielded = 0
        window_start = loop.time()
        while not self._closing:
            if fetched is None:
                if self._pause.paused:
                    if not await self._park(this):
                        break
                    continue
                fetched = await self._next_job(this)
                if fetched is None:
                    continue
            fetched = await self._process(this, fetched)
            if turns.generation == seen:
                unyielded += 1
                if unyielded < _YIELD_EVERY_JOBS and (
                    unyielded & _TIME_CHECK_MASK or loop.time() - window_start < _YIELD_AFTER_S
                ):
                    continue
                await asyncio.sleep(0)
            seen = turns.mark()
            unyielded = 0
            window_start = loop.time()
        if fetched is not None:
            # The last finish took this job before close() began (while the slot yielded, or
            # while a remote finish was in flight): run it, or with force give it straight
            # back, rather than leave it active under a lock nobody renews.
            await self._process(this, fetched)

    async def _next_job(self, slot: asyncio.Task[None]) -> Fetched | None:
        """Take a job, waiting for one if need be; None once the worker is closing."""
        async with self._block:
            while not self._closing:
                # A renewal refused since the last fetch: no new job until the store takes writes.
                if (
                    self._refused_writes
                    and not self._fetch_errors
                    and not await self._back_off(slot)
                ):
                    break
                if self._pause.paused:
                    break
                now = self.clock.now_ms()
                if self._limit_until > now:  # a job given back rate limited: sleep it out
                    if not await self._sleep_out_limit(slot, now):
                        break
                    continue
                request = self._fetch_request
                try:
                    result = await self.backend.fetch_next(self.queue_name, request, now)
                except Exception as exc:
                    self._store_answered(exc)
                    self._events.emit("error", exc, None)
                    if not await self._back_off(slot):
                        break
                    continue
                self._store_answered(None)
                if result.job is not None:
                    self._drained = False
                    self._fetch_errors = 0
                    return result.job
                if not self._drained and not result.rate_limit_ms:
                    self._drained = True
                    self._events.emit("drained")
                if self._closing:  # close() began while the fetch was in flight
                    break
                waited = await self._wait_for_work(slot, result)
                if waited is None:  # woken by close() or pause()
                    return None
                if not waited:
                    break
        return None

    async def _process(self, slot: asyncio.Task[None], fetched: Fetched) -> Fetched | None:
        """Run one job and finish it; return the next job if the finish fetched one."""
        fields = fetched.fields
        token = fetched.token
        job = Job(
            self.queue_name,
            fetched.job_id,
            fields,
            self._progress_writer,
            token,
            self._loop,
            self._loop_thread,
        )
        job._host = self
        running = Running(job, token, self.clock.now_ms(), slot)
        self._running[token] = running
        self._loop_watch.arm()
        try:
            if self._force:  # fetched while a forced close began: give it straight back
                raise asyncio.CancelledError
            # A scheduler's iteration: make the next before running it (or leave it to stall).
            if "rjk" in fields and not await self._schedule_next(job, fields):
                return None
            error: BaseException | None
            deferred_failure = fields.get("defa")
            if deferred_failure is None and self._check_decoding:
                deferred_failure = undecodable_reason(job, fields)
            if deferred_failure is not None:
                outcome, result, error = self._failure(job, UnrecoverableError(deferred_failure))
            else:
                if self._on_active:
                    self._events.emit("active", job)
                processor = self._direct_processor
                try:
                    result = await (
                        processor(job) if processor is not None else self._start_processor(job)
                    )
                except Exception as exc:
                    if is_rate_limit_error(exc):  # back to wait, no attempt used
                        running.renew = False
                        running.finishing = True
                        await self._give_back(job, token)
                        return None
                    if type(exc).__name__ in STEP_ERROR_NAMES:  # the processor moved the job
                        return None
                    outcome, result, error = self._failure(job, exc)
                except BaseException as exc:
                    escaped = escaped_failure(exc, slot)
                    if escaped is None:
                        raise
                    outcome, result, error = self._failure(job, escaped)
                else:
                    opts_seen, null_outcome = self._null_outcome
                    if result is None and fields.get("opts") == opts_seen:
                        outcome, error = null_outcome, None  # the common no-op case
                    else:
                        outcome, result, error = self._success(job, result)
            self._loop_watch.check()
            now = self.clock.now_ms()
            limited = self._limit_until > now
            fetch = None if self._closing or self._pause.paused or limited else self._fetch_request
            running.renew = False
            running.finishing = True
            try:
                finish = await self.backend.finish(
                    self.queue_name, job.id, token, outcome, now, fetch
                )
                if finish is _PENDING or finish is _FAILED_CHILDREN:  # a parent (flows)
                    # BullMQ fails the parent with the refusal's text; -9 is unrecoverable.
                    text = finish_error_text(finish, job.id, "moveToFinished")
                    refusal = CorralError(text) if finish is _PENDING else UnrecoverableError(text)
                    outcome, result, error = self._failure(job, refusal)
                    finish = await self.backend.finish(
                        self.queue_name, job.id, token, outcome, now, fetch
                    )
            except RETRIED_FINISH_ERRORS as exc:  # refused, or no reply: may be sent again
                again = await self._finish_again(running, outcome, fetch, exc)
                if again is None:
                    return None
                finish = again
        except asyncio.CancelledError:
            if self._force:
                await self._release(running)
                return None
            raise
        except PROCESS_EXITS as exc:
            # The processor asked the process to stop: close with force, this job included.
            if self._exit is None:
                self._exit = exc
            running.finishing = True  # (its slot is this task: it releases, not cancels, it)
            self._begin_close(True)
            await self._release(running)
            return None
        except Exception as exc:
            self._events.emit("error", exc, job)
            return None
        finally:
            del self._running[token]
        if isinstance(finish, Fetched):  # stored, and the next job fetched in the same step
            fetched_next: Fetched | None = finish
        elif finish is _OK:
            fetched_next = None
        else:
            command = OUTCOME_COMMANDS[type(outcome)]
            lost = LockLostError(finish, job.id, command)
            self._events.emit("error", lock_lost_after_block(lost, running.blocked_ms), job)
            return None
        if isinstance(outcome, Complete):
            if self._on_completed:
                job._record_attempt("returnvalue", outcome.return_value)
                self._events.emit("completed", job, result)
        elif self._on_failed:
            job._record_attempt("failedReason", getattr(outcome, "reason", None))
            self._events.emit("failed", job, error)
        return fetched_next

    def _success(self, job: Job, result: Any) -> tuple[Outcome, Any, BaseException | None]:
        """The outcome to store for a processor that returned ``result``, the result and the
        error (a result JSON cannot encode fails the job)."""
        try:
            encoded = encode_json(result, "return value of job {}", job.id)
        except InvalidArgumentError as exc:
            return self._failure(job, UnrecoverableError(str(exc)))
        outcome = Complete(encoded, keep_jobs(job.opts.remove_on_complete, self.remove_on_complete))
        if result is None:
            # Outcomes are values, and the same options string always decodes to the same
            # retention: the next job with these options that returns None reuses this one.
            self._null_outcome = (job.fields.get("opts"), outcome)
        return outcome, result, None

    def _failure(self, job: Job, error: BaseException) -> tuple[Outcome, Any, BaseException | None]:
        """The outcome to store for a processor that raised ``error``, no result, the error."""
        outcome = failure_outcome(
            job.opts,
            job.attempts_made,
            error,
            self._rng,
            job=job,
            strategy=self._backoff_strategy,
            previous_stacktrace=job.stacktrace,
        )
        if isinstance(outcome, Fail):
            outcome.keep = keep_jobs(outcome.keep, self.remove_on_fail)
        return outcome, None, error

    async def _write_progress(self, job_id: str, progress: str) -> None:
        code = await self.backend.update_progress(self.queue_name, job_id, progress)
        if code is not ResultCode.OK:
            raise CorralError(f"cannot update progress: job {job_id} does not exist")
        if self._events.has_listeners("progress"):
            for running in self._running.values():
                if running.job.id == job_id:
                    self._events.emit("progress", running.job, json.loads(progress))

    # ------------------------------------------------------------------ timers

    async def renew_locks(self) -> None:
        """Renew, in one storage call, every lock due for renewal (the timer calls this)."""
        await self._renewer.renew()

    def _store_answered(self, error: Exception | None) -> None:
        """Count the writes the store refuses in a row (fetches, finishes, renewals; see
        _back_off): ``error`` is how a call failed, None when the store took it."""
        if error is None:
            self._refused_writes = 0
        else:
            self._refused_writes += isinstance(error, StoreRefusedError)

    def _loop_blocked(self, lag_ms: int) -> None:
        running = list(self._running.values())
        if not running:
            return  # (the jobs it held back finished meanwhile: no lock is at risk any more)
        for run in running:
            run.blocked_ms = max(run.blocked_ms, lag_ms)
        job_ids = list(dict.fromkeys(run.job.id for run in running))
        self._events.emit("loop_blocked", lag_ms, job_ids)
        warn_blocked(repr(self), lag_ms, self.lock_duration, job_ids)

    async def _stalled_check_timer(self) -> None:
        while True:
            if not self._pause.paused:  # a paused worker's checker rests, as BullMQ's
                await self.check_stalled()
            await asyncio.sleep(self.stalled_interval / 1000)

    async def check_stalled(self) -> None:
        """Run one stalled check with this worker's settings (the timer calls this)."""
        try:
            await self._checker.check()
        except Exception as exc:
            self._events.emit("error", exc, None)

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self) -> None:
        await unregister(self.backend, self.queue_name, self._registration, self._events)
        self._registration = None
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers.clear()
        if self._loop_turns is not None:
            self._loop_turns.cancel()
            self._loop_watch.cancel()
        try:
            await self._calls.close(self._force)
        except Exception as exc:
            self._events.emit("error", exc, None)
        await self._events.drain()
        assert self._stopped is not None
        self._stopped.set()
        self._events.emit("closed")
