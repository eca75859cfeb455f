"""corral.engine: the backend-agnostic job-queue engine (no I/O, injected time)."""

from corral.engine.checker import StalledChecker
from corral.engine.clock import Clock, SystemClock
from corral.engine.errors import (
    ClosedError,
    CorralError,
    DelayedError,
    InvalidArgumentError,
    JobCancelledError,
    JobSchedulerError,
    LockLostError,
    RateLimitError,
    StoreRefusedError,
    UnknownOptionError,
    UnrecoverableError,
    WaitingChildrenError,
    WaitingError,
)
from corral.engine.escapes import ProcessorEscapeError
from corral.engine.flow_producer import FlowProducer, JobNode
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
    "DelayedError",
    "FlowProducer",
    "InvalidArgumentError",
    "Job",
    "JobCancelledError",
    "JobNode",
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
    "WaitingChildrenError",
    "WaitingError",
    "Worker",
]
