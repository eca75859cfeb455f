"""The flows a simulated producer adds (the ``flows`` scenario): random trees drawn from a
:class:`~corral.sim.scenario.FlowSpec` and the run's seed.

Every node gets a custom id unique in the run (``f<n>`` for the n-th root, ``.<k>`` appended per
level), so the oracle, which knows jobs by id, can follow jobs across queues.
"""

from __future__ import annotations

import random
from typing import Any

from corral.sim.scenario import FlowSpec


def draw_flow(spec: FlowSpec, rng: random.Random, n: int, attempts: int) -> dict[str, Any]:
    """The ``n``-th flow of a run: a tree for ``FlowProducer.add``."""
    return _node(spec, rng, f"f{n}", 0, attempts, "")


def _node(
    spec: FlowSpec, rng: random.Random, job_id: str, depth: int, attempts: int, option: str
) -> dict[str, Any]:
    opts: dict[str, Any] = {"job_id": job_id, "attempts": attempts}
    if option:
        opts[option] = True
    node: dict[str, Any] = {
        "name": "flow",
        "queue_name": rng.choice(spec.queues),
        "data": {"id": job_id},
        "opts": opts,
    }
    if depth == 0:
        fan_out = rng.randint(1, spec.max_fan_out)
    elif depth < spec.max_depth and rng.random() < spec.nested_fraction:
        fan_out = rng.randint(1, spec.inner_fan_out)
    else:
        return node
    node["children"] = [
        _node(spec, rng, f"{job_id}.{k}", depth + 1, attempts, rng.choice(spec.options))
        for k in range(fan_out)
    ]
    return node


def count_nodes(flow: dict[str, Any]) -> int:
    """How many jobs a flow holds."""
    return 1 + sum(count_nodes(child) for child in flow.get("children", ()))
