"""The oracle's watch over flows (part of :mod:`corral.sim.invariants`).

It learns each tree from the ``add_flow`` calls the store executes (which job is whose child,
with which parent option), follows the transitions the store reports, and flags:

- a parent leaving waiting-children more than once, or while a child that counts is still
  pending: every child must have completed or failed with ``ignore_dependency_on_failure`` /
  ``remove_dependency_on_failure``, unless a child with ``fail_parent_on_failure`` or
  ``continue_parent_on_failure`` failed for good (those release it at once);
- a completed child whose result is not in its parent's ``processed`` when the parent leaves
  waiting-children (a lost result);
- a parent completing after a ``fail_parent_on_failure`` child failed for good, one failing
  with "child ... failed" when no such child did, and (at the end of a run) one with such a
  child that did not end failed.

Liveness is the oracle's: every job must end completed or failed once the faults heal, except a
parent that BullMQ leaves waiting by design: a child of it without a parent option failed for
good (it waits until that child is retried), and so on up the tree
(:meth:`FlowWatch.waiting_by_design`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from corral.engine.flows import DEFAULT_PREFIX, FAILURE_FLAGS
from corral.engine.states import JobState, Transition
from corral.engine.storage import FlowAdded, FlowNode

_RELEASES = frozenset(
    {
        Transition.RELEASE_PARENT,
        Transition.RELEASE_PARENT_PRIORITIZED,
        Transition.RELEASE_PARENT_DELAYED,
    }
)
_FPOF, _CPOF, _IDOF, _RDOF = (FAILURE_FLAGS[name] for name in FAILURE_FLAGS)

#: ``processed_of(queue, parent id)``: the parent's processed hash (child key -> value), read
#: inside the operation that moves the parent.
ProcessedReader = Callable[[str, str], Mapping[str, str]]


def child_key(queue: str, job_id: str) -> str:
    """A job's key as its parent's keys name it (the simulated stores use BullMQ's prefix)."""
    return f"{DEFAULT_PREFIX}:{queue}:{job_id}"


class FlowWatch:
    """Trees, children's outcomes, and the violations of the flows' promises."""

    def __init__(self, violate: Callable[[str], None], processed_of: ProcessedReader) -> None:
        self._violate = violate
        self._processed_of = processed_of
        self.queue_of: dict[str, str] = {}
        self.parent_of: dict[str, str] = {}
        self.flag_of: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        self._done: dict[str, set[str]] = {}  # parent -> children that count as finished
        self._completed: set[str] = set()
        self._early: dict[str, str] = {}  # parent -> the fpof/cpof child that released it
        self.fpof_failed: dict[str, list[str]] = {}  # parent -> its fpof children that failed
        self._blocked: set[str] = set()  # parents waiting by design (see waiting_by_design)
        self.releases: dict[str, int] = {}
        self.flows_added = 0

    def on_add_flow(self, nodes: Sequence[FlowNode], result: FlowAdded) -> None:
        """An ``add_flow`` executed (its transitions already reported)."""
        if result.code is not result.code.OK:
            return
        self.flows_added += 1
        for node, job_id, created in zip(nodes, result.job_ids, result.created, strict=True):
            if not created:
                continue
            self.queue_of[job_id] = node.queue
            if node.waits_for_children:
                self.children.setdefault(job_id, [])
                self._done.setdefault(job_id, set())
            if node.parent is not None:
                self.parent_of[job_id] = node.parent.job_id
                self.flag_of[job_id] = node.parent.flag
                self.children.setdefault(node.parent.job_id, []).append(job_id)

    def on_transition(
        self,
        job_id: str,
        transition: Transition,
        source: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        """A job moved; ``fields`` is its hash at that moment."""
        if transition in _RELEASES and job_id in self.children:
            self._released(job_id, source)
        elif transition is Transition.COMPLETE:
            self._completed_job(job_id)
        elif transition is Transition.FAIL:
            self._failed_job(job_id, fields)

    def _released(self, parent: str, source: JobState | None) -> None:
        count = self.releases[parent] = self.releases.get(parent, 0) + 1
        if count > 1:
            self._violate(f"parent {parent}: left waiting-children {count} times")
        if parent in self._early:
            return
        if source is not JobState.WAITING_CHILDREN:
            self._violate(f"parent {parent}: released from {source} with no child failing it")
        done = self._done.get(parent, set())
        pending = [c for c in self.children[parent] if c not in done]
        if pending:
            self._violate(
                f"parent {parent}: left waiting-children with {len(pending)} child(ren) still "
                f"pending ({', '.join(pending[:5])})"
            )
        processed = self._processed_of(self.queue_of[parent], parent)
        lost = [
            child
            for child in self.children[parent]
            if child in self._completed and child_key(self.queue_of[child], child) not in processed
        ]
        if lost:
            self._violate(
                f"parent {parent}: left waiting-children without the result of "
                f"{', '.join(lost[:5])}"
            )

    def _completed_job(self, job_id: str) -> None:
        if job_id in self.fpof_failed:
            self._violate(
                f"parent {job_id}: completed although its fail_parent_on_failure child "
                f"{self.fpof_failed[job_id][0]} failed"
            )
        parent = self.parent_of.get(job_id)
        if parent is not None:
            self._completed.add(job_id)
            self._done.setdefault(parent, set()).add(job_id)

    def _failed_job(self, job_id: str, fields: Mapping[str, str]) -> None:
        reason = fields.get("failedReason", "")
        if reason.startswith("child ") and reason.endswith(" failed"):
            named = {
                f"child {child_key(self.queue_of[child], child)} failed"
                for child in self.fpof_failed.get(job_id, ())
            }
            if reason not in named:
                self._violate(f"parent {job_id}: failed with {reason!r}, but no such child did")
        parent = self.parent_of.get(job_id)
        if parent is None:
            return
        flag = self.flag_of[job_id]
        if flag == _FPOF:
            self.fpof_failed.setdefault(parent, []).append(job_id)
            self._early.setdefault(parent, job_id)
        elif flag == _CPOF:
            self._early.setdefault(parent, job_id)
        elif flag in (_IDOF, _RDOF):
            self._done.setdefault(parent, set()).add(job_id)
        else:  # BullMQ: the parent waits until this child is retried and completes
            while parent is not None and parent not in self._blocked:
                self._blocked.add(parent)
                parent = self.parent_of.get(parent)

    def waiting_by_design(self, state_of: Callable[[str], JobState | None]) -> set[str]:
        """Parents left in waiting-children as BullMQ leaves them: a child without a parent
        option failed for good, below them."""
        return {p for p in self._blocked if state_of(p) is JobState.WAITING_CHILDREN}

    def at_end(self, state_of: Callable[[str], JobState | None]) -> None:
        """The run healed and settled: a parent whose ``fail_parent_on_failure`` child failed
        ends failed."""
        for parent, failed in sorted(self.fpof_failed.items()):
            state = state_of(parent)
            if state is not JobState.FAILED and state is not None:
                self._violate(
                    f"parent {parent}: {state} at the end, although its fail_parent_on_failure "
                    f"child {failed[0]} failed"
                )

    def stats(self) -> dict[str, Any]:
        """Counts for summaries and tests."""
        return {
            "flows": self.flows_added,
            "parents": len(self.children),
            "released": sum(self.releases.values()),
            "released_early": len(self._early),
            "fpof_failed": len(self.fpof_failed),
            "waiting_by_design": len(self._blocked),
        }
