"""What the timeline collects per process and per job, and the plain-words story of the jobs a
reader should look at first: those that failed, never finished, stalled or had a finish rejected,
each with why (which process held the lock, and the crash, blocked loop or network fault that
kept it from renewing).
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Sequence

from corral.sim.scenario import WINDOW_FAULTS
from corral.sim.trace import TraceEvent

_FAULT = re.compile(r"(\S+)@(\S+) t=(\d+)ms for (\d+)ms")
_BLOCK = re.compile(r"(\w+) for (\d+)ms")
_CODE = re.compile(r"code=(\w+)")
_VIOLATION = re.compile(r"job (\S+): ")
_FAULT_WORDS = {
    "partition": "partitioned",
    "asymmetric": "lost its replies",
    "latency": "slowed",
    "finish-lost": "lost its finishes",
}

#: Summary categories, most urgent first: (key, heading).
CATEGORIES = (
    ("violation", "broke an invariant"),
    ("unfinished", "never finished"),
    ("failed", "failed"),
    ("recovered", "stalled, recovered"),
    ("rejected", "finish rejected"),
)


@dataclasses.dataclass
class Proc:
    """One worker process's life, as drawn on its lane."""

    name: str
    slot: int
    generation: int
    index: int
    start: float
    start_line: str
    end: float | None = None
    end_line: str = ""
    shutdown: float | None = None
    blocks: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)
    shades: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Window:
    """One lock a process held on a job, from its fetch to the end of that execution."""

    proc: str
    token: str
    start: float
    expiry: float
    lines: list[str]
    renews: list[float] = dataclasses.field(default_factory=list)
    last_renew: str = ""
    end: float | None = None


@dataclasses.dataclass
class JobLane:
    """One job's life, locks and marks."""

    job_id: str
    added: float = 0.0
    added_line: str = ""
    state: str = "?"
    since: float = 0.0
    done: float | None = None
    execs: int = 0
    windows: list[Window] = dataclasses.field(default_factory=list)
    open: dict[str, Window] = dataclasses.field(default_factory=dict)
    marks: list[tuple[float, str, list[str]]] = dataclasses.field(default_factory=list)
    delayed: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)
    tags: set[str] = dataclasses.field(default_factory=set)
    checks: dict[float, tuple[str, str]] = dataclasses.field(default_factory=dict)

    def close(self, t: float, line: str) -> None:
        """End every open lock window at ``t`` (the store moved the job out of active)."""
        for window in self.open.values():
            window.end = t
            window.lines.append(line)
        self.open.clear()


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    """A network fault on a slot, from its start to its end (or the heal)."""

    slot: str
    kind: str
    start: float
    end: float
    line: str


def fault_windows(faults: list[TraceEvent], heal: float, end: float) -> list[FaultWindow]:
    """The network faults applied in a run, cut at the heal and the end of the run."""
    out = []
    for fault in faults:
        match = _FAULT.match(fault.detail)
        if match and match[1] in WINDOW_FAULTS:
            t1 = min(fault.t_ms + int(match[4]), heal, end)
            out.append(FaultWindow(match[2], match[1], fault.t_ms, t1, fault.line()))
    return out


def _s(t_ms: float) -> str:
    return f"{t_ms / 1000:.1f}s"


class Story:
    """Explains, per job, what went wrong, from what the timeline collected."""

    def __init__(
        self,
        procs: dict[str, Proc],
        networks: list[FaultWindow],
        end: float,
        violations: Sequence[str] = (),
    ) -> None:
        self.procs = procs
        self.networks = networks
        self.end = end
        self.violations: dict[str, list[str]] = {}
        for violation in violations:
            if match := _VIOLATION.match(violation):
                self.violations.setdefault(match[1], []).append(violation[match.end() :])

    def _trouble(self, window: Window, t: float) -> str:
        """Why ``window``'s owner let its lock expire (what hit it before the expiry)."""
        proc = self.procs.get(window.proc)
        if proc is None:
            return f"{window.proc} held the lock"
        who, causes, t = proc.name, [], min(t, window.expiry)
        if proc.end is not None and window.start <= proc.end <= t:
            how = "was shut down" if proc.shutdown is not None else "crashed"
            causes.append((proc.end, f"{who} {how} at {_s(proc.end)}"))
        for t0, t1, line in proc.blocks:
            if t0 < t and t1 > window.start and (match := _BLOCK.search(line)):
                what = "a GC pause" if match[1] == "gc" else "CPU work"
                causes.append((t0, f"{who}'s loop blocked {_s(t1 - t0)} by {what} at {_s(t0)}"))
        for fault in self.networks:
            if fault.slot == f"w{proc.slot}" and fault.start < t and fault.end > window.start:
                words = _FAULT_WORDS[fault.kind]
                causes.append((fault.start, f"{who} {words} {_s(fault.start)}–{_s(fault.end)}"))
        if not causes:
            return f"no renewal by {who} reached the store"
        return "; ".join(text for _, text in sorted(causes))

    def _stall(self, job: JobLane, t: float, verb: str) -> str:
        window = next((w for w in reversed(job.windows) if w.end == t), None)
        checker = f"{job.checks[t][0]}'s stall check" if t in job.checks else "a stall check"
        if window is None:
            return f"{verb} by {checker} at {_s(t)}"
        return (
            f"held by {window.proc} from {_s(window.start)}: {self._trouble(window, t)}; "
            f"its lock expired at {_s(window.expiry)}; {verb} by {checker} at {_s(t)}"
        )

    def incidents(self, job: JobLane) -> list[str]:
        """The job's stalls, failures and rejected finishes, then its end, in time order."""
        out: list[tuple[float, str]] = []
        for t, cls, lines in job.marks:
            if cls == "m-stall":
                out.append((t, "stalled: " + self._stall(job, t, "recovered")))
            elif cls == "m-rej":
                code = _CODE.search(lines[0])
                who = lines[0].split()[1]
                reply = code[1] if code else "?"
                out.append((t, f"{who}'s late finish at {_s(t)} rejected ({reply})"))
            elif cls == "m-fail" and job.checks.get(t, ("", ""))[1] == "failed":
                out.append((t, "stalled too often: " + self._stall(job, t, "failed")))
            elif cls == "m-fail":
                fin = next((line.split()[1] for line in lines if " finish " in line), "")
                on = f" on {fin}" if fin else ""
                text = f"attempt {job.execs} raised an error{on} at {_s(t)}, no attempts left"
                out.append((t, text))
        if job.state != "failed":  # a failure's incident already says how it ended
            out.append((job.done if job.done is not None else self.end, self.ending(job)))
        broken = [f"VIOLATION: {text}" for text in self.violations.get(job.job_id, [])]
        return broken + [text for _, text in sorted(out, key=lambda item: item[0])]

    def category(self, job: JobLane) -> str:
        """The summary category of ``job`` (a key of :data:`CATEGORIES`), or ``""``."""
        if job.job_id in self.violations:
            return "violation"
        if job.done is None:
            return "unfinished"
        if job.state == "failed":
            return "failed"
        if "stall" in job.tags:
            return "recovered"
        return "rejected" if "rejected" in job.tags else ""

    def ending(self, job: JobLane) -> str:
        """How the job ended, in words."""
        if job.done is None:
            still = f"still {job.state} at the end of the run ({_s(self.end)})"
            held = next(iter(job.open.values()), None)
            if held is None:
                return still
            if held.expiry >= self.end:
                return f"{still}, under {held.proc}'s lock since {_s(held.start)}"
            return (
                f"{still}: held by {held.proc} since {_s(held.start)}: "
                f"{self._trouble(held, self.end)}; its lock expired at {_s(held.expiry)} "
                "and no stall check recovered it"
            )
        last = next((w.proc for w in reversed(job.windows)), "")
        by = f" by {last}" if last else ""
        return f"{job.state} at {_s(job.done)}{by}"


def summary_html(story: Story, jobs: list[JobLane]) -> str:
    """The panel listing the jobs to look at, each linked to its lane, with its story."""
    rows: dict[str, list[str]] = {key: [] for key, _ in CATEGORIES}
    for job in jobs:
        key = story.category(job)
        if not key:
            continue
        why = " → ".join(story.incidents(job))
        job_id = html.escape(job.job_id, quote=True)
        rows[key].append(
            f'<tr class="attn-{key}"><td><a href="#job-{job_id}" data-j="{job_id}">job {job_id}'
            f'</a></td><td class="o o-{key}">{key}</td><td>{html.escape(why)}</td></tr>'
        )
    counts = " · ".join(
        f'<span class="o-{key}">{len(rows[key])} {heading}</span>'
        for key, heading in CATEGORIES
        if rows[key] or key != "violation"
    )
    body = "".join(row for key, _ in CATEGORIES for row in rows[key])
    if not body:
        body = (
            "<tr><td>every job completed without a stall, a failure or a rejected finish</td></tr>"
        )
    return (
        f'<section id="attn"><b>Jobs to look at</b>: {counts} '
        "<small>(job ids in the lanes have the same colours; click a job to zoom to its lane)"
        f"</small><table>{body}</table></section>"
    )
