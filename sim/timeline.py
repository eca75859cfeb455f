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

import html
import os
import pathlib
import re
from collections import defaultdict

from corral.sim.scenario import WINDOW_FAULTS
from corral.sim.timeline_story import (
    FaultWindow,
    JobLane,
    Proc,
    Story,
    Window,
    fault_windows,
    summary_html,
)
from corral.sim.timeline_style import CONTROLS, LEGEND_KEY, SCRIPT, css, legend, process_colour
from corral.sim.trace import RunResult, TraceEvent

LABEL_W = 92  # px, lane labels
AXIS_H = 34  # px, phase band and time axis
PLOT_W = 1400  # px of plot at zoom 1
PROC_H = 18
STORE_H = 30
JOB_MIN_H = 14  # px: a job lane never gets thinner than its 10 px label needs
JOB_MAX_H = 24  # px: with few jobs, lanes grow up to this
JOBS_VIEW_H = 480  # px: the height the job lanes should fill in a 1400x900 window, if they can
SECTION_H = 16
_BUCKET_PX = 2.0  # instantaneous process events closer than this are drawn as one tick
_MAX_TITLE_LINES = 8
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 3600)

_PAIRS = re.compile(r"(\w+)=(\S*)")
_WORKER = re.compile(r"w(\d+)(?:\.(\d+))?$")
_FAULT = re.compile(r"(\S+)@(\S+) t=(\d+)ms")
_DRAWN = re.compile(r'<(?:rect|line|path) class="([^" ]+)')
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


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _title(lines: list[str]) -> str:
    if len(lines) > _MAX_TITLE_LINES:
        lines = [*lines[:_MAX_TITLE_LINES], f"… and {len(lines) - _MAX_TITLE_LINES} more"]
    return f"<title>{_esc(chr(10).join(lines))}</title>" if lines else ""


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
        self.procs: dict[str, Proc] = {}
        self.jobs: dict[str, JobLane] = {}
        self.faults: list[TraceEvent] = []
        self.networks: list[FaultWindow] = []
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

    def span(self, t0: float, t1: float, y: float, cls: str, lines: list[str]) -> str:
        x0, x1 = f"{self.x(t0):.1f}", f"{self.x(t1):.1f}"
        return (
            f'<line class="{cls}" x1="{x0}" x2="{x1}" y1="{y:g}" y2="{y:g}">{_title(lines)}</line>'
        )

    # ------------------------------------------------------------------ collecting

    def _job(self, job_id: str) -> JobLane:
        if job_id not in self.jobs:
            self.jobs[job_id] = JobLane(job_id)
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
            self.procs[e.process] = Proc(e.process, slot, generation, len(self.procs), t, line)
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
            job.windows.append(Window(e.process, pairs.get("token", ""), t, t + lock, [line]))
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
            for verdict in ("recovered", "failed") if kind == "stall-check" else ():
                for job_id in filter(None, pairs.get(verdict, "").split(",")):
                    self._job(job_id).checks[t] = (e.process, verdict)
                    self._job(job_id).tags.add("stall")
            lane = e.process if e.process in self.procs or e.process == "producer" else "store"
            self._bucket(lane, _PROC_TICKS.get(kind, "m-other"), e)

    def _transition(self, job: JobLane, e: TraceEvent, line: str) -> None:
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

    def _finish(self, job: JobLane, e: TraceEvent, line: str, pairs: dict[str, str]) -> None:
        t, token = e.t_ms, pairs.get("token", "")
        if pairs.get("code") != "OK":
            job.marks.append((t, "m-rej", [line]))
            job.tags.add("rejected")
            return
        if job.marks and job.marks[-1][0] == t and job.marks[-1][1] != "m-exec":
            job.marks[-1][2].append(line)  # the store's transition, at the same instant
        else:
            job.marks.append((t, "m-rel" if e.kind == "release" else "m-fin", [line]))
        for window in reversed(job.windows):
            if window.token == token:
                window.lines.append(line)
                break

    # ------------------------------------------------------------------ process lanes

    def _slot_lanes(self, slot: str, t0: float, t1: float) -> list[Proc]:
        """The processes of ``slot`` alive during [t0, t1), else the last one before t0."""
        lanes = [p for p in self.procs.values() if f"w{p.slot}" == slot]
        hit = [p for p in lanes if p.start < t1 and (p.end if p.end is not None else self.end) > t0]
        return hit or [p for p in lanes if p.start <= t0][-1:] or lanes[:1]

    def _shade_faults(self, heal: float) -> dict[tuple[str, float], str]:
        """Shade network faults on their slot's lanes; return the other faults by (slot, t)."""
        instant: dict[tuple[str, float], str] = {}
        self.networks = fault_windows(self.faults, heal, self.end)
        for w in self.networks:
            for p in self._slot_lanes(w.slot, w.start, w.end):
                p.shades.append(self.rect(w.start, w.end, 0, PROC_H, f"f-{w.kind}", [w.line]))
        for fault in self.faults:
            match = _FAULT.match(fault.detail)
            kind, slot, t0 = (match[1], match[2], fault.t_ms) if match else ("", "", 0.0)
            if kind and kind not in WINDOW_FAULTS:
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
                svg.append(self.span(end, min(nexts, default=self.end), 9, "down", empty))
            for t0, t1, line in p.blocks:
                why = instant.get((slot, t0), "")
                blocked = [why, line] if why else [line]
                svg.append(self.rect(t0, min(t1, end, heal), 2, 14, "blk", blocked))
            svg += self._ticks(p.name, slot, instant)
            lanes.append((p.name, process_colour(p.slot, p.generation), "".join(svg), PROC_H))
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

    def job_lane(self, job: JobLane, lane_h: int) -> str:
        h, done = lane_h - 2, job.done if job.done is not None else self.end
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
            owner, end = f"p{proc.index}" if proc else "", w.end if w.end is not None else self.end
            renewed = f" after {len(w.renews)} renewal(s), last: {w.last_renew}" if w.renews else ""
            closed = w.lines[1:] or ["(still active at the end of the run)"]
            lines = [w.lines[0], f"lock until t={w.expiry:.0f}ms{renewed}", *closed]
            renews = "".join(f"M{self.x(r):.1f} 0v{h}" for r in w.renews)
            renews = f'<path class="rn" d="{renews}"/>' if renews else ""
            held = self.rect(w.start, min(end, w.expiry), 0, h, f"lk {owner}".strip(), [])
            svg.append(f"<g>{_title(lines)}{held}{renews}</g>")
            crashed = proc.end if proc and " crash" in proc.end_line else None
            if proc and crashed is not None and w.start <= crashed < end:
                # the lock outlives its owner until it expires: mark where the owner died
                died = [f"{w.proc}, holding the lock, crashed", proc.end_line]
                svg.append(self.tick(crashed, 0, h, "m-crash", died))
            if end > w.expiry:
                expired = f"{w.proc}'s lock expired at t={w.expiry:.0f}ms; the job stayed active"
                svg.append(
                    self.rect(w.expiry, end, 0, h, f"lx {owner}".strip(), [expired, *closed])
                )
        for t, cls, lines in job.marks:
            y0, y1 = {"m-exec": (0, h / 2), "m-rnf": (h / 2, h)}.get(cls, (0, h))
            svg.append(self.tick(t, y0, y1, cls, lines))
        if job.execs > 1:
            job.tags.add("reexec")
        if job.done is None:
            job.tags.add("unfinished")
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


def job_lane_height(jobs: int) -> int:
    """The height of one job lane: fill :data:`JOBS_VIEW_H` if the jobs fit in it, within limits.

    Args:
        jobs: how many job lanes the page draws.

    Returns:
        Pixels, between :data:`JOB_MIN_H` and :data:`JOB_MAX_H`.
    """
    return max(JOB_MIN_H, min(JOB_MAX_H, JOBS_VIEW_H // max(jobs, 1)))


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
    jobs_top, lane_h = y, job_lane_height(len(jobs))
    story = Story(
        tl.procs, tl.networks, tl.end, result.violations
    )  # after process_lanes, which finds the faults
    for job in jobs:
        svg = tl.job_lane(job, lane_h)  # first: it completes the job's tags
        done = job.done if job.done is not None else tl.end
        lanes.append(
            f'<g class="jl" id="job-{_esc(job.job_id)}" data-j="{_esc(job.job_id)}" '
            f'data-t="{" ".join(sorted(job.tags))}" data-a="{job.added:.0f}" data-d="{done:.0f}" '
            f'transform="translate(0,{y:g})">{svg}</g>'
        )
        label_y = AXIS_H + y + (lane_h - 2) / 2 + 4  # centred on the lane's bar
        flag = f" o-{category}" if (category := story.category(job)) else ""
        labels.append(
            f'<text class="jt{flag}" x="{LABEL_W - 6}" y="{label_y:g}">{_esc(job.job_id)}</text>'
        )
        y += lane_h
    total_h = AXIS_H + y + 10
    heal = tl.heal.t_ms if tl.heal else tl.end
    phases = tl.rect(0, heal, 0, 12, "ph-s", ["safety phase: faults at full rate"])
    under, over = "", tl.tick(tl.last.t_ms, 0, y, "m-end", [tl.last.line()]) if tl.last else ""
    if tl.heal is not None:
        healed = ["liveness phase: faults healed", tl.heal.line()]
        phases += tl.rect(heal, tl.end, 0, 12, "ph-l", healed)
        under = tl.rect(heal, tl.end, 0, y, "bg-l", healed)
        over += tl.tick(heal, 0, y, "m-heal", healed)
    drawn = f"{under}{''.join(lanes)}{over}"
    used = {LEGEND_KEY.get(cls, cls) for cls in _DRAWN.findall(drawn + phases)}
    styles = "".join(
        f".p{p.index}{{fill:{process_colour(p.slot, p.generation)}}}" for p in tl.procs.values()
    )
    svg = (
        f'<svg id="tl" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}" '
        f'height="{total_h}" data-w="{PLOT_W}" data-pps="{tl.pps:.6g}" '
        f'data-end="{tl.end / 1000:.3f}" data-lw="{LABEL_W}" data-ah="{AXIS_H}" '
        f'data-jt="{jobs_top:g}" data-jh="{lane_h}">'
        f'<g transform="translate({LABEL_W},{AXIS_H})"><g id="zx">{drawn}</g></g>'
        f'<g id="axis"><rect class="bgw" x="0" y="0" width="100%" height="{AXIS_H}"/>'
        f'<g transform="translate({LABEL_W},2)"><g id="phz">{phases}</g></g>'
        f'<g id="ticks">{tl.axis()}</g></g>'
        f'<g id="labels"><rect class="bgw" x="0" y="0" width="{LABEL_W}" height="{total_h}"/>'
        f"{''.join(labels)}"
        f'<rect id="corner" class="bgw" x="0" y="0" width="{LABEL_W}" height="{AXIS_H}"/></g></svg>'
    )
    extra = legend(used, "p0") + CONTROLS + summary_html(story, jobs)
    return _page(result, tl, styles, svg, extra)


def _page(result: RunResult, tl: _Timeline, styles: str, svg: str, extra: str) -> str:
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
    counts = (
        f"jobs {result.jobs}: {result.completed} completed, {result.failed} failed, "
        f"{result.lost} lost · {result.stalls_recovered} stalls recovered · "
        f"{result.re_executions} re-executions"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{css()}{styles}</style></head><body><header><h1>{title} "
        f"<small>{'OK' if result.ok else 'FAILED'} · {counts} · {phase}</small></h1>"
        f"{f'<ul class=viol>{violations}</ul>' if violations else ''}"
        f"<details><summary>run details; faults: {len(applied)} applied of {len(result.faults)}"
        f'{planted}</summary><div class="cells">{cells}</div><div><b>coverage</b> '
        f"{_esc(coverage)} · <b>enabled faults</b> "
        f"{_esc(', '.join(result.enabled_kinds) or 'none')}</div>(greyed: not reached before "
        f'the run ended or healed)<ul class="faults">{faults or "<li>none</li>"}</ul></details>'
        f"{extra}</header>"
        f'<div id="sc">{svg}</div><script>{SCRIPT}</script></body></html>\n'
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


__all__ = ["job_lane_height", "render_html", "text_log", "write_html"]
