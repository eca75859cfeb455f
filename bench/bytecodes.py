"""Bytecodes and Python calls per job, by function: where the interpreter's time goes.

Complements ``instructions.py`` (which counts machine instructions but cannot say which Python
function they belong to): this traces every bytecode the interpreter executes with
``sys.settrace`` (``f_trace_opcodes``) and reports, per function, the bytecodes and calls per
job. The counts are exact and repeatable (no garbage collector or clock in them); machine
instructions per bytecode vary, so read them as a map, and measure changes with
``instructions.py``.

    python bench/bytecodes.py [end_to_end_c1 | end_to_end_c10 | end_to_end_c100 | add_bulk]
        [--jobs 5000] [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCENARIOS = ("add_bulk", "end_to_end_c1", "end_to_end_c10", "end_to_end_c100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="end_to_end_c1", choices=SCENARIOS)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    import test_memory_throughput as bench

    import corral.engine.loop_turns as loop_turns
    import corral.engine.worker as worker_module

    # Tracing runs the interpreter ~100x slower: stretch the worker's time-based yield to
    # match, as instructions.py does for valgrind.
    worker_module._YIELD_AFTER_S *= 100  # type: ignore[misc]
    loop_turns.TURN_MARK_S *= 100  # type: ignore[misc]
    bench.JOBS = args.jobs

    bytecodes: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        name = f"{Path(code.co_filename).name}:{code.co_qualname}"
        if event == "call":
            calls[name] += 1
        frame.f_trace_opcodes = True

        def count(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                bytecodes[name] += 1
            return count

        return count

    if args.scenario == "add_bulk":
        run = bench._add_bulk()
    else:
        run = bench._process(int(args.scenario.rpartition("_c")[2]))
    sys.settrace(trace)
    try:
        asyncio.run(run)
    finally:
        sys.settrace(None)
    jobs = args.jobs
    print(
        f"{args.scenario}: {sum(bytecodes.values()) / jobs:,.0f} bytecodes and "
        f"{sum(calls.values()) / jobs:.1f} Python calls per job"
    )
    print(f"{'bytecodes':>10} {'calls':>6}  function (per job)")
    for name, count in bytecodes.most_common(args.top):
        print(f"{count / jobs:10.1f} {calls[name] / jobs:6.2f}  {name}")


if __name__ == "__main__":
    main()
