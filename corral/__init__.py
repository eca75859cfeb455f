"""corral: a job queue with BullMQ's semantics, pluggable storage and a chaos simulator.

The names most programs need, in one place::

    from corral import MemoryBackend, Queue, Worker

``SyncQueue`` is the blocking Queue for code without an event loop (see :mod:`corral.sync`).
"""

from corral.backends.memory import MemoryBackend
from corral.engine import (
    Backoff,
    Cancellation,
    CorralError,
    InvalidArgumentError,
    Job,
    JobCancelledError,
    JobState,
    LockLostError,
    Queue,
    QueueEvent,
    QueueEvents,
    StalledChecker,
    UnrecoverableError,
    Worker,
)
from corral.sync import SyncQueue

__all__ = [
    "Backoff",
    "Cancellation",
    "CorralError",
    "InvalidArgumentError",
    "Job",
    "JobCancelledError",
    "JobState",
    "LockLostError",
    "MemoryBackend",
    "Queue",
    "QueueEvent",
    "QueueEvents",
    "StalledChecker",
    "SyncQueue",
    "UnrecoverableError",
    "Worker",
]
