"""What the state machines of ``test_state_machine`` share: running one backend call, the
job specs and other strategies the rules draw, leases and how a rule tampers with them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Coroutine
from typing import Any, NamedTuple, TypeVar

from hypothesis import strategies as st

from corral.engine.deduplication import Deduplication
from corral.engine.job import JobOptions, KeepJobs, encode_json
from corral.engine.storage import (
    Complete,
    Fail,
    Fetched,
    FetchResult,
    NewJob,
    RetryLater,
    RetryNow,
    new_job,
)

T = TypeVar("T")
QUEUE = "q"
#: JavaScript's Number.MAX_SAFE_INTEGER: a time after every score (delayed scores are ms × 4096).
MAX_SAFE_INTEGER = 2**53 - 1


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending; return its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise AssertionError("a backend operation suspended: only wait_for_work may await")


def canonical(result: T) -> T:
    """``result`` with a fetched job's ``opts`` in sorted key order: Lua's cjson writes a scheduler
    iteration's options in its own key order (as BullMQ's scripts do), the same object."""
    if isinstance(result, FetchResult) and result.job is not None:
        return dataclasses.replace(result, job=canonical(result.job))
    if isinstance(result, Fetched) and "opts" in result.fields:
        opts = json.dumps(json.loads(result.fields["opts"]), sort_keys=True, separators=(",", ":"))
        fields = {**result.fields, "opts": opts}
        return dataclasses.replace(result, fields=fields)
    return result


class Lease(NamedTuple):
    """A (job id, token) pair handed out by a fetch; the machine keeps it after it goes stale."""

    job_id: str
    token: str


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What to add; the timestamp is the client's ``now`` when the rule runs."""

    priority: int
    delay: int
    lifo: bool
    job_id: str | None
    remove_on_fail: KeepJobs
    deduplication: Deduplication | None = None
    data: str = "{}"  # (deduplicated adds draw several: debounce must keep the last one)

    def new_job(self, now: int) -> NewJob:
        opts = JobOptions(
            delay=self.delay,
            priority=self.priority,
            lifo=self.lifo,
            job_id=self.job_id,
            remove_on_fail=self.remove_on_fail,
            deduplication=self.deduplication,
        )
        return new_job(
            name="job",
            data=self.data,
            opts=encode_json(opts.to_json(), "opts"),
            timestamp=now,
            delay=self.delay,
            priority=self.priority,
            lifo=self.lifo,
            job_id=self.job_id,
        )


keeps = st.just(KeepJobs()) | st.builds(
    KeepJobs,
    count=st.none() | st.integers(0, 2),
    age_ms=st.none() | st.sampled_from([0, 1_000, 10_000]),
)
job_specs = st.builds(
    JobSpec,
    priority=st.sampled_from([0, 0, 1, 2, 3]),
    delay=st.one_of(st.just(0), st.just(0), st.integers(1, 3_000)),
    lifo=st.booleans(),
    job_id=st.none() | st.sampled_from(["a", "b", "c"]),  # few names: duplicates happen
    remove_on_fail=keeps,
)
#: Every deduplication mode, on two dedup ids (simple, throttle with a ttl, extend, debounce
#: with replace, reschedule, keep_last_if_active, and their mixes).
DEDUP_IDS = ("d1", "d2")
deduplications = st.builds(
    Deduplication,
    id=st.sampled_from(DEDUP_IDS),
    ttl=st.none() | st.sampled_from([2, 1_000, 5_000]),  # (PX 1 lives 2 ms on Redis)
    extend=st.booleans(),
    replace=st.booleans(),
    reschedule=st.booleans(),
    keep_last_if_active=st.booleans(),
)
dedup_specs = st.builds(
    JobSpec,
    priority=st.sampled_from([0, 0, 2]),
    delay=st.sampled_from([0, 0, 1_000, 3_000]),
    lifo=st.booleans(),
    job_id=st.none() | st.sampled_from(["a", "b"]),
    remove_on_fail=keeps,
    deduplication=deduplications,
    data=st.sampled_from(['{"v":1}', '{"v":2}', '{"v":3}']),
)
outcomes = st.one_of(
    st.builds(Complete, return_value=st.sampled_from(["1", '"ok"']), keep=keeps),
    st.builds(Fail, reason=st.just("boom"), stacktrace=st.just('["trace"]'), keep=keeps),
    st.builds(RetryLater, delay_ms=st.integers(0, 3_000), reason=st.just("later")),
    st.builds(RetryNow, reason=st.just("again")),
)
#: A lock or stalled-check throttle of 1 ms lives 2 ms on Redis (``PX 1``; see the Redis
#: backend's docs), so the machines with Redis start at 2 ms; the memory backend gets 1 ms too.
lock_durations = st.runner().flatmap(lambda machine: st.sampled_from(machine.lock_duration_choices))
stalled_intervals = st.runner().flatmap(
    lambda machine: st.sampled_from(machine.stalled_interval_choices)
)
#: A worker's ``limiter`` (max, duration ms), mostly none.
worker_limiters = st.sampled_from([None, None, None, (1, 1_000), (2, 5_000)])
#: How a rule uses a lease: as held, with a token nobody holds, or on a job that never existed.
tampering = st.sampled_from(["as-held"] * 4 + ["wrong-token", "unknown-job"])
milliseconds = st.sampled_from([1, 999, 1_000, 5_000, 30_000]) | st.integers(0, 40_000)


def leases() -> st.SearchStrategy[Lease]:
    """A lease the model says is still held (mostly, when there is one), else any lease
    handed out so far: most of those are stale (finished, released, expired or re-fetched)."""

    def choose(machine: Any) -> st.SearchStrategy[Lease]:
        every = st.sampled_from(machine.leases)
        held = [lease for lease in machine.leases if machine.holds(lease)]
        return st.sampled_from(held) | st.sampled_from(held) | every if held else every

    return st.runner().flatmap(choose)


def tamper(lease: Lease, how: str) -> Lease:
    if how == "wrong-token":
        return Lease(lease.job_id, "not-a-token")
    if how == "unknown-job":
        return Lease("never-added", lease.token)
    return lease


#: Two job schedulers; ``every`` or a 6-field cron pattern (UTC), with the options that change
#: the slots (``start_date`` is relative to the rule's ``now``).
SCHEDULER_IDS = ("s1", "s2")
repeats = st.one_of(
    st.fixed_dictionaries(
        {"every": st.sampled_from([1_000, 5_000])},
        optional={
            "offset": st.sampled_from([300]),
            "start_date": st.sampled_from([2_000]),
            "limit": st.sampled_from([1, 2]),
        },
    ),
    st.fixed_dictionaries(
        {"pattern": st.sampled_from(["*/5 * * * * *", "0 * * * * *"]), "tz": st.just("UTC")},
        optional={"limit": st.sampled_from([1, 2]), "immediately": st.just(True)},
    ),
)
META = ("max", "duration", "concurrency")
