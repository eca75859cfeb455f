"""The operator process (sim/operator.py) and what the oracle knows about operators.

An operator acts on the queue through the public API while the swarm's faults run, and
obliterates the queue at the end; the oracle must count what it deletes as deliberate (never
lost), let a job it sends back complete again, and catch any operator call that moves a job whose
lock is live (rule 3 of the transition table) — the planted bug ``remove-locked-job``.
"""

from __future__ import annotations

import collections

import pytest

from corral.cli import main
from corral.engine.errors import ResultCode
from corral.engine.states import JobState, Transition
from corral.engine.storage import AddResult, Fetched, FetchRequest, FetchResult
from corral.sim.invariants import Oracle
from corral.sim.scenario import SCENARIOS, JobSpec
from corral.sim.world import RunResult, run

#: The standard swarm with its operator, cut down: 120 jobs, 3 virtual minutes of faults.
SMALL = SCENARIOS["standard"].with_changes(
    name="small-operator",
    jobs=JobSpec(count=120, arrival_ms=150_000),
    duration_ms=180_000,
    liveness_budget_ms=600_000,
)
PLANT = frozenset({"remove-locked-job"})


def operator_actions(result: RunResult) -> collections.Counter[str]:
    """How often the operator did each action (``op`` lines name it first)."""
    return collections.Counter(
        event.detail.split()[0]
        for event in result.trace
        if event.process.startswith("o") and event.kind == "op"
    )


@pytest.fixture(scope="module")
def runs() -> list[RunResult]:
    return [run(SMALL, seed) for seed in (1, 2, 3, 4)]


def test_the_operator_acts_and_what_it_deletes_is_not_lost(runs: list[RunResult]) -> None:
    for result in runs:
        assert result.ok, result.violations
        assert result.lost == 0
        # Everything ends obliterated, so every job was deleted on purpose.
        assert result.removed_by_operator == result.jobs == 120
        assert operator_actions(result)["obliterate"] == 1
        assert result.completed + result.failed + result.removed_unfinished == result.jobs
    done = sum((operator_actions(result) for result in runs), collections.Counter())
    for action in ("retry_one", "change_priority", "change_delay", "remove", "clean", "resume"):
        assert done[action], f"no {action} in 4 runs: {dict(done)}"


def test_the_operator_runs_under_the_network_faults(runs: list[RunResult]) -> None:
    kinds = collections.Counter(
        event.kind for result in runs for event in result.trace if event.process.startswith("o")
    )
    assert kinds["op-timeout"] + kinds["crash"] + kinds["blocked"] > 0, dict(kinds)


def first_caught(backend: str) -> RunResult | None:
    for seed in range(1, 201):
        result = run(SMALL, seed, plant=PLANT, backend=backend)
        if not result.ok:
            return result
    return None


def test_remove_of_a_locked_job_is_caught_and_the_lua_plant_alike() -> None:
    caught = first_caught("memory")
    assert caught is not None, "remove-locked-job survived 200 seeds"
    assert any("remove made REMOVE while" in v and "held its lock" in v for v in caught.violations)
    assert run(SMALL, caught.seed).ok  # the bug's doing
    fakeredis = run(SMALL, caught.seed, plant=PLANT, backend="fakeredis")
    assert fakeredis.violations == caught.violations
    assert fakeredis.trace_hash == caught.trace_hash


# ---------------------------------------------------------------------- the oracle, directly

NOW = 1_000_000


def held(oracle: Oracle, job_id: str, lock_ms: int = 30_000) -> None:
    """Job ``job_id`` was added and fetched by w0 at NOW with a ``lock_ms`` lock."""
    oracle.begin_op()
    oracle.on_transition(job_id, Transition.ADD, None, JobState.WAITING, {})
    oracle.on_transition(job_id, Transition.FETCH, JobState.WAITING, JobState.ACTIVE, {})
    request = FetchRequest(f"t{job_id}", lock_ms, None)
    result = FetchResult(Fetched(job_id, {}, f"t{job_id}"))
    oracle.on_op("w0", "fetch_next", ("q", request, NOW), result, NOW)
    oracle.end_op(lambda _: None)


StoreMove = tuple[str, Transition, JobState | None, JobState | None]


def operate(
    oracle: Oracle,
    op: str,
    args: tuple[object, ...],
    result: object,
    *moves: StoreMove,
    now: int = NOW,
) -> None:
    """An operation by the operator o0 that made ``moves`` and answered ``result``."""
    oracle.begin_op()
    for job_id, transition, source, target in moves:
        oracle.on_transition(job_id, transition, source, target, {})
    oracle.on_op("o0", op, args, result, now)
    oracle.end_op(lambda _: None)


def new_oracle() -> Oracle:
    return Oracle(1, lambda _: True)


def test_an_operator_move_of_a_live_locked_job_is_a_violation() -> None:
    oracle = new_oracle()
    held(oracle, "1")
    remove = ("1", Transition.REMOVE, JobState.ACTIVE, None)
    operate(oracle, "remove", ("q", "1"), ResultCode.OK, remove, now=NOW + 10)
    assert oracle.violations == ["job 1: remove made REMOVE while w0 held its lock (29990 ms left)"]
    assert oracle.removed_by_operator == 1


def test_a_lapsed_lock_or_a_forced_obliterate_may_go() -> None:
    oracle = new_oracle()
    held(oracle, "1", lock_ms=5)
    clean = ("1", Transition.CLEAN, JobState.ACTIVE, None)
    operate(oracle, "clean", ("q", JobState.ACTIVE, NOW, 0), ["1"], clean, now=NOW + 5)
    held(oracle, "2")
    obliterate = ("2", Transition.OBLITERATE, JobState.ACTIVE, None)
    operate(oracle, "obliterate", ("q", 10, True), 0, obliterate)
    assert oracle.violations == []
    assert oracle.removed_by_operator == 2
    assert oracle.unfinished() == []  # deleted on purpose: not lost


def test_deletions_must_be_an_operator_calls_and_answered() -> None:
    oracle = new_oracle()
    for job_id in "123":
        operate(
            oracle,
            "add_jobs",
            ("q", []),
            AddResult([], []),
            (job_id, Transition.ADD, None, JobState.WAITING),
        )
    drained = ("1", Transition.DRAIN, JobState.WAITING, None)
    operate(oracle, "finish", ("q", "9", "t", None, NOW, None), ResultCode.MISSING_JOB, drained)
    cleaned = ("2", Transition.CLEAN, JobState.WAITING, None)
    operate(oracle, "clean", ("q", JobState.WAITING, NOW, 0), [], cleaned)
    removed = ("3", Transition.REMOVE, JobState.WAITING, None)
    operate(oracle, "remove", ("q", "3"), ResultCode.JOB_LOCKED, removed)
    assert oracle.violations == [
        "job 1: deleted by DRAIN in finish",
        "clean answered [] but deleted ['2']",
        "job 3: remove answered <ResultCode.JOB_LOCKED: -20> but deleted ['3']",
    ]


def retried(oracle: Oracle, *, reset: bool, atm_after: str) -> None:
    """Job 1, completed with ``atm`` 1, is retried by an operator (``reset``: its counters
    restart), then fetched again."""
    move = ("1", Transition.REPROCESS, JobState.COMPLETED, JobState.WAITING)
    oracle.begin_op()
    oracle.on_transition(*move, {})
    args = ("q", "1", JobState.COMPLETED, reset, reset, NOW)
    oracle.on_op("o0", "retry_job", args, ResultCode.OK, NOW)
    oracle.end_op(lambda _: {"atm": atm_after})
    oracle.on_transition("1", Transition.FETCH, JobState.WAITING, JobState.ACTIVE, {})


def completed(oracle: Oracle) -> None:
    move = ("1", Transition.COMPLETE, JobState.ACTIVE, JobState.COMPLETED)
    oracle.begin_op()
    oracle.on_transition(*move, {})
    oracle.end_op(lambda _: {"atm": "1"})


def test_a_retried_job_may_complete_again_and_restart_its_counters() -> None:
    oracle = new_oracle()
    held(oracle, "1")
    completed(oracle)
    retried(oracle, reset=True, atm_after="0")
    completed(oracle)
    assert oracle.violations == []
    assert oracle.duplicate_completions == 0


def test_a_retry_that_was_not_asked_to_restart_the_counters_may_not() -> None:
    oracle = new_oracle()
    held(oracle, "1")
    completed(oracle)
    retried(oracle, reset=False, atm_after="0")
    assert oracle.violations == ["job 1: atm went down from 1 to 0"]


def test_the_cli_says_what_the_operator_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seed", "1", "--jobs", "40"]) == 0
    out = capsys.readouterr().out
    result = run(SCENARIOS["standard"].with_changes(jobs=JobSpec(count=40, arrival_ms=540_000)), 1)
    expected = f"deleted by an operator: 40 ({result.removed_unfinished} before they finished)"
    assert expected in out
