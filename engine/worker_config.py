"""Checking a Worker's options, once, before the worker is built.

:func:`worker_config` validates what ``Worker(...)`` was given and returns it normalised (durations
in integer ms, the processor callable, the sandbox's runner made when ``sandboxed`` asks for one)
as a :class:`WorkerConfig`. The Worker copies the fields onto its own attributes, which the
per-job code reads; nothing here is read per job.
"""

from __future__ import annotations

import dataclasses

from corral.engine.errors import InvalidArgumentError
from corral.engine.inputs import check_utf8
from corral.engine.job import Duration, KeepJobs, duration_ms, validate_queue_name
from corral.engine.running import Processor, ProcessorRunner


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    """A Worker's validated options (see :class:`~corral.engine.worker.Worker` for each)."""

    queue_name: str
    processor: Processor | None  # None: manual fetching only (corral.engine.manual_fetch)
    processor_runner: ProcessorRunner | None
    concurrency: int
    lock_duration: int
    lock_renew_time: int
    stalled_interval: int
    max_stalled_count: int
    skip_stalled_check: bool
    skip_lock_renewal: bool
    drain_delay: int
    name: str | None
    remove_on_complete: KeepJobs = KeepJobs()
    remove_on_fail: KeepJobs = KeepJobs()


def worker_config(
    queue_name: str,
    processor: Processor | str | None,
    *,
    concurrency: int,
    lock_duration: Duration,
    lock_renew_time: Duration | None,
    stalled_interval: Duration,
    max_stalled_count: int,
    skip_stalled_check: bool,
    skip_lock_renewal: bool,
    drain_delay: Duration,
    name: str | None,
    sandboxed: bool,
    processor_runner: ProcessorRunner | None,
    remove_on_complete: object = None,
    remove_on_fail: object = None,
) -> WorkerConfig:
    """Validate a Worker's options and return them normalised.

    Raises:
        InvalidArgumentError: an option is out of range or of the wrong type, or ``sandboxed``
            and ``processor_runner`` are both given.
    """
    queue_name = validate_queue_name(queue_name)
    if sandboxed and processor_runner is not None:
        raise InvalidArgumentError("give either sandboxed=True or a processor_runner, not both")
    if (sandboxed and processor is not None) or isinstance(processor, str):
        # The process pool does I/O, so it lives outside the engine, imported only if used.
        from corral.sandbox import SandboxedRunner, import_processor

        if sandboxed:
            sandbox = SandboxedRunner(processor, concurrency=concurrency)
            processor, processor_runner = sandbox.function, sandbox
        elif isinstance(processor, str):
            processor = import_processor(processor)
    if processor is not None and not callable(processor):
        raise InvalidArgumentError(f"processor must be callable, got {processor!r}")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidArgumentError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if not isinstance(max_stalled_count, int) or max_stalled_count < 0:
        raise InvalidArgumentError(f"max_stalled_count must be >= 0: {max_stalled_count!r}")
    lock_ms = duration_ms(lock_duration, "lock_duration", allow_zero=False)
    renew_ms = (
        lock_ms // 2
        if lock_renew_time is None
        else duration_ms(lock_renew_time, "lock_renew_time", allow_zero=False)
    )
    if renew_ms > lock_ms:
        raise InvalidArgumentError(
            f"lock_renew_time ({renew_ms} ms) must not exceed lock_duration "
            f"({lock_ms} ms), or locks expire between renewals"
        )
    stalled_ms = duration_ms(stalled_interval, "stalled_interval", allow_zero=False)
    drain_ms = duration_ms(drain_delay, "drain_delay", allow_zero=False)
    if name is not None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"worker name must be a string, got {name!r}")
        check_utf8(name, "worker name")
    return WorkerConfig(
        queue_name=queue_name,
        processor=processor,
        processor_runner=processor_runner,
        concurrency=concurrency,
        lock_duration=lock_ms,
        lock_renew_time=renew_ms,
        stalled_interval=stalled_ms,
        max_stalled_count=max_stalled_count,
        skip_stalled_check=skip_stalled_check,
        skip_lock_renewal=skip_lock_renewal,
        drain_delay=drain_ms,
        name=name,
        # Defaults for jobs without their own (see corral.engine.policy.keep_jobs).
        remove_on_complete=KeepJobs.parse(remove_on_complete or False, "remove_on_complete"),
        remove_on_fail=KeepJobs.parse(remove_on_fail or False, "remove_on_fail"),
    )
