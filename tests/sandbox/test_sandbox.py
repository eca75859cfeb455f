"""Sandboxed processors: jobs run in real child processes, on a real event loop and the system
clock (these are plain ``def`` tests calling ``asyncio.run``, not virtual-time ones). Every wait
is bounded."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import sandbox_jobs
from sandbox_helpers import WAIT_S, Recorder, alive, stop

from corral import InvalidArgumentError, JobCancelledError, MemoryBackend, Queue, Worker
from corral.sandbox import (
    SandboxedProcessExitedError,
    SandboxedProcessorError,
    SandboxedRunner,
    import_processor,
)

# ---------------------------------------------------------------------------- round trips


def test_result_and_progress_round_trip() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("sums", backend)
        async_queue = Queue("async-sums", backend)
        sync_job = await queue.add("add", {"a": 2, "b": 3}, attempts=3)
        async_job = await async_queue.add("add", {"a": 20, "b": 22})
        worker = Worker("sums", "sandbox_jobs:add", backend, sandboxed=True, lock_duration=5_000)
        async_worker = Worker(
            "async-sums", sandbox_jobs.add_async, backend, sandboxed=True, lock_duration=5_000
        )
        assert worker.processor is sandbox_jobs.add
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)

        async_seen = Recorder(async_worker)
        task = asyncio.create_task(async_worker.run())
        await async_seen.until(lambda: len(async_seen.of("completed")) == 1)
        await stop(async_worker, task)

        ((job, result),) = seen.of("completed")
        assert job.id == sync_job.id
        assert result["sum"] == 5
        assert result["pid"] != os.getpid()
        # The child's job view: id, name, options and counters of the stored job.
        assert (result["id"], result["name"], result["attempts"]) == (sync_job.id, "add", 3)
        assert result["attempts_made"] == 0
        assert result["progress_seen"] == {"half": True}  # the child's own view, updated
        assert seen.of("progress") == [(job, {"half": True})]
        stored = await queue.get_job(sync_job.id)
        assert stored is not None
        assert stored.progress == {"half": True}
        assert stored.return_value == result
        assert await queue.get_job_state(sync_job.id) == "completed"

        ((job, result),) = async_seen.of("completed")
        assert job.id == async_job.id
        assert result["sum"] == 42
        assert [args[1] for args in async_seen.of("progress")] == [10, 100]
        stored = await async_queue.get_job(async_job.id)
        assert stored is not None
        assert stored.progress == 100
        assert not seen.of("error")
        assert not async_seen.of("error")

    asyncio.run(main())


def test_exception_keeps_the_child_traceback_is_retried_then_fails() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        cases = {  # queue name: (processor, attempts)
            "fail": ("sandbox_jobs:fail", 2),
            "give-up": ("sandbox_jobs:give_up", 3),
            "picky": ("sandbox_jobs:fail_picky", 1),
            "odd": ("sandbox_jobs:return_unpicklable", 3),
        }
        failures: dict[str, list[BaseException]] = {}
        stored_jobs: dict[str, Any] = {}
        for name, (processor, attempts) in cases.items():
            queue = Queue(name, backend)
            added = await queue.add(name, {}, attempts=attempts)
            worker = Worker(name, processor, backend, sandboxed=True)
            seen = Recorder(worker)
            task = asyncio.create_task(worker.run())
            async with asyncio.timeout(WAIT_S):
                while await queue.get_job_state(added.id) != "failed":
                    await asyncio.sleep(0.02)
            await stop(worker, task)
            failures[name] = [args[1] for args in seen.of("failed")]
            stored_jobs[name] = await queue.get_job(added.id)

        # A plain exception: retried once, then failed; each stacktrace is the child's.
        assert [type(e) for e in failures["fail"]] == [ValueError, ValueError]
        stored = stored_jobs["fail"]
        assert stored.failed_reason == "boom on attempt 2"
        assert stored.attempts_made == 2
        assert len(stored.stacktrace) == 2
        for number, trace in enumerate(stored.stacktrace, start=1):
            assert trace.startswith("Traceback (most recent call last):")
            assert "sandbox_jobs.py" in trace
            assert "in _explode" in trace
            assert "in fail" in trace
            assert trace.endswith(f"ValueError: boom on attempt {number}")
            # No parent-side frames (the worker's, or the call that started the run).
            assert "engine/worker.py" not in trace
            assert "engine/running.py" not in trace

        # UnrecoverableError stays unrecoverable: one attempt of three.
        assert [type(e).__name__ for e in failures["give-up"]] == ["UnrecoverableError"]
        stored = stored_jobs["give-up"]
        assert (stored.attempts_made, stored.failed_reason) == (1, "not worth retrying")

        # An exception that cannot be rebuilt here arrives with its message and traceback.
        (error,) = failures["picky"]
        assert isinstance(error, SandboxedProcessorError)
        assert error.remote_type == "sandbox_jobs.PickyError"
        stored = stored_jobs["picky"]
        assert stored.failed_reason == "picky 7: cannot cross"
        assert stored.stacktrace[0].endswith("sandbox_jobs.PickyError: picky 7: cannot cross")

        # A result JSON cannot encode fails the job at once, with the reason a worker gives
        # in-process (it is encoded in the child: only JSON crosses the pipe).
        (error,) = failures["odd"]
        assert type(error).__name__ == "UnrecoverableError"
        assert str(error).startswith("return value of job 1 cannot be encoded as JSON: ")
        assert stored_jobs["odd"].attempts_made == 1

    asyncio.run(main())


# ---------------------------------------------------------------------------- dying children


def test_killed_child_fails_the_attempt_and_is_replaced() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("kills", backend)
        killed = await queue.add("k", {"seconds": 10}, attempts=2)
        worker = Worker("kills", "sandbox_jobs:report_pid_then_sleep", backend, sandboxed=True)
        seen = Recorder(worker)
        victims: list[int] = []

        def kill_first(job: Any, progress: Any) -> None:
            if progress["attempt"] == 1:
                victims.append(progress["pid"])
                os.kill(progress["pid"], signal.SIGKILL)

        worker.on("progress", kill_first)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)

        (victim,) = victims
        ((_, error),) = seen.of("failed")
        assert isinstance(error, SandboxedProcessExitedError)
        assert error.exit_code == -signal.SIGKILL
        assert str(error) == (
            f"sandboxed processor process exited with code -9 (SIGKILL) while running job "
            f"{killed.id}"
        )
        # The retry ran on a fresh child.
        ((_, replacement),) = seen.of("completed")
        assert replacement != victim
        assert not alive(victim)
        stored = await queue.get_job(killed.id)
        assert stored is not None
        assert stored.attempts_made == 2
        assert stored.return_value == replacement
        assert "exited with code -9 (SIGKILL)" in stored.stacktrace[0]

    asyncio.run(main())


def test_child_exiting_mid_job_fails_it_and_the_next_job_runs() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("exits", backend)
        runner = SandboxedRunner("sandbox_jobs:exit_abruptly")
        doomed = await queue.add("exit", {})
        worker = Worker("exits", "sandbox_jobs:exit_abruptly", backend, processor_runner=runner)
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("failed")) == 1)
        await stop(worker, task)
        stored = await queue.get_job(doomed.id)
        assert stored is not None
        assert stored.failed_reason == (
            f"sandboxed processor process exited with code 3 while running job {doomed.id}"
        )
        assert await queue.get_job_state(doomed.id) == "failed"
        assert runner.pids == []

        # The same queue, a processor that works: a fresh pool, a fresh child, the job runs.
        ok = await queue.add("add", {"a": 1, "b": 1})
        worker = Worker("exits", "sandbox_jobs:add", backend, sandboxed=True)
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)
        assert seen.of("completed")[0][0].id == ok.id

    asyncio.run(main())


def test_next_job_runs_on_a_replacement_child_after_a_crash() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("crash-then-ok", backend)
        first = await queue.add("k", {"seconds": 10}, attempts=1)
        second = await queue.add("k", {"seconds": 10}, attempts=1)
        runner = SandboxedRunner("sandbox_jobs:report_pid_then_sleep")
        worker = Worker(
            "crash-then-ok", "sandbox_jobs:report_pid_then_sleep", backend, processor_runner=runner
        )
        seen = Recorder(worker)
        pids: list[int] = []

        def kill_first_job(job: Any, progress: Any) -> None:
            pids.append(progress["pid"])
            if job.id == first.id:
                os.kill(progress["pid"], signal.SIGKILL)
            elif job.id == second.id:
                worker.cancel_job(job.id)  # and the second one is cancelled: terminated too

        worker.on("progress", kill_first_job)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("failed")) == 2)
        # A third job proves the pool still works after a kill and a cancellation.
        third = await queue.add("k", {"seconds": 0}, attempts=1)
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)
        assert seen.of("completed")[0][0].id == third.id
        assert len(set(pids)) == 3  # each job on its own child: two were lost
        (_, first_error), (_, second_error) = seen.of("failed")
        assert isinstance(first_error, SandboxedProcessExitedError)
        assert isinstance(second_error, JobCancelledError)
        assert "cancelled by worker.cancel_job" in str(second_error)
        assert "sandboxed process running it was terminated" in str(second_error)
        assert not any(alive(pid) for pid in pids)
        assert runner.pids == []
        stored = await queue.get_job(second.id)
        assert stored is not None
        assert stored.failed_reason == str(second_error)

    asyncio.run(main())


# ---------------------------------------------------------------------------- the pool


def test_concurrency_bounds_the_children_and_they_are_reused() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("pool", backend)
        await queue.add_bulk([{"name": "s", "data": {"seconds": 0.3}} for _ in range(6)])
        runner = SandboxedRunner("sandbox_jobs:sleep_and_return_pid", concurrency=2)
        worker = Worker(
            "pool",
            "sandbox_jobs:sleep_and_return_pid",
            backend,
            concurrency=2,
            processor_runner=runner,
        )
        seen = Recorder(worker)
        most = 0

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, len(runner.pids))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("completed")) == 6)
        sampler.cancel()
        pids = {result for _, result in seen.of("completed")}
        assert len(pids) == 2  # six jobs, two children, reused
        assert most == 2
        assert sorted(runner.pids) == sorted(pids)
        await stop(worker, task)  # graceful: the children exit
        assert runner.pids == []
        assert not any(alive(pid) for pid in pids)

    asyncio.run(main())


def test_forced_close_kills_the_child_and_requeues_the_job() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("force", backend)
        job = await queue.add("k", {"seconds": 30})
        runner = SandboxedRunner("sandbox_jobs:report_pid_then_sleep")
        worker = Worker(
            "force", "sandbox_jobs:report_pid_then_sleep", backend, processor_runner=runner
        )
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("progress")) == 1)
        (pid,) = runner.pids
        started = time.monotonic()
        await stop(worker, task, force=True)
        assert time.monotonic() - started < 5  # not the 30 s the job would take
        assert not alive(pid)
        assert runner.pids == []
        assert await queue.get_job_state(job.id) == "waiting"  # given back at once

    asyncio.run(main())


def test_lost_lock_terminates_the_child_and_the_stall_is_recovered() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("lost", backend)
        job = await queue.add("k", {"seconds": 30})
        worker = Worker(
            "lost",
            "sandbox_jobs:report_pid_then_sleep",
            backend,
            sandboxed=True,
            lock_duration=500,
            stalled_interval=300,
        )
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("progress")) == 1)
        first_pid = seen.of("progress")[0][1]["pid"]
        # Another party takes the lock away (white-box: the memory store's lock table).
        backend._store("lost").locks.pop(job.id)
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)
        assert seen.of("lock_renewal_failed") == [([job.id],)]
        assert not alive(first_pid)  # terminated, not left running doomed work
        assert [args[0] for args in seen.of("stalled")] == [job.id]
        ((_, second_pid),) = seen.of("completed")
        assert second_pid != first_pid  # the retake ran on a replacement child
        stored = await queue.get_job(job.id)
        assert stored is not None
        assert (stored.stalled_counter, stored.attempts_made) == (1, 1)

    asyncio.run(main())


def test_graceful_close_waits_for_the_running_job() -> None:
    async def main() -> None:
        backend = MemoryBackend()
        queue = Queue("graceful", backend)
        job = await queue.add("s", {"seconds": 0.5})
        runner = SandboxedRunner("sandbox_jobs:sleep_and_return_pid")
        worker = Worker(
            "graceful", "sandbox_jobs:sleep_and_return_pid", backend, processor_runner=runner
        )
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("active")) == 1)
        await stop(worker, task)
        ((_, pid),) = seen.of("completed")
        assert await queue.get_job_state(job.id) == "completed"
        assert runner.pids == []
        assert not alive(pid)

    asyncio.run(main())


# ---------------------------------------------------------------------------- the point of it


def _stall_scenario(processor: str, sandboxed: bool) -> tuple[Recorder, Any]:
    """One CPU-bound job of 1.5 s with lock_duration=500 ms; return the events and the job."""

    async def main() -> tuple[Recorder, Any]:
        backend = MemoryBackend()
        queue = Queue("cpu", backend)
        added = await queue.add("spin", {"seconds": 1.5})
        worker = Worker(
            "cpu",
            processor,
            backend,
            sandboxed=sandboxed,
            lock_duration=500,
            stalled_interval=300,
            max_stalled_count=1,
        )
        seen = Recorder(worker)
        task = asyncio.create_task(worker.run())
        await seen.until(lambda: len(seen.of("completed")) == 1)
        await stop(worker, task)
        return seen, await queue.get_job(added.id)

    return asyncio.run(main())


def test_cpu_bound_job_stalls_in_the_loop_but_not_when_sandboxed() -> None:
    # In-loop: the spin blocks the event loop, so no renewal runs and the lock lapses; the
    # completion is refused ("Missing lock"), the stalled checker recovers the job, and it runs
    # again (the second run does not spin).
    seen, job = _stall_scenario("sandbox_jobs:busy_in_loop", sandboxed=False)
    assert [args[0] for args in seen.of("stalled")] == [job.id]
    assert job.stalled_counter == 1
    assert job.attempts_started == 2
    # (the worker's loop watch saw the block and says so after BullMQ's text)
    (error,) = [str(args[0]) for args in seen.of("error")]
    assert error.startswith(
        f"Missing lock for job {job.id}. moveToFinished, after the event loop was blocked for "
    )

    # Sandboxed: the same spin in a child; the loop keeps renewing the lock.
    seen, job = _stall_scenario("sandbox_jobs:busy", sandboxed=True)
    assert seen.of("lock_renewal_failed") == []
    assert seen.of("stalled") == []
    assert seen.of("error") == []
    assert len(seen.of("locks_renewed")) >= 4  # renewals went on during the 1.5 s spin
    assert job.stalled_counter == 0
    assert job.attempts_started == 1
    assert job.return_value > 0


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("processor", "message"),
    [
        ("sandbox_jobs", "named as"),
        ("sandbox_jobs:", "named as"),
        ("no_such_module_for_corral:run", "cannot import the module"),
        ("sandbox_jobs:missing", "has no attribute 'missing'"),
        ("sandbox_jobs:NOT_CALLABLE", "is not callable"),
        (lambda job: None, "cannot be imported by name"),
        (os, "named as"),  # a module: not callable
        (42, "named as"),
    ],
)
def test_sandboxed_processor_must_be_importable_by_name(processor: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Worker("q", processor, MemoryBackend(), sandboxed=True)


def test_sandboxed_processor_rejections_name_the_problem() -> None:
    def local(job: Any) -> None:
        return None

    with pytest.raises(InvalidArgumentError, match="cannot be imported by name"):
        Worker("q", local, MemoryBackend(), sandboxed=True)
    with pytest.raises(InvalidArgumentError, match="fork is unsafe"):
        SandboxedRunner("sandbox_jobs:add", start_method="fork")
    with pytest.raises(InvalidArgumentError, match="not both"):
        Worker(
            "q",
            "sandbox_jobs:add",
            MemoryBackend(),
            sandboxed=True,
            processor_runner=SandboxedRunner("sandbox_jobs:add"),
        )
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        Worker("q", "sandbox_jobs:add", MemoryBackend(), sandboxed=True, concurrency=0)
    # A top-level function is accepted, and so is a name without sandboxed (imported here).
    assert SandboxedRunner(sandbox_jobs.busy).spec == "sandbox_jobs:busy"
    assert Worker("q", "sandbox_jobs:add", MemoryBackend()).processor is sandbox_jobs.add
    assert import_processor("os.path:join") is os.path.join
