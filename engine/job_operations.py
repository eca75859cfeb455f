"""What a caller can do with one job (BullMQ's ``Job`` methods, in snake_case): operator calls
(``retry``, ``promote``, ``update_data``, ``change_priority``, ``change_delay``, ``remove``),
logs, waiting for the job to finish, and the calls of manual processing (``move_to_completed``,
``move_to_failed``, ``extend_lock``).

:class:`JobOperations` is mixed into :class:`~corral.engine.job.Job`; its methods reach the store
through the job's *host*, the Queue or Worker that read the job (a :class:`JobHost`). Bad input
raises :class:`~corral.engine.errors.InvalidArgumentError` before anything is sent; a job that is
gone or in the wrong state raises :class:`~corral.engine.errors.JobStateError` with BullMQ's
code and text, and nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any, Protocol

from corral.engine.errors import (
    InvalidArgumentError,
    JobFailedError,
    JobStateError,
    LockLostError,
    ResultCode,
    WaitTimeoutError,
    removal_result,
)
from corral.engine.inputs import check_utf8
from corral.engine.states import JobState

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.job import Duration, Job, JobOptions
    from corral.engine.queue_events import QueueEvent, QueueEvents
    from corral.engine.storage import Fetched, FetchRequest, Outcome, Storage

#: The states ``Job.retry`` accepts (BullMQ: a job is retried from where it finished).
RETRY_STATES = (JobState.COMPLETED.value, JobState.FAILED.value)


class JobHost(Protocol):
    """What a job's methods need of the Queue or Worker that read it."""

    backend: Storage
    clock: Clock

    def failure_outcome(self, job: Job, error: BaseException) -> Outcome:
        """What a failed attempt of ``job`` leads to (the normal retry decision)."""
        ...

    def next_fetch(self, token: str) -> FetchRequest | None:
        """The fetch a finish makes for the next job under ``token``, or None (none)."""
        ...

    async def adopt(self, fetched: Fetched) -> Job | None:
        """A job this host fetched, as a Job it hosts (None if the host had to leave it)."""
        ...


class JobOperations:
    """The calls on one job that go to the store (mixed into :class:`~corral.engine.job.Job`)."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Job
        id: str
        queue_name: str
        _host: JobHost | None

        @property
        def name(self) -> str: ...

        @property
        def opts(self) -> JobOptions: ...

        def _set_field(self, name: str, value: str | None) -> None: ...

    def _require_host(self) -> JobHost:
        if self._host is None:
            raise RuntimeError(f"job {self.id} was not read through a queue or worker")
        return self._host

    def _check(self, code: ResultCode, command: str, state: str = "active") -> None:
        if code is not ResultCode.OK:
            raise JobStateError(code, self.id, command, state)

    # ------------------------------------------------------------------ operator calls

    async def retry(
        self,
        state: str = "failed",
        *,
        reset_attempts_made: bool = False,
        reset_attempts_started: bool = False,
    ) -> None:
        """Move this job, finished in ``state`` ("completed" or "failed"), back to be run
        again: to wait (its front if its ``lifo`` option says so), or prioritized when its
        priority is > 0, with event ``waiting`` (``prev`` = ``state``). ``finishedOn``,
        ``processedOn`` and the result or failure reason are cleared; ``attempts_made`` and
        ``attempts_started`` only when asked; the stacktraces and the stalled counter are kept.

        Raises:
            InvalidArgumentError: for another ``state``.
            JobStateError: ``Missing key for job <id>. reprocessJob`` or ``Job <id> is not in
                the <state> state. reprocessJob``.
        """
        if state not in RETRY_STATES:
            raise InvalidArgumentError(
                f"retry state must be 'completed' or 'failed', got {state!r}"
            )
        for flag, value in (
            ("reset_attempts_made", reset_attempts_made),
            ("reset_attempts_started", reset_attempts_started),
        ):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{flag} must be a bool, got {value!r}")
        host = self._require_host()
        code = await host.backend.retry_job(
            self.queue_name,
            self.id,
            JobState(state),
            reset_attempts_made=reset_attempts_made,
            reset_attempts_started=reset_attempts_started,
            now=host.clock.now_ms(),
        )
        self._check(code, "reprocessJob", state)
        outcome_field = "returnvalue" if state == JobState.COMPLETED.value else "failedReason"
        for field, cleared in (
            ("finishedOn", True),
            ("processedOn", True),
            (outcome_field, True),
            ("atm", reset_attempts_made),
            ("ats", reset_attempts_started),
        ):
            if cleared:
                self._set_field(field, None)

    async def promote(self) -> None:
        """Make this delayed job ready now (its delay becomes 0), event ``waiting``.

        Raises:
            JobStateError: ``Job <id> is not in the delayed state. promote``.
        """
        host = self._require_host()
        code = await host.backend.promote_job(self.queue_name, self.id, host.clock.now_ms())
        self._check(code, "promote", JobState.DELAYED.value)
        self._set_field("delay", "0")

    async def update_data(self, data: Any) -> None:
        """Replace this job's data (any JSON value), whatever its state, lock or not.

        Raises:
            InvalidArgumentError: if JSON cannot encode ``data`` (nothing is stored).
            JobStateError: ``Missing key for job <id>. updateData``.
        """
        from corral.engine.job import encode_json  # (job imports this module)

        encoded = encode_json(data, "data of job {}", self.id)
        code = await self._require_host().backend.update_data(self.queue_name, self.id, encoded)
        self._check(code, "updateData")
        self._set_field("data", encoded)

    async def change_priority(self, priority: int, *, lifo: bool = False) -> None:
        """Set this job's priority (0..2^21−1). A waiting or prioritized job is queued again
        by it (with ``lifo``: at the front of its priority); elsewhere only the field changes.

        Raises:
            InvalidArgumentError: for a priority that is not an int in range, or a non-bool
                ``lifo``.
            JobStateError: ``Missing key for job <id>. changePriority``.
        """
        from corral.engine.job import MAX_PRIORITY

        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidArgumentError(f"priority must be an int, got {priority!r}")
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidArgumentError(
                f"priority must be between 0 and {MAX_PRIORITY}, got {priority}"
            )
        if not isinstance(lifo, bool):
            raise InvalidArgumentError(f"lifo must be a bool, got {lifo!r}")
        code = await self._require_host().backend.change_priority(
            self.queue_name, self.id, priority, lifo
        )
        self._check(code, "changePriority")
        self._set_field("priority", str(priority))

    async def change_delay(self, delay: Duration) -> None:
        """Re-schedule this delayed job to run ``delay`` ms (or a timedelta) from now, event
        ``delayed``.

        Raises:
            InvalidArgumentError: for a negative or non-duration ``delay``.
            JobStateError: ``Missing key for job <id>. changeDelay`` or ``Job <id> is not in
                the delayed state. changeDelay``.
        """
        from corral.engine.job import duration_ms

        ms = duration_ms(delay, "delay")
        host = self._require_host()
        code = await host.backend.change_delay(self.queue_name, self.id, ms, host.clock.now_ms())
        self._check(code, "changeDelay", JobState.DELAYED.value)
        self._set_field("delay", str(ms))

    async def remove(self) -> bool:
        """Delete this job (it must hold no lock); False if it did not exist.

        Raises:
            CorralError: if a worker holds the job's lock.
            JobSchedulerError: if the job is a scheduler's current iteration (BullMQ's -8).
        """
        code = await self._require_host().backend.remove(self.queue_name, self.id)
        return removal_result(code, self.id)

    # ------------------------------------------------------------------ logs

    async def log(self, text: str) -> int:
        """Append a row to this job's log; return the number of rows it keeps (at most the
        job's ``keep_logs`` option).

        Raises:
            InvalidArgumentError: if ``text`` is not a string UTF-8 can encode.
            JobStateError: ``Missing key for job <id>. addLog``.
        """
        if not isinstance(text, str):
            raise InvalidArgumentError(f"a log row must be a string, got {text!r}")
        if not text.isascii():
            check_utf8(text, "log row")
        keep_logs = self.opts.keep_logs
        count = await self._require_host().backend.add_log(
            self.queue_name, self.id, text, keep_logs
        )
        if count is None:
            raise JobStateError(ResultCode.MISSING_JOB, self.id, "addLog")
        return count

    # ------------------------------------------------------------------ waiting

    async def wait_until_finished(
        self, queue_events: QueueEvents, ttl: Duration | None = None
    ) -> Any:
        """Wait until this job completes or fails for good; return its result (decoded JSON).

        ``queue_events`` must be running (``await queue_events.run()`` in a task): the job's
        ``completed`` and ``failed`` events are heard through it, after the job's state is
        read once (a job already finished answers at once). A failed attempt that will be
        retried does not end the wait: only the final failure does, as in BullMQ.

        Raises:
            JobFailedError: the job failed for good (the message is its failure reason), or
                it is gone (``Missing key for job <id>. isFinished``).
            WaitTimeoutError: after ``ttl`` ms with no finish (BullMQ's text).
        """
        from corral.engine.job import duration_ms

        ttl_ms = None if ttl is None else duration_ms(ttl, "ttl", allow_zero=False)
        host = self._require_host()
        finished: asyncio.Future[tuple[bool, str | None]] = (
            asyncio.get_running_loop().create_future()
        )

        def heard(succeeded: bool, field: str) -> Any:
            def handler(event: QueueEvent) -> None:
                if event.job_id == self.id and not finished.done():
                    finished.set_result((succeeded, event.fields.get(field)))

            return handler

        on_completed = queue_events.on("completed", heard(True, "returnvalue"))
        on_failed = queue_events.on("failed", heard(False, "failedReason"))
        try:
            # Listen first, then read the state: a finish in between is heard, not missed.
            await queue_events.wait_until_ready()
            if not finished.done():
                now = await self._finished_now(host)
                if now is not None and not finished.done():
                    finished.set_result(now)
            try:
                succeeded, value = await asyncio.wait_for(
                    asyncio.shield(finished), None if ttl_ms is None else ttl_ms / 1000
                )
            except TimeoutError:
                raise WaitTimeoutError(
                    f"Job wait {self.name} timed out before finishing, no finish notification "
                    f"arrived after {ttl_ms}ms (id={self.id})"
                ) from None
        finally:
            queue_events.off("completed", on_completed)
            queue_events.off("failed", on_failed)
        if not succeeded:
            raise JobFailedError(value or "")
        return _decoded(value)

    async def _finished_now(self, host: JobHost) -> tuple[bool, str | None] | None:
        """BullMQ's isFinished: ``(True, returnvalue)``, ``(False, failedReason)``, None while
        the job is not finished; a job that is gone fails."""
        state = await host.backend.get_state(self.queue_name, self.id)
        fields = await host.backend.get_job(self.queue_name, self.id)
        if fields is None:
            return False, f"Missing key for job {self.id}. isFinished"
        if state is JobState.COMPLETED:
            return True, fields.get("returnvalue")
        if state is JobState.FAILED:
            return False, fields.get("failedReason")
        return None

    # ------------------------------------------------------------------ manual processing

    async def move_to_completed(
        self, result: Any, token: str, *, fetch_next: bool = False
    ) -> Job | None:
        """Complete this job, which the caller fetched under ``token`` (manual processing):
        its result is stored and retention applied, as a worker does. With ``fetch_next``
        (a job from ``Worker.get_next_job``) the same call takes the next job, under the same
        token, and returns it.

        Raises:
            InvalidArgumentError: if JSON cannot encode ``result`` (nothing is stored).
            LockLostError: BullMQ's finish errors (``Missing lock for job <id>.
                moveToFinished``, ...): the job was not changed.
        """
        from corral.engine.job import encode_json
        from corral.engine.storage.records import Complete

        encoded = encode_json(result, "return value of job {}", self.id)
        host = self._require_host()
        outcome = Complete(encoded, self.opts.remove_on_complete)
        return await self._finish(host, token, outcome, fetch_next)

    async def move_to_failed(
        self, error: BaseException, token: str, *, fetch_next: bool = False
    ) -> Job | None:
        """Fail this attempt of a job the caller fetched under ``token``, applying the normal
        retry decision (attempts, backoff, :class:`~corral.engine.errors.UnrecoverableError`):
        the job is retried now or later, or fails for good; its stacktrace is appended.

        Raises:
            InvalidArgumentError: if ``error`` is not an exception.
            LockLostError: BullMQ's finish errors; the job was not changed.
        """
        if not isinstance(error, BaseException):
            raise InvalidArgumentError(f"move_to_failed needs an exception, got {error!r}")
        host = self._require_host()
        outcome = host.failure_outcome(self, error)  # type: ignore[arg-type]
        return await self._finish(host, token, outcome, fetch_next)

    async def _finish(
        self, host: JobHost, token: str, outcome: Outcome, fetch_next: bool
    ) -> Job | None:
        from corral.engine.storage.records import OUTCOME_COMMANDS, Fetched

        if not isinstance(token, str) or not token:
            raise InvalidArgumentError(f"token must be a non-empty string, got {token!r}")
        fetch = host.next_fetch(token) if fetch_next else None
        result = await host.backend.finish(
            self.queue_name, self.id, token, outcome, host.clock.now_ms(), fetch
        )
        if isinstance(result, Fetched):
            return await host.adopt(result)
        if result is not ResultCode.OK:
            raise LockLostError(result, self.id, OUTCOME_COMMANDS[type(outcome)])
        return None

    async def extend_lock(self, token: str, duration: Duration) -> bool:
        """Extend this job's lock, held under ``token``, to ``duration`` ms from now; False if
        the lock is gone or held under another token (it is never re-created)."""
        from corral.engine.job import duration_ms

        ms = duration_ms(duration, "duration", allow_zero=False)
        if not isinstance(token, str) or not token:
            raise InvalidArgumentError(f"token must be a non-empty string, got {token!r}")
        lost = await self._require_host().backend.extend_locks(
            self.queue_name, [(self.id, token)], ms
        )
        return not lost


def _decoded(raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    with contextlib.suppress(ValueError, RecursionError):
        return json.loads(raw)
    return raw
