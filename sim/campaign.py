"""Campaigns of seeds, their summary, and shrinking a failing run to a minimal fault list."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator

from corral.sim.invariants import COVERAGE_GOALS
from corral.sim.scenario import Fault, Scenario
from corral.sim.world import RunResult, World


def run_seed(
    scenario: Scenario,
    seed: int,
    *,
    plant: frozenset[str] = frozenset(),
    faults: tuple[Fault, ...] | None = None,
    backend: str = "memory",
) -> RunResult:
    """Run one seed of a scenario on ``backend`` (``"memory"`` or ``"fakeredis"``)."""
    return World(scenario, seed, faults=faults, plant=plant, backend=backend).run()


def run_campaign(
    scenario: Scenario,
    first_seed: int,
    count: int,
    *,
    plant: frozenset[str] = frozenset(),
    backend: str = "memory",
) -> Iterator[RunResult]:
    """Run ``count`` consecutive seeds from ``first_seed``, yielding each result as it ends."""
    for seed in range(first_seed, first_seed + count):
        yield run_seed(scenario, seed, plant=plant, backend=backend)


@dataclasses.dataclass
class CampaignSummary:
    """Totals over the runs of a campaign."""

    runs: int = 0
    failures: list[RunResult] = dataclasses.field(default_factory=list)
    jobs: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicate_completions: int = 0
    zombie_commits: int = 0
    re_executions: int = 0
    stalls_recovered: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    faults: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    coverage: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    runs_reaching: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def add(self, result: RunResult) -> None:
        """Account for one run."""
        self.runs += 1
        if not result.ok:
            self.failures.append(result)
        self.jobs += result.jobs
        self.completed += result.completed
        self.failed += result.failed
        self.lost += result.lost
        self.duplicate_completions += result.duplicate_completions
        self.zombie_commits += result.zombie_commits
        self.re_executions += result.re_executions
        self.stalls_recovered += result.stalls_recovered
        self.virtual_seconds += result.virtual_seconds
        self.wall_seconds += result.wall_seconds
        self.faults.update(fault.kind for fault in result.faults)
        for goal, hits in result.coverage.items():
            self.coverage[goal] += hits
            if hits:
                self.runs_reaching[goal] += 1

    @property
    def compression(self) -> float:
        """Virtual seconds simulated per wall-clock second."""
        return self.virtual_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def coverage_lines(self) -> list[str]:
        """One line per interesting case: how often the campaign reached it, or that it never
        did."""
        lines = []
        for goal, text in COVERAGE_GOALS.items():
            if self.coverage[goal]:
                lines.append(
                    f"{goal:<24} {self.coverage[goal]:>6} times in {self.runs_reaching[goal]}/"
                    f"{self.runs} runs  ({text})"
                )
            else:
                lines.append(f"{goal:<24}  NEVER REACHED in {self.runs} runs  ({text})")
        return lines


def shrink(
    scenario: Scenario,
    failing: RunResult,
    *,
    plant: frozenset[str] = frozenset(),
    max_runs: int = 80,
    on_try: Callable[[int, int], None] | None = None,
    backend: str = "memory",
) -> tuple[tuple[Fault, ...], RunResult]:
    """Find a smaller fault list with which the same seed still fails.

    Delta debugging over the fault timeline: drop chunks of halving size, keep any removal after
    which the run still fails, and stop at a list from which no single fault can be dropped (or
    after ``max_runs`` runs).

    Returns:
        The minimal fault list and the failing result it gives.
    """
    faults = tuple(failing.faults)
    best = failing
    runs = 0
    chunk = max(1, len(faults) // 2)
    while faults and runs < max_runs:
        removed_any = False
        start = 0
        while start < len(faults) and runs < max_runs:
            candidate = faults[:start] + faults[start + chunk :]
            runs += 1
            if on_try is not None:
                on_try(runs, len(candidate))
            result = run_seed(
                scenario, failing.seed, plant=plant, faults=candidate, backend=backend
            )
            if not result.ok:
                faults, best, removed_any = candidate, result, True
            else:
                start += chunk
        if chunk == 1 and not removed_any:
            break
        chunk = max(1, chunk // 2)
    return faults, best
