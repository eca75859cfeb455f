"""The values the Storage protocol passes: how a queue builds the jobs it hands a store."""

from __future__ import annotations

import gc
from collections.abc import Sequence

from corral.backends.memory import MemoryBackend
from corral.engine import Queue
from corral.engine.storage import AddResult, NewJob, hash_fields, new_job
from corral.sim.loop import VirtualClock


class _Recording(MemoryBackend):
    """A memory backend that keeps what each ``add_jobs`` call was given."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)
        self.given: list[NewJob] = []

    async def add_jobs(self, queue: str, jobs: Sequence[NewJob]) -> AddResult:
        self.given.extend(jobs)
        return await super().add_jobs(queue, jobs)


async def test_a_queue_hands_the_store_the_jobs_new_job_builds(clock: VirtualClock) -> None:
    backend = _Recording(clock)
    queue = Queue("q", backend, clock=clock)
    now = clock.now_ms()
    # The default options take a shortcut in the queue that must build the same value.
    await queue.add_bulk([{"name": "plain", "data": {"n": 1}}, {"name": "none"}])
    await queue.add("custom", [1], job_id="c1", priority=3, lifo=True, attempts=2)
    default_opts = backend.given[0][2]
    assert backend.given[:2] == [
        new_job("plain", '{"n":1}', default_opts, now),
        new_job("none", "null", default_opts, now),
    ]
    custom = backend.given[2]
    assert custom == new_job("custom", "[1]", custom[2], now, 0, 3, True, "c1")
    assert '"attempts":2' in custom[2]
    stored = backend.job_fields("q", "1")
    assert stored == hash_fields(backend.given[0])


def test_a_pending_job_is_dropped_by_the_collector_at_its_first_collection() -> None:
    # Why NewJob is a tuple: a bulk add holds thousands of them while it runs, and tracked
    # objects alive across collections are promoted until they set off a full collection.
    job = new_job("name", '"data"', "{}", 1_000, 5, 2, False, "id")
    gc.collect()
    assert not gc.is_tracked(job)
