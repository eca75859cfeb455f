"""The Storage protocol: the atomic operations every backend provides.

Backends implement *operations*, not policies (like an httpx transport under its client). Each
operation is one atomic compare-and-move on one queue: it checks its preconditions (the job
exists, the lock token matches, the job is where the caller expects) and returns a typed result.
Expected races — a lock that expired, a job that was removed, a job no longer active — are
results (:class:`~corral.engine.errors.ResultCode`), which the engine turns into BullMQ's errors;
only bugs and transport failures raise. Decisions that have to be made atomically inside the store
(the stalled sweep, promotion of due delayed jobs, retention trimming) take their policy as
parameters.

Times passed as ``now`` are the caller's clock in milliseconds, as in BullMQ. Lock and throttle
TTLs are the store's own (Redis ``PX``; the memory backend keeps expiries against its own clock).
"""

from __future__ import annotations

from typing import Protocol

from corral.engine.storage.dedup import DedupStorage
from corral.engine.storage.flows import FlowAdded, FlowNode, FlowStorage
from corral.engine.storage.job_flow import JobFlowStorage
from corral.engine.storage.limits import LimitStorage
from corral.engine.storage.notifications import NotificationStorage
from corral.engine.storage.operator import OperatorStorage
from corral.engine.storage.readers import ReaderStorage
from corral.engine.storage.records import (
    FINISH_FIELD_PREFIX,
    OUTCOME_COMMANDS,
    OUTCOME_KINDS,
    AddResult,
    Complete,
    Fail,
    Fetched,
    FetchRequest,
    FetchResult,
    FinishResult,
    LockInfo,
    NewJob,
    ObliterateResult,
    Outcome,
    RetryLater,
    RetryNow,
    StalledCheck,
    StoredEvent,
    finish_field,
    finish_record,
    hash_fields,
    new_job,
    next_job,
    parse_finish_record,
    result_code,
)
from corral.engine.storage.schedulers import SchedulerRecord, SchedulerStorage, SchedulerUpsert
from corral.engine.storage.workers import WorkerStorage


class Storage(
    JobFlowStorage,
    ReaderStorage,
    NotificationStorage,
    OperatorStorage,
    DedupStorage,
    WorkerStorage,
    LimitStorage,
    SchedulerStorage,
    FlowStorage,
    Protocol,
):
    """Every atomic operation of one store: the union of the protocols of each concern (the job
    flow, readers, notifications, operator calls, worker presence, rate limits, deduplication,
    job schedulers, flows). Every backend implements all of them."""

    async def close(self) -> None:
        """Release the backend's connections (the memory backend keeps its data)."""
        ...


__all__ = [
    "FINISH_FIELD_PREFIX",
    "OUTCOME_COMMANDS",
    "OUTCOME_KINDS",
    "AddResult",
    "Complete",
    "DedupStorage",
    "Fail",
    "FetchRequest",
    "FetchResult",
    "Fetched",
    "FinishResult",
    "FlowAdded",
    "FlowNode",
    "FlowStorage",
    "JobFlowStorage",
    "LimitStorage",
    "LockInfo",
    "NewJob",
    "NotificationStorage",
    "ObliterateResult",
    "OperatorStorage",
    "Outcome",
    "ReaderStorage",
    "RetryLater",
    "RetryNow",
    "SchedulerRecord",
    "SchedulerStorage",
    "SchedulerUpsert",
    "StalledCheck",
    "Storage",
    "StoredEvent",
    "WorkerStorage",
    "finish_field",
    "finish_record",
    "hash_fields",
    "new_job",
    "next_job",
    "parse_finish_record",
    "result_code",
]
