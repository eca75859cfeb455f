"""Sandboxed processors: what crosses the pipe. Every message from a child carries the run it
belongs to and nothing of a finished run reaches another job; only JSON crosses, so nothing a
child sends is unpickled in the worker; a child that breaks the protocol is replaced and its job
failed. Real child processes on a real loop, as in ``test_sandbox.py``; every wait is bounded."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import pytest
import sandbox_jobs
from sandbox_helpers import WAIT_S, Recorder, alive, stop

import corral.sandbox
from corral import MemoryBackend, Queue, UnrecoverableError, Worker
from corral.sandbox import SandboxedProcessorError, SandboxedProtocolError, SandboxedRunner
from corral.sandbox_protocol import RemoteFailure, decode_child_message


async def _run_until_settled(
    worker: Worker, queue: Queue, job_ids: list[str]
) -> tuple[Recorder, dict[str, Any]]:
    """Run ``worker`` until every job is completed or failed; return its events and the jobs."""
    seen = Recorder(worker)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(WAIT_S):
        while True:
            states = [await queue.get_job_state(job_id) for job_id in job_ids]
            if all(state in ("completed", "failed") for state in states):
                break
            await asyncio.sleep(0.02)
    await stop(worker, task)
    return seen, {job_id: await queue.get_job(job_id) for job_id in job_ids}


# "late" jobs return at once and leave a thread (or a task) that reports progress after. Before
# runs were tagged, "stamped": that progress, sent 50 ms after while the next job sleeps 300 ms,
# landed on the next job; "racing": a reporter that read the next job's request off the pipe left
# that job hanging active, its lock renewed.
PATTERNS = {
    "stamped": [("late", 0.05), ("n", 0.3), ("late", 0.05), ("n", 0.3)],
    "racing": [("late", 0.0), ("late", 0.0), ("late", 0.0), ("late", 0.0), ("n", 0.3)],
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@pytest.mark.parametrize(
    "processor", ["sandbox_jobs:leave_a_reporter", "sandbox_jobs:leave_a_task"]
)
def test_progress_after_the_processor_returned_never_reaches_another_job(
    processor: str, pattern: str
) -> None:
    kinds = PATTERNS[pattern]

    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("late", backend)
        added = [
            await queue.add(kind, {"kind": kind, "late_after": after, "seconds": 0.3})
            for kind, after in kinds
        ]
        worker = Worker("late", processor, backend, sandboxed=True, lock_duration=5_000)
        seen, stored = await _run_until_settled(worker, queue, [job.id for job in added])
        # A reporter may still get in before its job's answer: then it is that job's progress.
        own = {job.id: {"late_from": job.id} for job in added}
        assert [value for _, value in seen.of("progress")] == [
            own[job.id] for job, _ in seen.of("progress")
        ]
        for job_id, job in stored.items():
            assert job.progress in (0, own[job_id])
        assert [job.id for job, _ in seen.of("completed")] == [job.id for job in added]
        assert [result for _, result in seen.of("completed")] == [job.id for job in added]
        assert seen.of("failed") == []
        assert seen.of("error") == []

    asyncio.run(main())


def test_results_and_errors_are_never_unpickled_in_the_worker() -> None:
    # Booby's __reduce__ makes loading a pickle of it call a function: in the worker, before.
    async def main() -> None:
        backend = MemoryBackend()
        returns, raises = Queue("returns", backend), Queue("raises", backend)
        returned = await returns.add("r", {}, attempts=3)
        raised = await raises.add("r", {})
        worker = Worker("returns", "sandbox_jobs:return_booby", backend, sandboxed=True)
        seen, stored = await _run_until_settled(worker, returns, [returned.id])
        assert sandbox_jobs.UNPICKLED == []
        ((_, error),) = seen.of("failed")
        assert isinstance(error, UnrecoverableError)  # not retried: it would fail the same way
        assert stored[returned.id].failed_reason == (
            f"return value of job {returned.id} cannot be encoded as JSON: "
            "Object of type Booby is not JSON serializable"
        )
        assert stored[returned.id].attempts_made == 1

        worker = Worker("raises", "sandbox_jobs:raise_with_booby", backend, sandboxed=True)
        seen, stored = await _run_until_settled(worker, raises, [raised.id])
        assert sandbox_jobs.UNPICKLED == []
        ((_, error),) = seen.of("failed")
        # Its argument cannot cross as JSON: the message and the child's traceback do.
        assert isinstance(error, SandboxedProcessorError)
        assert error.remote_type == "builtins.ValueError"
        assert str(error).startswith("<sandbox_jobs.Booby object at ")
        assert stored[raised.id].stacktrace[0].startswith("Traceback (most recent call last):")
        assert "in raise_with_booby" in stored[raised.id].stacktrace[0]

    asyncio.run(main())


def test_a_child_that_breaks_the_protocol_is_replaced_and_its_job_failed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Children run sandbox_jobs.rogue_child instead of the real entry point: each job's data
    # says how it answers.
    monkeypatch.setattr(corral.sandbox, "child_main", sandbox_jobs.rogue_child)
    caplog.set_level(logging.DEBUG, logger="corral.sandbox")

    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("rogue", backend)
        stale = await queue.add("stale", {"rogue": "stale"})
        pickled = await queue.add("pickle", {"rogue": "pickle"})
        garbage = await queue.add("garbage", {"rogue": "garbage"})
        fine = await queue.add("fine", {"rogue": "fine"})
        runner = SandboxedRunner("sandbox_jobs:add")
        worker = Worker("rogue", "sandbox_jobs:add", backend, processor_runner=runner)
        job_ids = [stale.id, pickled.id, garbage.id, fine.id]
        seen, stored = await _run_until_settled(worker, queue, job_ids)

        # Progress and an answer of another run are dropped (the progress answered, so that
        # its reporter does not wait forever); the job gets its own run's answer.
        assert seen.of("progress") == []
        ((_, first), (_, last)) = seen.of("completed")
        assert first["ack"] == [0, 1, "progress of a finished run (0) is dropped"]
        assert stored[stale.id].progress == 0
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert [text.split(": ", 1)[1] for text in dropped] == [
            "dropped progress of run 0 (current run: 1)",
            "dropped done of run 0 (current run: 1)",
        ]

        # A pickle (what children used to send) is not a message: never loaded, the job fails.
        ((_, pickle_error), (_, garbage_error)) = seen.of("failed")
        assert isinstance(pickle_error, SandboxedProtocolError)
        assert isinstance(garbage_error, SandboxedProtocolError)
        assert sandbox_jobs.UNPICKLED == []
        assert stored[pickled.id].failed_reason.startswith(
            f"sandboxed processor process {first['pid']} broke the protocol (not a JSON message: "
        )
        assert stored[pickled.id].failed_reason.endswith(
            f"while running job {pickled.id}; it was killed"
        )
        assert stored[garbage.id].failed_reason.endswith(
            "broke the protocol ('done' message without a valid 'run') while running job "
            f"{garbage.id}; it was killed"
        )
        # Each misbehaving child was killed and replaced: the last job ran on a fresh one.
        assert not alive(first["pid"])
        assert last != first["pid"]
        assert runner.pids == []

    asyncio.run(main())


# ---------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x80\x04K\x01.", "not a JSON message"),
        (b"[1, 2]", "not a JSON object: list"),
        (b'{"kind": "exec"}', "unknown message kind 'exec'"),
        (b'{"kind": "done", "value": 1}', "'done' message without a valid 'run'"),
        (b'{"kind": "done", "run": true, "value": 1}', "'done' message without a valid 'run'"),
        (b'{"kind": "done", "run": 1}', "'done' message without a value"),
        (b'{"kind": "done", "run": 1, "value": NaN}', "NaN is not JSON"),
        (b'{"kind": "progress", "run": 1, "value": 1}', "without a valid 'seq'"),
        (b'{"kind": "failed", "run": 1, "error": {}}', "error of a 'failed' message without"),
        (b'{"kind": "fatal"}', "'fatal' message without a valid 'message'"),
    ],
)
def test_malformed_child_messages_are_refused(data: bytes, problem: str) -> None:
    with pytest.raises(SandboxedProtocolError, match=problem):
        decode_child_message(data)


def test_exceptions_are_rebuilt_only_from_classes_already_loaded() -> None:
    def failure(module: str, qualname: str, args: list[Any] | None, message: str) -> Any:
        return RemoteFailure(module, qualname, args, message, "Traceback: remote", False).rebuild()

    error = failure("builtins", "KeyError", ["k"], "'k'")
    assert type(error) is KeyError
    assert error.args == ("k",)
    assert error.corral_remote_stacktrace == "Traceback: remote"  # type: ignore[attr-defined]
    # A module nobody imported is not imported on a child's word.
    error = failure("corral_no_such_module", "Boom", ["x"], "x")
    assert isinstance(error, SandboxedProcessorError)
    assert error.remote_type == "corral_no_such_module.Boom"
    assert "corral_no_such_module" not in sys.modules
    # Not an exception class; or one that would not give back the same message.
    assert isinstance(failure("os", "system", ["true"], "true"), SandboxedProcessorError)
    assert isinstance(
        failure("sandbox_jobs", "PickyError", ["picky 7: x"], "picky 7: x"), SandboxedProcessorError
    )
    unrecoverable = RemoteFailure("m", "Gone", None, "no", "", True).rebuild()
    assert type(unrecoverable) is UnrecoverableError
    assert str(unrecoverable) == "no"
