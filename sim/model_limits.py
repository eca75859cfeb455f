"""The reference model of rate limits and global concurrency (``bullmq-features.md`` §2).

:class:`LimitsModel` is a mixin of :class:`corral.sim.model.QueueModel`, written from the
reference's steps rather than from :mod:`corral.engine.limits` (which the backends use), so
that the machine checks that policy too:

* the ``limiter`` key is ``_limiter = (counter, expiry on the store's clock or None)`` (None: no
  key); past its expiry it is gone, as a key with a PX TTL;
* ``meta``'s ``max``, ``duration`` and ``concurrency`` are ``_meta``;
* a fetch (moveToActive, step by step): the maximum is ``meta.max`` if set, else the worker's;
  with a maximum, a counter at or above it with a TTL holds the fetch back for that TTL (a
  counter without TTL does not); then global concurrency (``active >= concurrency``) stops it,
  then the pause. An activation under a maximum increments the counter; the first of a window
  sets its TTL to the worker's ``duration``, else ``meta.duration``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from corral.engine.errors import ResultCode
from corral.engine.states import JobState, Transition

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.storage import FetchRequest
    from corral.sim.model import OrderKey, _Job

#: What ``rate_limit(ms)`` puts in the counter (JavaScript's ``Number.MAX_SAFE_INTEGER``).
MANUAL_COUNT: Final = 2**53 - 1


class LimitsModel:
    """The window counter, the limit settings and ``move_to_wait`` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by QueueModel
        clock: Clock
        _jobs: dict[str, _Job]

        def _move(self, job: _Job, transition: Transition, order: OrderKey = ...) -> None: ...
        def _front_of_line(self) -> OrderKey: ...
        def _in(self, state: JobState) -> list[_Job]: ...
        def _owner_check(self, job_id: str, token: str) -> ResultCode: ...

    def _init_limits(self) -> None:
        self._limiter: tuple[int, int | None] | None = None
        self._meta: dict[str, str] = {}

    def _window(self) -> tuple[int | None, int]:
        """``(GET limiter, PTTL limiter)``: (None, -2) without a key, -1 for no TTL."""
        if self._limiter is None:
            return None, -2
        count, expires = self._limiter
        if expires is None:
            return count, -1
        left = expires - self.clock.now_ms()
        if left < 0:  # (a key with PX d lives through its last millisecond, PTTL 0)
            self._limiter = None
            return None, -2
        return count, left

    def _meta_int(self, name: str) -> int | None:
        raw = self._meta.get(name)
        return None if raw is None else int(raw)

    # ------------------------------------------------------------------ fetching

    def _limit_gate(self, request: FetchRequest) -> tuple[int, int | None]:
        """``(ms a rate limit holds the fetch back, 0 if none; the maximum applied or None)``."""
        max_jobs = self._meta_int("max")
        if max_jobs is None and request.limiter is not None:
            max_jobs = request.limiter[0]
        if max_jobs is not None:
            count, ttl = self._window()
            if count is not None and count >= max_jobs:
                if ttl > 0:
                    return ttl, max_jobs
                if ttl == 0:  # full, expiring now: deleted, so a new window opens
                    self._limiter = None
        return 0, max_jobs

    def _maxed(self) -> bool:
        """Global concurrency reached: ``LLEN active >= meta.concurrency``."""
        limit = self._meta_int("concurrency")
        return limit is not None and len(self._in(JobState.ACTIVE)) >= limit

    def _count_activation(self, request: FetchRequest, max_jobs: int | None, job: _Job) -> None:
        """``INCR limiter`` under a maximum; the window's first activation sets its TTL. A job
        carrying ``defa`` (a parent whose ``fpof`` child failed: it fails when taken) is not
        counted (BullMQ 6.7's ``prepareJobForProcessing``)."""
        if max_jobs is None or "defa" in job.extra:
            return
        count, _ = self._window()
        if count is None:
            duration = request.limiter[1] if request.limiter is not None else None
            if duration is None:
                duration = abs(self._meta_int("duration") or 0)
            self._limiter = (1, self.clock.now_ms() + duration)
        else:
            assert self._limiter is not None
            self._limiter = (count + 1, self._limiter[1])

    # ------------------------------------------------------------------ the LimitStorage calls

    def set_rate_limit(self, ttl_ms: int) -> None:
        """``SET limiter MAX_SAFE_INTEGER PX ttl``."""
        self._limiter = (MANUAL_COUNT, self.clock.now_ms() + ttl_ms)

    def get_rate_limit_ttl(self, max_jobs: int | None) -> int:
        """The window's TTL if its counter reached ``max_jobs`` (else ``meta.max``), else 0;
        with neither, the raw PTTL."""
        count, ttl = self._window()
        limit = max_jobs or self._meta_int("max")
        if limit is None:
            return ttl
        return ttl if count is not None and count >= limit else 0

    def remove_rate_limit_key(self) -> int:
        """``DEL limiter``."""
        count, _ = self._window()
        self._limiter = None
        return 0 if count is None else 1

    def set_queue_meta(self, fields: dict[str, int]) -> None:
        """``HSET meta ...``."""
        self._meta.update({name: str(value) for name, value in fields.items()})

    def get_queue_meta(self, names: tuple[str, ...]) -> list[str | None]:
        """``HMGET meta ...``."""
        return [self._meta.get(name) for name in names]

    def remove_queue_meta(self, names: tuple[str, ...]) -> None:
        """``HDEL meta ...``."""
        for name in names:
            self._meta.pop(name, None)

    def move_to_wait(self, job_id: str, token: str) -> tuple[ResultCode, int]:
        """``moveJobFromActiveToWait``: an owned active job back to the front of wait (priority
        0) or ahead of its priority level (score ``priority·2^32``, ties by id); no attempt
        counted. Returns the code and ``PTTL limiter`` if > 0, else 0."""
        code = self._owner_check(job_id, token)
        if code is not ResultCode.OK:
            return code, 0
        job = self._jobs[job_id]
        if job.priority:
            self._move(job, Transition.RATE_LIMITED_PRIORITIZED, (job.priority, 0, job.id))
        else:
            self._move(job, Transition.RATE_LIMITED, self._front_of_line())
        _, ttl = self._window()
        return code, max(ttl, 0)
