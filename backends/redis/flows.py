"""Flows on Redis (``corral.engine.storage.FlowStorage``): trees added across queues in one
script, a parent's children, step jobs. What a child's finish does to its parent is done by the
job flow's own scripts (``lua/includes/flows.lua``)."""

from __future__ import annotations

from collections.abc import Sequence

from corral.backends.redis.core import RedisCore, hash_tag, reaching
from corral.backends.redis.job_flow import add_args
from corral.backends.redis.server import as_text
from corral.engine.errors import InvalidArgumentError, ResultCode
from corral.engine.flows import Dependencies
from corral.engine.storage import FlowAdded, FlowNode


def _pairs(flat: Sequence[object]) -> dict[str, str]:
    texts = [as_text(item) for item in flat]
    return dict(zip(texts[::2], texts[1::2], strict=True))


class FlowOps(RedisCore):
    """Flows: trees of jobs, a parent's children, step jobs."""

    def flow_queue_key(self, queue: str) -> str:
        return self.keys(queue).base[:-1]

    def _check_one_slot(self, nodes: Sequence[FlowNode]) -> None:
        """On Redis Cluster a flow is one script: every key it touches must share a hash tag."""
        if not self.cluster:
            return
        bases = {self.keys(node.queue).base for node in nodes}
        bases |= {node.parent.queue_key + ":" for node in nodes if node.parent is not None}
        tags = {hash_tag(base) for base in bases}
        if len(tags) != 1 or None in tags:
            raise InvalidArgumentError(
                f"on Redis Cluster a flow is stored in one atomic step, so all its queues must "
                f"share one hash tag (e.g. prefix '{{flows}}'); these do not: {sorted(bases)}"
            )

    @reaching
    async def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        """Store a flow in one script (``ADD_WAITING_CHILDREN`` and the adds)."""
        if not nodes:
            return FlowAdded([], [])
        self._check_one_slot(nodes)
        args: list[str | int] = [now]
        for node in nodes:
            link = node.parent
            args += [
                self.keys(node.queue).base,
                *add_args(node.job),
                "" if link is None else link.key,
                "" if link is None else link.field(),
                "1" if node.waits_for_children else "0",
            ]
        raw = await self._scripts.run("add_flow", self.keys(nodes[0].queue), args)
        code = ResultCode(raw[0])
        if code is not ResultCode.OK:
            return FlowAdded([], [], code, as_text(raw[1]))
        return FlowAdded([as_text(i) for i in raw[1::2]], [flag == 1 for flag in raw[2::2]])

    @reaching
    async def get_dependencies(self, queue: str, job_id: str) -> Dependencies:
        """A parent's children by outcome."""
        processed, pending, failed, unsuccessful = await self._scripts.run(
            "get_dependencies", self.keys(queue), [job_id]
        )
        return Dependencies(
            _pairs(processed),
            sorted(as_text(key) for key in pending),  # (a set: no order of its own)
            _pairs(failed),
            [as_text(key) for key in unsuccessful],
        )

    @reaching
    async def remove_child_dependency(self, queue: str, job_id: str) -> int:
        """Detach a child from its parent (0, 1, -1, -5)."""
        return int(await self._scripts.run("remove_child_dependency", self.keys(queue), [job_id]))

    @reaching
    async def move_to_waiting_children(
        self, queue: str, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        """A step job waits for its children (``MOVE_TO_WAITING_CHILDREN``)."""
        args: list[str | int] = [job_id, token, child_key or "", now]
        return int(await self._scripts.run("move_to_waiting_children", self.keys(queue), args))

    @reaching
    async def move_to_delayed(
        self, queue: str, job_id: str, token: str, delay: int, now: int
    ) -> ResultCode:
        """A step job delays itself (``MOVE_TO_DELAYED``)."""
        args: list[str | int] = [job_id, token, delay, now]
        return ResultCode(await self._scripts.run("move_to_delayed", self.keys(queue), args))
