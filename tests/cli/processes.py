"""Subprocesses for the command-line tests (imported as ``from processes import ...``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORRAL = Path(sys.executable).with_name("corral")


def python_in_root(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run this Python with ``args`` in the repository root (its ``corral/`` first on the
    path) and wait for it (bounded)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def corral_unbuffered(*args: str, stderr: int | None = None) -> subprocess.Popen[str]:
    """Start ``corral args`` with unbuffered output, its stdout a pipe: each line can be read
    as soon as it is printed."""
    return subprocess.Popen(
        [str(CORRAL), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def json_lines_then_stop(
    *args: str, count: int, stop: signal.Signals = signal.SIGTERM
) -> tuple[list[Any], int]:
    """Start ``corral args``, read its first ``count`` lines, send it ``stop`` and wait
    (bounded). Every line it printed must be JSON: returns them all, parsed, and the exit
    status."""
    process = corral_unbuffered(*args)
    assert process.stdout is not None
    try:
        first = [process.stdout.readline() for _ in range(count)]
        process.send_signal(stop)
        rest = process.communicate(timeout=20)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return [json.loads(line) for line in [*first, *rest.splitlines()]], process.returncode
