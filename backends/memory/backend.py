"""MemoryBackend: the embedded, in-process Storage.

It keeps each queue in the same shapes as BullMQ's Redis layout — ``wait`` and ``active`` lists,
``prioritized``/``delayed``/``completed``/``failed`` sorted sets, the ``stalled`` set, a hash per
job, a lock per active job with an expiry, the ``stalled-check`` throttle, the ``id`` and ``pc``
counters, the ``marker`` and an event log — so that its observable behaviour can be compared with
the Redis backend's operation by operation.

Every operation runs under one lock and never awaits in the middle, so each is atomic both for
coroutines on any event loop (the simulator runs one loop per simulated process against one store)
and for threads (sync processors reporting progress). Lock and throttle expiries are judged by the
backend's own clock, like Redis TTLs; timestamps written into jobs are the callers' ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from corral.backends.memory.checks import check_fields, check_queue, check_sizes, is_placed
from corral.backends.memory.dedup import DedupOps
from corral.backends.memory.flows import FlowOps
from corral.backends.memory.job_flow import JobFlowOps
from corral.backends.memory.job_ops import JobOps
from corral.backends.memory.limits import LimitOps
from corral.backends.memory.notifications import NotificationOps
from corral.backends.memory.queue_ops import QueueOps
from corral.backends.memory.readers import ReaderOps
from corral.backends.memory.schedulers import SchedulerOps
from corral.backends.memory.workers import WorkerOps


class MemoryBackend(
    FlowOps,
    JobFlowOps,
    ReaderOps,
    NotificationOps,
    JobOps,
    QueueOps,
    DedupOps,
    WorkerOps,
    LimitOps,
    SchedulerOps,
):
    """In-process storage for any number of queues.

    Args:
        clock: the store's clock, used for lock and throttle expiry and event ids (the server
            clock, in Redis terms). Defaults to the system clock.
        token_numbers: the numbers of the lock tokens it mints (see ``FetchRequest``), which
            must never repeat. Defaults to a count of its own from 1; a store standing in for
            one that restarted takes the old one's, as a Redis client outlives its server.
    """

    async def close(self) -> None:
        """Nothing to release: the data stays for other users of this backend."""

    # ----------------------------------------------------------------- inspection

    def job_fields(self, queue: str, job_id: str) -> Mapping[str, str] | None:
        """The live hash of a job, without copying (for the simulator's oracle; do not modify)."""
        store = self._queues.get(queue)
        return None if store is None else store.jobs.get(job_id)

    def queues(self) -> list[str]:
        """Names of the queues this backend has seen."""
        with self._mutex:
            return list(self._queues)

    def check(self) -> None:
        """Assert every structural invariant of every queue.

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        with self._mutex:
            for name, store in self._queues.items():
                check_queue(name, store)

    def check_jobs(self, queue: str, job_ids: Iterable[str]) -> None:
        """A cheaper :meth:`check` for after one operation: the queue's global invariants (sizes,
        locks and stalled marks only on active jobs) plus the placement of the given jobs.

        Raises:
            AssertionError: naming the queue, the job and the broken rule.
        """
        with self._mutex:
            store = self._queues.get(queue)
            if store is None:
                return
            check_sizes(queue, store)
            for job_id in job_ids:
                state = store.states.get(job_id)
                if state is None:
                    if job_id in store.jobs or job_id in store.locks:
                        raise AssertionError(f"queue {queue!r}: job {job_id} is stored unplaced")
                    continue
                if not is_placed(store, job_id, state):
                    raise AssertionError(f"queue {queue!r}: job {job_id} is not in {state}")
                check_fields(queue, store, job_id, state)
