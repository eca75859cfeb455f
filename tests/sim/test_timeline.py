"""Tests for the text log and the HTML timeline of a simulated run (corral.sim.timeline)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from corral.sim.scenario import SCENARIOS, Fault, JobSpec, Scenario, WorkerSettings, WorkShape
from corral.sim.timeline import (
    JOB_MAX_H,
    JOB_MIN_H,
    job_lane_height,
    render_html,
    text_log,
    write_html,
)
from corral.sim.timeline_style import LEGEND_KEY, MARKS
from corral.sim.trace import RunResult
from corral.sim.world import run

CALM = SCENARIOS["calm"]

#: One fault of each drawing style on slots 0-3, and a safety phase short enough that the liveness
#: phase (after the ``heal`` event) starts while jobs are still arriving.
FAULTS = (
    Fault("crash", "w0", 2_000, 3_000),
    Fault("partition", "w1", 1_000, 4_000),
    Fault("latency", "w2", 500, 3_000, 800.0),
    Fault("block", "w3", 1_500, 2_000),
)
FAULTY = CALM.with_changes(
    name="faulty",
    jobs=JobSpec(count=30, arrival_ms=12_000, delayed_fraction=0.2, max_delay_ms=3_000),
    duration_ms=8_000,
    timeline=FAULTS,
)


#: A worker whose loop blocks past its jobs' locks: the jobs stall, another worker recovers them,
#: and the blocked worker's late finishes are rejected.
STALLS = CALM.with_changes(
    name="stalls",
    workers=2,
    settings=WorkerSettings(lock_duration=2_000, stalled_interval=2_000),
    jobs=JobSpec(count=10, arrival_ms=1_000, priority_fraction=0, delayed_fraction=0),
    work=WorkShape(min_ms=3_000, max_ms=4_000, error_probability=0.0),
    duration_ms=20_000,
    timeline=(Fault("block", "w0", 1_500, 6_000),),
)


@pytest.fixture(scope="module")
def calm() -> RunResult:
    return run(CALM.with_changes(jobs=dataclasses.replace(CALM.jobs, count=20)), 1)


@pytest.fixture(scope="module")
def faulty() -> RunResult:
    return run(FAULTY, 3)


class _Checker(HTMLParser):
    """Collects the tags, titles and URLs of a document and checks that svg/g/title nest."""

    VOID = frozenset({"meta", "input", "br", "img", "link", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.classes: list[str] = []
        self.titled: list[tuple[str, str]] = []  # (class of the titled element, title text)
        self.errors: list[str] = []
        self.titles: list[str] = []
        self.urls: list[str] = []
        self.lane_g: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._title: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.tags.append(tag)
        self.urls += [v for k, v in values.items() if k in ("src", "href") or "url(" in v]
        if tag == "g" and "data-j" in values:
            self.lane_g.append(values)
        if tag == "title":
            self._title = []
        if tag not in self.VOID:
            self.stack.append(tag)
            self.classes.append(values.get("class", ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        self.classes.pop()
        if tag == "title" and self._title is not None:
            self.titles.append("".join(self._title))
            self.titled.append((self.classes[-1] if self.classes else "", self.titles[-1]))
            self._title = None

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)


def _parse(document: str) -> _Checker:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    return checker


def _assert_every_event_hoverable(result: RunResult, titles: str) -> None:
    # All but the store's fetch transitions (drawn as the worker's fetch event) and single lock
    # renewals (counted in their lock window's title, and drawn as ticks) appear in a title.
    for event in result.trace:
        if event.kind != "renew" and not event.detail.startswith("fetch "):
            assert event.line() in titles, event.line()


def test_text_log_has_a_header_and_one_line_per_event(calm: RunResult) -> None:
    log = text_log(calm)
    header, *lines = log.rstrip("\n").split("\n")
    assert header.startswith("# corral sim scenario=calm seed=1 ")
    assert f"trace_hash={calm.trace_hash}" in header
    assert "faults=0: none" in header
    assert len(lines) == len(calm.trace)
    assert lines == [event.line() for event in calm.trace]
    digest = hashlib.sha256("".join(line + "\n" for line in lines).encode())
    assert digest.hexdigest()[:16] == calm.trace_hash


def test_text_log_lists_the_faults(faulty: RunResult) -> None:
    header = text_log(faulty).split("\n", 1)[0]
    for fault in FAULTS:
        assert fault.describe() in header


@pytest.mark.parametrize("which", ["calm", "faulty"])
def test_html_is_self_contained_and_well_formed(which: str, request: pytest.FixtureRequest) -> None:
    result: RunResult = request.getfixturevalue(which)
    document = render_html(result)
    checker = _parse(document)
    assert checker.errors == []
    assert checker.stack == []
    # Links only jump within the page (from the summary to a job's lane).
    assert all(url.startswith("#job-") for url in checker.urls), checker.urls
    # The only URL allowed is the SVG namespace, which is a name, not a resource.
    assert re.findall(r"https?://[^\s\"']+", document) == ["http://www.w3.org/2000/svg"]
    for forbidden in ("<link", "<img", "<iframe", "@import", "src="):
        assert forbidden not in document
    assert checker.tags.count("svg") >= 1
    assert "<script>" in document
    assert f"seed {result.seed}" in document
    assert result.trace_hash in document


def test_html_has_a_lane_for_each_process_and_job(faulty: RunResult) -> None:
    document = render_html(faulty)
    checker = _parse(document)
    processes = sorted({e.process for e in faulty.trace if e.kind == "start"})
    assert {"w0", "w0.1", "w1", "w2", "w3"} <= set(processes)
    for name in [*processes, "producer", "store"]:
        assert re.search(rf'class="pt"[^>]*>{re.escape(name)}</text>', document), name
    jobs = {e.job for e in faulty.trace if e.kind == "add"}
    assert len(jobs) == FAULTY.jobs.count
    assert [g["data-j"] for g in checker.lane_g] == sorted(jobs, key=int)
    assert len(re.findall(r'class="jt[" ]', document)) == len(jobs)


def test_html_titles_cover_faults_crashes_locks_and_phases(faulty: RunResult) -> None:
    checker = _parse(render_html(faulty))
    titles = "\n".join(checker.titles)
    for fault in FAULTS:
        assert fault.describe() in titles, fault
    crash = next(e for e in faulty.trace if e.kind == "crash")
    assert crash.line() in titles
    heal = next(e for e in faulty.trace if e.kind == "heal")
    assert heal.line() in titles
    assert "liveness phase" in titles
    _assert_every_event_hoverable(faulty, titles)
    # A job whose lock owner crashed shows the crash on its own lane too.
    assert "<title>w0, holding the lock, crashed\n" + crash.line() in render_html(faulty)
    # The partition of w1 is shaded on w1's lane; its window is a rect with the fault line.
    assert re.search(
        r'<rect class="f-partition"[^>]*><title>[^<]*partition@w1', render_html(faulty)
    )


def test_html_marks_stall_recoveries_and_rejected_finishes() -> None:
    result = run(STALLS, 1)
    checker = _parse(render_html(result))
    assert checker.errors == []
    _assert_every_event_hoverable(result, "\n".join(checker.titles))
    titled: defaultdict[str, list[str]] = defaultdict(list)
    for cls, title in checker.titled:
        titled[cls].append(title)
    recovered = [e for e in result.trace if "recover_stalled" in e.detail]
    rejected = [e for e in result.trace if e.kind == "finish" and "code=OK" not in e.detail]
    assert recovered, "the scenario no longer stalls: adjust STALLS"
    assert rejected, "the scenario no longer rejects a late finish: adjust STALLS"
    for event in recovered:
        assert any(event.line() in title for title in titled["m-stall"])
    for event in rejected:
        assert any(event.line() in title for title in titled["m-rej"])
    for event in result.trace:
        if event.kind == "renew-failed":
            assert any(event.line() in title for title in titled["m-rnf"])
    # The blocked owner's lock expired before the recovery: drawn as an expired window.
    assert any(cls.startswith("lx ") for cls in titled)
    lanes = {g["data-j"]: set(g["data-t"].split()) for g in checker.lane_g}
    for job in {e.job for e in recovered}:
        assert {"stall", "rejected", "reexec"} <= lanes[job], job


def test_same_seed_same_html(faulty: RunResult) -> None:
    again = run(FAULTY, 3)
    assert again.trace_hash == faulty.trace_hash
    # Only the real time the run took may differ.
    wall = re.compile(r"wall_seconds</b> [0-9.]+")
    assert wall.sub("", render_html(faulty)) == wall.sub("", render_html(again))


def test_write_html_writes_the_file(calm: RunResult, tmp_path: Path) -> None:
    path = write_html(calm, tmp_path / "run.html")
    assert path == tmp_path / "run.html"
    assert path.read_text(encoding="utf-8") == render_html(calm)


# ---------------------------------------------------------------------- legend, colours, summary

#: Every job fails on its only attempt.
ERRORS = CALM.with_changes(
    name="errors",
    workers=1,
    jobs=JobSpec(count=2, arrival_ms=100, attempts=1, priority_fraction=0, delayed_fraction=0),
    work=WorkShape(min_ms=100, max_ms=200, error_probability=1.0),
    duration_ms=5_000,
)
#: As STALLS, but the first stall fails the job.
STALL_LIMIT = STALLS.with_changes(
    name="stall-limit", settings=dataclasses.replace(STALLS.settings, max_stalled_count=0)
)
#: Jobs that outlast the run: still active when it ends.
UNFINISHED = CALM.with_changes(
    name="unfinished",
    workers=1,
    jobs=JobSpec(count=2, arrival_ms=100, priority_fraction=0, delayed_fraction=0),
    work=WorkShape(min_ms=50_000, max_ms=60_000, error_probability=0.0),
    duration_ms=2_000,
    liveness_budget_ms=3_000,
)


class _Drawn(HTMLParser):
    """The first class of each shape drawn in the plot, the legend's classes, the summary rows."""

    def __init__(self) -> None:
        super().__init__()
        self.inside: list[bool] = []  # per open element: is it within the plot?
        self.drawn: set[str] = set()
        self.legend: set[str] = set()
        self.lane_ids: set[str] = set()
        self.rows: dict[str, tuple[str, str, str]] = {}  # job id -> (href, category, why)
        self._row: list[str] | None = None
        self._cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        inside = bool(self.inside and self.inside[-1])
        if inside and tag in ("rect", "line", "path"):
            self.drawn.add(values["class"].split()[0])
        if tag not in _Checker.VOID:
            self.inside.append(inside or values.get("id") in ("zx", "phz"))
        if "data-cls" in values:
            self.legend.update(values["data-cls"].split())
        if tag == "g" and values.get("id", "").startswith("job-"):
            self.lane_ids.add(values["id"])
        if tag == "tr" and values.get("class", "").startswith("attn-"):
            self._row, self._cells = [], []
        if tag == "a" and self._row is not None:
            self._row += [values["href"], values["data-j"]]
        if tag == "td" and self._row is not None:
            self._cells.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _Checker.VOID:
            self.inside.pop()

    def handle_endtag(self, tag: str) -> None:
        self.inside.pop()
        if tag == "tr" and self._row is not None:
            href, job_id = self._row
            self.rows[job_id] = (href, self._cells[1], self._cells[2])
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cells:
            self._cells[-1] += data


def _drawn(result: RunResult) -> _Drawn:
    parser = _Drawn()
    parser.feed(render_html(result))
    parser.close()
    return parser


@pytest.mark.parametrize("scenario", [FAULTY, STALLS, STALL_LIMIT], ids=lambda s: s.name)
def test_legend_explains_every_mark_drawn(scenario: Scenario) -> None:
    page = _drawn(run(scenario, 3))
    assert page.drawn, "nothing drawn?"
    assert {"ph-s", "m-end", "alive", "lk", "life"} <= page.drawn
    missing = {cls for cls in page.drawn if LEGEND_KEY.get(cls, cls) not in page.legend}
    assert missing == set()


def test_lost_finishes_are_shaded_as_windows_not_faults_without_effect() -> None:
    page = _drawn(run(SCENARIOS["lost-finishes"], 1))
    assert "f-finish-lost" in page.drawn
    assert "m-fault" not in page.drawn  # (every worker was alive: no fault was without effect)
    assert "f-finish-lost" in page.legend


def _on_white(colour: str, opacity: float) -> tuple[float, ...]:
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    return tuple(255 - (255 - c) * opacity for c in rgb)


def test_marks_that_look_alike_in_shape_differ_clearly_in_colour() -> None:
    # Two marks of the same shape and dash must be told apart by colour alone: here, more than
    # 55 apart in RGB once blended on white (partition and "slot empty" used to be two pinks).
    coloured = [(key, mark) for key, mark in MARKS.items() if mark.colour]
    close = []
    for i, (key, mark) in enumerate(coloured):
        for other_key, other in coloured[i + 1 :]:
            if (mark.shape, mark.dash) != (other.shape, other.dash):
                continue
            a = _on_white(mark.colour, mark.opacity)
            b = _on_white(other.colour, other.opacity)
            if sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5 < 55:
                close.append((key, other_key))
    assert close == []
    assert MARKS["f-partition"].shape != MARKS["down"].shape


def test_summary_lists_the_recovered_jobs_with_why_and_links_to_their_lanes() -> None:
    result = run(STALLS, 1)
    page = _drawn(result)
    recovered = {e.job for e in result.trace if "recover_stalled" in e.detail}
    assert recovered
    assert set(page.rows) == recovered
    for job in recovered:
        href, category, why = page.rows[job]
        assert href == f"#job-{job}"
        assert f"job-{job}" in page.lane_ids
        assert category == "recovered"
        # Who held the lock, what stopped it renewing, who recovered it, and the late finish.
        assert "held by w0 from" in why, why
        assert "w0's loop blocked 6.0s by CPU work at 1.5s" in why, why
        assert "recovered by w1's stall check" in why, why
        assert re.search(
            r"w0's late finish at [\d.]+s rejected \((MISSING_LOCK|LOCK_MISMATCH)\)", why
        )
        assert re.search(r"completed at [\d.]+s by w[01]$", why), why


def test_summary_explains_failures_by_stall_limit_and_by_error() -> None:
    limited = run(STALL_LIMIT, 1)
    failed = {e.job for e in limited.trace if e.detail.startswith("fail ")}
    assert failed, "the stall limit no longer fails a job: adjust STALL_LIMIT"
    rows = _drawn(limited).rows
    for job in failed:
        assert rows[job][1] == "failed"
        assert "stalled too often: held by w0" in rows[job][2]
        assert "failed by w1's stall check" in rows[job][2]
    errors = run(ERRORS, 1)
    rows = _drawn(errors).rows
    assert set(rows) == {"1", "2"}
    for _, category, why in rows.values():
        assert category == "failed"
        assert why.startswith("attempt 1 raised an error on w0 at ")
        assert why.endswith("no attempts left")


def test_summary_lists_jobs_that_never_finished() -> None:
    result = run(UNFINISHED, 1)
    rows = _drawn(result).rows
    unfinished = {e.job for e in result.trace if e.kind == "add"} - {
        e.job for e in result.trace if "->completed" in e.detail or "->failed" in e.detail
    }
    assert unfinished
    assert {job for job, row in rows.items() if row[1] == "unfinished"} == unfinished
    for job in unfinished:
        assert rows[job][2].startswith("still active at the end of the run")
        assert "under w0's lock since" in rows[job][2]


def test_summary_puts_the_jobs_an_invariant_names_first() -> None:
    result = run(STALLS, 1)
    recovered = sorted({e.job for e in result.trace if "recover_stalled" in e.detail}, key=int)
    broken = dataclasses.replace(result, violations=[f"job {recovered[-1]}: completed 2 times"])
    document = render_html(broken)
    rows = _drawn(broken).rows
    assert rows[recovered[-1]][1] == "violation"
    assert rows[recovered[-1]][2].startswith("VIOLATION: completed 2 times → stalled: held by")
    # The most urgent category comes first in the panel.
    assert document.index(f'data-j="{recovered[-1]}"') < document.index(f'data-j="{recovered[0]}"')
    assert "1 broke an invariant" in document
    assert "broke an invariant" not in render_html(result)


def test_calm_run_summary_says_nothing_went_wrong(calm: RunResult) -> None:
    document = render_html(calm)
    assert _drawn(calm).rows == {}
    assert "every job completed without a stall, a failure or a rejected finish" in document


def test_job_lanes_are_tall_enough_to_read_and_grow_with_few_jobs(faulty: RunResult) -> None:
    assert job_lane_height(500) == JOB_MIN_H >= 14
    assert job_lane_height(3) == JOB_MAX_H
    heights = [job_lane_height(n) for n in range(1, 600)]
    assert heights == sorted(heights, reverse=True)
    document = render_html(faulty)
    lane_h = int(re.search(r'data-jh="(\d+)"', document)[1])  # type: ignore[index]
    assert lane_h == job_lane_height(FAULTY.jobs.count) >= JOB_MIN_H
    # Each job's bar fills its lane but for a 2 px gap.
    assert re.search(rf'<rect class="life"[^>]* height="{lane_h - 2}">', document)
