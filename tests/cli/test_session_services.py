"""The test session provides what the tests need (tests/session_services.py): a private
redis-server when none answers, ``npm ci`` for the interop tests, else one loud line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from processes import python_in_root
from session_services import install_node_packages

SMOKE = "tests/engine/test_smoke.py"
SMOKE_REDIS = f"{SMOKE}::test_add_process_complete[redis]"
INTEROP = "tests/interop/test_bullmq_interop.py::test_corral_jobs_run_on_a_node_worker"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def session(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """A pytest session in the repository root with no Redis at CORRAL_REDIS_URL."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CORRAL_REQUIRE_REDIS", "CORRAL_REQUIRE_NODE", "PYTEST_ADDOPTS")
    }
    environ["CORRAL_REDIS_URL"] = f"redis://127.0.0.1:{closed_port()}/0"
    if path is not None:
        environ["PATH"] = path
    environ.update(env)
    return python_in_root("-m", "pytest", "-q", "-p", "no:cacheprovider", *args, env=environ)


@pytest.mark.redis
def test_a_private_redis_server_is_started_and_stopped() -> None:
    done = session(SMOKE_REDIS, CORRAL_REQUIRE_REDIS="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 passed\b", done.stdout), done.stdout
    used = re.search(
        r"a private redis-server at redis://127\.0\.0\.1:(\d+)/0 \(in (\S+),", done.stdout
    )
    assert used is not None, done.stdout
    assert not answers(int(used.group(1))), "the private server outlived the session"
    assert not Path(used.group(2)).exists(), "the private server's directory was left behind"
    assert "SKIPPED, NOT RUN" not in done.stdout


def test_without_redis_server_or_node_one_loud_line_says_what_to_install(tmp_path: Path) -> None:
    done = session(SMOKE, INTEROP, path=str(tmp_path))  # an empty PATH: no redis-server, no npm
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b2 passed, 2 skipped\b", done.stdout), done.stdout
    loud = [line for line in done.stdout.splitlines() if "SKIPPED, NOT RUN" in line]
    assert len(loud) == 1, done.stdout
    assert loud[0].startswith("corral: 2 TESTS SKIPPED, NOT RUN"), loud
    assert "1 needs Node.js and npm" in loud[0]
    assert "1 needs redis-server" in loud[0]
    assert done.stdout.rstrip().endswith(loud[0]), "the loud line is not the last one"


def test_require_redis_still_fails_rather_than_skips(tmp_path: Path) -> None:
    done = session(SMOKE_REDIS, path=str(tmp_path), CORRAL_REQUIRE_REDIS="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(CORRAL_REQUIRE_REDIS=1)" in done.stdout
    assert re.search(r"\b1 error\b", done.stdout), done.stdout  # failed in its fixture


def test_npm_ci_runs_once_when_node_modules_is_missing(tmp_path: Path) -> None:
    npm = tmp_path / "npm"
    calls = tmp_path / "calls"
    npm.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nmkdir -p "$5/node_modules"\n', encoding="utf-8"
    )
    npm.chmod(0o755)
    interop = tmp_path / "interop"
    interop.mkdir()
    assert install_node_packages(interop, None) is None  # no npm: nothing to do
    first = install_node_packages(interop, str(npm))
    second = install_node_packages(interop, str(npm))
    assert first is not None
    assert "installed" in first
    assert second is None
    assert calls.read_text(encoding="utf-8").splitlines() == [
        f"ci --no-audit --no-fund --prefix {interop}"
    ]


def test_a_failing_npm_ci_is_reported(tmp_path: Path) -> None:
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\necho 'network is down' >&2\nexit 1\n", encoding="utf-8")
    npm.chmod(0o755)
    note = install_node_packages(tmp_path, str(npm))
    assert note is not None
    assert "failed (1)" in note
    assert "network is down" in note
