"""The parent side of flows on the memory backend: what a child's completion, final failure or
deletion does to its parent, applied inside the operation that finishes (or deletes) the child.

Functions here take the backend (a :class:`~corral.backends.memory.core.MemoryCore`) and are
always called with its lock held; the decisions come from :mod:`corral.engine.flows`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from corral.backends.memory.store import ParentKeys, QueueStore
from corral.engine.errors import ResultCode
from corral.engine.flows import (
    DEFAULT_PREFIX,
    ChildFailure,
    ParentLink,
    child_failure,
    parse_parent_field,
    release_transition,
)
from corral.engine.states import JobState, Transition

if TYPE_CHECKING:
    from corral.backends.memory.core import MemoryCore

_QUEUE_KEY_START = DEFAULT_PREFIX + ":"


def queue_key(queue: str) -> str:
    """The memory backend's key of ``queue`` (BullMQ's default prefix)."""
    return _QUEUE_KEY_START + queue


def queue_of(key: str) -> str | None:
    """The queue a queue key names, or None for a key under another prefix."""
    if not key.startswith(_QUEUE_KEY_START):
        return None
    return key[len(_QUEUE_KEY_START) :]


def job_key(queue: str, job_id: str) -> str:
    """A job's key, ``bull:<queue>:<id>`` (what a parent's dependencies hold)."""
    return f"{_QUEUE_KEY_START}{queue}:{job_id}"


def locate_key(core: MemoryCore, key: str) -> tuple[str, QueueStore, str] | None:
    """``(queue, store, id)`` of the job a job key names, if it exists. A queue name holds no
    ``:``, so the id is all that follows the queue's: a job scheduler's iteration
    (``repeat:<id>:<ms>``) can be a parent, as Redis finds its key."""
    if not key.startswith(_QUEUE_KEY_START):
        return None
    queue, found, job_id = key[len(_QUEUE_KEY_START) :].partition(":")
    store = core._queues.get(queue) if found else None
    if store is None or job_id not in store.jobs:
        return None
    return queue, store, job_id


def parent_of(
    core: MemoryCore, fields: Mapping[str, str]
) -> tuple[ParentLink, str, QueueStore] | None:
    """The link, queue and store of a child's parent, when the child has one that exists."""
    link = parse_parent_field(fields.get("parent"), fields.get("parentKey"))
    if link is None:
        return None
    queue = queue_of(link.queue_key)
    store = None if queue is None else core._queues.get(queue)
    if queue is None or store is None or link.job_id not in store.jobs:
        return None
    return link, queue, store


def release_parent(
    core: MemoryCore,
    queue: str,
    store: QueueStore,
    parent_id: str,
    now: int,
    *,
    to_wait: bool,
    silent: bool = False,
) -> None:
    """Move a parent out of waiting-children (or, for a failed child, out of delayed): to the
    front of wait, prioritized or delayed as its fields say; ``to_wait`` forces the front of
    wait (BullMQ's detach of a deleted child), ``silent`` emits no event (its hard path)."""
    state = store.states.get(parent_id)
    fields = store.jobs[parent_id]
    assert state in (JobState.WAITING_CHILDREN, JobState.DELAYED), state
    store.zset(state).remove(parent_id)
    prev = "waiting-children" if state is JobState.WAITING_CHILDREN else "delayed"
    delay = int(fields.get("delay") or 0) if state is JobState.WAITING_CHILDREN else 0
    priority = 0 if to_wait else int(fields.get("priority") or 0)
    transition = release_transition(priority, 0 if to_wait else delay)
    core._move(queue, store, parent_id, transition)
    if transition is Transition.RELEASE_PARENT_DELAYED:
        due = now + delay
        core._push_delayed(store, parent_id, due)
        core._emit(store, ("delayed", "jobId", parent_id, "delay", str(due)))
        return
    if transition is Transition.RELEASE_PARENT_PRIORITIZED:
        core._push_prioritized(store, parent_id, priority)
    else:
        core._push_wait(store, parent_id, front=True)
    if not silent:
        core._emit(store, ("waiting", "jobId", parent_id, "prev", prev))


def _pending(
    core: MemoryCore, fields: Mapping[str, str], child_key: str
) -> tuple[ParentLink, str, QueueStore, ParentKeys] | None:
    """The child's parent, taking the child out of its pending dependencies; None if it was
    not pending there (no parent, or already done)."""
    found = parent_of(core, fields)
    if found is None:
        return None
    link, queue, store = found
    keys = store.flows.get(link.job_id)
    if keys is None or child_key not in keys.dependencies:
        return None
    del keys.dependencies[child_key]
    return link, queue, store, keys


def parent_refusal(keys: ParentKeys) -> ResultCode | None:
    """Why a parent may not complete yet (BullMQ's -4 and -9), or None."""
    if keys.dependencies:
        return ResultCode.PENDING_DEPENDENCIES
    if keys.unsuccessful:
        return ResultCode.FAILED_CHILDREN
    return None


def child_completed(
    core: MemoryCore, queue: str, job_id: str, fields: Mapping[str, str], value: str, now: int
) -> None:
    """Record a completed child's return value in its parent and release the parent if that
    was its last pending child."""
    child_key = job_key(queue, job_id)
    found = _pending(core, fields, child_key)
    if found is None:
        return
    link, parent_queue, store, keys = found
    pending = len(keys.dependencies)
    if "flow-stale-pending-count" in core.planted_bugs:
        pending += 1  # (planted: the count as it was before this child was taken out)
    record_late = "flow-release-before-record" in core.planted_bugs
    if not record_late:
        keys.processed[child_key] = value
    if not pending and store.states.get(link.job_id) is JobState.WAITING_CHILDREN:
        release_parent(core, parent_queue, store, link.job_id, now, to_wait=False)
    if record_late:  # (planted: the parent moved before the child's result is recorded)
        keys.processed[child_key] = value


def child_failed(
    core: MemoryCore, queue: str, job_id: str, fields: Mapping[str, str], reason: str, now: int
) -> None:
    """Apply a child's final failure to its parent, by the flag in its ``parent`` field."""
    child_key = job_key(queue, job_id)
    link = parse_parent_field(fields.get("parent"), fields.get("parentKey"))
    effect = child_failure("" if link is None else link.flag)
    if effect is ChildFailure.FAIL_PARENT and "flow-fpof-continues" in core.planted_bugs:
        effect = ChildFailure.CONTINUE_PARENT  # (planted: the parent is released, not failed)
    if effect is ChildFailure.KEEP_WAITING:
        return
    found = _pending(core, fields, child_key)
    if found is None:
        return
    link, parent_queue, store, keys = found
    parent_id = link.job_id
    state = store.states.get(parent_id)
    if effect is ChildFailure.FAIL_PARENT:
        keys.unsuccessful[child_key] = now
        if state is JobState.FAILED:
            return
        store.jobs[parent_id]["defa"] = f"child {child_key} failed"
        if state is JobState.DELAYED:
            store.jobs[parent_id]["delay"] = "0"
        if state in (JobState.WAITING_CHILDREN, JobState.DELAYED):
            release_parent(core, parent_queue, store, parent_id, now, to_wait=False)
        return
    if effect is not ChildFailure.REMOVE:
        keys.failed[child_key] = reason
    waiting = state is JobState.WAITING_CHILDREN
    if waiting and (effect is ChildFailure.CONTINUE_PARENT or not keys.dependencies):
        release_parent(core, parent_queue, store, parent_id, now, to_wait=False)


def forget(
    core: MemoryCore, queue: str, store: QueueStore, job_id: str, now: int, *, hard: bool = False
) -> str | None:
    """A job is being deleted: detach it from its parent and drop its own children's records
    (the children stay). A last pending child releases a parent waiting for it to the front of
    wait. ``hard`` (clean, drain, obliterate: BullMQ's hard path) releases a parent in another
    queue silently and takes one in the same queue out of waiting-children instead, returning
    its id: the caller deletes it (``DELETE_PARENT``, no event) the same hard way."""
    store.flows.pop(job_id, None)
    fields = store.jobs[job_id]
    if "parentKey" not in fields:
        return None
    found = _pending(core, fields, job_key(queue, job_id))
    if found is None:
        return None
    link, parent_queue, parent_store, keys = found
    parent_id = link.job_id
    if keys.dependencies or parent_store.states.get(parent_id) is not JobState.WAITING_CHILDREN:
        return None
    if hard and parent_queue == queue:
        store.waiting_children.remove(parent_id)
        return parent_id
    release_parent(core, parent_queue, parent_store, parent_id, now, to_wait=True, silent=hard)
    return None


def child_retried(
    core: MemoryCore, queue: str, job_id: str, fields: Mapping[str, str], state: JobState
) -> None:
    """A finished child is retried (BullMQ's moveChildBackToParentDependencies): its result
    (completed) or its recorded failure (failed) leaves its parent's keys and it is pending
    there again. The parent is not moved: one that left waiting-children stays where it is."""
    parent_key = fields.get("parentKey")
    found = None if parent_key is None else locate_key(core, parent_key)
    if found is None:
        return
    _, parent_store, parent_id = found
    keys = parent_store.flows.get(parent_id)
    if keys is None:
        return
    child_key = job_key(queue, job_id)
    if state is JobState.FAILED:
        dropped = keys.unsuccessful.pop(child_key, None) is not None
        dropped = dropped or keys.failed.pop(child_key, None) is not None
    else:
        dropped = keys.processed.pop(child_key, None) is not None
    if dropped:
        keys.dependencies[child_key] = None


def removal_order(
    core: MemoryCore, queue: str, store: QueueStore, job_id: str
) -> list[tuple[str, QueueStore, str]]:
    """A job and every descendant it has (in any queue), each child before its parent."""
    order: list[tuple[str, QueueStore, str]] = []
    seen = {job_key(queue, job_id)}

    def visit(queue: str, store: QueueStore, job_id: str) -> None:
        keys = store.flows.get(job_id)
        if keys is not None:
            children = {*keys.processed, *keys.dependencies, *keys.failed, *keys.unsuccessful}
            for child_key in sorted(children):  # (Redis keeps a set in no order: both sort)
                found = locate_key(core, child_key)
                if found is not None and child_key not in seen:
                    seen.add(child_key)
                    visit(*found)
        order.append((queue, store, job_id))

    visit(queue, store, job_id)
    return order
