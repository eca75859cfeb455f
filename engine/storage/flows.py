"""Flows: parents waiting for their children, across queues, and step jobs (issue 16).

A child's completion and final failure are recorded into its parent by the job flow's own
``finish`` and ``check_stalled`` (in the same atomic step); the operations here add whole trees,
read a parent's children, detach a child, and move a running job for a step job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from corral.engine.errors import ResultCode
from corral.engine.flows import Dependencies, ParentLink
from corral.engine.storage.records import NewJob


@dataclasses.dataclass(slots=True)
class FlowNode:
    """One job of a flow, ready to store.

    Attributes:
        queue: the job's queue name.
        job: the job (its id set: a flow's ids are chosen before anything is stored).
        parent: the parent it is added under, or None for a root with no parent.
        waits_for_children: True for a node with children: it is stored in waiting-children.
    """

    queue: str
    job: NewJob
    parent: ParentLink | None
    waits_for_children: bool


@dataclasses.dataclass(slots=True)
class FlowAdded:
    """What ``add_flow`` did: the ids and whether each was created, or a refusal (nothing
    stored) with the parent key it concerns (``MISSING_PARENT``, ``PARENT_CANNOT_BE_REPLACED``)."""

    job_ids: list[str]
    created: list[bool]
    code: ResultCode = ResultCode.OK
    parent_key: str = ""


class FlowStorage(Protocol):
    """Flows: trees of jobs across queues, a parent's children, step jobs."""

    def flow_queue_key(self, queue: str) -> str:
        """The queue's key ``<prefix>:<queue>``, as a child's ``opts.parent.queue`` names it."""
        ...

    async def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        """Store every node, parents before their children, all or nothing, across queues
        (``ADD_WAITING_CHILDREN`` for a node with children, else as ``add_jobs``); each child
        is written with ``parentKey`` and ``parent`` and added to its parent's dependencies.
        A parent outside the flow that does not exist refuses the whole flow (-5); a job id that
        exists already is linked to its new parent as BullMQ does (its result recorded if it
        completed), unless it has another parent (-7). Parents left with no pending child are
        released at the end."""
        ...

    async def get_dependencies(self, queue: str, job_id: str) -> Dependencies:
        """A parent's children by outcome (empty for a job with none, or no job)."""
        ...

    async def remove_child_dependency(self, queue: str, job_id: str) -> int:
        """Detach a child from its parent: 0 done (a last pending child releases the parent),
        1 no relationship, -1 no such child, -5 no such parent (BullMQ's codes)."""
        ...

    async def move_to_waiting_children(
        self, queue: str, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        """A step job waits for its children (``MOVE_TO_WAITING_CHILDREN``): 0 moved, 1 nothing
        to wait for (the job stays active), or -1/-2/-3/-6, or -9 when a child failed with
        ``fail_parent_on_failure``. With ``child_key``, waits only if that child is pending."""
        ...

    async def move_to_delayed(
        self, queue: str, job_id: str, token: str, delay: int, now: int
    ) -> ResultCode:
        """A step job delays itself until ``now + delay`` (``MOVE_TO_DELAYED``): no attempt
        counted, ``delay`` field set, event ``delayed``."""
        ...
