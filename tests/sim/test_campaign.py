"""Campaigns: a regression corpus of seeds, planted bugs being caught, shrinking, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from corral.backends.memory import PLANTABLE_BUGS
from corral.cli import main
from corral.sim.campaign import CampaignSummary, run_campaign, run_seed, shrink
from corral.sim.invariants import COVERAGE_GOALS
from corral.sim.scenario import SCENARIOS, JobSpec
from corral.sim.world import RunResult

# ---------------------------------------------------------------------------- regression corpus

CORPUS = {
    "standard": [1, 2, 3, 5, 8, 13, 21, 34],
    "stall-recipes": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    "max-stalled-0": [11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    "calm": [1, 2, 3],
}


@pytest.mark.parametrize(
    ("scenario", "seed"),
    [(name, seed) for name, seeds in CORPUS.items() for seed in seeds],
    ids=lambda value: str(value),
)
def test_corpus_seed_holds_every_invariant(scenario: str, seed: int) -> None:
    result = run_seed(SCENARIOS[scenario], seed)
    replay = f"corral sim --scenario {scenario} --seed {seed}"
    assert result.violations == [], replay
    assert result.ok, replay
    assert result.lost == 0, replay
    assert result.duplicate_completions == 0, replay
    assert result.zombie_commits == 0, replay
    # Every job ended completed or failed, unless an operator deleted it before that.
    assert result.completed + result.failed + result.removed_unfinished == result.jobs, replay
    if scenario == "calm":
        assert result.faults == []
        assert result.failed == result.stalls_recovered == result.re_executions == 0


def test_campaign_summary_adds_up() -> None:
    scenario = SCENARIOS["stall-recipes"]
    results = list(run_campaign(scenario, 1, 3))
    assert [r.seed for r in results] == [1, 2, 3]
    summary = CampaignSummary()
    for result in results:
        summary.add(result)
    assert summary.runs == 3
    assert summary.failures == []
    assert summary.jobs == sum(r.jobs for r in results)
    assert summary.re_executions == sum(r.re_executions for r in results)
    assert sum(summary.faults.values()) == sum(len(r.faults) for r in results)
    lines = summary.coverage_lines()
    assert len(lines) == len(COVERAGE_GOALS)
    assert all(line.split()[0] in COVERAGE_GOALS for line in lines)


# ---------------------------------------------------------------------------- planted bugs

BUDGET = 200
#: The scenario that exercises each planted bug ("standard" unless named here).
BUG_SCENARIOS = {
    "dedup-ignores-owner": "dedup",
    "no-shared-limiter": "rate-limit",
    "ignore-global-concurrency": "global-concurrency",
    "scheduler-no-guard": "scheduler",
    "flow-release-before-record": "flows",
    "flow-stale-pending-count": "flows",
    "flow-fpof-continues": "flows",
}


def first_failure(bug: str) -> RunResult | None:
    plant = frozenset({bug})
    for seed in range(1, BUDGET + 1):
        result = run_seed(SCENARIOS[BUG_SCENARIOS.get(bug, "standard")], seed, plant=plant)
        if not result.ok:
            return result
    return None


@pytest.fixture(scope="module")
def caught() -> dict[str, RunResult | None]:
    return {}


@pytest.mark.parametrize("bug", sorted(PLANTABLE_BUGS))
def test_planted_bug_is_caught_within_the_budget(
    bug: str, caught: dict[str, RunResult | None]
) -> None:
    failing = caught[bug] = first_failure(bug)
    assert failing is not None, f"planted bug {bug!r} survived seeds 1..{BUDGET}"
    assert failing.violations, f"{bug}: seed {failing.seed} failed with no violation"
    assert failing.planted == [bug]
    # The same seed without the bug passes: the failure is the bug's doing.
    clean = run_seed(SCENARIOS[BUG_SCENARIOS.get(bug, "standard")], failing.seed)
    assert clean.ok, f"{bug}: seed {failing.seed} fails even without the bug"


def test_shrinking_keeps_the_failure(caught: dict[str, RunResult | None]) -> None:
    bug = "skip-token-check"
    plant = frozenset({bug})
    failing = caught.get(bug) or first_failure(bug)
    assert failing is not None
    tries: list[tuple[int, int]] = []
    faults, result = shrink(
        SCENARIOS["standard"],
        failing,
        plant=plant,
        on_try=lambda n, size: tries.append((n, size)),
    )
    assert len(faults) <= len(failing.faults)
    assert len(faults) < len(failing.faults), "nothing could be dropped"
    assert not result.ok
    assert list(faults) == result.faults
    assert set(faults) <= set(failing.faults)
    assert [n for n, _ in tries] == list(range(1, len(tries) + 1))
    # Replaying the shrunk list fails the same way, again.
    replay = run_seed(SCENARIOS["standard"], failing.seed, plant=plant, faults=faults)
    assert not replay.ok
    assert replay.trace_hash == result.trace_hash
    if faults and len(tries) < 80:  # shrinking finished: no single fault can be dropped
        for i in range(len(faults)):
            smaller = faults[:i] + faults[i + 1 :]
            assert run_seed(SCENARIOS["standard"], failing.seed, plant=plant, faults=smaller).ok, (
                f"fault {faults[i].describe()} was not needed"
            )


# ---------------------------------------------------------------------------- the CLI

JSON_KEYS = {
    "seed",
    "jobs",
    "completed",
    "failed",
    "lost",
    "duplicate_completions",
    "zombie_commits",
    "re_executions",
    "stalls_recovered",
    "virtual_seconds",
    "wall_seconds",
    "trace_hash",
    "violations",
}


def test_cli_single_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seed", "3", "--jobs", "50"]) == 0
    out = capsys.readouterr().out
    expected = run_seed(SCENARIOS["standard"].with_changes(jobs=_jobs(50)), 3)
    assert "replay: corral sim --scenario standard --seed 3 --jobs 50" in out
    assert f"trace={expected.trace_hash}" in out
    assert "seed 3: ok" in out
    assert "1 seed(s): 1 passed, 0 failed" in out
    assert "time compression" in out


def test_cli_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seeds", "2", "--jobs", "50", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    objects = [json.loads(line) for line in lines]
    for seed, obj in enumerate(objects, start=1):
        assert not JSON_KEYS - obj.keys(), JSON_KEYS - obj.keys()
        assert obj["seed"] == seed
        assert obj["jobs"] == 50
        assert obj["lost"] == 0
        assert obj["violations"] == []
        assert isinstance(obj["trace_hash"], str)
        assert len(obj["trace_hash"]) == 16
    assert objects[0]["trace_hash"] != objects[1]["trace_hash"]


def test_cli_planted_bug_fails(
    capsys: pytest.CaptureFixture[str], caught: dict[str, RunResult | None]
) -> None:
    # No hard-coded seed: which seeds trip the bug changes with the engine's timing. Use the
    # first failing one (found by the planted-bug test above, or searched for here).
    bug = "skip-token-check"
    failing = caught.get(bug) or first_failure(bug)
    assert failing is not None
    seed = failing.seed
    status = main(["sim", "--seed", str(seed), "--plant", bug, "--no-shrink"])
    out = capsys.readouterr().out
    assert status != 0
    assert f"seed {seed}: FAILED" in out
    assert f"trace={failing.trace_hash}" in out  # the CLI ran the very same failing run
    assert f"  violation: {failing.violations[0]}" in out
    assert f"replay: corral sim --scenario standard --seed {seed} --plant {bug}" in out


def test_cli_unknown_fault_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "--seed", "1", "--faults", "crash,meteor"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown fault kind(s) ['meteor']" in err
    assert "crash, block" in err  # lists the valid kinds


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert name in out


def test_installed_console_script(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    corral = shutil.which("corral", path=str(bin_dir))
    if corral is None:
        pytest.skip(f"no corral console script next to {sys.executable}")
    done = subprocess.run(
        [corral, "sim", "--seed", "1", "--jobs", "20"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONHASHSEED": "7"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = run_seed(SCENARIOS["standard"].with_changes(jobs=_jobs(20)), 1)
    assert f"trace={expected.trace_hash}" in done.stdout
    assert "replay: corral sim --scenario standard --seed 1 --jobs 20" in done.stdout


def _jobs(count: int) -> JobSpec:
    return dataclasses.replace(SCENARIOS["standard"].jobs, count=count)
