"""The structural invariants of the memory backend's queues (``MemoryBackend.check``).

Every function raises AssertionError naming the queue, the job and the broken rule. The full
check is linear in the number of jobs; ``check_sizes`` and the per-job checks are cheap enough to
run after every operation (the simulator does).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from corral.backends.field_rules import assert_job_fields
from corral.engine.states import JobState

if TYPE_CHECKING:
    from corral.backends.memory.store import QueueStore


def check_queue(name: str, store: QueueStore) -> None:
    states = store.states
    places: tuple[tuple[JobState, Iterable[str]], ...] = (
        (JobState.WAITING, store.wait),
        (JobState.ACTIVE, store.active),
        (JobState.PRIORITIZED, store.prioritized.members()),
        (JobState.DELAYED, store.delayed.members()),
        (JobState.COMPLETED, store.completed.members()),
        (JobState.FAILED, store.failed.members()),
        (JobState.WAITING_CHILDREN, store.waiting_children.members()),
    )
    for state, ids in places:
        for job_id in ids:
            if states.get(job_id) is not state:
                raise AssertionError(
                    f"queue {name!r}: job {job_id} is in {state} but indexed as "
                    f"{states.get(job_id)}"
                )
            check_fields(name, store, job_id, state)
    check_sizes(name, store)
    if store.jobs.keys() != states.keys():
        raise AssertionError(
            f"queue {name!r}: jobs without a place {set(store.jobs) - set(states)} or places "
            f"without a job {set(states) - set(store.jobs)}"
        )
    orphan_logs = store.logs.keys() - store.jobs.keys()
    if orphan_logs:
        raise AssertionError(f"queue {name!r}: logs of deleted jobs {sorted(orphan_logs)}")
    orphan_flows = store.flows.keys() - store.jobs.keys()
    if orphan_flows:
        raise AssertionError(f"queue {name!r}: children of deleted parents {sorted(orphan_flows)}")


def check_sizes(name: str, store: QueueStore) -> None:
    """Invariants that cost no more than the number of active jobs."""
    placed = (
        len(store.wait)
        + len(store.active)
        + len(store.prioritized)
        + len(store.delayed)
        + len(store.completed)
        + len(store.failed)
        + len(store.waiting_children)
    )
    if not placed == len(store.states) == len(store.jobs):
        raise AssertionError(
            f"queue {name!r}: {placed} places, {len(store.states)} indexed and "
            f"{len(store.jobs)} stored jobs: a job is missing or listed twice"
        )
    for job_id in store.locks:
        if job_id not in store.active:
            raise AssertionError(
                f"queue {name!r}: job {job_id} holds a lock but is {store.states.get(job_id)}"
            )
    for job_id in store.stalled:
        if job_id not in store.active:
            raise AssertionError(
                f"queue {name!r}: job {job_id} is marked stalled but is {store.states.get(job_id)}"
            )
    if store.paused and store.marker:
        raise AssertionError(f"queue {name!r}: the marker is set while the queue is paused")


def is_placed(store: QueueStore, job_id: str, state: JobState) -> bool:
    if state is JobState.WAITING:
        return job_id in store.wait
    if state is JobState.ACTIVE:
        return job_id in store.active
    return job_id in store.zset(state)


def check_fields(name: str, store: QueueStore, job_id: str, state: JobState) -> None:
    assert_job_fields(f"queue {name!r}", job_id, state, store.jobs.get(job_id))
