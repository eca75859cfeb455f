"""``corral check-stalled`` against the real Redis server (real time, short TTLs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.backends.redis import RedisBackend
from corral.cli import main
from corral.engine import Queue
from corral.engine.storage import FetchRequest


def _abandon_a_job(url: str, prefix: str, lock_ms: int) -> str:
    """Add a job and take it under a token nobody will renew: what a crashed worker leaves."""

    async def go() -> str:
        backend = RedisBackend.from_url(url, prefix=prefix)
        try:
            job = await Queue("q", backend).add("j")
            await backend.fetch_next("q", FetchRequest("dead:1", lock_ms), int(time.time() * 1000))
            return job.id
        finally:
            await backend.close()

    return asyncio.run(go())


def test_one_pass_marks_then_recovers(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _abandon_a_job(redis_url, key_prefix, lock_ms=100)
    common = ["check-stalled", "--url", redis_url, "--prefix", key_prefix, "--queue", "q"]
    assert main([*common, "--stalled-interval", "50"]) == 0  # marks the active job
    assert "no stalled jobs" in capsys.readouterr().out
    time.sleep(0.3)  # the lock (100 ms) and the throttle (50 ms) have expired by then
    assert main([*common, "--stalled-interval", "50", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [{"event": "recovered", "job_id": job_id, "detail": "(was active)"}]


def test_every_keeps_checking_until_sigterm(redis_url: str, key_prefix: str) -> None:
    job_id = _abandon_a_job(redis_url, key_prefix, lock_ms=100)
    corral = Path(sys.executable).with_name("corral")
    process = subprocess.Popen(
        [
            str(corral),
            "check-stalled",
            "--url",
            redis_url,
            "--prefix",
            key_prefix,
            "--queue",
            "q",
            "--every",
            "100",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("recovered"):
                break
        assert lines[-1].startswith(f"recovered job {job_id}"), lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_unreachable_redis_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-stalled", "--url", "redis://127.0.0.1:1/0", "--queue", "q"]) == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err
