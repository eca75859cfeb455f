"""``corral inspect`` against the real Redis (real time), and its rich rendering."""

from __future__ import annotations

import asyncio
import io
import json
import signal

import pytest
from processes import json_lines_then_stop
from rich.console import Console

from corral.admin_cli import render, take_snapshot
from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.cli import main
from corral.engine import Queue
from corral.engine.clock import SystemClock
from corral.engine.storage import Complete, Fail, FetchRequest, Storage

TOKEN = "0b8a6e0e-3f2c-4d55-9c55-0e1c0a1c2d3e:1"


async def populate(backend: Storage) -> None:
    """Jobs 1-7 of queue ``q``: 1 held by a live worker, 2 left by a dead one (lock expired),
    both marked by a stalled check; 3 completed; 4 and 5 failed; 6 and 7 waiting."""
    clock = SystemClock()
    queue = Queue("q", backend, clock=clock)
    for n in range(7):
        await queue.add(f"job-{n + 1}", {"n": n + 1}, attempts=2 if n == 4 else 1)
    now = clock.now_ms()
    await backend.fetch_next("q", FetchRequest(TOKEN, 60_000, "live-worker"), now)
    await backend.fetch_next("q", FetchRequest("dead:1", 50), now)
    for job_id, token, outcome in (
        ("3", "w:3", Complete('"ok"')),
        ("4", "w:4", Fail("ValueError: bad address")),
        ("5", "w:5", Fail("TimeoutError: no reply")),
    ):
        await backend.fetch_next("q", FetchRequest(token, 60_000), clock.now_ms())
        await backend.finish("q", job_id, token, outcome, clock.now_ms())
        await asyncio.sleep(0.002)  # distinct finishing times: 5 is the newest failure
    check = await backend.check_stalled("q", max_stalled_count=1, stalled_interval=10, now=now)
    assert check.ran
    await asyncio.sleep(0.1)  # job 2's 50 ms lock has expired


def populate_redis(url: str, prefix: str) -> None:
    async def go() -> None:
        backend = RedisBackend.from_url(url, prefix=prefix)
        try:
            await populate(backend)
        finally:
            await backend.close()

    asyncio.run(go())


@pytest.mark.redis
def test_inspect_json(redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    populate_redis(redis_url, key_prefix)
    args = ["inspect", "--url", redis_url, "--prefix", key_prefix, "--queue", "q", "--json"]
    assert main(args) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["queue"] == "q"
    assert snapshot["prefix"] == key_prefix
    assert snapshot["paused"] is False
    assert snapshot["counts"] == {
        "waiting": 2,
        "prioritized": 0,
        "delayed": 0,
        "active": 2,
        "completed": 1,
        "failed": 2,
        "waiting-children": 0,
    }
    live, dead = snapshot["active"]  # oldest first
    assert live["id"] == "1"
    assert live["token"] == TOKEN
    assert 50_000 < live["lock_ttl_ms"] <= 60_000
    assert live["processed_by"] == "live-worker"
    assert live["marked_stalled"] is True
    assert (live["attempts_started"], live["stalled_counter"]) == (1, 0)
    assert dead["id"] == "2"
    assert (dead["token"], dead["lock_ttl_ms"], dead["marked_stalled"]) == (None, None, True)
    assert snapshot["marked_stalled"] == ["1", "2"]
    failures = [
        (f["id"], f["failed_reason"], f["attempts_made"], f["attempts"]) for f in snapshot["failed"]
    ]
    assert failures == [
        ("5", "TimeoutError: no reply", 1, 2),
        ("4", "ValueError: bad address", 1, 1),
    ]

    assert main([*args, "--limit", "1"]) == 0
    limited = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in limited["active"]] == ["1"]
    assert [job["id"] for job in limited["failed"]] == ["5"]


@pytest.mark.redis
def test_inspect_renders_with_rich(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate_redis(redis_url, key_prefix)
    assert main(["inspect", "--url", redis_url, "--prefix", key_prefix, "--queue", "q"]) == 0
    text = capsys.readouterr().out
    assert "waiting   prioritized   delayed   active   completed   failed" in text
    assert "2             0         0        2           1        2" in text
    assert "held, marked" in text
    assert "STALLED" in text
    assert "marked stalled by the last check: 1, 2" in text
    assert "TimeoutError: no reply" in text
    assert "recent failures, newest 2 of 2" in text


def test_render_of_an_idle_queue_on_the_memory_backend() -> None:
    async def go() -> str:
        backend = MemoryBackend()
        queue = Queue("idle", backend)
        await queue.add("later", delay=60_000)
        await queue.pause()
        snapshot = await take_snapshot(backend, "idle", limit=5, now=SystemClock().now_ms())
        console = Console(file=io.StringIO(), width=100, record=True)
        console.print(render(snapshot))
        return console.export_text()

    text = asyncio.run(go())
    assert "PAUSED" in text
    assert "no active jobs" in text
    assert "no failed jobs" in text
    assert "0             0         1        0           0        0" in text


@pytest.mark.redis
def test_inspect_watch_refreshes_until_sigint(redis_url: str, key_prefix: str) -> None:
    populate_redis(redis_url, key_prefix)
    args = ["--url", redis_url, "--prefix", key_prefix, "--queue", "q", "--watch", "0.1"]
    lines, status = json_lines_then_stop("inspect", *args, "--json", count=2, stop=signal.SIGINT)
    first, second = lines[:2]
    assert first["counts"] == second["counts"]
    assert second["now"] > first["now"]
    assert status == 0


def test_inspect_refuses_memory_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--url", "memory://", "--queue", "q"])
    assert exit_info.value.code == 2
    assert "the in-memory backend lives inside one process" in capsys.readouterr().err


def test_inspect_of_an_unreachable_redis_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", "--url", "redis://127.0.0.1:1/0", "--queue", "q", "--json"]) == 1
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err


@pytest.mark.redis
def test_check_stalled_reports_a_failure_over_the_limit_with_rich(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate_redis(redis_url, key_prefix)  # job 2 is marked and its lock is gone
    args = ["check-stalled", "--url", redis_url, "--prefix", key_prefix, "--queue", "q"]
    assert main([*args, "--stalled-interval", "10", "--max-stalled-count", "0"]) == 0
    assert "failed job 2 job stalled more than allowable limit" in capsys.readouterr().out
