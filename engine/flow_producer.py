"""FlowProducer: adds trees of jobs (a parent waiting for its children) across queues, all or
nothing, and reads them back (BullMQ's ``FlowProducer``).

A flow is ``{"name", "queue_name", "data", "opts", "children": [...]}``; each child is a flow
itself. A node with children is stored in waiting-children and becomes ready when its children
are done (see :mod:`corral.engine.flows` for the failure options). Each node's ``opts`` takes the
options of :meth:`corral.engine.queue.Queue.add`; ids default to random UUIDs, as in BullMQ 6.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from corral.engine.clock import Clock, SystemClock
from corral.engine.errors import InvalidArgumentError
from corral.engine.flows import (
    ParentLink,
    check_dedup_in_flow,
    parent_link_from_options,
    refused_parent,
)
from corral.engine.job import Job, validate_queue_name
from corral.engine.queue import Queue
from corral.engine.storage import FlowNode, Storage

_NODE_KEYS = frozenset({"name", "queue_name", "data", "opts", "children"})


@dataclasses.dataclass(slots=True)
class JobNode:
    """One job of a flow and its children (None for a job that has none)."""

    job: Job
    children: list[JobNode] | None = None


@dataclasses.dataclass(slots=True)
class _Planned:
    """A node turned into what the store takes, with where its children sit in the plan."""

    queue: Queue
    node: FlowNode
    children: list[int]


class FlowProducer:
    """Adds flows to any queues of one backend.

    Args:
        backend: where the queues are stored.
        clock: source of the jobs' timestamps; the system clock by default.
        rng: source of the random job ids (a seeded ``random.Random`` makes them repeatable).
    """

    def __init__(
        self, backend: Storage, *, clock: Clock | None = None, rng: random.Random | None = None
    ) -> None:
        self.backend = backend
        self.clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._queues: dict[str, Queue] = {}

    def _queue(self, name: object) -> Queue:
        checked = validate_queue_name(name)
        queue = self._queues.get(checked)
        if queue is None:
            queue = self._queues[checked] = Queue(checked, self.backend, clock=self.clock)
        return queue

    async def add(self, flow: Mapping[str, Any]) -> JobNode:
        """Add one flow, atomically; return its tree of jobs.

        Raises:
            InvalidArgumentError: a node is malformed or has invalid options (naming the node);
                nothing is stored.
            MissingParentError: the root's ``opts.parent`` names no job; nothing is stored.
        """
        return (await self.add_bulk([flow]))[0]

    async def add_bulk(self, flows: Iterable[Mapping[str, Any]]) -> list[JobNode]:
        """Add several flows in one atomic step (all of them or none); return their trees."""
        now = self.clock.now_ms()
        plan: list[_Planned] = []
        roots: list[int] = []
        # Level by level across all the flows (roots, then their children, then theirs...):
        # the order Node BullMQ stores a flow's jobs in, so each queue serves them alike.
        pending: collections.deque[tuple[object, ParentLink | None, int | None, str]]
        pending = collections.deque((flow, None, None, "flow") for flow in flows)
        while pending:
            flow, link, parent_index, where = pending.popleft()
            index, me, children = self._plan(flow, link, plan, now, where)
            if parent_index is None:
                roots.append(index)
            else:
                plan[parent_index].children.append(index)
            pending.extend(
                (child, me, index, f"{where}.children[{n}]") for n, child in enumerate(children)
            )
        added = await self.backend.add_flow([p.node for p in plan], now)
        refused_parent(added, "addJob")
        jobs: list[Job] = []
        for planned, job_id, created in zip(plan, added.job_ids, added.created, strict=True):
            queue = planned.queue
            found = (await queue._jobs_added([planned.node.job], [job_id], [created]))[0]
            link = planned.node.parent
            if link is not None and created:
                found._set_field("parentKey", link.key)
                found._set_field("parent", link.field())
            jobs.append(found)

        def tree(index: int) -> JobNode:
            children = plan[index].children
            return JobNode(jobs[index], [tree(c) for c in children] if children else None)

        return [tree(root) for root in roots]

    def _plan(
        self,
        flow: object,
        parent: ParentLink | None,
        plan: list[_Planned],
        now: int,
        where: str,
    ) -> tuple[int, ParentLink, Sequence[object]]:
        """Validate one node and append it to ``plan``; its index, the link its children get,
        and its children (not yet planned)."""
        if not isinstance(flow, Mapping):
            raise InvalidArgumentError(f"{where} must be a mapping, got {flow!r}")
        unknown = set(flow) - _NODE_KEYS
        if unknown:
            raise InvalidArgumentError(
                f"{where} has unknown key(s) {sorted(unknown)}; expected {sorted(_NODE_KEYS)}"
            )
        for required in ("name", "queue_name"):
            if required not in flow:
                raise InvalidArgumentError(f"{where} has no {required}")
        queue = self._queue(flow["queue_name"])
        opts = flow.get("opts") or {}
        if not isinstance(opts, Mapping):
            raise InvalidArgumentError(f"{where}: opts must be a mapping, got {opts!r}")
        children = flow.get("children") or []
        if not isinstance(children, Sequence) or isinstance(children, str):
            raise InvalidArgumentError(f"{where}: children must be a list, got {children!r}")
        options = dict(opts)
        try:
            if parent is not None:
                if "parent" in options:
                    raise InvalidArgumentError("a child's parent is the node it is listed under")
                options["parent"] = {"id": parent.job_id, "queue": parent.queue_key}
            check_dedup_in_flow(options, has_children=bool(children))
            link = parent_link_from_options(options)
            job_id = options.get("job_id")
            if job_id is None:
                job_id = options["job_id"] = str(
                    uuid.UUID(int=self._rng.getrandbits(128), version=4)
                )
            new = queue._new_job(flow["name"], flow.get("data"), options, now)
        except InvalidArgumentError as exc:
            raise type(exc)(f"{where} ({flow.get('name')!r}): {exc}") from exc
        index = len(plan)
        planned = _Planned(queue, FlowNode(queue.name, new, link, bool(children)), [])
        plan.append(planned)
        me = ParentLink(self.backend.flow_queue_key(queue.name), job_id)
        return index, me, children

    async def get_flow(
        self, job_id: str, queue_name: str, *, depth: int = 10, max_children: int = 20
    ) -> JobNode | None:
        """The job and its children, ``depth`` levels down, at most ``max_children`` per node
        (BullMQ's ``getFlow``); None if the job does not exist."""
        job = await self._queue(queue_name).get_job(job_id)
        if job is None:
            return None
        return await self._subtree(job, depth, max_children)

    async def _subtree(self, job: Job, depth: int, max_children: int) -> JobNode:
        if depth <= 0:
            return JobNode(job)
        found = await self.backend.get_dependencies(job.queue_name, job.id)
        keys = found.child_keys()[:max_children]
        prefix = self.backend.flow_queue_key("")  # "<prefix>:"
        children = []
        for key in keys:
            queue_key, _, child_id = key.rpartition(":")
            if not queue_key.startswith(prefix):
                continue  # a child under another prefix: not this backend's to read
            child = await self._queue(queue_key[len(prefix) :]).get_job(child_id)
            if child is not None:
                children.append(await self._subtree(child, depth - 1, max_children))
        return JobNode(job, children or None)
