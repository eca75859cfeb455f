"""The queue operator calls (retry_jobs/promote_jobs' move_jobs_to_wait, clean, drain,
obliterate, get_counts_per_priority) on Redis (fakeredis, virtual clock) against the memory
backend: random seeded sequences mixing them with the job flow must give identical results and
identical observable state (structures in order, hashes, marker, events with their ids).
``trim_events`` is left out: Redis trims whole stream nodes, the memory backend exactly."""

from __future__ import annotations

import random

import pytest
from test_redis_matches_memory import Twins, play, step

from corral.engine.queue_operations import CLEAN_STATES
from corral.engine.states import JobState
from corral.sim.loop import VirtualClock

Q = "q"


async def operator_step(twins: Twins, rng: random.Random) -> None:
    now = twins.clock.now_ms()
    roll = rng.random()
    if roll < 0.3:
        state = rng.choice([JobState.COMPLETED, JobState.FAILED, JobState.DELAYED])
        timestamp = rng.choice([now, now - 500, 2**63])
        await twins.call("move_jobs_to_wait", Q, state, rng.choice([1, 2, 1000]), timestamp, now)
    elif roll < 0.6:
        state = rng.choice(sorted(set(CLEAN_STATES.values()), key=list(JobState).index))
        await twins.call(
            "clean", Q, state, now - rng.choice([0, 100, 1_000]), rng.choice([0, 1, 2])
        )
    elif roll < 0.75:
        await twins.call("drain", Q, rng.random() < 0.5)
    elif roll < 0.8:
        await twins.call("set_paused", Q, True)
        await twins.call("obliterate", Q, rng.choice([1, 3, 1000]), rng.random() < 0.5)
    else:
        await twins.call("get_counts_per_priority", Q, rng.sample([0, 1, 2, 3, 4], 3))


async def mixed_step(twins: Twins, rng: random.Random, n: int) -> None:
    if rng.random() < 0.25:
        await operator_step(twins, rng)
    else:
        await step(twins, rng, n)


@pytest.mark.parametrize("seed", range(6))
async def test_operator_calls_match_the_memory_backend(clock: VirtualClock, seed: int) -> None:
    await play(clock, random.Random(seed), mixed_step)
