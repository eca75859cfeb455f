"""Tests for the text log and the HTML timeline of a simulated run (corral.sim.timeline)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

from corral.sim.scenario import SCENARIOS, Fault, JobSpec, WorkerSettings, WorkShape
from corral.sim.timeline import render_html, text_log, write_html
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
    assert checker.urls == []
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
    assert document.count('class="jt"') == len(jobs)


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
    assert any(cls.endswith(" exp") for cls in titled)
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
