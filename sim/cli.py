"""``corral sim``: run chaos campaigns of the simulator from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from typing import TextIO

from corral.backends.memory import PLANTABLE_BUGS
from corral.sim.campaign import CampaignSummary, run_campaign, shrink
from corral.sim.scenario import FAULT_KINDS, SCENARIOS, FaultMix, Scenario
from corral.sim.world import BACKENDS, RunResult


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``sim`` subcommand."""
    parser = commands.add_parser(
        "sim",
        help="run a deterministic chaos campaign against the real Worker code",
        description=(
            "Runs the production Worker under virtual time while crashing workers, blocking "
            "their event loops and cutting their network, and checks that no job is lost and "
            "none is completed twice. With no options: the standard campaign on the memory "
            "backend."
        ),
    )
    parser.add_argument("--seed", type=int, default=None, help="first seed (default 1)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="number of seeds (default: 50, or 1 when --seed is given)",
    )
    parser.add_argument(
        "--scenario",
        default="standard",
        choices=sorted(SCENARIOS),
        help="the deployment to simulate (default standard; --list describes each)",
    )
    parser.add_argument("--workers", type=int, help="worker processes (overrides the scenario)")
    parser.add_argument("--jobs", type=int, help="jobs to add (overrides the scenario)")
    parser.add_argument(
        "--faults",
        help="comma-separated fault kinds the swarm may draw from: " + ", ".join(FAULT_KINDS),
    )
    parser.add_argument(
        "--backend",
        default="memory",
        choices=BACKENDS,
        help=(
            "the store: the memory backend, or the Redis backend (its Lua scripts) on an "
            "in-process fakeredis server whose clock follows virtual time (needs the redis and "
            "fakeredis[lua] packages)"
        ),
    )
    parser.add_argument(
        "--plant",
        action="append",
        default=[],
        choices=sorted(PLANTABLE_BUGS),
        help="plant a known bug to check that the simulator catches it",
    )
    parser.add_argument("--timeline", metavar="PATH", help="write an HTML timeline (one seed)")
    parser.add_argument("--log", metavar="PATH", help="write the one-line-per-event text log")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line: one per seed (with --list: the scenarios and "
        "fault kinds; with --timeline/--log: where each file went)",
    )
    parser.add_argument("--no-shrink", action="store_true", help="do not shrink failures")
    parser.add_argument("--list", action="store_true", help="list scenarios and fault kinds")


def _scenario(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Scenario:
    scenario = SCENARIOS[args.scenario]
    if args.workers is not None:
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        scenario = scenario.with_changes(workers=args.workers)
    if args.jobs is not None:
        if args.jobs < 1:
            parser.error("--jobs must be at least 1")
        scenario = scenario.with_changes(jobs=dataclasses.replace(scenario.jobs, count=args.jobs))
    if args.faults is not None:
        kinds = tuple(kind.strip() for kind in args.faults.split(",") if kind.strip())
        unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
        if unknown or not kinds:
            parser.error(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}")
        rate = scenario.mix.faults_per_minute if scenario.mix else FaultMix().faults_per_minute
        scenario = scenario.with_changes(mix=FaultMix(kinds=kinds, faults_per_minute=rate))
    return scenario


def replay_command(args: argparse.Namespace, seed: int) -> str:
    """The exact command that re-runs one seed of this campaign."""
    parts = ["corral", "sim", "--scenario", args.scenario, "--seed", str(seed)]
    if args.workers is not None:
        parts += ["--workers", str(args.workers)]
    if args.jobs is not None:
        parts += ["--jobs", str(args.jobs)]
    if args.faults is not None:
        parts += ["--faults", args.faults]
    if args.backend != "memory":
        parts += ["--backend", args.backend]
    for bug in args.plant:
        parts += ["--plant", bug]
    return shlex.join(parts)


def _progress(out: TextIO, done: int, total: int, failures: int, started: float) -> None:
    width = 30
    filled = width * done // total
    elapsed = time.perf_counter() - started
    bar = "#" * filled + "-" * (width - filled)
    out.write(f"\r[{bar}] {done}/{total} seeds, {failures} failing, {elapsed:.0f}s ")
    out.flush()


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Carry out ``corral sim``; the exit status is 1 when any seed failed."""
    if args.list:
        _print_list(args.json)
        return 0
    scenario = _scenario(args, parser)
    count = args.seeds if args.seeds is not None else (50 if args.seed is None else 1)
    first = 1 if args.seed is None else args.seed
    if count < 1:
        parser.error("--seeds must be at least 1")
    if (args.timeline or args.log) and count != 1:
        parser.error("--timeline and --log need a single seed (--seeds 1)")
    plant = frozenset(args.plant)
    summary = CampaignSummary()
    written: list[tuple[str, str]] = []
    show_progress = count > 1 and not args.json and sys.stderr.isatty()
    started = time.perf_counter()
    if not args.json:
        print(
            f"corral sim: scenario {scenario.name!r} ({scenario.description}), "
            f"backend {args.backend}, seeds {first}..{first + count - 1}"
            + (f", planted bug(s): {', '.join(sorted(plant))}" if plant else "")
        )
    if args.backend == "fakeredis":
        problem = _fakeredis_missing()
        if problem:
            parser.error(problem)
    for result in run_campaign(scenario, first, count, plant=plant, backend=args.backend):
        summary.add(result)
        if count == 1:
            # Files first: a reader that stops early (| head) must not cost the timeline.
            written = _write_artifacts(result, args)
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
        elif count == 1 or not result.ok:
            _print_run(result, args)
        if show_progress:
            _progress(sys.stderr, summary.runs, count, len(summary.failures), started)
    if show_progress:
        sys.stderr.write("\n")
    for what, path in written:
        if args.json:
            print(json.dumps({"written": what, "path": path}))
        else:
            print(f"{what} written to {path}")
    if not args.json:
        _print_summary(summary, args)
        if summary.failures and not args.no_shrink:
            _shrink_first(scenario, summary.failures[0], plant, args)
    return 1 if summary.failures else 0


def _print_run(result: RunResult, args: argparse.Namespace) -> None:
    status = "ok" if result.ok else "FAILED"
    print(
        f"seed {result.seed}: {status}  jobs={result.jobs} completed={result.completed} "
        f"failed={result.failed} lost={result.lost} duplicates={result.duplicate_completions} "
        f"zombie_commits={result.zombie_commits} re_executions={result.re_executions} "
        f"stalls_recovered={result.stalls_recovered} trace={result.trace_hash}"
    )
    print(f"  faults: {len(result.faults)} ({', '.join(result.enabled_kinds) or 'none'})")
    if result.removed_by_operator:
        print(
            f"  deleted by an operator: {result.removed_by_operator} "
            f"({result.removed_unfinished} before they finished)"
        )
    for violation in result.violations[:10]:
        print(f"  violation: {violation}")
    print(f"  replay: {replay_command(args, result.seed)}")


def _print_summary(summary: CampaignSummary, args: argparse.Namespace) -> None:
    print()
    print(
        f"{summary.runs} seed(s): {summary.runs - len(summary.failures)} passed, "
        f"{len(summary.failures)} failed"
    )
    print(
        f"jobs {summary.jobs}: completed {summary.completed}, failed {summary.failed}, "
        f"lost {summary.lost}; duplicate completions {summary.duplicate_completions}, "
        f"zombie commits {summary.zombie_commits}; re-executions {summary.re_executions}, "
        f"stalls recovered {summary.stalls_recovered}"
    )
    faults = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.faults.items()))
    print(f"faults injected: {faults or 'none'}")
    print("interesting cases reached:")
    for line in summary.coverage_lines():
        print(f"  {line}")
    print(
        f"virtual time {summary.virtual_seconds:,.0f} s in {summary.wall_seconds:,.1f} s wall: "
        f"time compression {summary.compression:,.0f}x"
    )
    for failed in summary.failures[:10]:
        print(f"FAILED seed {failed.seed}: {failed.violations[0] if failed.violations else ''}")
        print(f"  replay: {replay_command(args, failed.seed)}")


def _shrink_first(
    scenario: Scenario, failing: RunResult, plant: frozenset[str], args: argparse.Namespace
) -> None:
    print(f"\nshrinking seed {failing.seed} ({len(failing.faults)} faults)...", flush=True)
    faults, result = shrink(scenario, failing, plant=plant, backend=args.backend)
    print(f"minimal fault list ({len(faults)} of {len(failing.faults)}) that still fails:")
    for fault in faults:
        print(f"  {fault.describe()}")
    if result.violations:
        print(f"  -> {result.violations[0]}")


def _fakeredis_missing() -> str:
    """Why ``--backend fakeredis`` cannot run here, or ""."""
    import importlib.util

    missing = [
        name for name in ("redis", "fakeredis", "lupa") if not importlib.util.find_spec(name)
    ]
    if missing:
        return (
            f"--backend fakeredis needs the packages {', '.join(missing)} "
            "(pip install 'corral[dev]', or redis and 'fakeredis[lua]')"
        )
    return ""


def _print_list(as_json: bool) -> None:
    if as_json:
        for scenario in SCENARIOS.values():
            print(json.dumps({"scenario": scenario.name, "description": scenario.description}))
        for kind, text in FAULT_KINDS.items():
            print(json.dumps({"fault": kind, "description": text}))
        return
    for scenario in SCENARIOS.values():
        print(f"{scenario.name:<16} {scenario.description}")
    print()
    for kind, text in FAULT_KINDS.items():
        print(f"{kind:<16} {text}")


def _write_artifacts(result: RunResult, args: argparse.Namespace) -> list[tuple[str, str]]:
    """Write the files --log and --timeline ask for; what was written where."""
    written: list[tuple[str, str]] = []
    if args.log:
        from corral.sim.timeline import text_log

        with open(args.log, "w", encoding="utf-8") as out:
            out.write(text_log(result))
        written.append(("event log", args.log))
    if args.timeline:
        from corral.sim.timeline import write_html

        write_html(result, args.timeline)
        written.append(("timeline", args.timeline))
    return written
