#!/usr/bin/env python3
"""Compare corral, Node BullMQ and BullMQ's Python port on one Redis.

Usage (from anywhere; needs only the standard library to start)::

    python3 bench/compare/run.py [--redis-url redis://127.0.0.1:6379/0] [--jobs 20000]
        [--runs 3] [--impls corral,node,python] [--phase-timeout 120] [--corral-python PATH]

Sets up, idempotently, the scratch environments it needs (both gitignored):

* ``node/node_modules``: ``npm ci`` from ``node/package-lock.json`` (``bullmq`` pinned);
* ``.venv-bullmq``: a virtualenv holding only BullMQ's Python port (``bullmq`` pinned), so its
  dependencies never mix with corral's;
* ``.venv-corral``: corral's dependencies with its ``redis`` extra (read from pyproject.toml)
  and this checkout's source made importable through symlinks (refreshed on every run, so the
  working tree as it is gets measured; nothing is built or written in the repository), unless
  ``--corral-python`` names an interpreter that already has corral[redis];
* ``.venv-corral-no-hiredis`` (only for ``--impls ...,corral-no-hiredis``): the same without
  ``hiredis`` (which the ``redis`` extra brings), so that redis-py parses replies in Python.

Then it runs each implementation's benchmark program (``corral_bench.py``,
``bullmq_py_bench.py``, ``node/bench.mjs``; the phases are described in ``harness.py``)
``--runs`` times, interleaving the implementations so that a change in the machine's load
hits all of them alike, and prints the medians (jobs/s) and the ratios as a markdown table,
which it also writes to ``results.md`` beside this file. Every program works under a key
prefix of its own and deletes its keys; the driver deletes them again after a program fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NODE_DIR = HERE / "node"
BULLMQ_PY_PIN = "bullmq==3.4.4"
BULLMQ_PY_VENV = HERE / ".venv-bullmq"
CORRAL_VENV = HERE / ".venv-corral"
CORRAL_NO_HIREDIS_VENV = HERE / ".venv-corral-no-hiredis"
PIN_MARKER = ".corral-bench-pin"

IMPLS = {
    "corral": "corral",
    "corral-no-hiredis": "corral without hiredis",
    "node": "Node BullMQ",
    "python": "BullMQ Python port",
}
PHASES = {
    "add_single": "add one by one",
    "add_bulk": "add in bulk (1,000 per call)",
}


class SetupError(Exception):
    """A prerequisite (Redis, Node, a package) is missing; the message says what to do."""


# --------------------------------------------------------------------------- a tiny Redis client


class Resp:
    """Just enough RESP2 to ping a server, read INFO and delete keys (stdlib only)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", ""):
            raise SetupError(f"only redis:// URLs are supported, got {url!r}")
        self.url = url
        try:
            self.sock = socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout
            )
        except OSError as exc:
            raise SetupError(
                f"cannot reach Redis at {url}: {exc}. Start one (e.g. `redis-server --port "
                f"{parts.port or 6379} --save '' --appendonly no`) or pass --redis-url."
            ) from exc
        self.file = self.sock.makefile("rb")
        if parts.password:
            auth = [unquote(parts.password)]
            if parts.username:
                auth.insert(0, unquote(parts.username))
            self.call("AUTH", *auth)
        db = parts.path.strip("/")
        if db:
            self.call("SELECT", db)

    def call(self, *args: str | int) -> Any:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        if not line:
            raise ConnectionError(f"Redis at {self.url} closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"Redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply from Redis: {line!r}")

    def delete_matching(self, pattern: str) -> int:
        cursor, deleted = "0", 0
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                deleted += self.call("UNLINK", *keys)
            if cursor == "0":
                return deleted

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def redis_version(url: str) -> str:
    client = Resp(url)
    try:
        if client.call("PING") != "PONG":
            raise SetupError(f"Redis at {url} did not answer PING with PONG")
        info = client.call("INFO", "server")
    finally:
        client.close()
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cleanup(url: str, prefix: str) -> int:
    try:
        client = Resp(url)
    except SetupError:
        return 0
    try:
        return client.delete_matching(f"{prefix}:*")
    finally:
        client.close()


# --------------------------------------------------------------------------- environments


def run_quiet(command: list[str], cwd: Path, what: str) -> None:
    print(f"[setup] {what}: {' '.join(command)}", file=sys.stderr)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SetupError(f"{what} failed (exit {done.returncode}):\n{tail}")


def node_setup() -> str:
    """Check Node and npm; ``npm ci`` unless node_modules already holds the pinned versions.
    Returns Node's version."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SetupError(
            "Node.js (>= 18) and npm are needed for the Node BullMQ side: install them "
            "(e.g. `apt-get install nodejs npm`) or leave it out with --impls corral,python"
        )
    node_version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(node_version.lstrip("v").split(".")[0]) < 18:
        raise SetupError(f"Node {node_version} is too old: the benchmark needs Node >= 18")
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    if any(
        _installed_npm_version(name) != pinned for name, pinned in wanted.items()
    ):  # missing or another version
        run_quiet([npm, "ci", "--no-audit", "--no-fund"], NODE_DIR, "installing Node BullMQ")
    return node_version


def _installed_npm_version(name: str) -> str | None:
    manifest = NODE_DIR / "node_modules" / name / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_venv(venv: Path, requirement: list[str], what: str) -> Path:
    """A virtualenv at ``venv`` with ``pip install <requirement>`` done, made only once per
    requirement (a marker file in the venv remembers it)."""
    python = venv_python(venv)
    marker = venv / PIN_MARKER
    spec = " ".join(requirement)
    if python.exists() and marker.exists() and marker.read_text() == spec:
        return python
    if venv.exists():
        shutil.rmtree(venv)
    run_quiet([sys.executable, "-m", "venv", str(venv)], HERE, f"creating {venv.name}")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run_quiet([*pip, *requirement], HERE, what)
    marker.write_text(spec)
    return python


def corral_requirements(hiredis: bool) -> list[str]:
    """corral's dependencies and its ``redis`` extra, as pyproject.toml pins them (without
    ``hiredis`` if not ``hiredis``)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["redis"]]
    return [r for r in requirements if hiredis or not r.startswith("hiredis")]


def link_corral_source(python: Path) -> None:
    """Make this checkout's corral importable by ``python`` (a venv's) without installing it:
    a folder of symlinks laid out as pyproject.toml's ``package-dir`` says, named by a .pth
    file. Rebuilt on every run, so files added to the checkout since are picked up."""
    venv = python.parents[1]
    mapping: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]["package-dir"]
    root = venv / "corral-src"
    shutil.rmtree(root, ignore_errors=True)
    top = root / "corral"
    top.mkdir(parents=True)
    # (the subpackages are linked from their own folders below; the checkout's corral/ holds
    # symlinks of the same names to them)
    subpackages = {package.split(".", 1)[1] for package in mapping if package != "corral"}
    for entry in (REPO / mapping["corral"]).iterdir():
        if entry.name != "__pycache__" and entry.name not in subpackages:
            (top / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "corral":
            (root / package.replace(".", "/")).symlink_to(REPO / folder)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "corral-bench-source.pth").write_text(f"{root}\n")


def corral_python(explicit: str | None, hiredis: bool = True) -> Path:
    """An interpreter that imports *this checkout's* corral and redis-py."""
    if explicit:
        python = Path(explicit)
        probe = "import os, corral.backends.redis.backend as b; print(os.path.realpath(b.__file__))"
        done = subprocess.run(
            [str(python), "-c", probe], cwd=HERE, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not Path(done.stdout.strip()).is_relative_to(REPO):
            raise SetupError(f"{python} cannot import this checkout's corral with redis-py")
        return python
    venv = CORRAL_VENV if hiredis else CORRAL_NO_HIREDIS_VENV
    python = make_venv(venv, corral_requirements(hiredis), "installing corral's dependencies")
    link_corral_source(python)
    return python


def python_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


# --------------------------------------------------------------------------- running


def run_program(
    impl: str, command: list[str], cwd: Path, url: str, prefix: str, timeout: float
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        cleanup(url, prefix)
        return {"error": f"{impl}: no result within {timeout:.0f} s", "stderr": str(exc.stderr)}
    finally:
        took = time.monotonic() - started
    leftover = cleanup(url, prefix)
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return {"error": f"{impl} exited {done.returncode} without a result:\n{tail}"}
    result["wall_seconds"] = took
    if leftover:
        result["leftover_keys"] = leftover
    for name, phase in result["phases"].items():
        if "error" in phase:
            tail = "\n".join(done.stderr.strip().splitlines()[-10:])
            print(f"  {impl} {name}: {phase['error']}\n{tail}", file=sys.stderr)
    return result


def median_rates(runs: list[dict[str, Any]], phase: str) -> tuple[float | None, int]:
    rates = [
        run["phases"][phase]["rate"]
        for run in runs
        if "phases" in run and "rate" in run["phases"].get(phase, {})
    ]
    return (statistics.median(rates) if rates else None), len(rates)


def fmt_rate(rate: float | None, count: int, runs: int) -> str:
    if rate is None:
        return "failed"
    text = f"{rate:,.0f}"
    return text if count == runs else f"{text} (n={count})"


def fmt_ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "–"
    return f"{ours / theirs:.2f}×"


def phase_names(concurrency: list[int]) -> dict[str, str]:
    names = dict(PHASES)
    for c in concurrency:
        names[f"process_c{c}"] = f"process, concurrency {c}"
    return names


def build_report(
    args: argparse.Namespace,
    impls: list[str],
    results: dict[str, list[dict[str, Any]]],
    versions: dict[str, str],
    env: dict[str, str],
) -> str:
    names = phase_names(args.concurrency)
    headers = ["phase (jobs/s)"] + [f"{IMPLS[i]} {versions.get(i, '?')}" for i in impls]
    ratios = [
        (ours, other)
        for ours in ("corral", "corral-no-hiredis")
        for other in ("node", "python")
        if ours in impls and other in impls
    ]
    headers += [f"{IMPLS[ours]} / {IMPLS[other]}" for ours, other in ratios]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for phase, label in names.items():
        medians = {impl: median_rates(results[impl], phase) for impl in impls}
        row = [label] + [fmt_rate(*medians[impl], args.runs) for impl in impls]
        row += [fmt_ratio(medians[ours][0], medians[other][0]) for ours, other in ratios]
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)

    raw = ["| implementation | phase | " + " | ".join(f"run {r + 1}" for r in range(args.runs))]
    raw[0] += " |"
    raw.append("|---|---|" + "---|" * args.runs)
    for impl in impls:
        for phase, label in names.items():
            cells = []
            for run in results[impl]:
                value = run.get("phases", {}).get(phase, {}) if "phases" in run else {}
                cells.append(f"{value['rate']:,.0f}" if "rate" in value else "failed")
            cells += [""] * (args.runs - len(cells))
            raw.append(f"| {IMPLS[impl]} | {label} | " + " | ".join(cells) + " |")
    errors = [
        f"- {IMPLS[impl]}: {run['error']}"
        for impl in impls
        for run in results[impl]
        if "error" in run
    ]
    errors += [
        f"- {IMPLS[impl]} {phase}: {value['error']}"
        for impl in impls
        for run in results[impl]
        for phase, value in run.get("phases", {}).items()
        if "error" in value
    ]
    env_lines = "\n".join(f"- {key}: {value}" for key, value in env.items())
    return f"""# corral vs BullMQ on one Redis

Generated by `bench/compare/run.py` on {env["date"]}. Higher is better; the ratios are corral's
median divided by the other implementation's (above 1 means corral is faster).

{table}

Workload: {args.jobs:,} no-op jobs (data `{{"i": n}}`, default options) per phase; the median
of {args.runs} runs per cell, the implementations interleaved run by run. Adding is timed from
the first to the last call (one add awaited at a time; bulk: chunks of {args.chunk:,}, one call
at a time). Processing: the jobs are pre-added (bulk, not timed), then one worker with a no-op
processor runs in the benchmark's process; the clock runs from just before the worker is
created until it has emitted its {args.jobs:,}th `completed` event (emitted after the
completion is stored), and the completed set is then checked to hold every job. All three use
their defaults otherwise (30 s locks renewed at 15 s, a stalled check at start and every 30 s,
completed jobs kept, the events stream capped at about 10,000).

## Machine and load

{env_lines}

The machine is shared: other engineers' test runs load the same cores and the same Redis, so
single runs vary by tens of percent; compare the ratios (measured under the same load
interleaved) rather than the absolute numbers.

## Every run

{chr(10).join(raw)}
{chr(10) + "## Errors" + chr(10) + chr(10) + chr(10).join(errors) + chr(10) if errors else ""}"""


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": f"{cpu}, {os.cpu_count()} logical cores", "os": platform.platform()}


def git_revision() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "backends", "engine", "corral"):
        revision += " + uncommitted changes"
    return revision


def loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare corral, Node BullMQ and BullMQ's Python port on one Redis."
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument(
        "--impls",
        default="corral,node,python",
        help="which to run, of corral, corral-no-hiredis, node, python (default: %(default)s)",
    )
    parser.add_argument("--phase-timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--corral-python", help="interpreter that has corral[redis]")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="'-' for none")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in args.impls if i not in IMPLS]
    if unknown:
        parser.error(f"unknown implementation(s) {unknown}; choose from {list(IMPLS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = redis_version(args.redis_url)
        commands: dict[str, tuple[list[str], Path]] = {}
        versions: dict[str, str] = {}
        env = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
        env.update(machine_info())
        env["Redis"] = f"{server} at {args.redis_url} (shared with other users)"
        for impl in ("corral", "corral-no-hiredis"):
            if impl in args.impls:
                hiredis = impl == "corral"
                python = corral_python(args.corral_python if hiredis else None, hiredis)
                commands[impl] = ([str(python), str(HERE / "corral_bench.py")], HERE)
                env[IMPLS[impl]] = (
                    f"{git_revision()} on CPython {python_version(python)} "
                    f"({python.relative_to(REPO) if python.is_relative_to(REPO) else python})"
                )
        if "node" in args.impls:
            node_version = node_setup()
            commands["node"] = (["node", str(NODE_DIR / "bench.mjs")], NODE_DIR)
            env["Node BullMQ"] = f"bullmq {_installed_npm_version('bullmq')} on Node {node_version}"
        if "python" in args.impls:
            python = make_venv(BULLMQ_PY_VENV, [BULLMQ_PY_PIN], f"installing {BULLMQ_PY_PIN}")
            commands["python"] = ([str(python), str(HERE / "bullmq_py_bench.py")], HERE)
            env["BullMQ Python port"] = (
                f"{BULLMQ_PY_PIN} on CPython {python_version(python)} in {BULLMQ_PY_VENV.name}"
            )
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    phases = 2 + len(args.concurrency)
    timeout = phases * args.phase_timeout + 60
    common = ["--redis-url", args.redis_url, "--jobs", str(args.jobs), "--chunk", str(args.chunk)]
    common += ["--concurrency", ",".join(map(str, args.concurrency))]
    common += ["--phase-timeout", str(args.phase_timeout)]
    results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in args.impls}
    loads = [loadavg()]
    started = time.monotonic()
    for run in range(args.runs):
        for impl in args.impls:
            prefix = f"corral-bench-{os.getpid()}-{run}-{impl}"
            command, cwd = commands[impl]
            print(f"[run {run + 1}/{args.runs}] {IMPLS[impl]} (load {loadavg()})", file=sys.stderr)
            result = run_program(
                impl, [*command, "--prefix", prefix, *common], cwd, args.redis_url, prefix, timeout
            )
            if "version" in result:
                versions[impl] = result["version"]
            results[impl].append(result)
            summary = ", ".join(
                f"{name} {value['rate']:,.0f}/s" if "rate" in value else f"{name} failed"
                for name, value in result.get("phases", {}).items()
            )
            print(f"    {summary or result.get('error')}", file=sys.stderr)
            loads.append(loadavg())
    env["load average (1 / 5 / 15 min)"] = f"{loads[0]} before; after each program: " + ", ".join(
        loads[1:]
    )
    env["duration"] = f"{time.monotonic() - started:.0f} s"
    report = build_report(args, args.impls, results, versions, env)
    print(report)
    if args.out != "-":
        Path(args.out).write_text(report)
        print(f"[written to {args.out}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
