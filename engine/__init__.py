"""corral.engine: the backend-agnostic job-queue engine (no I/O, injected time)."""

from corral.engine.checker import StalledChecker
from corral.engine.clock import Clock, SystemClock
from corral.engine.errors import (
    ClosedError,
    CorralError,
    InvalidArgumentError,
    JobCancelledError,
    JobSchedulerError,
    LockLostError,
    RateLimitError,
    StoreRefusedError,
    UnknownOptionError,
    UnrecoverableError,
)
from corral.engine.escapes import ProcessorEscapeError
from corral.engine.job import Backoff, Cancellation, Job, JobOptions, KeepJobs
from corral.engine.queue import Queue
from corral.engine.queue_events import QueueEvent, QueueEvents
from corral.engine.states import JobState
from corral.engine.storage import StalledCheck, Storage
from corral.engine.worker import Worker

__all__ = [
    "Backoff",
    "Cancellation",
    "Clock",
    "ClosedError",
    "CorralError",
    "InvalidArgumentError",
    "Job",
    "JobCancelledError",
    "JobOptions",
    "JobSchedulerError",
    "JobState",
    "KeepJobs",
    "LockLostError",
    "ProcessorEscapeError",
    "Queue",
    "QueueEvent",
    "QueueEvents",
    "RateLimitError",
    "StalledCheck",
    "StalledChecker",
    "Storage",
    "StoreRefusedError",
    "SystemClock",
    "UnknownOptionError",
    "UnrecoverableError",
    "Worker",
]
