"""corral.metrics on the memory backend (virtual time) and its exporter."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from corral.backends.memory import MemoryBackend
from corral.engine import Job, Queue, UnrecoverableError, Worker
from corral.engine.storage import Storage
from corral.metrics import instrument, start_exporter
from corral.sim.loop import current_clock, run_virtual


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"queue": "q", **labels})
    return 0.0 if value is None else value


class SlowRenewals:
    """A backend whose lock renewals take 3 s to arrive (a congested link)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def extend_locks(self, queue: str, locks: Any, lock_duration: int) -> list[str]:
        await asyncio.sleep(3)
        return await self.inner.extend_locks(queue, locks, lock_duration)


def test_counters_histograms_and_gauges_follow_the_jobs() -> None:
    registry = CollectorRegistry()

    async def go() -> None:
        clock = current_clock()
        backend = MemoryBackend(clock=clock)
        queue = Queue("q", backend, clock=clock)

        async def process(job: Job) -> str:
            if job.name == "flaky" and job.attempts_made == 0:
                raise RuntimeError("first try fails")
            if job.name == "doomed":
                raise UnrecoverableError("never works")
            if job.name == "orphan" and job.attempts_started == 1:
                # Its lock lapses at 1 s while the renewal is on its way; the job is recovered
                # as stalled at 2 s, and the renewal fails when it arrives.
                await job.cancellation.wait()
            await asyncio.sleep(0.2)
            return "ok"

        worker = Worker(
            "q",
            process,
            cast(Storage, SlowRenewals(backend)),
            concurrency=2,
            lock_duration=1_000,
            stalled_interval=1_000,
            clock=clock,
        )
        metrics = instrument(worker, queue, registry=registry, counts_interval=0.5)
        await queue.add("ok")
        await queue.add("flaky", attempts=3)
        await queue.add("doomed", attempts=3)
        await queue.add("orphan")
        refresher = asyncio.create_task(metrics.run())
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(10)
        await worker.close()
        await runner
        await asyncio.wait_for(refresher, 1)  # the worker's "closed" event stops it

    run_virtual(go())
    assert sample(registry, "corral_jobs_completed_total") == 3
    assert sample(registry, "corral_jobs_failed_total") == 1  # doomed
    assert sample(registry, "corral_job_retries_total") == 1  # flaky's first attempt
    assert sample(registry, "corral_jobs_stalled_total") == 1  # orphan
    assert sample(registry, "corral_lock_renewals_failed_total") == 1  # orphan's first run
    # Attempts: ok, flaky twice, doomed, orphan twice (the first one's finish is refused).
    assert sample(registry, "corral_job_wait_seconds_count") == 6
    assert sample(registry, "corral_job_wait_seconds_bucket", le="0.005") == 4  # taken at once
    assert sample(registry, "corral_job_processing_seconds_count") == 5
    assert sample(registry, "corral_job_processing_seconds_sum") == pytest.approx(0.6)
    assert sample(registry, "corral_jobs", state="completed") == 3
    assert sample(registry, "corral_jobs", state="failed") == 1
    assert sample(registry, "corral_jobs", state="waiting") == 0


def test_custom_backoff_that_declines_counts_as_a_failure() -> None:
    registry = CollectorRegistry()

    async def go() -> None:
        clock = current_clock()
        backend = MemoryBackend(clock=clock)
        queue = Queue("q", backend, clock=clock)
        done = asyncio.Event()

        async def process(job: Job) -> None:
            raise RuntimeError("nope")

        worker = Worker(
            "q",
            process,
            backend,
            backoff_strategy=lambda attempts, kind, error, job: -1 if job.name == "no" else 0,
            clock=clock,
        )
        instrument(worker, queue, registry=registry)
        worker.on("failed", lambda job, error: done.set() if job.name == "no" else None)
        await queue.add("yes", attempts=2, backoff={"type": "mine", "delay": 0})
        await queue.add("no", attempts=2, backoff={"type": "mine", "delay": 0})
        runner = asyncio.create_task(worker.run())
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(1)  # the handler's read of the "no" job
        await worker.close()
        await runner

    run_virtual(go())
    # yes: retried once (custom delay 0), then out of attempts; no: the strategy declined.
    assert sample(registry, "corral_job_retries_total") == 1
    assert sample(registry, "corral_jobs_failed_total") == 2


def test_two_workers_share_one_registry() -> None:
    registry = CollectorRegistry()
    backend = MemoryBackend()
    first = instrument(Worker("q", lambda job: None, backend), registry=registry)
    second = instrument(Worker("q", lambda job: None, backend), registry=registry)
    assert first.metrics is second.metrics


def test_exporter_serves_metrics_on_a_free_port() -> None:
    registry = CollectorRegistry()
    instrument(Worker("q", lambda job: None, MemoryBackend()), registry=registry)
    exporter = start_exporter(0, "127.0.0.1", registry)
    try:
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200
            body = reply.read().decode()
    finally:
        exporter.close()
    assert "# TYPE corral_jobs_completed_total counter" in body
    assert "# TYPE corral_job_wait_seconds histogram" in body
    assert "# TYPE corral_jobs gauge" in body


def test_without_prometheus_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "corral.metrics")
    with pytest.raises(ImportError, match=r"pip install 'corral\[prometheus\]'"):
        import corral.metrics  # noqa: F401
