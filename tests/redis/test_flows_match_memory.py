"""Flows on Redis (fakeredis, virtual clock) against the memory backend: random seeded sequences
of flows in one queue (so that clean, drain and obliterate take BullMQ's hard path through
parents), mixed with the job flow, the queue operator calls and retries of finished jobs, must
give identical results, identical observable state, and identical children per parent."""

from __future__ import annotations

import random

import pytest
from test_queue_ops_match_memory import operator_step
from test_redis_matches_memory import Twins, play, step

from corral.engine.flows import FAILURE_FLAGS, ParentLink
from corral.engine.states import JobState
from corral.engine.storage import FlowNode, new_job
from corral.sim.loop import VirtualClock

Q = "q"
_FLAGS = ("", *FAILURE_FLAGS.values())


def random_flow(rng: random.Random, n: int, now: int) -> list[FlowNode]:
    """A parent ``P<n>`` with 1-3 children, one of them maybe a parent of 1-2 children."""
    queue_key = f"bull:{Q}"

    def node(job_id: str, parent: ParentLink | None, children: int) -> FlowNode:
        job = new_job("f", str(n), "{}", now, job_id=job_id)
        return FlowNode(Q, job, parent, children > 0)

    nodes = [node(f"P{n}", None, 1)]
    for k in range(rng.randint(1, 3)):
        child_id = f"P{n}.{k}"
        grandchildren = rng.choice([0, 0, 1, 2])
        link = ParentLink(queue_key, f"P{n}", rng.choice(_FLAGS))
        nodes.append(node(child_id, link, grandchildren))
        for g in range(grandchildren):
            nodes.append(node(f"{child_id}.{g}", ParentLink(queue_key, child_id), 0))
    return nodes


async def flow_step(twins: Twins, rng: random.Random, n: int) -> None:
    now = twins.clock.now_ms()
    roll = rng.random()
    if roll < 0.12:
        added = await twins.call("add_flow", random_flow(rng, n, now), now)
        twins.ids.update(added.job_ids)
    elif roll < 0.2:
        job_id = rng.choice(sorted(twins.ids) or ["P0"])
        state = rng.choice([JobState.COMPLETED, JobState.FAILED])
        await twins.call(
            "retry_job",
            Q,
            job_id,
            state,
            reset_attempts_made=False,
            reset_attempts_started=False,
            now=now,
        )
    elif roll < 0.3:
        await operator_step(twins, rng)
    else:
        await step(twins, rng, n)
    if n % 10 == 0:
        for job_id in sorted(twins.ids):
            if job_id.startswith("P"):
                await twins.call("get_dependencies", Q, job_id)


@pytest.mark.parametrize("seed", range(6))
async def test_flows_match_the_memory_backend(clock: VirtualClock, seed: int) -> None:
    await play(clock, random.Random(seed), flow_step)
