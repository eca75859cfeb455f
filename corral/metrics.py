"""Prometheus metrics for workers (the optional ``prometheus`` extra).

``instrument(worker)`` attaches counters and histograms to a :class:`~corral.engine.Worker`
through its events, and gauges of the queue's job counts that :meth:`WorkerMetrics.run`
refreshes from the store; :func:`start_exporter` serves them over HTTP for Prometheus to scrape
(``corral worker --metrics-port`` does both)::

    metrics = instrument(worker, queue)
    exporter = start_exporter(9100)
    asyncio.create_task(metrics.run())  # keeps the per-state gauges fresh

Every metric carries a ``queue`` label; several workers in one process (on one queue or several)
share the same metrics. Needs ``pip install 'corral[prometheus]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from typing import Any, Final

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import start_http_server
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "corral.metrics needs prometheus-client: install the extra with "
        "pip install 'corral[prometheus]'"
    ) from exc

from corral.engine import Job, Queue, UnrecoverableError, Worker
from corral.engine.states import JobState

logger = logging.getLogger("corral.metrics")

#: Histogram buckets (seconds) for wait and processing times: jobs take from milliseconds to
#: an hour, well beyond prometheus-client's default buckets (which stop at 10 s).
TIME_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

#: Backoff types the engine computes itself; any other type goes to the worker's strategy,
#: which may decline to retry (see ``_will_retry``).
_BUILTIN_BACKOFF: Final = frozenset({"fixed", "exponential"})


@dataclasses.dataclass(frozen=True)
class Collectors:
    """The metric families corral registers in one registry (all labelled by ``queue``)."""

    completed: Counter
    failed: Counter
    retries: Counter
    stalled: Counter
    lock_renewals_failed: Counter
    jobs: Gauge
    wait_seconds: Histogram
    processing_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Collectors:
        """Register corral's metric families in ``registry``."""
        labels = ["queue"]
        return cls(
            completed=Counter(
                "corral_jobs_completed",
                "Jobs this process completed.",
                labels,
                registry=registry,
            ),
            failed=Counter(
                "corral_jobs_failed",
                "Jobs this process failed for good (attempts exhausted, an UnrecoverableError, "
                "or stalled more than max_stalled_count times).",
                labels,
                registry=registry,
            ),
            retries=Counter(
                "corral_job_retries",
                "Failed attempts this process handed back for another try.",
                labels,
                registry=registry,
            ),
            stalled=Counter(
                "corral_jobs_stalled",
                "Stalled jobs the stalled checks of this process moved back to wait.",
                labels,
                registry=registry,
            ),
            lock_renewals_failed=Counter(
                "corral_lock_renewals_failed",
                "Locks this process found gone or taken when renewing them.",
                labels,
                registry=registry,
            ),
            jobs=Gauge(
                "corral_jobs",
                "Jobs in each state (refreshed from the store every few seconds).",
                [*labels, "state"],
                registry=registry,
            ),
            wait_seconds=Histogram(
                "corral_job_wait_seconds",
                "From adding a job to an attempt starting (processedOn - timestamp; includes "
                "any delay and, for a retry, the earlier attempts).",
                labels,
                buckets=TIME_BUCKETS,
                registry=registry,
            ),
            processing_seconds=Histogram(
                "corral_job_processing_seconds",
                "From an attempt starting to its outcome being stored (completed or failed).",
                labels,
                buckets=TIME_BUCKETS,
                registry=registry,
            ),
        )


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, Collectors] = weakref.WeakKeyDictionary()


def collectors(registry: CollectorRegistry | None = None) -> Collectors:
    """corral's metric families in ``registry`` (the default registry when None), registered
    on first use: every worker instrumented against one registry shares them."""
    registry = REGISTRY if registry is None else registry
    found = _collectors.get(registry)
    if found is None:
        found = _collectors[registry] = Collectors.create(registry)
    return found


class WorkerMetrics:
    """The metrics of one worker: its event handlers and the job-count gauges' refresher.

    Build it with :func:`instrument`.
    """

    def __init__(
        self,
        worker: Worker,
        queue: Queue,
        metrics: Collectors,
        counts_interval: float,
    ) -> None:
        self.worker = worker
        self.queue = queue
        self.metrics = metrics
        self.counts_interval = counts_interval
        self._label = queue.name
        self._stop = asyncio.Event()
        self._handlers: list[tuple[str, Any]] = [
            ("active", self._on_active),
            ("completed", self._on_completed),
            ("failed", self._on_failed),
            ("stalled", self._on_stalled),
            ("lock_renewal_failed", self._on_lock_renewal_failed),
            ("closed", self._on_closed),
        ]
        for event, handler in self._handlers:
            worker.on(event, handler)

    def detach(self) -> None:
        """Stop counting this worker's events (the metrics keep their values)."""
        for event, handler in self._handlers:
            self.worker.off(event, handler)
        self._stop.set()

    # ------------------------------------------------------------------ job-count gauges

    async def refresh_counts(self) -> None:
        """Set the ``corral_jobs{state=...}`` gauges from the store, once."""
        counts = await self.queue.get_job_counts()
        for state in JobState:
            self.metrics.jobs.labels(self._label, state.value).set(counts[state.value])

    async def run(self) -> None:
        """Refresh the job-count gauges now and every ``counts_interval`` seconds until the
        worker closes (or :meth:`detach`). A failed refresh is logged (logger
        ``corral.metrics``) and tried again at the next interval."""
        while not self._stop.is_set():
            try:
                await self.refresh_counts()
            except Exception as exc:
                logger.warning("cannot refresh the job counts of %r: %s", self._label, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.counts_interval)

    # ------------------------------------------------------------------ event handlers

    def _on_active(self, job: Job) -> None:
        if job.processed_on is not None:
            wait_ms = max(0, job.processed_on - job.timestamp)
            self.metrics.wait_seconds.labels(self._label).observe(wait_ms / 1000)

    def _observe_processing(self, job: Job) -> None:
        # The worker stores the outcome at clock.now_ms() just before emitting the event, so
        # this is finishedOn - processedOn to within that one call.
        if job.processed_on is not None:
            elapsed = max(0, self.worker.clock.now_ms() - job.processed_on)
            self.metrics.processing_seconds.labels(self._label).observe(elapsed / 1000)

    def _on_completed(self, job: Job, _result: object) -> None:
        self.metrics.completed.labels(self._label).inc()
        self._observe_processing(job)

    def _on_failed(self, job: Job | None, error: BaseException) -> Any:
        if job is not None and job.token is not None:  # not a stall failure from the checker
            self._observe_processing(job)
        if job is not None and _will_retry(job, error):
            if job.opts.backoff is not None and job.opts.backoff.type not in _BUILTIN_BACKOFF:
                # A custom backoff strategy may have declined to retry: ask the store.
                return self._count_custom_backoff(job)
            self.metrics.retries.labels(self._label).inc()
        else:
            self.metrics.failed.labels(self._label).inc()
        return None

    async def _count_custom_backoff(self, job: Job) -> None:
        # Only a final failure sets finishedOn; a later attempt would have raised atm. A job
        # that is gone was deleted by remove_on_fail.
        fields = await self.queue.backend.get_job(self.queue.name, job.id)
        final = fields is None or (
            "finishedOn" in fields and fields.get("atm") == str(job.attempts_made)
        )
        (self.metrics.failed if final else self.metrics.retries).labels(self._label).inc()

    def _on_stalled(self, _job_id: str, _previous: str) -> None:
        self.metrics.stalled.labels(self._label).inc()

    def _on_lock_renewal_failed(self, job_ids: list[str]) -> None:
        self.metrics.lock_renewals_failed.labels(self._label).inc(len(job_ids))

    def _on_closed(self) -> None:
        self._stop.set()


def _will_retry(job: Job, error: BaseException) -> bool:
    """Whether a failed attempt leads to another try (``attempts_made`` already counts it)."""
    return not isinstance(error, UnrecoverableError) and job.attempts_made < job.opts.attempts


def instrument(
    worker: Worker,
    queue: Queue | None = None,
    *,
    registry: CollectorRegistry | None = None,
    counts_interval: float = 15.0,
) -> WorkerMetrics:
    """Count ``worker``'s jobs in Prometheus metrics.

    Args:
        worker: the worker to observe (through its events; it is not otherwise changed).
        queue: the queue whose job counts the gauges show (by default the worker's queue on the
            worker's backend).
        registry: where the metrics live (prometheus-client's default registry when None).
        counts_interval: seconds between refreshes of the job-count gauges by
            :meth:`WorkerMetrics.run`.

    Returns:
        The worker's metrics; run ``await metrics.run()`` (as a task) to keep the job-count
        gauges fresh.
    """
    if counts_interval <= 0:
        raise ValueError(f"counts_interval must be positive, got {counts_interval!r}")
    if queue is None:
        queue = Queue(worker.queue_name, worker.backend, clock=worker.clock)
    return WorkerMetrics(worker, queue, collectors(registry), counts_interval)


@dataclasses.dataclass
class Exporter:
    """A running ``/metrics`` HTTP endpoint (a daemon thread); :meth:`close` stops it."""

    server: Any
    thread: Any

    @property
    def port(self) -> int:
        """The port it listens on (the one picked by the system when started with port 0)."""
        port: int = self.server.server_port
        return port

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_exporter(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> Exporter:
    """Serve the registry's metrics at ``http://addr:port/metrics`` from a daemon thread.

    Raises:
        OSError: if the port cannot be bound (already in use, no permission).
    """
    server, thread = start_http_server(port, addr, REGISTRY if registry is None else registry)
    return Exporter(server, thread)
