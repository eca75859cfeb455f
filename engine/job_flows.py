"""A job's calls about its parent and children, and the step-job moves (BullMQ's ``Job``
methods of flows, in snake_case), mixed into :class:`~corral.engine.job.Job`.

Step jobs: a processor may move its own job and then raise the matching error, which the
worker reads as "already moved": ``await job.move_to_delayed(ts); raise DelayedError()``, or
``if await job.move_to_waiting_children(): raise WaitingChildrenError()``. The job runs again
from the start when it is next taken.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from corral.engine.errors import CorralError, JobStateError, ResultCode, missing_parent_text
from corral.engine.flows import parse_parent_field
from corral.engine.inputs import check_utf8

if TYPE_CHECKING:
    from corral.engine.flows import Dependencies
    from corral.engine.job_operations import JobHost


class JobFlowCalls:
    """Parent and children of one job; step-job moves (mixed into Job)."""

    __slots__ = ()

    if TYPE_CHECKING:  # provided by Job
        id: str
        queue_name: str
        token: str | None

        @property
        def fields(self) -> Mapping[str, str]: ...

        def _require_host(self) -> JobHost: ...

        def _set_field(self, name: str, value: str | None) -> None: ...

    @property
    def parent_key(self) -> str | None:
        """The parent's job key ``<prefix>:<queue>:<id>`` (``parentKey``), or None."""
        return self.fields.get("parentKey")

    @property
    def parent(self) -> dict[str, Any] | None:
        """The ``parent`` field: ``{"id", "queueKey"}`` and the failure flag, or None."""
        link = parse_parent_field(self.fields.get("parent"), self.parent_key)
        if link is None:
            return None
        value: dict[str, Any] = {"id": link.job_id, "queueKey": link.queue_key}
        if link.flag:
            value[link.flag] = True
        return value

    async def _dependencies(self) -> Dependencies:
        host = self._require_host()
        return await host.backend.get_dependencies(self.queue_name, self.id)

    async def get_children_values(self) -> dict[str, Any]:
        """The completed children's return values, by child job key."""
        return {key: _decoded(raw) for key, raw in (await self._dependencies()).processed.items()}

    async def get_ignored_children_failures(self) -> dict[str, str]:
        """The failure reasons of children that failed with ``ignore_dependency_on_failure``
        or ``continue_parent_on_failure``, by child job key."""
        return (await self._dependencies()).ignored

    async def get_failed_children_values(self) -> dict[str, str]:
        """BullMQ's older name of :meth:`get_ignored_children_failures`."""
        return await self.get_ignored_children_failures()

    async def get_dependencies(self) -> dict[str, Any]:
        """The children by outcome: ``processed`` (key → value), ``unprocessed`` (keys),
        ``ignored`` (key → reason) and ``failed`` (keys of ``fail_parent_on_failure``
        children that failed)."""
        found = await self._dependencies()
        return {
            "processed": {key: _decoded(raw) for key, raw in found.processed.items()},
            "unprocessed": found.unprocessed,
            "ignored": found.ignored,
            "failed": found.failed,
        }

    async def get_dependencies_count(self) -> dict[str, int]:
        """How many children are processed, unprocessed, ignored and failed."""
        found = await self._dependencies()
        return {
            "processed": len(found.processed),
            "unprocessed": len(found.unprocessed),
            "ignored": len(found.ignored),
            "failed": len(found.failed),
        }

    async def remove_child_dependency(self) -> bool:
        """Detach this job from its parent (a last pending child releases the parent); False
        if it had no pending place in a parent.

        Raises:
            JobStateError: the job does not exist.
            CorralError: its parent does not exist.
        """
        host = self._require_host()
        code = await host.backend.remove_child_dependency(self.queue_name, self.id)
        if code == ResultCode.MISSING_JOB:
            raise JobStateError(ResultCode.MISSING_JOB, self.id, "removeChildDependency")
        if code == ResultCode.MISSING_PARENT:
            raise CorralError(missing_parent_text(self.parent_key or "", "removeChildDependency"))
        if code == ResultCode.OK:
            self._set_field("parentKey", None)
            self._set_field("parent", None)
        return code == ResultCode.OK

    async def move_to_delayed(self, timestamp: int, token: str | None = None) -> None:
        """Move this running job to delayed until ``timestamp`` (ms; no attempt counted); then
        raise :class:`~corral.engine.errors.DelayedError` from the processor.

        Raises:
            JobStateError: the lock is not ``token``'s (the job's own by default), or the job
                is gone or not active (BullMQ's codes and texts).
        """
        host = self._require_host()
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise CorralError(f"timestamp must be an int (ms), got {timestamp!r}")
        now = host.clock.now_ms()
        code = await host.backend.move_to_delayed(
            self.queue_name, self.id, self._own_token(token), max(0, timestamp - now), now
        )
        if code is not ResultCode.OK:
            raise JobStateError(code, self.id, "moveToDelayed")

    async def move_to_waiting_children(
        self, token: str | None = None, child: Mapping[str, str] | None = None
    ) -> bool:
        """Move this running job to waiting-children if it has a pending child (``child``:
        ``{"id", "queue"}``, that child); True if it moved (then raise
        :class:`~corral.engine.errors.WaitingChildrenError`), False if nothing is pending (it
        stays active).

        Raises:
            JobStateError: lost lock, gone, not active, or a child failed with
                ``fail_parent_on_failure`` (-9).
        """
        host = self._require_host()
        child_key = None
        if child is not None:
            child_id, queue_key = child.get("id"), child.get("queue")
            if not isinstance(child_id, str) or not isinstance(queue_key, str):
                raise CorralError(f"child must be {{'id': ..., 'queue': ...}}, got {child!r}")
            check_utf8(child_id, "child id")
            child_key = f"{queue_key}:{child_id}"
        code = await host.backend.move_to_waiting_children(
            self.queue_name, self.id, self._own_token(token), child_key, host.clock.now_ms()
        )
        if code == 1:
            return False
        if code != ResultCode.OK:
            raise JobStateError(ResultCode(code), self.id, "moveToWaitingChildren")
        return True

    def _own_token(self, token: str | None) -> str:
        chosen = token if token is not None else self.token
        if chosen is None:
            raise CorralError(f"job {self.id} is not running here: pass its lock token")
        return chosen


def _decoded(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
