#!/usr/bin/env python3
"""Compare two checkouts of corral on a Redis server of their own: is B slower than A?

Usage::

    python3 bench/compare/ab.py A_DIR B_DIR [--rounds 12] [--jobs 10000]
        [--phases add_bulk,process] [--concurrency 1,10,50] [--port 6393] [--out ab.json]

``A_DIR`` and ``B_DIR`` are corral checkouts (a ``git worktree`` of the revision to compare
with, say), each with corral installed in ``<dir>/.venv`` (``python3 -m venv .venv &&
.venv/bin/pip install -e '.[redis]'``); ``--python-a`` / ``--python-b`` name other interpreters.
Both run *this* checkout's ``corral_bench.py`` and ``harness.py`` (the same phases and
accounting), each importing its own corral.

The wall-clock rate of one run on a shared 2-core VM swings by tens of percent, so this script
removes what noise it can and reports what is left:

* a private ``redis-server`` (no persistence), flushed (keys, scripts and functions) before
  every run, so nothing else loads it and its CPU counters belong to the run;
* with ``taskset`` and two or more CPUs, the server pinned to the last CPU and the benchmark
  to the first, so that client and server never share a core;
* the two checkouts interleaved, their order alternating from round to round;
* besides the rate, each phase's CPU per job of the client and of the server, which vary less
  than the rate; and the medians of every figure with the spread of the ratios.

Prints a table (B / A ratios above 1 mean B is faster, or uses more CPU) and writes every run
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIGURES = (
    ("rate", "jobs/s", "{:,.0f}"),
    ("server_instructions_per_job", "server instructions/job", "{:,.0f}"),
    ("client_cpu_us_per_job", "client CPU µs/job", "{:.1f}"),
    ("server_cpu_us_per_job", "server CPU µs/job", "{:.1f}"),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pythons = [
        Path(args.python_a or Path(args.a) / ".venv/bin/python"),
        Path(args.python_b or Path(args.b) / ".venv/bin/python"),
    ]
    for python in pythons:
        if not python.exists():
            print(f"no interpreter at {python} (see --python-a / --python-b)", file=sys.stderr)
            return 2
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1
    server_cpu, client_cpu = str((os.cpu_count() or 1) - 1), "0"
    with tempfile.TemporaryDirectory() as scratch:
        server, environment = start_server(
            args.port, scratch, server_cpu if pin else None, args.callgrind
        )
        try:
            runs = []
            for round_number in range(args.rounds):
                order = [0, 1] if round_number % 2 == 0 else [1, 0]
                for side in order:
                    flush(args.port)
                    result = run_bench(
                        args, pythons[side], client_cpu if pin else None, environment
                    )
                    runs.append({"side": "AB"[side], "round": round_number, **result})
                    print(
                        f"round {round_number + 1}/{args.rounds} {'AB'[side]}: " + summary(result),
                        file=sys.stderr,
                    )
        finally:
            server.terminate()
            server.wait(timeout=10)
    Path(args.out).write_text(json.dumps({"a": args.a, "b": args.b, "runs": runs}, indent=1))
    print(report(args, runs, pin))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("a", help="the checkout to compare with")
    parser.add_argument("b", help="the checkout under test")
    parser.add_argument("--python-a")
    parser.add_argument("--python-b")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--phases", default="add_bulk,process")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--port", type=int, default=6393)
    parser.add_argument("--out", default=str(HERE / "ab.json"))
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run the server under valgrind's callgrind and count its instructions per job in"
        " each phase (about 50 times slower: use --rounds 1 --jobs 2000)",
    )
    return parser.parse_args(argv)


def start_server(
    port: int, scratch: str, cpu: str | None, callgrind: bool
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """The server, and the environment that tells the benchmark about callgrind."""
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    command += ["--dir", scratch]
    out_file = os.path.join(scratch, "callgrind.out")
    if callgrind:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", *command]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if redis_cli(port, "PING") == "PONG":
            environment = dict(os.environ)
            if callgrind:
                environment["CORRAL_BENCH_CALLGRIND"] = f"{server.pid}:{out_file}"
            return server, environment
        time.sleep(0.05)
    server.terminate()
    raise SystemExit(f"redis-server did not start on port {port} (is the port free?)")


def redis_cli(port: int, *command: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *command], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def flush(port: int) -> None:
    for command in (["FLUSHALL"], ["SCRIPT", "FLUSH"], ["FUNCTION", "FLUSH"]):
        redis_cli(port, *command)


def run_bench(
    args: argparse.Namespace, python: Path, cpu: str | None, environment: dict[str, str]
) -> dict[str, Any]:
    command = [
        str(python),
        str(HERE / "corral_bench.py"),
        "--redis-url",
        f"redis://127.0.0.1:{args.port}/0",
        "--prefix",
        "ab",
        "--jobs",
        str(args.jobs),
        "--concurrency",
        args.concurrency,
        "--phases",
        args.phases,
    ]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    # (run from a directory of no checkout, so that each imports its own installed corral)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
        env=environment,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip()[-2000:]}
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return "failed: " + result["error"].splitlines()[-1]
    return ", ".join(
        f"{name} {value.get('rate', 0):,.0f}/s" for name, value in result["phases"].items()
    )


def report(args: argparse.Namespace, runs: list[dict[str, Any]], pinned: bool) -> str:
    phases = [name for run in runs if "phases" in run for name in run["phases"]]
    lines = [
        f"A = {args.a}, B = {args.b}: {args.rounds} interleaved rounds of {args.jobs:,} jobs"
        f" per phase, {'pinned' if pinned else 'not pinned'}; medians (B / A, and the spread"
        " of the round-by-round ratios)",
        "",
        "| phase | figure | A | B | B / A | round ratios min–max |",
        "|---|---|---|---|---|---|",
    ]
    for phase in dict.fromkeys(phases):
        for key, label, fmt in FIGURES:
            values = {side: figures(runs, side, phase, key) for side in "AB"}
            if not values["A"] or not values["B"]:
                continue
            a, b = statistics.median(values["A"]), statistics.median(values["B"])
            ratios = [vb / va for va, vb in zip(values["A"], values["B"], strict=False) if va]
            spread = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else ""
            lines.append(
                f"| {phase} | {label} | {fmt.format(a)} | {fmt.format(b)} |"
                f" {b / a:.3f} | {spread} |"
            )
    failed = [run for run in runs if "error" in run]
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed; see --out.")
    return "\n".join(lines)


def figures(runs: list[dict[str, Any]], side: str, phase: str, key: str) -> list[float]:
    """The figure ``key`` of ``phase`` in each of ``side``'s runs, in round order."""
    return [
        float(run["phases"][phase][key])
        for run in sorted(runs, key=lambda run: run["round"])
        if run["side"] == side and key in run.get("phases", {}).get(phase, {})
    ]


if __name__ == "__main__":
    sys.exit(main())
