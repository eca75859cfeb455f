"""Instructions per job on the memory backend, counted by valgrind (a steady A/B measure).

Wall-clock rates on a shared VM drift by 2-3x within minutes; the number of instructions the
interpreter executes per job does not. This counts them with callgrind for a small and a larger
run of each scenario and reports the difference per job, which leaves out start-up and imports:

    python bench/instructions.py [--small 1000] [--large 3000] [--scenarios task,add_bulk,...]

Scenarios: ``task`` (an asyncio task created and awaited per no-op job: the yardstick the
speed goal is stated against), ``floor`` (the same jobs' bookkeeping inlined with no layers, see
``floor.py``: what any design costs at the least), ``add_bulk``, ``end_to_end_c1`` / ``_c10`` /
``_c100`` (add in bulk, then process with a Worker of that concurrency; processing alone = end
to end - add_bulk).
Needs ``valgrind`` on the PATH; a run takes about half a minute per scenario and size.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCENARIOS = ("task", "floor", "add_bulk", "end_to_end_c1", "end_to_end_c10", "end_to_end_c100")


def run_scenario(name: str, jobs: int) -> None:
    """Run one scenario in this process (under valgrind when called with --run)."""
    import test_memory_throughput as bench

    import corral.engine.loop_turns as loop_turns
    import corral.engine.worker as worker_module

    # valgrind runs the interpreter ~50x slower: stretch the worker's time-based yield to
    # match, or a slot would yield (and poll the selector) every few jobs, which it does not
    # do at native speed.
    worker_module._YIELD_AFTER_S *= 50  # type: ignore[misc]
    loop_turns.TURN_MARK_S *= 50  # type: ignore[misc]
    bench.JOBS = jobs

    if name == "task":
        asyncio.run(bench._task_per_job())
    elif name == "floor":
        import floor

        asyncio.run(floor.run(jobs))
    elif name == "add_bulk":
        asyncio.run(bench._add_bulk())
    else:
        asyncio.run(bench._process(int(name.rpartition("_c")[2])))


def count(name: str, jobs: int) -> int:
    """Instructions callgrind counts for one run of a scenario."""
    completed = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--run",
            name,
            str(jobs),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", completed.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{completed.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--run", nargs=2, metavar=("SCENARIO", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_scenario(args.run[0], int(args.run[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    names = args.scenarios.split(",")
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    per_job = {}
    for name in names:
        small, large = count(name, args.small), count(name, args.large)
        per_job[name] = (large - small) / (args.large - args.small)
        print(f"{name:18} {per_job[name]:10,.0f} instructions/job", flush=True)
    if "task" in per_job:
        print("relative to an asyncio task per job (the goal: <= 1.77, i.e. 100,000 vs 177,000/s):")
        for name, value in per_job.items():
            if name != "task":
                print(f"  {name:18} {value / per_job['task']:.2f}")
        if "add_bulk" in per_job:
            for name, value in per_job.items():
                if name.startswith("end_to_end"):
                    processing = (value - per_job["add_bulk"]) / per_job["task"]
                    print(f"  processing only, {name[11:]:4} {processing:.2f}")


if __name__ == "__main__":
    main()
