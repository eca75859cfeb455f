"""Flows as pure policy: parent links, the failure options, and what a child's final outcome does
to its parent (BullMQ's parent/child dependencies, issue 16).

A child names its parent by the parent's *queue key* (``<prefix>:<queue>``) and id; its parent's
job key is ``<queue key>:<id>``. A child's hash holds ``parentKey`` (that job key) and ``parent``,
the JSON ``{"id", "queueKey"}`` plus the one failure flag it was added with (``fpof``, ``cpof``,
``idof`` or ``rdof``). The flags are read from that field only, never from the child's options,
exactly as BullMQ's scripts read them (a port that left a flag out left parents stuck).

The backends apply these decisions inside the atomic step that finishes the child; this module
only says which one applies.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.errors import (
    CorralError,
    InvalidArgumentError,
    ResultCode,
    missing_parent_text,
    parent_replaced_text,
)
from corral.engine.states import Transition

#: BullMQ's default key prefix: the queue keys the memory backend answers to.
DEFAULT_PREFIX: Final = "bull"

#: The failure options, as job options (snake_case) and as BullMQ stores them.
FAILURE_FLAGS: Final = {
    "fail_parent_on_failure": "fpof",
    "continue_parent_on_failure": "cpof",
    "ignore_dependency_on_failure": "idof",
    "remove_dependency_on_failure": "rdof",
}
#: BullMQ's camelCase names, for the error text naming options used together.
_CAMEL: Final = {
    "fail_parent_on_failure": "failParentOnFailure",
    "continue_parent_on_failure": "continueParentOnFailure",
    "ignore_dependency_on_failure": "ignoreDependencyOnFailure",
    "remove_dependency_on_failure": "removeDependencyOnFailure",
}


class ChildFailure(enum.Enum):
    """What a child failing for good does to its parent (the flag checked first wins)."""

    FAIL_PARENT = "fpof"  # recorded as failed (``unsuccessful``); the parent is released at once
    #                       with ``defa`` and fails when next taken
    CONTINUE_PARENT = "cpof"  # recorded in ``failed``; the parent is released at once
    IGNORE = "idof"  # recorded in ``failed``; counts as done for the parent
    REMOVE = "rdof"  # dropped from the dependencies, recorded nowhere; counts as done
    KEEP_WAITING = ""  # nothing: the parent waits until the child is retried and completes


#: The order BullMQ checks the flags in.
_FAILURE_ORDER: Final = (
    ChildFailure.FAIL_PARENT,
    ChildFailure.CONTINUE_PARENT,
    ChildFailure.IGNORE,
    ChildFailure.REMOVE,
)


@dataclasses.dataclass(frozen=True, slots=True)
class ParentLink:
    """The parent a child is added under.

    Attributes:
        queue_key: the parent's queue key, ``<prefix>:<queue>``.
        job_id: the parent's id.
        flag: the child's failure flag (``"fpof"``, ``"cpof"``, ``"idof"``, ``"rdof"``) or "".
    """

    queue_key: str
    job_id: str
    flag: str = ""

    @property
    def key(self) -> str:
        """The parent's job key, ``<prefix>:<queue>:<id>`` (the child's ``parentKey``)."""
        return f"{self.queue_key}:{self.job_id}"

    def field(self) -> str:
        """The child's ``parent`` field: ``{"id", "queueKey"}`` and the flag, as BullMQ."""
        value: dict[str, Any] = {"id": self.job_id, "queueKey": self.queue_key}
        if self.flag:
            value[self.flag] = True
        return json.dumps(value, separators=(",", ":"))


def parse_parent_field(raw: str | None, parent_key: str | None = None) -> ParentLink | None:
    """The link a child's ``parent`` field holds (or, without one, its ``parentKey``: BullMQ's
    fallback); None for a job without a parent or with a field nothing can be read from."""
    if raw:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("queueKey"), str):
            flag = next((f.value for f in _FAILURE_ORDER if value.get(f.value) is True), "")
            return ParentLink(value["queueKey"], str(value.get("id")), flag)
    if parent_key and ":" in parent_key:
        queue_key, _, job_id = parent_key.rpartition(":")
        return ParentLink(queue_key, job_id)
    return None


def child_failure(flag: str) -> ChildFailure:
    """What a child with failure flag ``flag`` ("" for none) does to its parent on failing."""
    for failure in _FAILURE_ORDER:
        if failure.value == flag:
            return failure
    return ChildFailure.KEEP_WAITING


def release_transition(priority: int, delay: int) -> Transition:
    """How a parent leaves waiting-children: to delayed when it has a delay (due ``now + delay``),
    else to prioritized or to the front of wait (BullMQ's ``moveParentToWait``)."""
    if delay > 0:
        return Transition.RELEASE_PARENT_DELAYED
    if priority > 0:
        return Transition.RELEASE_PARENT_PRIORITIZED
    return Transition.RELEASE_PARENT


def parent_link_from_options(options: Mapping[str, Any]) -> ParentLink | None:
    """Validate the flow options of one job (``parent`` and the four failure options) and
    return its parent link, or None without a ``parent``.

    Raises:
        InvalidArgumentError: ``parent`` is not ``{"id", "queue"}`` with non-empty strings, a
            failure option is not a bool, or more than one of them is set (BullMQ's text).
    """
    chosen = []
    for name in FAILURE_FLAGS:
        value = options.get(name, False)
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"{name} must be a bool, got {value!r}")
        if value:
            chosen.append(name)
    if len(chosen) > 1:
        raise InvalidArgumentError(
            "The following options cannot be used together: "
            + ", ".join(_CAMEL[name] for name in chosen)
        )
    parent = options.get("parent")
    if parent is None:
        return None
    if not isinstance(parent, Mapping) or set(parent) - {"id", "queue"}:
        raise InvalidArgumentError(f"parent must be {{'id': ..., 'queue': ...}}, got {parent!r}")
    job_id, queue_key = parent.get("id"), parent.get("queue")
    for label, value in (("id", job_id), ("queue", queue_key)):
        if not isinstance(value, str) or not value:
            raise InvalidArgumentError(f"parent {label} must be a non-empty string: {value!r}")
    assert isinstance(job_id, str)
    assert isinstance(queue_key, str)
    if ":" not in queue_key:
        raise InvalidArgumentError(
            f"parent queue must be the parent queue's key '<prefix>:<queue name>' "
            f"(e.g. 'bull:{queue_key}'), got {queue_key!r}"
        )
    return ParentLink(queue_key, job_id, FAILURE_FLAGS[chosen[0]] if chosen else "")


def check_dedup_in_flow(options: Mapping[str, Any], *, has_children: bool) -> None:
    """BullMQ's restrictions on deduplication in flows: a job with a parent may not use it
    (its key could drop a child its parent waits for), nor may a flow node with children.

    Raises:
        InvalidArgumentError: with BullMQ's text.
    """
    if options.get("deduplication") is None:
        return
    if has_children:
        raise InvalidArgumentError(
            "Deduplication options cannot be used on flow nodes with children"
        )
    if options.get("parent") is not None:
        raise InvalidArgumentError("Deduplication and parent options cannot be used together")


@dataclasses.dataclass(slots=True)
class Dependencies:
    """A parent's children by outcome (BullMQ's ``getDependencies``), keyed by job key.

    Attributes:
        processed: completed children and their return values (JSON text).
        unprocessed: children still pending.
        ignored: children failed with ``ignore_dependency_on_failure`` or
            ``continue_parent_on_failure``, and their failure reasons.
        failed: children failed with ``fail_parent_on_failure``.
    """

    processed: dict[str, str] = dataclasses.field(default_factory=dict)
    unprocessed: list[str] = dataclasses.field(default_factory=list)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: list[str] = dataclasses.field(default_factory=list)

    def child_keys(self) -> list[str]:
        """Every child's job key, each once."""
        return list(
            dict.fromkeys([*self.processed, *self.unprocessed, *self.ignored, *self.failed])
        )


def refused_parent(added: Any, command: str) -> None:
    """Raise BullMQ's error for a flow the store refused (``FlowAdded`` with code -5 or -7);
    nothing was stored then.

    Raises:
        MissingParentError: the parent key names no job.
        CorralError: the job already belongs to another parent.
    """
    code = added.code
    if code is ResultCode.MISSING_PARENT:
        raise MissingParentError(missing_parent_text(added.parent_key, command))
    if code is ResultCode.PARENT_CANNOT_BE_REPLACED:
        raise CorralError(parent_replaced_text(added.parent_key, command))
    if code is not ResultCode.OK:
        raise CorralError(f"{command} refused with code {int(code)}")


class MissingParentError(CorralError):
    """A child was added under a parent that does not exist; nothing was stored."""
