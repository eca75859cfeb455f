"""The transition table: its shape and the lookups every backend relies on."""

from __future__ import annotations

import pytest

from corral.engine.states import (
    TRANSITIONS,
    InvalidTransitionError,
    JobState,
    Transition,
    allowed_moves,
    next_state,
)


def test_every_transition_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(Transition)
    assert all(TRANSITIONS[t] for t in Transition)


def test_only_adds_and_schedulers_start_from_nothing() -> None:
    from_nothing = {t for t, moves in TRANSITIONS.items() if None in moves}
    assert from_nothing == {
        Transition.ADD,
        Transition.ADD_PRIORITIZED,
        Transition.ADD_DELAYED,
        Transition.SCHEDULE,
        Transition.SCHEDULE_PRIORITIZED,
        Transition.SCHEDULE_DELAYED,
        Transition.ADD_WAITING_CHILDREN,
    }


def test_terminal_states_are_left_only_by_deletion_or_an_operator_retry() -> None:
    # Job.retry (BullMQ's reprocessJob) is the one way back from completed or failed.
    retries = {Transition.REPROCESS, Transition.REPROCESS_PRIORITIZED}
    for transition, moves in TRANSITIONS.items():
        for source, target in moves.items():
            if source is not None and source.is_terminal:
                assert target is None or transition in retries, (transition, source, target)


def test_only_fetch_enters_active() -> None:
    entering = {
        t
        for t, moves in TRANSITIONS.items()
        for source, target in moves.items()
        if target is JobState.ACTIVE and source is not JobState.ACTIVE
    }
    assert entering == {Transition.FETCH}


def test_stall_recovery_and_release_go_back_to_wait() -> None:
    assert next_state(JobState.ACTIVE, Transition.RECOVER_STALLED) is JobState.WAITING
    assert next_state(JobState.ACTIVE, Transition.RELEASE) is JobState.WAITING


@pytest.mark.parametrize(
    ("state", "transition"),
    [
        (JobState.COMPLETED, Transition.FETCH),
        (JobState.WAITING, Transition.COMPLETE),
        (JobState.DELAYED, Transition.FETCH),
        (None, Transition.FETCH),
        (JobState.ACTIVE, Transition.ADD),
        (JobState.WAITING, Transition.TRIM),
    ],
)
def test_moves_outside_the_table_raise(state: JobState | None, transition: Transition) -> None:
    with pytest.raises(InvalidTransitionError, match=transition.name):
        next_state(state, transition)


def test_allowed_moves_lists_each_pair_once() -> None:
    moves = allowed_moves()
    assert (JobState.WAITING, JobState.ACTIVE) in moves
    assert (JobState.ACTIVE, JobState.COMPLETED) in moves
    assert (JobState.COMPLETED, JobState.ACTIVE) not in moves
    assert (None, JobState.ACTIVE) not in moves
