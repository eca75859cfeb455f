"""The ``corral`` command line as a whole: help texts, --version, usage errors, JSON output
and a reader that stops early."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
from processes import CORRAL, corral_unbuffered, json_lines_then_stop

from corral.backends.redis import RedisBackend
from corral.cli import BROKEN_PIPE_STATUS, build_parser, main
from corral.engine import Queue
from corral.engine.storage import FetchRequest

#: The commands that work on a queue in Redis, with the arguments they need besides the URL.
REDIS_COMMANDS = {
    "worker": ["cli_jobs:process", "--queue", "q"],
    "inspect": ["--queue", "q"],
    "check-stalled": ["--queue", "q"],
}


def parsers() -> dict[str, argparse.ArgumentParser]:
    """corral's parser and each subcommand's, by name ("" for corral's)."""
    top = build_parser()
    found = {"": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line of ``text`` as JSON (fails on a line that is not)."""
    lines = text.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]


def test_every_option_has_help() -> None:
    for name, parser in parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"corral {name} {'/'.join(action.option_strings)} has no help"


def test_help_texts_have_no_rest_markup() -> None:
    for name, parser in parsers().items():
        text = parser.format_help()
        assert "`" not in text, f"corral {name} --help:\n{text}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"corral {metadata.version('corral')}\n"


@pytest.mark.parametrize("command", sorted(REDIS_COMMANDS))
def test_url_is_required_and_shown_so(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    usage = parsers()[command].format_usage()
    assert " --url URL " in usage  # not "[--url URL]"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *REDIS_COMMANDS[command]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: corral {command} ")
    assert "the following arguments are required: --url" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--jobs", "0"], "--jobs and --concurrency must be at least 1"),
        (["sim", "--seeds", "0"], "--seeds must be at least 1"),
        (["inspect", "--url", "memory://", "--queue", "q"], "in-memory backend"),
        (["check-stalled", "--url", "redis://h/0", "--queue", "q", "--every", "0"], "--every"),
        (["worker", "m:f", "--url", "redis://h/0", "--queue", "q", "--grace", "-1"], "--grace"),
    ],
)
def test_a_usage_error_shows_the_subcommands_usage(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: corral {args[0]} "), err
    assert message in err


def test_sim_json_lines_parse_with_files_and_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    timeline, log = tmp_path / "run.html", tmp_path / "run.txt"
    args = ["sim", "--seed", "3", "--jobs", "30", "--json", "--timeline", str(timeline)]
    assert main([*args, "--log", str(log)]) == 0
    lines = json_lines(capsys.readouterr().out)
    assert lines[0]["seed"] == 3
    assert {"written": "timeline", "path": str(timeline)} in lines
    assert {"written": "event log", "path": str(log)} in lines
    assert timeline.stat().st_size > 0
    assert log.stat().st_size > 0
    assert main(["sim", "--list", "--json"]) == 0
    listed = json_lines(capsys.readouterr().out)
    assert {"scenario", "description"} <= listed[0].keys()
    assert any("fault" in entry for entry in listed)


def _abandon_a_job(url: str, prefix: str) -> None:
    """Add a job and take it under a 50 ms lock nobody renews (a crashed worker's job)."""

    async def go() -> None:
        backend = RedisBackend.from_url(url, prefix=prefix)
        try:
            await Queue("q", backend).add("j")
            await backend.fetch_next("q", FetchRequest("dead:1", 50), int(time.time() * 1000))
        finally:
            await backend.close()

    asyncio.run(go())


@pytest.mark.redis
def test_check_stalled_json_lines_parse(
    redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _abandon_a_job(redis_url, key_prefix)
    common = ["check-stalled", "--url", redis_url, "--prefix", key_prefix, "--queue", "q"]
    once = [*common, "--json", "--stalled-interval", "60000"]
    assert main(once) == 0  # marks the job
    assert main(once) == 0  # throttled: the first check ran less than 60 s ago
    marked, throttled = json_lines(capsys.readouterr().out)
    assert marked["event"] == "no-stalled-jobs"
    assert throttled["event"] == "throttled"


@pytest.mark.redis
def test_check_stalled_every_json_lines_parse(redis_url: str, key_prefix: str) -> None:
    _abandon_a_job(redis_url, key_prefix)
    args = ["--url", redis_url, "--prefix", key_prefix, "--queue", "q", "--every", "50"]
    lines, status = json_lines_then_stop("check-stalled", *args, "--json", count=2)
    watching, recovered = lines[:2]
    assert watching == {
        "event": "watching",
        "detail": "checking queue 'q' every 50 ms (Ctrl-C stops)",
        "queue": "q",
        "every_ms": 50,
    }
    assert recovered["event"] == "recovered"
    assert status == 0


def test_a_closed_pipe_still_writes_the_timeline_and_ends_quietly(tmp_path: Path) -> None:
    # As `corral sim ... --timeline x.html | head -1`, unbuffered so that the first write after
    # the reader has gone fails at once.
    timeline = tmp_path / "x.html"
    args = ["--seed", "3", "--jobs", "30", "--timeline", str(timeline)]
    process = corral_unbuffered("sim", *args, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("corral sim: scenario 'standard'")
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == BROKEN_PIPE_STATUS
    assert err == ""  # no traceback, no "Exception ignored"
    assert timeline.stat().st_size > 0


@pytest.mark.parametrize("unbuffered", ["0", "1"])
def test_sim_piped_into_head(tmp_path: Path, unbuffered: str) -> None:
    timeline = tmp_path / "x.html"
    # (the shell prints corral's own exit status last: a pipeline's is head's)
    command = (
        f"'{CORRAL}' sim --seed 3 --jobs 30 --timeline '{timeline}' | head -4; "
        'echo "corral exited ${PIPESTATUS[0]}" >&2'
    )
    environ = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered == "1":
        environ["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 4
    # 0 when the run printed no more than head read; 141 (SIGPIPE) when it had more to print
    assert done.stderr in ("corral exited 0\n", "corral exited 141\n")
    assert timeline.stat().st_size > 0
