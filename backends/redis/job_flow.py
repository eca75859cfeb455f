"""The core job flow on Redis: add, fetch, finish, lock renewal, release, the stalled check
and progress."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral.backends.redis.core import RedisCore, px, reaching
from corral.backends.redis.server import as_text
from corral.engine.errors import (
    STALLED_LIMIT_REASON,
    ResultCode,
)
from corral.engine.storage import (
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
)


def _json_pairs(encoded: str | bytes) -> dict[str, str]:
    """A hash sent by a script as the JSON array ``[field, value, ...]`` (one bulk string parses
    much faster than a nested reply); cjson writes an empty table as ``{}``."""
    flat = json.loads(
        encoded.decode("utf-8", "surrogateescape") if isinstance(encoded, bytes) else encoded
    )
    if not flat:
        return {}
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))


def _fetched(raw: Sequence[Any], token: str) -> Fetched | None:
    if raw[0] != 1:
        return None
    # A repeated finish returns the job its first run fetched, with that run's token.
    return Fetched(as_text(raw[1]), _json_pairs(raw[2]), as_text(raw[3]) if len(raw) > 3 else token)


def _fetch_result(raw: Sequence[Any], token: str) -> FetchResult:
    if raw[0] == 1:
        return FetchResult(_fetched(raw, token))
    if raw[0] == 2:  # a rate limit holds fetches back for raw[1] ms
        return FetchResult(None, rate_limit_ms=int(raw[1]))
    return FetchResult(None, int(raw[1]) if len(raw) > 1 else None)


def _fetch_args(request: FetchRequest, token: str) -> list[str | int]:
    name = request.worker_name
    limiter = request.limiter
    return [
        token,
        px(request.lock_duration),
        "0" if name is None else "1",
        name or "",
        *(("", "") if limiter is None else limiter),
    ]


def add_args(job: NewJob) -> list[str | int]:
    """A new job as the add scripts take it (add_jobs, add_flow): name, data, opts, timestamp,
    delay, priority, lifo ("1"/"0"), custom id ("" for the counter's next value)."""
    name, data, opts, timestamp, delay, priority, lifo, job_id = job
    return [name, data, opts, timestamp, delay, priority, "1" if lifo else "0", job_id or ""]


class JobFlowOps(RedisCore):
    """The core job flow's operations."""

    @reaching
    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        """Store new jobs atomically, in order (``ADD``, ``ADD_PRIORITIZED``, ``ADD_DELAYED``)."""
        if not jobs:
            return AddResult([], [])
        args: list[str | int] = []
        for job in jobs:
            args += add_args(job)
        raw = await self._scripts.run("add_jobs", self.keys(queue), args)
        return AddResult(
            [as_text(job_id) for job_id in raw[::2]], [flag == 1 for flag in raw[1::2]]
        )

    @reaching
    async def fetch_next(self, queue: str, request: FetchRequest, now: int) -> FetchResult:
        """Promote due delayed jobs, then take and lock the next job (``FETCH``)."""
        token = request.lock_token(self._token_numbers)
        token_args = _fetch_args(request, token)
        args = [*token_args[:4], now, *token_args[4:]]
        return _fetch_result(await self._scripts.run("fetch_next", self.keys(queue), args), token)

    @reaching
    async def finish(
        self,
        queue: str,
        job_id: str,
        token: str,
        outcome: Outcome,
        now: int,
        fetch: FetchRequest | None = None,
    ) -> FinishResult:
        """Apply an attempt's outcome if ``token`` holds the lock; optionally fetch the next job
        in the same script."""
        count: int | str = ""
        age: int | str = ""
        delay: int | str = ""
        stacktrace = ""
        if isinstance(outcome, Complete):
            kind, text = "complete", outcome.return_value
            keep = outcome.keep
        else:
            text, stacktrace = outcome.reason, outcome.stacktrace
            if isinstance(outcome, Fail):
                kind, keep = "fail", outcome.keep
            else:
                keep = None
                if isinstance(outcome, RetryLater):
                    kind, delay = "retry_later", outcome.delay_ms
                else:
                    kind = "retry_now"
        if keep is not None:
            count = "" if keep.count is None else keep.count
            age = "" if keep.age_ms is None else keep.age_ms
        args: list[str | int] = [job_id, token, now, kind, text, stacktrace, count, age, delay]
        if fetch is None:
            args.append("0")
        else:
            next_token = fetch.lock_token(self._token_numbers)
            args += ["1", *_fetch_args(fetch, next_token)]
        raw = await self._scripts.run("finish", self.keys(queue), args)
        code = ResultCode(raw[0])
        if fetch is None or code is not ResultCode.OK:
            return code
        return _fetched(raw[1], next_token) or code

    @reaching
    async def extend_locks(
        self, queue: str, locks: Sequence[tuple[str, str]], lock_duration: int
    ) -> list[str]:
        """Re-arm the locks that still hold their token; return the tokens that lost theirs."""
        if not locks:
            return []
        args: list[str | int] = [px(lock_duration)]
        for job_id, token in locks:
            args += [job_id, token]
        raw = await self._scripts.run("extend_locks", self.keys(queue), args)
        return [as_text(token) for token in raw]

    @reaching
    async def release(self, queue: str, job_id: str, token: str, now: int) -> ResultCode:
        """Put an owned active job back at the front of wait (``RELEASE``)."""
        raw = await self._scripts.run("release", self.keys(queue), [job_id, token])
        return ResultCode(raw)

    @reaching
    async def check_stalled(
        self, queue: str, *, max_stalled_count: int, stalled_interval: int, now: int
    ) -> StalledCheck:
        """One throttled two-phase stalled check (``RECOVER_STALLED`` or ``FAIL``)."""
        args: list[str | int] = [max_stalled_count, px(stalled_interval), now]
        raw = await self._scripts.run(
            "check_stalled", self.keys(queue), [*args, STALLED_LIMIT_REASON]
        )
        return StalledCheck(
            ran=raw[0] == 1,
            recovered=[as_text(job_id) for job_id in raw[1]],
            failed=[as_text(job_id) for job_id in raw[2]],
        )

    @reaching
    async def update_progress(self, queue: str, job_id: str, progress: str) -> ResultCode:
        """Store a job's progress and log a ``progress`` event."""
        raw = await self._scripts.run("update_progress", self.keys(queue), [job_id, progress])
        return ResultCode(raw)
