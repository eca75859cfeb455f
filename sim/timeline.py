"""Show a simulated run: a one-line-per-event text log and a self-contained HTML timeline.

The HTML page has no external resources (inline CSS, SVG and a little JavaScript for zoom,
scrolling and filtering). Its x axis is virtual time; the liveness phase (after the ``heal``
event) is tinted. There is one lane per worker process, with its life, loop blocks and the faults
that hit its slot shaded, a producer lane, a store lane plotting how many jobs are active and
queued, and one compact lane per job showing its lock windows coloured by the owning process, with
markers for executions, completions, failures, retries, stall recoveries and rejected finishes.
Every drawn element carries an SVG ``<title>`` with the trace line(s) it stands for.
"""

from __future__ import annotations

import dataclasses
import html
import os
import pathlib
import re
from collections import defaultdict

from corral.sim.trace import RunResult, TraceEvent

LABEL_W = 92  # px, lane labels
AXIS_H = 34  # px, phase band and time axis
PLOT_W = 1400  # px of plot at zoom 1
PROC_H = 18
STORE_H = 30
JOB_H = 8
SECTION_H = 16
_BUCKET_PX = 2.0  # instantaneous process events closer than this are drawn as one tick
_MAX_TITLE_LINES = 8
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 3600)

_PAIRS = re.compile(r"(\w+)=(\S*)")
_WORKER = re.compile(r"w(\d+)(?:\.(\d+))?$")
_FAULT = re.compile(r"(\S+)@(\S+) t=(\d+)ms for (\d+)ms")
_WINDOW_FAULTS = ("partition", "asymmetric", "latency")
_TICK_Y = {"m-chk": (0, 5), "m-err": (12, PROC_H), "m-other": (12, PROC_H)}
_MARK_OF = {"complete": "m-done", "fail": "m-fail", "recover_stalled": "m-stall"}
_TAG_OF = {"m-fail": "failed", "m-stall": "stall", "m-retry": "retry", "m-rej": "rejected"}
_PROC_TICKS = {"crash": "m-crash", "exited": "m-exit", "shutdown": "m-shut", "error": "m-err"}
_PROC_TICKS |= {"stall-check": "m-chk", "lock-lost": "m-err", "add-failed": "m-err"}


def text_log(result: RunResult) -> str:
    """The run as text: a header line, then one line per trace event.

    Args:
        result: a finished run.

    Returns:
        The log, newline-terminated. The lines after the header are exactly what
        ``result.trace_hash`` covers.
    """
    faults = "; ".join(fault.describe() for fault in result.faults) or "none"
    header = (
        f"# corral sim scenario={result.scenario} seed={result.seed} "
        f"trace_hash={result.trace_hash} events={len(result.trace)} "
        f"faults={len(result.faults)}: {faults}"
    )
    return "\n".join([header, *(event.line() for event in result.trace)]) + "\n"


@dataclasses.dataclass
class _Proc:
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
class _Window:
    proc: str
    token: str
    start: float
    expiry: float
    lines: list[str]
    renews: list[float] = dataclasses.field(default_factory=list)
    last_renew: str = ""
    end: float | None = None


@dataclasses.dataclass
class _Job:
    job_id: str
    added: float = 0.0
    added_line: str = ""
    state: str = "?"
    since: float = 0.0
    done: float | None = None
    execs: int = 0
    windows: list[_Window] = dataclasses.field(default_factory=list)
    open: dict[str, _Window] = dataclasses.field(default_factory=dict)
    marks: list[tuple[float, str, list[str]]] = dataclasses.field(default_factory=list)
    delayed: list[tuple[float, float, str]] = dataclasses.field(default_factory=list)
    tags: set[str] = dataclasses.field(default_factory=set)

    def close(self, t: float, line: str) -> None:
        for window in self.open.values():
            window.end = t
            window.lines.append(line)
        self.open.clear()


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _title(lines: list[str]) -> str:
    if len(lines) > _MAX_TITLE_LINES:
        lines = [*lines[:_MAX_TITLE_LINES], f"… and {len(lines) - _MAX_TITLE_LINES} more"]
    return f"<title>{_esc(chr(10).join(lines))}</title>" if lines else ""


def _colour(slot: int, generation: int) -> str:
    hue = (slot * 137.508 + 200) % 360
    return f"hsl({hue:.0f},62%,{(62, 72, 52)[generation % 3]}%)"


def _id_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (1 << 62, job_id)


class _Timeline:
    """One pass over the trace collects the lanes; the other methods draw them as SVG."""

    def __init__(self, result: RunResult) -> None:
        self.end = max(result.trace[-1].t_ms if result.trace else 0.0, 1.0)
        self.end = max(self.end, result.virtual_seconds * 1000)
        self.pps = PLOT_W / (self.end / 1000)  # px per virtual second at zoom 1
        self.heal: TraceEvent | None = None
        self.last: TraceEvent | None = None
        self.procs: dict[str, _Proc] = {}
        self.jobs: dict[str, _Job] = {}
        self.faults: list[TraceEvent] = []
        self.buckets: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        self.bucket_t: dict[tuple[str, str, int], float] = {}
        self.effects: set[tuple[str, float]] = set()  # (slot, t) of crashes, shutdowns, blocks
        self.adds: dict[int, list[str]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.series: list[tuple[float, int, int]] = [(0.0, 0, 0)]
        for event in result.trace:
            self._event(event)

    # ------------------------------------------------------------------ drawing primitives

    def x(self, t_ms: float) -> float:
        return t_ms * self.pps / 1000

    def rect(self, t0: float, t1: float, y: float, h: float, cls: str, lines: list[str]) -> str:
        x0, width = self.x(t0), max(self.x(t1) - self.x(t0), 0.6)
        return (
            f'<rect class="{cls}" x="{x0:.1f}" y="{y:g}" width="{width:.1f}" height="{h:g}">'
            f"{_title(lines)}</rect>"
        )

    def tick(self, t: float, y0: float, y1: float, cls: str, lines: list[str]) -> str:
        x = f"{self.x(t):.1f}"
        return (
            f'<line class="{cls}" x1="{x}" x2="{x}" y1="{y0:g}" y2="{y1:g}">{_title(lines)}</line>'
        )

    # ------------------------------------------------------------------ collecting

    def _job(self, job_id: str) -> _Job:
        if job_id not in self.jobs:
            self.jobs[job_id] = _Job(job_id)
        return self.jobs[job_id]

    def _bucket(self, lane: str, cls: str, event: TraceEvent) -> None:
        key = (lane, cls, int(self.x(event.t_ms) / _BUCKET_PX))
        self.buckets[key].append(event.line())
        self.bucket_t.setdefault(key, event.t_ms)

    def _event(self, e: TraceEvent) -> None:
        t, line, kind = e.t_ms, e.line(), e.kind
        pairs = dict(_PAIRS.findall(e.detail))
        proc = self.procs.get(e.process)
        job = self._job(e.job) if e.job and kind != "lock-lost" else None
        window = job.open.get(pairs.get("token", "")) if job else None
        if proc and kind in ("crash", "exited", "shutdown", "blocked"):
            self.effects.add((f"w{proc.slot}", t))
        if kind == "start" and (match := _WORKER.match(e.process)):
            slot, generation = int(match[1]), int(match[2] or 0)
            self.procs[e.process] = _Proc(e.process, slot, generation, len(self.procs), t, line)
        elif kind in ("crash", "exited") and proc:
            proc.end, proc.end_line = t, line
            self._bucket(e.process, _PROC_TICKS[kind], e)
        elif kind == "shutdown" and proc:
            proc.shutdown = t
            self._bucket(e.process, "m-shut", e)
        elif kind == "blocked" and proc:
            ms = re.search(r"for (\d+)ms", e.detail)
            proc.blocks.append((t, t + (int(ms[1]) if ms else 0), line))
        elif kind in ("fault", "heal", "end") and e.process == "world":
            self.faults += [e] if kind == "fault" else []
            self.heal = e if kind == "heal" else self.heal
            self.last = e if kind == "end" else self.last
        elif kind == "add":
            self.adds[int(self.x(t) / 4)].append(line)
        elif kind == "transition" and job:
            self._transition(job, e, line)
        elif kind == "fetch" and job:
            job.close(t, f"superseded by {line}")
            lock = float(pairs.get("lock") or 0)
            job.windows.append(_Window(e.process, pairs.get("token", ""), t, t + lock, [line]))
            job.open[job.windows[-1].token] = job.windows[-1]
        elif kind == "exec" and job:
            job.execs += 1
            job.marks.append((t, "m-exec", [line]))
        elif kind == "renew" and job:
            if window is not None:
                window.expiry = max(window.expiry, t + float(pairs.get("lock") or 0))
                window.renews.append(t)
                window.last_renew = line
        elif kind == "renew-failed" and job:
            job.marks.append((t, "m-rnf", [line]))
            job.tags.add("renewfail")
        elif kind in ("finish", "release") and job:
            self._finish(job, e, line, pairs)
        else:
            for job_id in pairs.get("failed", "").split(",") if kind == "stall-check" else []:
                if job_id:
                    self._job(job_id).tags.add("stall")
            lane = e.process if e.process in self.procs or e.process == "producer" else "store"
            self._bucket(lane, _PROC_TICKS.get(kind, "m-other"), e)

    def _transition(self, job: _Job, e: TraceEvent, line: str) -> None:
        name, _, move = e.detail.partition(" ")
        source, _, target = move.partition("->")
        t = e.t_ms
        if job.state == "?":
            job.added, job.added_line = t, line
        if source == "active":
            job.close(t, line)
            cls = _MARK_OF.get(name, "m-retry" if name.startswith("retry") else "m-rel")
            job.marks.append((t, cls, [line]))
            job.tags.update([_TAG_OF[cls]] if cls in _TAG_OF else [])
        if source == "delayed":
            job.delayed.append((job.since, t, line))
        if target in ("completed", "failed", "None"):
            job.done = t
        self.counts[source] -= 1
        self.counts[target] += 1
        queued = self.counts["waiting"] + self.counts["prioritized"]
        self.series.append((t, self.counts["active"], queued))
        job.state, job.since = target, t

    def _finish(self, job: _Job, e: TraceEvent, line: str, pairs: dict[str, str]) -> None:
        t, token = e.t_ms, pairs.get("token", "")
        if pairs.get("code") != "OK":
            job.marks.append((t, "m-rej", [line]))
            job.tags.add("rejected")
            return
        if job.marks and job.marks[-1][0] == t and job.marks[-1][1] != "m-exec":
            job.marks[-1][2].append(line)  # the store's transition, at the same instant
        else:
            job.marks.append((t, "m-rel" if e.kind == "release" else "m-other", [line]))
        for window in reversed(job.windows):
            if window.token == token:
                window.lines.append(line)
                break

    # ------------------------------------------------------------------ process lanes

    def _slot_lanes(self, slot: str, t0: float, t1: float) -> list[_Proc]:
        """The processes of ``slot`` alive during [t0, t1), else the last one before t0."""
        lanes = [p for p in self.procs.values() if f"w{p.slot}" == slot]
        hit = [p for p in lanes if p.start < t1 and (p.end if p.end is not None else self.end) > t0]
        return hit or [p for p in lanes if p.start <= t0][-1:] or lanes[:1]

    def _shade_faults(self, heal: float) -> dict[tuple[str, float], str]:
        """Shade network faults on their slot's lanes; return the other faults by (slot, t)."""
        instant: dict[tuple[str, float], str] = {}
        for fault in self.faults:
            if not (match := _FAULT.match(fault.detail)):
                continue
            kind, slot, t0 = match[1], match[2], fault.t_ms
            if kind in _WINDOW_FAULTS:
                t1 = min(t0 + int(match[4]), heal, self.end)
                for p in self._slot_lanes(slot, t0, t1):
                    p.shades.append(self.rect(t0, t1, 0, PROC_H, f"f-{kind}", [fault.line()]))
            else:
                instant[(slot, t0)] = fault.line()
                if slot.startswith("w") and (slot, t0) not in self.effects:
                    for p in self._slot_lanes(slot, t0, t0 + 1)[:1]:
                        no_effect = [fault.line(), "(no effect: no live process)"]
                        p.shades.append(self.tick(t0, 0, PROC_H, "m-fault", no_effect))
        return instant

    def process_lanes(self) -> list[tuple[str, str, str, int]]:
        """(label, colour, svg, height) for each worker process lane, then producer and store."""
        heal = self.heal.t_ms if self.heal else self.end
        instant = self._shade_faults(heal)
        ordered = sorted(self.procs.values(), key=lambda p: (p.slot, p.generation))
        lanes = []
        for p in ordered:
            end, slot = p.end if p.end is not None else self.end, f"w{p.slot}"
            life = [p.start_line, p.end_line or "(alive at the end of the run)"]
            svg = [*p.shades, self.rect(p.start, end, 4, 10, f"alive p{p.index}", life)]
            if p.shutdown is not None:
                svg.append(self.rect(p.shutdown, end, 4, 10, "closing", ["closing", p.end_line]))
            if p.end is not None:
                nexts = [q.start for q in ordered if q.slot == p.slot and q.start >= end]
                why = instant.get((slot, p.shutdown if p.shutdown is not None else p.end), "")
                empty = [f"slot {slot} has no process", why, p.end_line]
                svg.append(self.rect(end, min(nexts, default=self.end), 7, 4, "down", empty))
            for t0, t1, line in p.blocks:
                why = instant.get((slot, t0), "")
                blocked = [why, line] if why else [line]
                svg.append(self.rect(t0, min(t1, end, heal), 2, 14, "blk", blocked))
            svg += self._ticks(p.name, slot, instant)
            lanes.append((p.name, _colour(p.slot, p.generation), "".join(svg), PROC_H))
        producer = self._ticks("producer", "", instant)
        for k, lines in sorted(self.adds.items()):
            t0, t1 = k * 4000 / self.pps, (k + 1) * 4000 / self.pps
            producer.append(self.rect(t0, t1, 5, 8, "adds", [f"{len(lines)} job(s) added", *lines]))
        lanes.append(("producer", "#555", "".join(producer), PROC_H))
        store = [self._series(), *self._ticks("store", "store", instant)]
        store += [
            self.tick(t, 0, STORE_H, "m-crash", [line])
            for (slot, t), line in instant.items()
            if slot == "store"
        ]
        lanes.append(("store", "#555", "".join(store), STORE_H))
        return lanes

    def _ticks(self, lane: str, slot: str, instant: dict[tuple[str, float], str]) -> list[str]:
        out = []
        for key in sorted(k for k in self.buckets if k[0] == lane):
            cls, lines, t = key[1], self.buckets[key], self.bucket_t[key]
            if cls in ("m-crash", "m-shut") and (slot, t) in instant:
                lines = [instant[(slot, t)], *lines]
            out.append(self.tick(t, *_TICK_Y.get(cls, (0, PROC_H)), cls, lines))
        return out

    def _series(self) -> str:
        top = max(1, *(max(active, queued) for _, active, queued in self.series))
        paths = []
        for column, cls, name in ((1, "s-act", "active"), (2, "s-que", "waiting+prioritized")):
            d, last = [f"M0 {STORE_H}"], -1.0
            for point in self.series:
                if point[column] != last:
                    last, y = point[column], STORE_H - 2 - point[column] * (STORE_H - 4) / top
                    d.append(f"H{self.x(point[0]):.1f}V{y:.1f}")
            peak = max(point[column] for point in self.series)
            paths.append(
                f'<path class="{cls}" d="{"".join(d)}H{self.x(self.end):.1f}"><title>jobs {name} '
                f"in the store (peak {peak}; lane top = {top})</title></path>"
            )
        return "".join(paths)

    # ------------------------------------------------------------------ job lanes

    def job_lane(self, job: _Job) -> str:
        h, done = JOB_H - 1, job.done if job.done is not None else self.end
        when = f"at t={job.done:.0f}ms" if job.done is not None else "at the end"
        summary = (
            f"job {job.job_id}: added t={job.added:.0f}ms, {job.state} {when}; "
            f"{len(job.windows)} fetch(es), {job.execs} execution(s) {' '.join(sorted(job.tags))}"
        )
        svg = [self.rect(job.added, done, 0, h, "life", [summary, job.added_line])]
        svg += [
            self.rect(t0, t1, 2, h - 4, "dly", [f"delayed until {line}"])
            for t0, t1, line in job.delayed
        ]
        for w in job.windows:
            proc = self.procs.get(w.proc)
            cls, end = f"p{proc.index}" if proc else "p-x", w.end if w.end is not None else self.end
            renewed = f" after {len(w.renews)} renewal(s), last: {w.last_renew}" if w.renews else ""
            closed = w.lines[1:] or ["(still active at the end of the run)"]
            lines = [w.lines[0], f"lock until t={w.expiry:.0f}ms{renewed}", *closed]
            renews = "".join(f"M{self.x(r):.1f} 0v{h}" for r in w.renews)
            renews = f'<path class="rn" d="{renews}"/>' if renews else ""
            held = self.rect(w.start, min(end, w.expiry), 0, h, cls, [])
            svg.append(f"<g>{_title(lines)}{held}{renews}</g>")
            if end > w.expiry:
                expired = f"{w.proc}'s lock expired at t={w.expiry:.0f}ms; the job stayed active"
                svg.append(self.rect(w.expiry, end, 0, h, f"{cls} exp", [expired, *closed]))
        for t, cls, lines in job.marks:
            y0, y1 = {"m-exec": (0, h / 2), "m-rnf": (h / 2, h)}.get(cls, (0, h))
            svg.append(self.tick(t, y0, y1, cls, lines))
        if job.execs > 1:
            job.tags.add("reexec")
        return "".join(svg)

    def axis(self) -> str:
        """Tick marks and labels at zoom 1 (the JavaScript redraws them when zooming)."""
        step = next((s for s in _STEPS if s * self.pps >= 70), _STEPS[-1])
        out = []
        for n in range(int(self.end / 1000 / step) + 1):
            x = LABEL_W + self.x(n * step * 1000)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_H - 6}" y2="{AXIS_H}"/>'
                f'<text x="{x + 2:.1f}" y="{AXIS_H - 8}">{n * step:g}s</text>'
            )
        return "".join(out)


def render_html(result: RunResult) -> str:
    """Render a run as a self-contained HTML timeline (no external resources).

    Args:
        result: a finished run, with its trace.

    Returns:
        The complete HTML document.
    """
    tl = _Timeline(result)
    lanes: list[str] = []
    labels = [f'<text class="sec" x="4" y="{AXIS_H + SECTION_H - 4}">processes</text>']
    y = SECTION_H
    for label, colour, svg, height in tl.process_lanes():
        lanes.append(f'<g class="pl" transform="translate(0,{y:g})">{svg}</g>')
        labels.append(
            f'<text class="pt" x="{LABEL_W - 6}" y="{AXIS_H + y + height - 5:g}" '
            f'style="fill:{colour}">{_esc(label)}</text>'
        )
        y += height + 2
    jobs = sorted(tl.jobs.values(), key=lambda job: _id_order(job.job_id))
    labels.append(
        f'<text class="sec" x="4" y="{AXIS_H + y + SECTION_H - 4:g}">jobs ({len(jobs)})</text>'
    )
    y += SECTION_H
    jobs_top = y
    for job in jobs:
        svg = tl.job_lane(job)  # first: it completes the job's tags
        lanes.append(
            f'<g class="jl" data-j="{_esc(job.job_id)}" data-t="{" ".join(sorted(job.tags))}" '
            f'transform="translate(0,{y:g})">{svg}</g>'
        )
        label_y = AXIS_H + y + JOB_H - 1
        labels.append(f'<text class="jt" x="{LABEL_W - 6}" y="{label_y}">{_esc(job.job_id)}</text>')
        y += JOB_H
    total_h = AXIS_H + y + 10
    heal = tl.heal.t_ms if tl.heal else tl.end
    phases = tl.rect(0, heal, 0, 12, "ph-s", ["safety phase: faults at full rate"])
    under, over = "", tl.tick(tl.last.t_ms, 0, y, "m-end", [tl.last.line()]) if tl.last else ""
    if tl.heal is not None:
        healed = ["liveness phase: faults healed", tl.heal.line()]
        phases += tl.rect(heal, tl.end, 0, 12, "ph-l", healed)
        under = tl.rect(heal, tl.end, 0, y, "bg-l", healed)
        over += tl.tick(heal, 0, y, "m-heal", healed)
    styles = "".join(
        f".p{p.index}{{fill:{_colour(p.slot, p.generation)}}}" for p in tl.procs.values()
    )
    svg = (
        f'<svg id="tl" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" '
        f'height="{total_h}" data-w="{PLOT_W}" data-pps="{tl.pps:.6g}" '
        f'data-end="{tl.end / 1000:.3f}" data-lw="{LABEL_W}" data-ah="{AXIS_H}" '
        f'data-jt="{jobs_top:g}" data-jh="{JOB_H}">'
        f'<g transform="translate({LABEL_W},{AXIS_H})"><g id="zx">{under}{"".join(lanes)}{over}'
        "</g></g>"
        f'<g id="axis"><rect class="bgw" x="0" y="0" width="100%" height="{AXIS_H}"/>'
        f'<g transform="translate({LABEL_W},2)"><g id="phz">{phases}</g></g>'
        f'<g id="ticks">{tl.axis()}</g></g>'
        f'<g id="labels"><rect class="bgw" x="0" y="0" width="{LABEL_W}" height="{total_h}"/>'
        f"{''.join(labels)}</g></svg>"
    )
    return _page(result, tl, styles, svg)


def _page(result: RunResult, tl: _Timeline, styles: str, svg: str) -> str:
    applied = {event.detail for event in tl.faults}
    skip = ("faults", "violations", "coverage", "enabled_fault_kinds", "planted")
    cells = "".join(
        f"<span><b>{_esc(key)}</b> {_esc(str(value))}</span> "
        for key, value in result.to_json().items()
        if key not in skip
    )
    coverage = ", ".join(f"{k}={v}" for k, v in result.coverage.items())
    faults = "".join(
        f'<li class="{"on" if f.describe() in applied else "off"}">{_esc(f.describe())}</li>'
        for f in result.faults
    )
    violations = "".join(f"<li>{_esc(v)}</li>" for v in result.violations)
    phase = (
        f"heal (liveness phase) at {tl.heal.t_ms / 1000:.1f}s"
        if tl.heal
        else "no heal: the run ended during the safety phase"
    )
    planted = f" · <b>planted</b> {_esc(', '.join(result.planted))}" if result.planted else ""
    title = _esc(f"corral sim — {result.scenario} seed {result.seed}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}{styles}</style></head><body><header><h1>{title} "
        f"<small>{'OK' if result.ok else 'FAILED'} · trace {_esc(result.trace_hash)} · {phase}"
        f'</small></h1><div class="cells">{cells}</div><div><b>coverage</b> {_esc(coverage)} · '
        f"<b>enabled faults</b> {_esc(', '.join(result.enabled_kinds) or 'none')}{planted}</div>"
        f"{f'<ul class=viol>{violations}</ul>' if violations else ''}"
        f"<details><summary>faults: {len(applied)} applied of {len(result.faults)} "
        f"(greyed: not reached before the run ended or healed)</summary>"
        f'<ul class="faults">{faults or "<li>none</li>"}</ul></details>{_LEGEND}</header>'
        f'<div id="sc">{svg}</div><script>{_JS}</script></body></html>\n'
    )


def write_html(result: RunResult, path: str | os.PathLike[str]) -> pathlib.Path:
    """Write :func:`render_html` of ``result`` to ``path``.

    Args:
        result: a finished run.
        path: where to write the HTML file.

    Returns:
        The path written.
    """
    target = pathlib.Path(path)
    target.write_text(render_html(result), encoding="utf-8")
    return target


_CSS = """
body{margin:0;font:12px system-ui,sans-serif;display:flex;flex-direction:column;height:100vh}
header{padding:6px 10px;border-bottom:1px solid #ccc;background:#fafafa}
h1{font-size:15px;margin:0 0 4px}h1 small{font-weight:normal;color:#555}
.cells span{margin-right:12px;white-space:nowrap}.viol{color:#b00;margin:2px 0}
.faults{columns:4;margin:2px 0;font-family:monospace}.faults .off{color:#aaa}
.legend{margin-top:4px}.legend span{margin-right:10px;white-space:nowrap}
.legend svg{vertical-align:middle}#sc{flex:1;overflow:auto;position:relative}
#tl text{font:10px monospace}#tl .jt{font-size:7px;fill:#666;text-anchor:end}
#tl .pt{text-anchor:end;font-weight:bold;stroke:#0003;stroke-width:.3}
#tl .sec{font:bold 10px system-ui;fill:#333}.bgw{fill:#fff}
#tl line{vector-effect:non-scaling-stroke;stroke-width:2}#ticks line{stroke:#333;stroke-width:1}
.alive{opacity:.45}.closing{fill:#888}.down{fill:#d33;opacity:.35}.blk{fill:#222;opacity:.55}
.f-partition{fill:#e33;opacity:.22}.f-asymmetric{fill:#f80;opacity:.25}
.f-latency{fill:#dc0;opacity:.3}.life{fill:#e8e8e8}.jl:hover .life{fill:#ffe08a}
.dly{fill:#b9d3f2}.exp{opacity:.35}.p-x{fill:#999}.rn{stroke:#fff;stroke-width:.6;
vector-effect:non-scaling-stroke}.adds{fill:#777}.s-act,.s-que{fill:none;stroke-width:1.5;
vector-effect:non-scaling-stroke}.s-act{stroke:#26c}.s-que{stroke:#999}
.ph-s{fill:#f4c7c3}.ph-l{fill:#b7e1b5}.bg-l{fill:#eef8ec}
.m-exec{stroke:#222}#tl .m-exec{stroke-width:1}.m-done{stroke:#0a7a2a}.m-fail{stroke:#d00}
.m-retry{stroke:#9a9a00}.m-stall{stroke:#ff6a00}#tl .m-stall,#tl .m-rej{stroke-width:3}
.m-rej{stroke:#e0e}.m-rel{stroke:#14f}.m-rnf{stroke:#70c}.m-crash{stroke:#d00}
#tl .m-crash{stroke-width:3}.m-exit{stroke:#333}.m-shut{stroke:#14f}.m-chk{stroke:#088}
.m-err{stroke:#c06}.m-other{stroke:#888}.m-fault{stroke:#d00;stroke-dasharray:2 2}
.m-heal{stroke:#080;stroke-dasharray:4 3}.m-end{stroke:#000;stroke-dasharray:1 3}
.ctl button{font-size:11px}.ctl{margin-top:4px}
"""

#: Legend entries: shape, CSS class (dots for spaces), text.
_SWATCHES = """rect p0 lock held (colour = owning process)|rect p0.exp lock expired, job active
|rect dly delayed|rect life job queued/alive|line m-exec exec|line m-done completed
|line m-retry retry|line m-fail failed|line m-stall stall recovered|line m-rej finish rejected
|line m-rel released|line m-rnf renew failed|rect alive.p0 process alive|rect blk loop blocked / GC
|rect down slot empty|line m-crash crash|line m-chk stall check|line m-err error / lock lost
|rect f-partition partition|rect f-asymmetric replies lost|rect f-latency latency
|rect ph-l liveness phase"""
_SHAPES = {
    "rect": '<rect class="{}" width="14" height="10"/>',
    "line": '<line class="{}" x1="7" x2="7" y1="0" y2="10" style="stroke-width:3"/>',
}
_LEGEND = (
    '<div class="legend">'
    + "".join(
        f'<span><svg width="14" height="10">{_SHAPES[shape].format(cls.replace(".", " "))}'
        f"</svg> {text}</span> "
        for shape, cls, text in (entry.strip().split(" ", 2) for entry in _SWATCHES.split("|"))
    )
    + '</div><div class="ctl">zoom <button data-z="0.5">−</button><button data-z="2">+</button>'
    '<button data-z="0">fit</button> · jobs <select id="jf"><option value="">all</option>'
    '<option value="*">interesting</option><option>stall</option><option>retry</option>'
    "<option>rejected</option><option>failed</option><option>reexec</option>"
    '<option>renewfail</option></select> <input id="jq" size="14" placeholder="job ids 1 2 3">'
    ' <span id="jn"></span> · hover anything for its trace lines</div>'
)

_JS = """
(function(){
const sc=document.getElementById('sc'),svg=document.getElementById('tl');
const D=svg.dataset,W=+D.w,pps=+D.pps,end=+D.end,LW=+D.lw,AH=+D.ah,JT=+D.jt,JH=+D.jh;
const zx=document.getElementById('zx'),phz=document.getElementById('phz');
const ticks=document.getElementById('ticks'),axis=document.getElementById('axis');
const labels=document.getElementById('labels');
const lanes=[...document.querySelectorAll('g.jl')],jl=[...document.querySelectorAll('text.jt')];
const STEPS=[0.1,0.2,0.5,1,2,5,10,15,30,60,120,300,600,1200,3600];
let z=1;const fitZ=()=>Math.max(0.25,(sc.clientWidth-LW-24)/W);
function drawAxis(){
  const s=STEPS.find(v=>v*pps*z>=70)||3600;let h='';
  for(let n=0;n*s<=end;n++){const x=(LW+n*s*pps*z).toFixed(1);
    h+=`<line x1="${x}" x2="${x}" y1="${AH-6}" y2="${AH}"/>`+
       `<text x="${(+x+2).toFixed(1)}" y="${AH-8}">${+(n*s).toFixed(1)}s</text>`;}
  ticks.innerHTML=h;}
function zoom(f){
  const mid=(sc.scrollLeft+sc.clientWidth/2-LW)/z;
  z=f===0?fitZ():Math.min(256,Math.max(0.25,z*f));
  zx.setAttribute('transform',`scale(${z},1)`);phz.setAttribute('transform',`scale(${z},1)`);
  svg.setAttribute('width',LW+W*z+20);drawAxis();
  sc.scrollLeft=mid*z+LW-sc.clientWidth/2;}
document.querySelectorAll('button[data-z]').forEach(b=>b.onclick=()=>zoom(+b.dataset.z));
sc.addEventListener('scroll',()=>{
  labels.setAttribute('transform',`translate(${sc.scrollLeft},0)`);
  axis.setAttribute('transform',`translate(0,${sc.scrollTop})`);});
const jf=document.getElementById('jf'),jq=document.getElementById('jq');
function filter(){
  const tag=jf.value,ids=new Set(jq.value.split(/[\\s,]+/).filter(Boolean));let y=JT,n=0;
  lanes.forEach((g,i)=>{const t=g.dataset.t;
    const show=(!tag||(tag==='*'?t!=='':t.split(' ').includes(tag)))&&
      (!ids.size||ids.has(g.dataset.j));
    g.style.display=jl[i].style.display=show?'':'none';
    if(show){g.setAttribute('transform',`translate(0,${y})`);jl[i].setAttribute('y',AH+y+JH-1);
      y+=JH;n++;}});
  svg.setAttribute('height',AH+y+10);
  document.getElementById('jn').textContent=`${n} of ${lanes.length} jobs shown`;}
jf.onchange=filter;jq.oninput=filter;zoom(0);
})();
"""

__all__ = ["render_html", "text_log", "write_html"]
