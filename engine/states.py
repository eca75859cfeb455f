"""Job states and the one transition table.

Theory of operation
===================

A job lives in exactly one *place* of its queue at a time, and that place is its state:

    waiting      the ``wait`` list (FIFO; ``lifo`` jobs and recovered jobs go to the front)
    prioritized  the ``prioritized`` sorted set (lower priority value first, FIFO per value)
    delayed      the ``delayed`` sorted set, scored by due time
    active       the ``active`` list; the job has a lock held by one fetch's token
    completed    the ``completed`` sorted set, scored by finish time (until retention trims it)
    failed       the ``failed`` sorted set, scored by finish time (until retention trims it)
    waiting-children  the ``waiting-children`` sorted set: a parent waiting for its children

A job that is in none of them is *gone* (never added, removed, or trimmed); that is ``None`` in
the table below and "unknown" to readers.

Rule 1: every state change anywhere in corral is one of the :class:`Transition` members below, and
the table says where it may start and where it ends. Backends look their moves up here (the memory
backend moves jobs between structures by table lookup), the Lua scripts name the transition they
perform in their header, and the simulator's model and invariants are derived from this table.
Nothing else may move a job.

Rule 2: "stalled" is not a state. It is a mark (the ``stalled`` set) on an active job whose lock a
checker saw expire; recovering it is the ``RECOVER_STALLED`` transition back to waiting. Likewise
locks, attempt counters and retention are fields and side effects of transitions, not states.

Rule 3: an operator call (retry, promote, clean, drain, remove, change_priority, ...) never moves
a job that holds a lock: a running job belongs to its worker until the worker finishes it or its
lock lapses. Each call refuses the states BullMQ refuses with BullMQ's code and text (``retry``
only from completed or failed, ``promote`` and ``change_delay`` only from delayed); obliterate
with ``force`` is the one exception, and the worker then finds its job gone when it finishes.

Rule 4 (flows): a parent enters waiting-children when it is added with children
(``ADD_WAITING_CHILDREN``) or when its own processor moves it there (``MOVE_TO_WAITING_CHILDREN``,
a step job). It leaves once per entry, in the same atomic step as the finish of the child that
releases it (``RELEASE_PARENT*``: to wait, prioritized or delayed as its own options say): the
last pending child completing, or failing with ``ignore_dependency_on_failure`` or
``remove_dependency_on_failure``; or any child failing with ``fail_parent_on_failure`` (which
also lifts a delayed parent) or ``continue_parent_on_failure``. A child's result is written into
its parent's ``processed`` hash in that same step. Removing a parent removes its children
(``REMOVE`` on each); a child removed or trimmed is detached from its parent, which a last
detach releases. ``clean``, ``drain`` and ``obliterate`` detach the hard way (BullMQ's): a last
pending child's parent waiting in the same queue is deleted with it (``DELETE_PARENT``), one in
another queue goes to wait. Retrying a finished child puts it back among its parent's pending
children (its recorded result or failure dropped); a parent that left waiting-children stays
where it is. Which parent-side effect a child's final outcome has is a policy decision
(:mod:`corral.engine.flows`).

Which of several transitions applies (retry now or later, promote to wait or to prioritized) is a
policy decision made by the engine (:mod:`corral.engine.policy`) or a fact of the job (its
priority); the table only says what each choice does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class JobState(enum.StrEnum):
    """Where a job is. The values are the names BullMQ's ``getState`` returns."""

    WAITING = "waiting"
    PRIORITIZED = "prioritized"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING_CHILDREN = "waiting-children"

    # Equal members and strings hash alike (Enum's default hashes the member's name, in Python,
    # on every dict lookup of the transition table).
    __hash__ = str.__hash__

    @property
    def is_terminal(self) -> bool:
        """True for completed and failed."""
        return self in (JobState.COMPLETED, JobState.FAILED)


#: What ``get_job_state`` returns for a job that does not exist.
UNKNOWN = "unknown"


class Transition(enum.Enum):
    """Every way a job can change state."""

    ADD = "add"  # Queue.add, priority 0, no delay
    ADD_PRIORITIZED = "add_prioritized"  # Queue.add with priority > 0
    ADD_DELAYED = "add_delayed"  # Queue.add with delay > 0
    PROMOTE = "promote"  # a delayed job fell due (priority 0)
    PROMOTE_PRIORITIZED = "promote_prioritized"  # a delayed job fell due (priority > 0)
    FETCH = "fetch"  # a worker took the job and its lock
    COMPLETE = "complete"  # the processor returned; lock token matched
    FAIL = "fail"  # final failure: no attempts left, unrecoverable, or the stall limit
    RETRY_LATER = "retry_later"  # failed attempt with a backoff delay
    RETRY = "retry"  # failed attempt, retried at once (priority 0)
    RETRY_PRIORITIZED = "retry_prioritized"  # failed attempt, retried at once (priority > 0)
    RECOVER_STALLED = "recover_stalled"  # lock expired and marked at the previous check
    RELEASE = "release"  # a closing worker gave the job back (lock released, no stall counted)
    REMOVE = "remove"  # Queue.remove on a job that holds no lock
    TRIM = "trim"  # retention removed a finished job
    # Operator calls (BullMQ's names in the comments; none moves a job that holds a lock):
    REPROCESS = "reprocess"  # Job.retry / Queue.retry_jobs: a finished job back to wait
    REPROCESS_PRIORITIZED = "reprocess_prioritized"  # Job.retry of a job with priority > 0
    CHANGE_PRIORITY = "change_priority"  # Job.change_priority to > 0 (re-scored)
    CHANGE_PRIORITY_TO_WAIT = "change_priority_to_wait"  # Job.change_priority to 0
    CHANGE_DELAY = "change_delay"  # Job.change_delay: a new due time, counted from now
    CLEAN = "clean"  # Queue.clean: jobs older than the grace period (active: lockless only)
    DRAIN = "drain"  # Queue.drain: every job not yet started (delayed ones when asked)
    OBLITERATE = "obliterate"  # Queue.obliterate: everything (active only with force)
    DEBOUNCE = "debounce"  # an add with deduplication.replace removed the delayed owner
    RESCHEDULE = "reschedule"  # an add with deduplication.reschedule moved the delayed owner
    RATE_LIMITED = "rate_limited"  # RateLimitError: back to the front of wait, no attempt used
    RATE_LIMITED_PRIORITIZED = "rate_limited_prioritized"  # the same, ahead of its priority
    # Job schedulers (corral.engine.job_schedulers): a scheduler stores its next iteration when
    # it is upserted or when a worker activates its current one, and drops a pending one when
    # it is replaced or removed.
    SCHEDULE = "schedule"  # the iteration is due now (priority 0)
    SCHEDULE_PRIORITIZED = "schedule_prioritized"  # the iteration is due now (priority > 0)
    SCHEDULE_DELAYED = "schedule_delayed"  # the iteration's slot is later
    UNSCHEDULE = "unschedule"  # a pending iteration dropped by an upsert or a removal
    # Flows (parents and children, step jobs):
    ADD_WAITING_CHILDREN = "add_waiting_children"  # FlowProducer.add: a parent with children
    RELEASE_PARENT = "release_parent"  # its children are done (or one failed): to wait
    RELEASE_PARENT_PRIORITIZED = "release_parent_prioritized"  # the same, priority > 0
    RELEASE_PARENT_DELAYED = "release_parent_delayed"  # the same, the parent has a delay
    MOVE_TO_WAITING_CHILDREN = "move_to_waiting_children"  # a step job waits for its children
    MOVE_TO_DELAYED = "move_to_delayed"  # a step job delays itself (no attempt counted)
    # clean/drain/obliterate took the last pending child of a parent waiting in the same
    # queue: the parent is deleted with it (BullMQ's hard removal path, no event)
    DELETE_PARENT = "delete_parent"


_S = JobState

#: The transition table: ``TRANSITIONS[transition][from_state] -> to_state``. ``None`` as a source
#: means "not stored yet"; ``None`` as a target means "deleted".
TRANSITIONS: Mapping[Transition, Mapping[JobState | None, JobState | None]] = MappingProxyType(
    {
        Transition.ADD: {None: _S.WAITING},
        Transition.ADD_PRIORITIZED: {None: _S.PRIORITIZED},
        Transition.ADD_DELAYED: {None: _S.DELAYED},
        Transition.PROMOTE: {_S.DELAYED: _S.WAITING},
        Transition.PROMOTE_PRIORITIZED: {_S.DELAYED: _S.PRIORITIZED},
        Transition.FETCH: {_S.WAITING: _S.ACTIVE, _S.PRIORITIZED: _S.ACTIVE},
        Transition.COMPLETE: {_S.ACTIVE: _S.COMPLETED},
        Transition.FAIL: {_S.ACTIVE: _S.FAILED},
        Transition.RETRY_LATER: {_S.ACTIVE: _S.DELAYED},
        Transition.RETRY: {_S.ACTIVE: _S.WAITING},
        Transition.RETRY_PRIORITIZED: {_S.ACTIVE: _S.PRIORITIZED},
        Transition.RECOVER_STALLED: {_S.ACTIVE: _S.WAITING},
        Transition.RELEASE: {_S.ACTIVE: _S.WAITING},
        # An active job may be removed only when its lock is gone (checked by the backend).
        Transition.REMOVE: dict.fromkeys(_S),
        Transition.TRIM: {_S.COMPLETED: None, _S.FAILED: None},
        Transition.REPROCESS: {_S.COMPLETED: _S.WAITING, _S.FAILED: _S.WAITING},
        Transition.REPROCESS_PRIORITIZED: {_S.COMPLETED: _S.PRIORITIZED, _S.FAILED: _S.PRIORITIZED},
        # Only waiting and prioritized jobs move; elsewhere only the priority field changes.
        Transition.CHANGE_PRIORITY: {_S.WAITING: _S.PRIORITIZED, _S.PRIORITIZED: _S.PRIORITIZED},
        Transition.CHANGE_PRIORITY_TO_WAIT: {_S.WAITING: _S.WAITING, _S.PRIORITIZED: _S.WAITING},
        Transition.CHANGE_DELAY: {_S.DELAYED: _S.DELAYED},
        # An active job is cleaned only when its lock is gone, obliterated only with force.
        Transition.CLEAN: dict.fromkeys(_S),
        Transition.DRAIN: {_S.WAITING: None, _S.PRIORITIZED: None, _S.DELAYED: None},
        Transition.OBLITERATE: dict.fromkeys(_S),
        Transition.DEBOUNCE: {_S.DELAYED: None},
        Transition.RESCHEDULE: {_S.DELAYED: _S.DELAYED},
        Transition.RATE_LIMITED: {_S.ACTIVE: _S.WAITING},
        Transition.RATE_LIMITED_PRIORITIZED: {_S.ACTIVE: _S.PRIORITIZED},
        Transition.SCHEDULE: {None: _S.WAITING},
        Transition.SCHEDULE_PRIORITIZED: {None: _S.PRIORITIZED},
        Transition.SCHEDULE_DELAYED: {None: _S.DELAYED},
        Transition.UNSCHEDULE: {_S.DELAYED: None, _S.WAITING: None, _S.PRIORITIZED: None},
        Transition.ADD_WAITING_CHILDREN: {None: _S.WAITING_CHILDREN},
        # fail_parent_on_failure also lifts a parent out of delayed (BullMQ).
        Transition.RELEASE_PARENT: {_S.WAITING_CHILDREN: _S.WAITING, _S.DELAYED: _S.WAITING},
        Transition.RELEASE_PARENT_PRIORITIZED: {
            _S.WAITING_CHILDREN: _S.PRIORITIZED,
            _S.DELAYED: _S.PRIORITIZED,
        },
        Transition.RELEASE_PARENT_DELAYED: {_S.WAITING_CHILDREN: _S.DELAYED},
        Transition.MOVE_TO_WAITING_CHILDREN: {_S.ACTIVE: _S.WAITING_CHILDREN},
        Transition.MOVE_TO_DELAYED: {_S.ACTIVE: _S.DELAYED},
        Transition.DELETE_PARENT: {_S.WAITING_CHILDREN: None},
    }
)


#: TRANSITIONS keyed by each transition's value: a str hashes in C, an Enum member in Python, and
#: a backend looks a move up for every move of every job (``MOVES_BY_VALUE[t._value_][state]``;
#: a missing key is a move the table does not allow: raise :func:`invalid_transition`).
MOVES_BY_VALUE: Final = {transition.value: moves for transition, moves in TRANSITIONS.items()}


class InvalidTransitionError(Exception):
    """A move that the transition table does not allow: always a bug, never an expected race."""


def invalid_transition(state: JobState | None, transition: Transition) -> InvalidTransitionError:
    """The error for a move the table does not allow."""
    return InvalidTransitionError(
        f"transition {transition.name} is not allowed from {state or 'nothing'}"
    )


def next_state(state: JobState | None, transition: Transition) -> JobState | None:
    """Return the state a job in ``state`` reaches through ``transition``.

    Raises:
        InvalidTransitionError: if the table has no such move.
    """
    try:
        return MOVES_BY_VALUE[transition._value_][state]
    except KeyError:
        raise invalid_transition(state, transition) from None


def allowed_moves() -> frozenset[tuple[JobState | None, JobState | None]]:
    """Every (from, to) pair some transition allows; the simulator checks observed moves with it."""
    return frozenset(
        (source, target) for moves in TRANSITIONS.values() for source, target in moves.items()
    )
