"""The values the Storage protocol passes: how a queue builds the jobs it hands a store."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import pytest

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


async def test_the_jobs_a_queue_adds_build_their_hash_on_first_use(clock: VirtualClock) -> None:
    backend = MemoryBackend(clock)
    queue = Queue("q", backend, clock=clock)
    first, second = await queue.add_bulk(
        [{"name": "a", "data": {"n": 1}}, {"name": "b", "opts": {"priority": 3, "lifo": True}}]
    )
    # Built when first asked for (object.__getattribute__ skips the lazy path), then kept.
    with pytest.raises(AttributeError):
        object.__getattribute__(first, "_fields")
    assert (first.id, second.id) == ("1", "2")
    assert first.fields == backend.job_fields("q", "1")
    assert first.fields is first.fields
    assert (first.name, first.data, first.timestamp) == ("a", {"n": 1}, clock.now_ms())
    assert (second.name, second.data, second.priority, second.opts.lifo) == ("b", None, 3, True)
    assert repr(second) == "<Job q:2 name='b'>"
    # A name the class lacks still fails as it would without the lazy hash.
    with pytest.raises(AttributeError, match="'Job' object has no attribute 'nope'"):
        second.nope  # type: ignore[attr-defined]  # noqa: B018
