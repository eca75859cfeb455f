"""Conformance: what every removal path does besides deleting the job (bullmq-features.md §4.4,
§5.4-§5.6, §1.8, §2.5) — release its deduplication key, delete its logs, spare a job
scheduler's current iteration — and obliterate's exact reach, the markers left unset while
global concurrency is reached, and the refusal of deduplication in scheduler templates."""

from __future__ import annotations

import pytest
from helpers import QUEUE
from test_queue_operations import check_all, counts

from corral.engine import InvalidArgumentError, Queue
from corral.engine.errors import ResultCode
from corral.engine.job import KeepJobs
from corral.engine.states import JobState
from corral.engine.storage import Complete, Fail, FetchRequest, ObliterateResult, Storage
from corral.sim.loop import VirtualClock

Q = QUEUE
DEDUP = {"id": "d", "ttl": 600_000}


@pytest.fixture
def queue(backend: Storage, clock: VirtualClock) -> Queue:
    return Queue(Q, backend, clock=clock)


async def take(backend: Storage, clock: VirtualClock, token: str) -> str:
    """Fetch the next job under ``token``; return its id."""
    result = await backend.fetch_next(Q, FetchRequest(token, 30_000), clock.now_ms())
    assert result.job is not None
    return result.job.job_id


# ---------------------------------------------------------------------------- dedup keys


@pytest.mark.parametrize("how", ["clean", "drain", "remove", "obliterate"])
async def test_every_removal_path_releases_the_dedup_key(queue: Queue, how: str) -> None:
    first = await queue.add("a", 1, deduplication=DEDUP)
    assert await queue.get_deduplication_job_id("d") == first.id
    if how == "clean":
        assert await queue.clean(0, 0, "waiting") == [first.id]
    elif how == "drain":
        await queue.drain()
    elif how == "remove":
        await queue.remove(first.id)
    else:
        await queue.pause()
        await queue.obliterate()
        await queue.resume()
    assert await queue.get_job(first.id) is None
    assert await queue.get_deduplication_job_id("d") is None
    second = await queue.add("a", 2, deduplication=DEDUP)  # not deduplicated any more
    stored = await queue.get_job(second.id)
    assert stored is not None
    assert stored.data == 2
    await check_all(queue.backend)


async def test_retention_keeps_a_dedup_key_with_a_ttl(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    # BullMQ's retention deletes without releasing: a key with a TTL outlives its owner.
    first = await queue.add("a", 1, deduplication=DEDUP)
    job_id = await take(backend, clock, "t")
    await backend.finish(Q, job_id, "t", Complete("1", KeepJobs(count=0)), clock.now_ms())
    assert await queue.get_job(first.id) is None
    assert await queue.get_deduplication_job_id("d") == first.id
    await check_all(backend)


async def test_debounce_deletes_the_replaced_jobs_logs(queue: Queue) -> None:
    opt = {"id": "d", "ttl": 5000, "extend": True, "replace": True}
    first = await queue.add("a", 1, delay=5000, deduplication=opt)
    assert await queue.backend.add_log(Q, first.id, "row", None) == 1
    second = await queue.add("a", 2, delay=5000, deduplication=opt)
    assert second.id != first.id
    assert await queue.get_job(first.id) is None
    assert (await queue.get_job_logs(first.id)).count == 0
    assert await queue.get_deduplication_job_id("d") == second.id
    await check_all(queue.backend)  # (on Redis: no <id>:logs without its job)


# ---------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("how", ["clean", "drain"])
@pytest.mark.parametrize("delayed", [False, True])
async def test_clean_and_drain_spare_a_schedulers_current_iteration(
    queue: Queue, how: str, delayed: bool
) -> None:
    repeat = {"every": 60_000, "offset": 30_000} if delayed else {"every": 60_000}
    iteration = await queue.upsert_job_scheduler("s", repeat, {"name": "tick"})
    assert iteration is not None
    plain = await queue.add("plain", 1, delay=1000 if delayed else 0)
    state = "delayed" if delayed else "waiting"
    if how == "clean":
        assert await queue.clean(0, 0, state) == [plain.id]
    else:
        await queue.drain(delayed=True)
    assert await queue.get_job(plain.id) is None
    assert await queue.get_job(iteration) is not None
    assert await counts(queue) == {state: 1}
    await check_all(queue.backend)


async def test_obliterate_deletes_schedulers_and_keeps_limiter_and_dedup_keys(
    queue: Queue, backend: Storage, clock: VirtualClock
) -> None:
    # A dedup key whose owner was trimmed away: no job deleted by obliterate owns it.
    owner = await queue.add("a", 1, deduplication=DEDUP)
    assert await take(backend, clock, "t") == owner.id
    await backend.finish(Q, owner.id, "t", Complete("1", KeepJobs(count=0)), clock.now_ms())
    await queue.upsert_job_scheduler("s", {"every": 60_000}, {"name": "tick"})
    await queue.set_global_concurrency(3)
    await queue.rate_limit(600_000)
    await queue.pause()
    await queue.obliterate()
    assert await queue.get_job_schedulers_count() == 0
    assert await queue.get_job_scheduler("s") is None
    assert await counts(queue) == {}
    assert await queue.get_global_concurrency() is None  # meta goes
    assert not await queue.is_paused()
    assert await queue.get_rate_limit_ttl() > 0  # the limiter stays (BullMQ)
    assert await queue.get_deduplication_job_id("d") == owner.id  # de:* stays (BullMQ)
    await check_all(backend)


async def test_obliterate_spends_its_budget_on_schedulers_in_bullmqs_order(
    queue: Queue, backend: Storage
) -> None:
    for name in ("s1", "s2"):
        await queue.upsert_job_scheduler(name, {"every": 60_000}, {"name": "tick"})
    await queue.add("later", 1, delay=5000)
    await queue.pause()
    # Active (none), delayed (1 job), then the schedulers take the rest of a budget of 2.
    assert await backend.obliterate(Q, 2, False) is ObliterateResult.MORE
    assert await queue.get_job_schedulers_count() == 1
    assert await counts(queue) == {"waiting": 2}  # the two iterations
    # The last scheduler, then one waiting job: the budget is spent again.
    assert await backend.obliterate(Q, 2, False) is ObliterateResult.MORE
    assert await queue.get_job_schedulers_count() == 0
    assert await counts(queue) == {"waiting": 1}
    assert await backend.obliterate(Q, 2, False) is ObliterateResult.DONE
    assert await counts(queue) == {}
    await check_all(backend)


async def test_scheduler_template_refuses_deduplication(queue: Queue) -> None:
    template = {"name": "tick", "opts": {"deduplication": {"id": "x"}}}
    with pytest.raises(InvalidArgumentError, match="deduplication"):
        await queue.upsert_job_scheduler("s", {"every": 1000}, template)
    assert await queue.get_job_scheduler("s") is None
    assert await counts(queue) == {}


# ---------------------------------------------------------------------------- markers


@pytest.mark.parametrize("call", ["retry_job", "retry_jobs", "promote_job", "promote_jobs"])
async def test_no_marker_while_global_concurrency_is_reached(
    queue: Queue, backend: Storage, clock: VirtualClock, call: str
) -> None:
    failed = await queue.add("f", 1)
    await backend.finish(Q, await take(backend, clock, "t0"), "t0", Fail("bad"), clock.now_ms())
    delayed = await queue.add("d", 2, delay=60_000)
    await queue.add("a", 3)
    await queue.set_global_concurrency(1)
    await take(backend, clock, "t1")  # one active job: the queue is maxed
    while await backend.wait_for_work(Q, 1):  # consume the markers the adds set
        pass
    now = clock.now_ms()
    if call == "retry_job":
        code = await backend.retry_job(
            Q,
            failed.id,
            JobState.FAILED,
            reset_attempts_made=False,
            reset_attempts_started=False,
            now=now,
        )
        assert code is ResultCode.OK
    elif call == "retry_jobs":
        await queue.retry_jobs(state="failed")
    elif call == "promote_job":
        assert await backend.promote_job(Q, delayed.id, now) is ResultCode.OK
    else:
        await queue.promote_jobs()
    assert (await counts(queue)).get("waiting") == 1
    assert not await backend.wait_for_work(Q, 1)  # BullMQ: no marker while maxed
    await queue.remove_global_concurrency()
    await check_all(backend)
