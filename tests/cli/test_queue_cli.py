"""``corral retry | promote | clean | drain | obliterate | pause | resume | remove`` against the
real Redis (real time), including the confirmation of the destructive ones."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest

from corral.backends.redis import RedisBackend
from corral.cli import main
from corral.engine import Queue
from corral.engine.storage import Complete, Fail, FetchRequest

pytestmark = pytest.mark.redis


def on_queue(url: str, prefix: str, work: Any) -> Any:
    async def go() -> Any:
        backend = RedisBackend.from_url(url, prefix=prefix)
        try:
            return await work(Queue("q", backend), backend)
        finally:
            await backend.close()

    return asyncio.run(go())


async def populate(queue: Queue, backend: RedisBackend) -> None:
    """Jobs 1 and 2 failed, 3 completed, 4 active (held), 5 waiting, 6 delayed, 7 prioritized."""
    for n in range(5):
        await queue.add("j", n)
    for job_id, outcome in (("1", Fail("bad")), ("2", Fail("bad")), ("3", Complete("1"))):
        await backend.fetch_next("q", FetchRequest(f"t{job_id}", 60_000), queue.clock.now_ms())
        await backend.finish("q", job_id, f"t{job_id}", outcome, queue.clock.now_ms())
    await backend.fetch_next("q", FetchRequest("held", 60_000), queue.clock.now_ms())
    await queue.add("d", 6, delay=600_000)
    await queue.add("p", 7, priority=3)


async def counts(queue: Queue, _backend: RedisBackend) -> dict[str, int]:
    return {k: v for k, v in (await queue.get_job_counts()).items() if v}


class Terminal(io.StringIO):
    """A stdin that is a terminal, answering the confirmation with its text."""

    def isatty(self) -> bool:
        return True


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, json.loads(out) if out.startswith("{") else out, err


def test_queue_commands_end_to_end(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    on_queue(redis_url, key_prefix, populate)
    target = ("--url", redis_url, "--prefix", key_prefix, "--queue", "q", "--json")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal

    # The store does not count bulk moves: what is left is reported, not "before minus after".
    status, report, _ = run(capsys, "retry", *target)
    assert (status, report["left"], report["counts"]["failed"]) == (0, 0, 0)
    assert "retried" not in report
    status, report, _ = run(capsys, "promote", *target)
    assert (status, report["left"], report["counts"]["delayed"]) == (0, 0, 0)

    # Destructive without --yes and without a terminal: refused, nothing deleted.
    status, _, err = run(capsys, "clean", *target, "--grace", "0")
    assert status == 1
    assert "stdin is not a terminal; pass --yes" in err
    assert on_queue(redis_url, key_prefix, counts)["completed"] == 1

    status, report, _ = run(capsys, "clean", *target, "--grace", "0", "--yes")
    assert (status, report["removed"]) == (0, ["3"])

    # Asked on a terminal: "n" does nothing, "y" goes ahead.
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    status, _, err = run(capsys, "remove", *target, "7")
    assert status == 1
    assert "nothing done" in err
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    status, report, err = run(capsys, "remove", *target, "7", "99")
    assert (status, report["removed"], report["missing"], report["refused"]) == (
        0,
        ["7"],
        ["99"],
        {},
    )
    assert "delete job(s) 7, 99 of queue 'q'" in err

    status, report, _ = run(capsys, "pause", *target)
    assert (status, report["paused"]) == (0, True)
    status, report, _ = run(capsys, "resume", *target)
    assert (status, report["paused"]) == (0, False)

    status, report, _ = run(capsys, "drain", *target, "--yes")
    assert (status, report["left"]) == (0, 0)  # 1, 2, 5 and 6 were waiting
    assert report["counts"] == {
        "waiting": 0,
        "prioritized": 0,
        "delayed": 0,
        "active": 1,
        "completed": 0,
        "failed": 0,
        "waiting-children": 0,
    }

    status, _, err = run(capsys, "obliterate", *target, "--yes")
    assert status == 1
    assert err.strip() == "corral obliterate: Cannot obliterate queue with active jobs"
    status, report, _ = run(capsys, "obliterate", *target, "--yes", "--force")
    assert (status, report["obliterated"]) == (0, True)
    assert on_queue(redis_url, key_prefix, counts) == {}


def test_plain_output_and_usage_errors(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ("--url", redis_url, "--prefix", key_prefix, "--queue", "q")
    assert main(["pause", *target]) == 0
    assert capsys.readouterr().out == "pause: the queue is paused\n"
    with pytest.raises(SystemExit) as exited:
        main(["retry", *target, "--count", "0"])
    assert exited.value.code == 2
    assert "--count must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["clean", *target, "--grace", "0", "--state", "finished"])
    assert "invalid choice: 'finished'" in capsys.readouterr().err


def test_remove_reports_each_id_and_goes_on_past_a_refusal(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A locked job in the middle is refused with its reason; the ids after it are still
    removed, and the ones before it stay in the report."""
    on_queue(redis_url, key_prefix, populate)  # job 4 is active, its lock held
    target = ("--url", redis_url, "--prefix", key_prefix, "--queue", "q", "--yes")
    status, report, _ = run(capsys, "remove", *target, "--json", "5", "4", "7", "99")
    assert status == 1  # something was refused
    assert (report["removed"], report["missing"]) == (["5", "7"], ["99"])
    assert report["refused"] == {
        "4": "Job 4 could not be removed because it is locked by another worker"
    }
    assert on_queue(redis_url, key_prefix, counts)["active"] == 1
    status, text, _ = run(capsys, "remove", *target, "1", "4")
    assert status == 1
    assert text == (
        "remove: removed 1 job(s) (1); refused 4: "
        "Job 4 could not be removed because it is locked by another worker\n"
    )
