"""What a simulated run leaves behind: its trace events and its result."""

from __future__ import annotations

import dataclasses
from typing import Any

from corral.sim.scenario import Fault


@dataclasses.dataclass(frozen=True)
class TraceEvent:
    """One line of a run's trace.

    Attributes:
        t_ms: world time in milliseconds.
        process: ``store``, ``world``, ``producer`` or a worker process name.
        kind: what happened (``fetch``, ``finish``, ``fault``, ``transition``, ...).
        job: the job concerned, or ``""``.
        detail: the rest, as ``key=value`` pairs.
    """

    t_ms: float
    process: str
    kind: str
    job: str
    detail: str

    def line(self) -> str:
        """The event as one text line (what the trace hash covers)."""
        job = f" job={self.job}" if self.job else ""
        return f"{self.t_ms:12.3f} {self.process:<9} {self.kind:<16}{job} {self.detail}".rstrip()


@dataclasses.dataclass
class RunResult:
    """Everything a run reports (``to_json`` gives the ``--json`` object)."""

    scenario: str
    seed: int
    jobs: int
    completed: int
    failed: int
    lost: int
    lost_to_store_restart: int
    duplicate_completions: int
    zombie_commits: int
    executions: int
    re_executions: int
    stalls_recovered: int
    virtual_seconds: float
    wall_seconds: float
    events: int
    trace_hash: str
    violations: list[str]
    faults: list[Fault]
    enabled_kinds: list[str]
    coverage: dict[str, int]
    planted: list[str]
    duration_ms: int = 0
    liveness_budget_ms: int = 0
    backend: str = "memory"
    #: Processors that ran again on an attempt whose outcome was never stored (not a retry).
    reruns: int = 0
    #: Finishes sent again after a lost reply and answered like the first.
    finishes_repeated: int = 0
    #: Jobs an operator deleted on purpose (remove, clean, drain, obliterate): not lost.
    removed_by_operator: int = 0
    #: Of those, the jobs deleted before they completed or failed.
    removed_unfinished: int = 0
    trace: list[TraceEvent] = dataclasses.field(repr=False, default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant failed and nothing was lost."""
        return not self.violations and self.lost == 0

    def to_json(self) -> dict[str, Any]:
        """The machine-readable summary of the run."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "jobs": self.jobs,
            "completed": self.completed,
            "failed": self.failed,
            "lost": self.lost,
            "lost_to_store_restart": self.lost_to_store_restart,
            "duplicate_completions": self.duplicate_completions,
            "zombie_commits": self.zombie_commits,
            "executions": self.executions,
            "re_executions": self.re_executions,
            "reruns": self.reruns,
            "finishes_repeated": self.finishes_repeated,
            "removed_by_operator": self.removed_by_operator,
            "removed_unfinished": self.removed_unfinished,
            "stalls_recovered": self.stalls_recovered,
            "virtual_seconds": round(self.virtual_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "events": self.events,
            "trace_hash": self.trace_hash,
            "violations": self.violations,
            "faults": [fault.describe() for fault in self.faults],
            "enabled_fault_kinds": self.enabled_kinds,
            "coverage": self.coverage,
            "planted": self.planted,
            "backend": self.backend,
            "duration_ms": self.duration_ms,
            "liveness_budget_ms": self.liveness_budget_ms,
            "ok": self.ok,
        }
