"""The reference model of flows (issue 16): parents waiting for their children, what a child's
final outcome does to its parent, removal cascades, step jobs.

:class:`FlowModel` is a mixin of :class:`corral.sim.model.QueueModel`. It is written from
BullMQ 6.7's scripts as ``bullmq-features.md`` §3 describes them and from the policy of
:mod:`corral.engine.flows` (which failure flag does what), not from the backends' code, so that
the machine in ``tests/engine/test_state_machine.py`` checks the backends against it:

* Every parent has a :class:`ParentRecord`: BullMQ's ``<parent>:dependencies`` (the pending
  children's job keys), ``:processed`` (child key -> return value), ``:failed`` (child key ->
  reason: children failed with ``ignore_dependency_on_failure`` or
  ``continue_parent_on_failure``, "ignored" to the readers) and ``:unsuccessful`` (child key ->
  failure time: ``fail_parent_on_failure``). A job gets one when it is added with children or
  a child is added under it, and loses it when it is deleted.
* A child holds ``parentKey`` and ``parent`` in its hash (the model keeps them with the other
  extra fields); the failure flag is read from ``parent`` only, as the scripts read it.
* A parent leaves waiting-children (``RELEASE_PARENT*``: to delayed when it has a delay, else
  prioritized by its priority, else the front of wait) when its last pending child completes,
  or fails with ``idof``/``rdof``; at once when a child fails with ``cpof`` or ``fpof`` (which
  also sets ``defa`` and lifts a delayed parent, its delay set to 0). A deleted child is
  detached: soft (remove, retention) releases a parent it was the last pending child of to the
  front of wait; hard (clean, drain, obliterate) deletes that parent too (``DELETE_PARENT``,
  and on up the tree). Removing a job removes its descendants first, children before parents.
* A parent with pending children may not complete (-4), nor one with an ``fpof`` failure (-9),
  checked before the lock. Retrying a finished child makes it pending again (its result or
  failure record dropped); its parent is not moved.

The model holds one queue: a parent or child in another queue is outside it (a flow whose nodes
all live in the model's queue is what it checks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from corral.engine.errors import ResultCode
from corral.engine.flows import (
    ChildFailure,
    Dependencies,
    ParentLink,
    child_failure,
    parse_parent_field,
    release_transition,
)
from corral.engine.states import JobState, Transition
from corral.engine.storage import AddResult, FlowAdded, FlowNode, NewJob

if TYPE_CHECKING:
    from corral.sim.model import OrderKey, _Job

#: Deletions that detach the hard way (BullMQ's ``removeJob(hard=true)``).
HARD_DELETIONS: Final = frozenset(
    {Transition.CLEAN, Transition.DRAIN, Transition.OBLITERATE, Transition.DELETE_PARENT}
)


@dataclasses.dataclass
class ParentRecord:
    """A parent's children by outcome (see the module docstring)."""

    dependencies: set[str] = dataclasses.field(default_factory=set)
    processed: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    unsuccessful: dict[str, int] = dataclasses.field(default_factory=dict)

    def children(self) -> set[str]:
        """Every child's key, whatever its outcome."""
        return {*self.dependencies, *self.processed, *self.failed, *self.unsuccessful}


class FlowModel:
    """Flows of :class:`~corral.sim.model.QueueModel` (see the module docstring)."""

    if TYPE_CHECKING:  # provided by QueueModel
        _jobs: dict[str, _Job]
        _id_counter: int

        def _move(self, job: _Job, transition: Transition, order: OrderKey = ...) -> None: ...
        def _front_of_line(self) -> OrderKey: ...
        def _priority_place(self, priority: int) -> OrderKey: ...
        def _delayed_place(self, job_id: str, due_ms: int) -> OrderKey: ...
        def _owner_check(self, job_id: str, token: str) -> ResultCode: ...
        def _dedup_removed(self, job: _Job) -> None: ...
        def add_jobs(self, jobs: Sequence[NewJob]) -> AddResult: ...

    def _init_flows(self, queue: str, prefix: str) -> None:
        self._queue = queue
        self._queue_key = f"{prefix}:{queue}"
        self._flows: dict[str, ParentRecord] = {}

    # ------------------------------------------------------------------ keys and links

    def _job_key(self, job_id: str) -> str:
        return f"{self._queue_key}:{job_id}"

    def _by_key(self, key: str) -> _Job | None:
        """The job a job key names, if it is in this queue and exists (the id is all that
        follows the queue key: a scheduler's iteration, ``repeat:<id>:<ms>``, has colons)."""
        start = self._queue_key + ":"
        return self._jobs.get(key[len(start) :]) if key.startswith(start) else None

    def _link(self, job: _Job) -> ParentLink | None:
        return parse_parent_field(job.extra.get("parent"), job.extra.get("parentKey"))

    def _pending_in_parent(self, job: _Job) -> tuple[_Job, ParentRecord] | None:
        """The child's parent and its record, the child taken out of its pending dependencies;
        None when it was not pending there (no parent, the parent gone, or already done)."""
        link = self._link(job)
        parent = None if link is None else self._by_key(link.key)
        record = None if parent is None else self._flows.get(parent.id)
        key = self._job_key(job.id)
        if parent is None or record is None or key not in record.dependencies:
            return None
        record.dependencies.discard(key)
        return parent, record

    def _release(self, parent: _Job, now: int, *, to_wait: bool = False) -> None:
        """``moveParentToWait``: out of waiting-children (or delayed) by the parent's own delay
        and priority; ``to_wait``: the front of wait whatever they are (a detached child)."""
        delay = parent.delay if parent.state is JobState.WAITING_CHILDREN else 0
        priority = 0 if to_wait else parent.priority
        transition = release_transition(priority, 0 if to_wait else delay)
        if transition is Transition.RELEASE_PARENT_DELAYED:
            self._move(parent, transition, self._delayed_place(parent.id, now + delay))
        elif transition is Transition.RELEASE_PARENT_PRIORITIZED:
            self._move(parent, transition, self._priority_place(priority))
        else:
            self._move(parent, transition, self._front_of_line())

    # ------------------------------------------------------------------ adding flows

    def flow_queue_key(self) -> str:
        """The queue's key, ``<prefix>:<queue>``."""
        return self._queue_key

    def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        """BullMQ's flow: every node stored (a node with children in waiting-children, scored by
        its timestamp), each child linked to its parent; then each parent with nothing pending
        released. Refused whole (-5, -7) before anything is stored."""
        from corral.sim.model import _Job  # a cycle at import time

        for node in nodes:
            if node.queue != self._queue:
                raise NotImplementedError(f"the model holds one queue, not {node.queue!r}")
        refused = self._flow_refusal(nodes)
        if refused is not None:
            return refused
        result = FlowAdded([], [])
        for node in nodes:
            job_id = node.job[7] or ""
            if node.waits_for_children and job_id not in self._jobs:
                self._id_counter += 1
                name, data, opts, timestamp, delay, priority, _, _ = node.job
                job = _Job(job_id, name, data, opts, timestamp, delay, priority)
                self._flows[job_id] = ParentRecord()
                self._move(job, Transition.ADD_WAITING_CHILDREN, (timestamp, 0, job_id))
                created = True
            else:
                added = self.add_jobs([node.job])
                job_id, created = added.job_ids[0], added.created[0]
                if node.waits_for_children:
                    self._flows.setdefault(job_id, ParentRecord())
            result.job_ids.append(job_id)
            result.created.append(created)
            if node.parent is not None:
                self._attach(self._jobs[job_id], node.parent)
        for node in nodes:
            parent = self._jobs.get(node.job[7] or "")
            record = None if parent is None else self._flows.get(parent.id)
            if (
                node.waits_for_children
                and parent is not None
                and record is not None
                and not record.dependencies
                and parent.state is JobState.WAITING_CHILDREN
            ):
                self._release(parent, now)
        return result

    def _flow_refusal(self, nodes: Sequence[FlowNode]) -> FlowAdded | None:
        in_flow = {self._job_key(node.job[7] or "") for node in nodes}
        for node in nodes:
            link = node.parent
            if link is None:
                continue
            if link.key not in in_flow and self._by_key(link.key) is None:
                return FlowAdded([], [], ResultCode.MISSING_PARENT, link.key)
            existing = self._jobs.get(node.job[7] or "")
            old_key = None if existing is None else existing.extra.get("parentKey")
            if old_key and old_key != link.key and self._by_key(old_key) is not None:
                return FlowAdded([], [], ResultCode.PARENT_CANNOT_BE_REPLACED, link.key)
        return None

    def _attach(self, child: _Job, link: ParentLink) -> None:
        """Write the child's ``parentKey`` and ``parent``; a completed child's result goes
        straight to its parent's processed, any other child is pending there."""
        child.extra["parentKey"] = link.key
        child.extra["parent"] = link.field()
        parent = self._by_key(link.key)
        assert parent is not None  # (checked by _flow_refusal)
        record = self._flows.setdefault(parent.id, ParentRecord())
        key = self._job_key(child.id)
        if child.state is JobState.COMPLETED:
            record.processed[key] = child.returnvalue or "null"
        else:
            record.dependencies.add(key)

    # ------------------------------------------------------------------ a child's outcome

    def _parent_refusal(self, job_id: str) -> ResultCode | None:
        """Why a parent may not complete (-4 pending children, -9 an ``fpof`` failure)."""
        record = self._flows.get(job_id)
        if record is None:
            return None
        if record.dependencies:
            return ResultCode.PENDING_DEPENDENCIES
        if record.unsuccessful:
            return ResultCode.FAILED_CHILDREN
        return None

    def _child_completed(self, child: _Job, now: int) -> None:
        if "parentKey" not in child.extra:
            return
        found = self._pending_in_parent(child)
        if found is None:
            return
        parent, record = found
        record.processed[self._job_key(child.id)] = child.returnvalue or "null"
        if not record.dependencies and parent.state is JobState.WAITING_CHILDREN:
            self._release(parent, now)

    def _child_failed(self, child: _Job, reason: str, now: int) -> None:
        """A child failed for good: its flag decides (nothing without one: the parent waits for
        a retry)."""
        if "parentKey" not in child.extra:
            return
        link = self._link(child)
        effect = child_failure("" if link is None else link.flag)
        if effect is ChildFailure.KEEP_WAITING:
            return
        found = self._pending_in_parent(child)
        if found is None:
            return
        parent, record = found
        key = self._job_key(child.id)
        if effect is ChildFailure.FAIL_PARENT:
            record.unsuccessful[key] = now
            if parent.state is JobState.FAILED:
                return
            parent.extra["defa"] = f"child {key} failed"
            if parent.state is JobState.DELAYED:
                parent.delay = 0
            if parent.state in (JobState.WAITING_CHILDREN, JobState.DELAYED):
                self._release(parent, now)
            return
        if effect is not ChildFailure.REMOVE:
            record.failed[key] = reason
        if parent.state is JobState.WAITING_CHILDREN and (
            effect is ChildFailure.CONTINUE_PARENT or not record.dependencies
        ):
            self._release(parent, now)

    def _child_retried(self, child: _Job, state: JobState) -> None:
        """``moveChildBackToParentDependencies``: a finished child retried is pending again
        (its record dropped); the parent stays where it is."""
        parent_key = child.extra.get("parentKey")
        parent = None if parent_key is None else self._by_key(parent_key)
        record = None if parent is None else self._flows.get(parent.id)
        if record is None:
            return
        key = self._job_key(child.id)
        if state is JobState.FAILED:
            dropped = record.unsuccessful.pop(key, None) is not None
            dropped = record.failed.pop(key, None) is not None or dropped
        else:
            dropped = record.processed.pop(key, None) is not None
        if dropped:
            record.dependencies.add(key)

    # ------------------------------------------------------------------ deletion

    def _flow_deleted(self, job: _Job, transition: Transition) -> _Job | None:
        """``job`` is about to be deleted by ``transition``: drop its own record, detach it from
        its parent. Returns a parent the hard path deletes after it (taken out of
        waiting-children by the caller's ``DELETE_PARENT``)."""
        self._flows.pop(job.id, None)
        if "parentKey" not in job.extra:
            return None
        found = self._pending_in_parent(job)
        if found is None:
            return None
        parent, record = found
        if record.dependencies or parent.state is not JobState.WAITING_CHILDREN:
            return None
        if transition in HARD_DELETIONS:
            return parent
        self._release(parent, 0, to_wait=True)
        return None

    def _removal_order(self, job: _Job) -> list[_Job]:
        """``job`` and its descendants, each child before its parent (children by key)."""
        order: list[_Job] = []
        seen = {self._job_key(job.id)}

        def visit(node: _Job) -> None:
            record = self._flows.get(node.id)
            for key in sorted(record.children() if record is not None else ()):
                child = self._by_key(key)
                if child is not None and key not in seen:
                    seen.add(key)
                    visit(child)
            order.append(node)

        visit(job)
        return order

    def _remove_tree(self, doomed: list[_Job]) -> None:
        """Delete a removed job's tree (``REMOVE`` on each, children first); no child
        removed releases a parent going too."""
        for job in doomed:
            self._flows.pop(job.id, None)
        for job in doomed:
            self._move(job, Transition.REMOVE)
            self._dedup_removed(job)

    # ------------------------------------------------------------------ Storage operations

    def get_dependencies(self, job_id: str) -> Dependencies:
        """The parent's children by outcome (``failed`` by failure time, then key, as
        ``ZRANGE``)."""
        record = self._flows.get(job_id)
        if record is None:
            return Dependencies()
        failed = sorted(record.unsuccessful, key=lambda key: (record.unsuccessful[key], key))
        return Dependencies(
            dict(record.processed), sorted(record.dependencies), dict(record.failed), failed
        )

    def remove_child_dependency(self, job_id: str) -> int:
        """Detach a child from its parent: 0 done (a last pending child releases a waiting
        parent to the front of wait), 1 no relationship, -1 no child, -5 no parent."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        link = self._link(job)
        if link is None:
            return 1
        parent = self._by_key(link.key)
        if parent is None:
            return ResultCode.MISSING_PARENT
        record = self._flows.get(parent.id)
        key = self._job_key(job_id)
        if record is None or key not in record.dependencies:
            return 1
        record.dependencies.discard(key)
        job.extra.pop("parentKey", None)
        job.extra.pop("parent", None)
        if not record.dependencies and parent.state is JobState.WAITING_CHILDREN:
            self._release(parent, 0, to_wait=True)
        return ResultCode.OK

    def move_to_waiting_children(
        self, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        """A step job waits for its children: -1 no job, -9 an ``fpof`` child failed, 1 nothing
        pending (or not that child), else the lock checks, then 0 (scored ``now``)."""
        job = self._jobs.get(job_id)
        if job is None:
            return ResultCode.MISSING_JOB
        record = self._flows.get(job_id)
        if record is not None and record.unsuccessful:
            return ResultCode.FAILED_CHILDREN
        pending = record is not None and (
            child_key in record.dependencies if child_key else bool(record.dependencies)
        )
        if not pending:
            return 1
        code = self._owner_check(job_id, token)
        if code is not ResultCode.OK:
            return code
        self._move(job, Transition.MOVE_TO_WAITING_CHILDREN, (now, 0, job_id))
        return ResultCode.OK

    def move_to_delayed(self, job_id: str, token: str, delay: int, now: int) -> ResultCode:
        """A step job delays itself until ``now + delay``: no attempt counted, ``delay`` set."""
        code = self._owner_check(job_id, token)
        if code is ResultCode.OK:
            job = self._jobs[job_id]
            job.delay = delay
            self._move(job, Transition.MOVE_TO_DELAYED, self._delayed_place(job_id, now + delay))
        return code
