"""``corral worker`` driven as a subprocess against the real Redis (real time, bounded waits).

The processors live in ``cli_jobs.py`` beside this file, which the subprocesses import through
PYTHONPATH, as a user's worker imports their own module.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.backends.redis import RedisBackend
from corral.cli import main
from corral.engine import Job, Queue
from corral.worker_cli import load_processor

CORRAL = Path(sys.executable).with_name("corral")
HERE = Path(__file__).parent
QUEUE = "q"


class WorkerProcess:
    """A ``corral worker`` subprocess whose log goes to a file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log_path = log
        paths = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                [str(CORRAL), "worker", *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log)
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the worker's log:\n{self.log}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit in {timeout} s:\n{self.log}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts worker subprocesses; kills any still running after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = WorkerProcess(list(args), tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def on_queue(redis_url: str, prefix: str, action: Callable[[Queue], Any]) -> Any:
    """Run ``await action(queue)`` on the test's queue in Redis."""

    async def go() -> Any:
        backend = RedisBackend.from_url(redis_url, prefix=prefix)
        try:
            return await action(Queue(QUEUE, backend))
        finally:
            await backend.close()

    return asyncio.run(go())


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def job(redis_url: str, prefix: str, job_id: str) -> Job:
    found = on_queue(redis_url, prefix, lambda queue: queue.get_job(job_id))
    assert found is not None, f"job {job_id} is gone"
    return found


def state(redis_url: str, prefix: str, job_id: str) -> str:
    found: str = on_queue(redis_url, prefix, lambda queue: queue.get_job_state(job_id))
    return found


def counts(redis_url: str, prefix: str) -> dict[str, int]:
    found: dict[str, int] = on_queue(redis_url, prefix, lambda queue: queue.get_job_counts())
    return found


def common(redis_url: str, prefix: str) -> list[str]:
    return ["--url", redis_url, "--prefix", prefix, "--queue", QUEUE]


@pytest.mark.redis
def test_worker_processes_jobs_logs_them_and_serves_metrics(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    async def add(queue: Queue) -> None:
        for _ in range(3):
            await queue.add("quick")
        await queue.add("fail", attempts=2)

    on_queue(redis_url, key_prefix, add)
    worker = workers(
        "cli_jobs:process",
        *common(redis_url, key_prefix),
        "--concurrency",
        "2",
        "--metrics-port",
        "0",
        "--name",
        "cli-test",
    )
    port = int(worker.wait_for_log(r"metrics at http://127\.0\.0\.1:(\d+)/metrics")[1])
    with pytest.raises(
        ConnectionRefusedError
    ):  # bound to 127.0.0.1 only (--metrics-addr), not 0.0.0.0
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    wait_until(
        lambda: (
            counts(redis_url, key_prefix)["completed"] == 3
            and counts(redis_url, key_prefix)["failed"] == 1
        ),
        "3 completed jobs and 1 failed",
    )
    assert job(redis_url, key_prefix, "1").return_value["done"] == "1"
    assert job(redis_url, key_prefix, "1").processed_by == "cli-test"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert 'corral_jobs_completed_total{queue="q"} 3.0' in metrics
    assert 'corral_jobs_failed_total{queue="q"} 1.0' in metrics
    assert 'corral_job_retries_total{queue="q"} 1.0' in metrics
    assert 'corral_job_processing_seconds_count{queue="q"} 5.0' in metrics

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    log = worker.log
    assert "job 1 (quick) active (attempt 1)" in log
    assert re.search(r"job 1 \(quick\) completed in \d+\.\d+ s", log)
    assert "WARNING corral.worker: job 4 (fail) attempt 1 of 2 failed" in log
    assert "ERROR   corral.worker: job 4 (fail) failed" in log
    assert "job 4 was told to fail" in log
    assert "SIGTERM: closing" in log
    assert "closed" in log.splitlines()[-1]


@pytest.mark.redis
def test_sigterm_mid_job_requeues_it_for_a_second_worker(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    added = on_queue(redis_url, key_prefix, lambda queue: queue.add("slow", {"seconds": 60}))
    first = workers("cli_jobs:process", *common(redis_url, key_prefix), "--grace", "0.5")
    first.wait_for_log(r"job 1 \(slow\) active")
    assert state(redis_url, key_prefix, added.id) == "active"

    stopped_at = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert time.monotonic() - stopped_at >= 0.5  # the grace period was given
    assert "grace period of 0.5 s is over: handing back job 1" in first.log
    requeued = job(redis_url, key_prefix, added.id)
    assert state(redis_url, key_prefix, added.id) == "waiting"
    assert (requeued.stalled_counter, requeued.attempts_made) == (0, 0)  # no stall counted

    second = workers("cli_jobs:finish", *common(redis_url, key_prefix))
    wait_until(lambda: state(redis_url, key_prefix, added.id) == "completed", "the second worker")
    finished = job(redis_url, key_prefix, added.id)
    assert finished.return_value["finished_by"] == "second worker"
    assert (finished.stalled_counter, finished.attempts_made) == (0, 1)
    second.signal(signal.SIGINT)
    assert second.wait() == 0


@pytest.mark.redis
def test_graceful_stop_lets_a_running_job_finish(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    added = on_queue(redis_url, key_prefix, lambda queue: queue.add("slow", {"seconds": 1}))
    worker = workers("cli_jobs:process", *common(redis_url, key_prefix), "--grace", "20")
    worker.wait_for_log(r"job 1 \(slow\) active")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert state(redis_url, key_prefix, added.id) == "completed"
    assert "waiting up to 20 s for job 1" in worker.log


@pytest.mark.redis
def test_a_second_signal_forces_at_once(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    added = on_queue(redis_url, key_prefix, lambda queue: queue.add("stuck"))
    # A plain function stuck in its thread for 60 s, and a grace period as long: only the
    # second signal can end this worker quickly.
    worker = workers("cli_jobs:blocking", *common(redis_url, key_prefix), "--grace", "60")
    worker.wait_for_log(r"job 1 \(stuck\) active")
    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    worker.wait_for_log("SIGTERM: closing")
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    assert time.monotonic() - stopped_at < 15
    assert "second signal (SIGINT): closing now, handing back job 1" in worker.log
    assert "still running; their jobs were handed back" in worker.log
    requeued = job(redis_url, key_prefix, added.id)
    assert state(redis_url, key_prefix, added.id) == "waiting"
    assert requeued.stalled_counter == 0


@pytest.mark.redis
def test_a_processor_raising_cancelled_error_fails_its_job_and_the_worker_goes_on(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    def add(queue: Queue) -> Any:
        return queue.add("x")

    first = on_queue(redis_url, key_prefix, add)
    worker = workers("cli_jobs:raises_cancelled", *common(redis_url, key_prefix))
    wait_until(lambda: state(redis_url, key_prefix, first.id) == "failed", "the first failure")
    second = on_queue(redis_url, key_prefix, add)
    wait_until(lambda: state(redis_url, key_prefix, second.id) == "failed", "the second one")
    reason = "the processor raised CancelledError, but nothing cancelled it"
    assert job(redis_url, key_prefix, first.id).failed_reason == reason
    assert worker.process.poll() is None  # still serving
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert f"job {first.id} (x) failed" in worker.log
    assert "Traceback" not in worker.log


@pytest.mark.redis
def test_a_processor_calling_sys_exit_hands_its_job_back_and_exits_with_its_code(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    added = on_queue(redis_url, key_prefix, lambda queue: queue.add("x"))
    worker = workers("cli_jobs:raises_exit", *common(redis_url, key_prefix))
    assert worker.wait() == 3
    assert "the processor raised SystemExit(3): the worker closed" in worker.log
    assert "Traceback" not in worker.log
    assert state(redis_url, key_prefix, added.id) == "waiting"
    assert job(redis_url, key_prefix, added.id).attempts_made == 0


@pytest.mark.redis
def test_sandboxed_jobs_run_in_child_processes(
    redis_url: str, key_prefix: str, workers: Callable[..., WorkerProcess]
) -> None:
    added = on_queue(redis_url, key_prefix, lambda queue: queue.add("quick"))
    worker = workers("cli_jobs:process", *common(redis_url, key_prefix), "--sandboxed")
    worker.wait_for_log(r"job 1 \(quick\) completed")
    assert job(redis_url, key_prefix, added.id).return_value["pid"] != worker.process.pid
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "processor cli_jobs:process (sandboxed)" in worker.log


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "the following arguments are required: --url"),
        ("", "corral worker needs the Redis server the queue lives in"),
        ("memory://", "the in-memory backend lives inside one process"),
        ("http://localhost", "unsupported URL"),
        ("redis://localhost:port/0", "invalid URL 'redis://localhost:port/0'"),
    ],
)
def test_a_url_that_is_not_redis_is_refused(
    url: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["worker", "cli_jobs:process", "--queue", QUEUE]
    with pytest.raises(SystemExit) as exit_info:
        main(args if url is None else [*args, "--url", url])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_queue_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "cli_jobs:process", "--url", "redis://127.0.0.1:1/0", "--queue", "a:b"])
    assert exit_info.value.code == 2
    assert "queue name 'a:b' must not contain ':'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cli_jobs", "must be given as module:function"),
        ("no_such_module_here:run", "cannot import module 'no_such_module_here'"),
        ("cli_jobs:missing", "module 'cli_jobs' has no attribute 'missing'"),
        ("cli_jobs:NOT_CALLABLE", "is a int, not a function"),
    ],
)
def test_a_processor_that_cannot_be_imported_is_a_clear_error(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker", spec, "--url", "redis://127.0.0.1:1/0", "--queue", QUEUE])
    assert code == 2
    assert message in capsys.readouterr().err


def test_unreachable_redis_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    code = main(["worker", "cli_jobs:process", "--url", "redis://127.0.0.1:1/0", "--queue", "q"])
    assert code == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in caplog.text


def test_metrics_port_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "corral.metrics", raising=False)
    args = ["cli_jobs:process", "--url", "redis://127.0.0.1:1/0", "--queue", QUEUE]
    code = main(["worker", *args, "--metrics-port", "9100"])
    assert code == 2
    assert "pip install 'corral[prometheus]'" in capsys.readouterr().err


def test_processor_modules_are_found_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_cwd_jobs.py").write_text("class Jobs:\n    def send(job):\n        return 1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_cwd_jobs", raising=False)
    processor = load_processor("my_cwd_jobs:Jobs.send")
    assert processor(None) == 1
    assert sys.path[-1] == str(tmp_path)  # searched last: it shadows no installed package
