"""The Redis backend (on fakeredis, virtual clock) against the memory backend, operation by
operation: random seeded sequences of every Storage operation go to both, and every result and
the whole observable state (structures in order, job hashes, locks, stalled marks, the marker,
the event log with its ids) must be identical."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.backends.redis.fake import virtual_fakeredis
from corral.engine.job import JobOptions, KeepJobs, encode_json
from corral.engine.states import JobState
from corral.engine.storage import (
    Complete,
    Fail,
    FetchRequest,
    NewJob,
    Outcome,
    RetryLater,
    RetryNow,
    new_job,
    next_job,
)
from corral.sim.loop import VirtualClock

Q = "q"
STEPS = 150
#: Every operation's result is compared; the whole state every few steps (fakeredis is slow).
FULL_COMPARE_EVERY = 3


class Twins:
    """Applies each call to both backends and checks that they answer alike."""

    def __init__(self, memory: MemoryBackend, redis: RedisBackend, clock: VirtualClock) -> None:
        self.memory, self.redis, self.clock = memory, redis, clock
        self.ids: set[str] = set()
        self.tokens: dict[str, list[str]] = {}  # job id -> tokens it was fetched with
        self.log: list[str] = []

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.log.append(f"{method}{args}{kwargs}")
        expected = await getattr(self.memory, method)(*args, **kwargs)
        actual = await getattr(self.redis, method)(*args, **kwargs)
        assert actual == expected, self.explain(f"{method} returned differently")
        return expected

    def explain(self, what: str) -> str:
        return f"{what} after:\n  " + "\n  ".join(self.log[-12:])

    async def compare_state(self) -> None:
        memory, redis = self.memory, self.redis
        assert await redis.get_counts(Q) == await memory.get_counts(Q), self.explain("counts")
        for state in JobState:
            for asc in (True, False):
                ids = await redis.get_job_ids(Q, state, 0, -1, asc)
                assert ids == await memory.get_job_ids(Q, state, 0, -1, asc), self.explain(
                    f"{state} ids"
                )
        for job_id in sorted(self.ids):
            for read in ("get_job", "get_state", "get_lock", "is_marked_stalled"):
                got = await getattr(redis, read)(Q, job_id)
                assert got == await getattr(memory, read)(Q, job_id), self.explain(
                    f"{read}({job_id})"
                )
        assert await redis.is_paused(Q) == await memory.is_paused(Q)
        assert await redis.get_events(Q) == await memory.get_events(Q), self.explain("events")
        marker = await redis.client.zrange(redis.keys(Q).marker, 0, -1, withscores=True)
        stored = memory._store(Q).marker
        assert {m: int(s) for m, s in marker} == stored, self.explain("marker")


def random_job(rng: random.Random, now: int) -> NewJob:
    options: dict[str, Any] = {}
    if rng.random() < 0.3:
        options["delay"] = rng.choice([1, 50, 100, 2_000])
    if rng.random() < 0.3:
        options["priority"] = rng.choice([1, 2, 3])
    if rng.random() < 0.2:
        options["lifo"] = True
    if rng.random() < 0.2:
        options["job_id"] = rng.choice(["a", "b", "c"])
    for option in ("remove_on_complete", "remove_on_fail"):
        if rng.random() < 0.3:
            options[option] = rng.choice([True, 1, 2, {"age": 1}, {"age": 2, "count": 1}])
    opts = JobOptions.build(options)
    return new_job(
        name=rng.choice(["x", "y"]),
        data=str(rng.randrange(100)),
        opts=encode_json(opts.to_json(), "opts"),
        timestamp=now,
        delay=opts.delay,
        priority=opts.priority,
        lifo=opts.lifo,
        job_id=opts.job_id,
    )


def random_outcome(rng: random.Random) -> Outcome:
    keep = rng.choice([KeepJobs(), KeepJobs(count=1), KeepJobs(age_ms=1_000), KeepJobs(count=0)])
    return rng.choice(
        [
            Complete('"ok"', keep),
            Fail("bad", '["trace"]', keep),
            RetryLater(rng.choice([1, 100, 1_000]), "later", "[]"),
            RetryNow("again", "[]"),
        ]
    )


async def step(twins: Twins, rng: random.Random, n: int) -> None:
    clock = twins.clock
    now = clock.now_ms()
    roll = rng.random()
    known = sorted(twins.ids) or ["1"]
    if roll < 0.2:
        jobs = [random_job(rng, now) for _ in range(rng.choice([1, 1, 3]))]
        twins.ids.update((await twins.call("add_jobs", Q, jobs)).job_ids)
    elif roll < 0.4:
        request = FetchRequest(
            f"t{n}" if rng.random() < 0.5 else None,  # or minted by each store, alike
            rng.choice([100, 1_000, 5_000]),
            rng.choice([None, "w"]),
            token_prefix="m:",
        )
        result = await twins.call("fetch_next", Q, request, now)
        if result.job is not None:
            twins.tokens.setdefault(result.job.job_id, []).append(result.job.token)
    elif roll < 0.6:
        job_id = rng.choice(known)
        token = rng.choice([*twins.tokens.get(job_id, []), "stranger"])
        fetch = (
            FetchRequest(rng.choice([f"t{n}", None]), 1_000, token_prefix="m:")
            if rng.random() < 0.5
            else None
        )
        result = await twins.call("finish", Q, job_id, token, random_outcome(rng), now, fetch)
        fetched = next_job(result)
        if fetched is not None:
            twins.tokens.setdefault(fetched.job_id, []).append(fetched.token)
    elif roll < 0.65:
        pairs = [(i, t) for i, tokens in twins.tokens.items() for t in tokens]
        chosen = rng.sample(pairs, min(len(pairs), rng.choice([1, 2, 3])))
        await twins.call("extend_locks", Q, chosen, rng.choice([100, 1_000]))
    elif roll < 0.7:
        job_id = rng.choice(known)
        token = rng.choice([*twins.tokens.get(job_id, []), "stranger"])
        await twins.call("release", Q, job_id, token, now)
    elif roll < 0.8:
        await twins.call(
            "check_stalled",
            Q,
            max_stalled_count=rng.choice([0, 1]),
            stalled_interval=rng.choice([2, 100, 1_000]),  # 1 ms: see backend.py
            now=now,
        )
    elif roll < 0.83:
        await twins.call("update_progress", Q, rng.choice(known), str(n))
    elif roll < 0.86:
        await twins.call("remove", Q, rng.choice(known))
    elif roll < 0.9:
        await twins.call("set_paused", Q, rng.random() < 0.5)
    else:
        await asyncio.sleep(rng.choice([0.001, 0.05, 0.1, 0.5, 1.0, 2.0]))


@pytest.mark.parametrize("seed", range(8))
async def test_random_operations_match_the_memory_backend(clock: VirtualClock, seed: int) -> None:
    await play(clock, random.Random(seed), step)


async def play(
    clock: VirtualClock,
    rng: random.Random,
    next_step: Callable[[Twins, random.Random, int], Awaitable[None]],
) -> None:
    """Run ``STEPS`` of ``next_step`` on twin backends, comparing their states as it goes."""
    with virtual_fakeredis(clock):
        client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        redis = RedisBackend(client)
        twins = Twins(MemoryBackend(clock=clock), redis, clock)
        try:
            for n in range(STEPS):
                await next_step(twins, rng, n)
                if n % FULL_COMPARE_EVERY == 0 or n == STEPS - 1:
                    await twins.compare_state()
        finally:
            await redis.close()
            await client.aclose()
        twins.memory.check()
