"""The state machine of ``test_state_machine`` can fail: bugs planted in the memory backend
(and in the engine's policy it uses) are each caught by a derandomized search, so that a
machine that compares nothing, or draws nothing that matters, is noticed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from test_state_machine import CoreAgreement, StorageAgreement
from test_state_machine_flows import FlowAgreement

import corral.backends.memory.job_flow as memory_job_flow
from corral.backends.memory import MemoryBackend, parents
from corral.engine.errors import ResultCode


def _finish_ignores_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """finish() accepts a lock held under another token."""
    check_owner = MemoryBackend._check_owner

    def sloppy(self: MemoryBackend, store: Any, job_id: str, token: str) -> ResultCode:
        code = check_owner(self, store, job_id, token)
        return ResultCode.OK if code is ResultCode.LOCK_MISMATCH else code

    monkeypatch.setattr(MemoryBackend, "_check_owner", sloppy)


def _stall_check_ignores_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_stalled() recovers marked jobs whose lock is still live."""
    check_stalled = MemoryBackend.check_stalled

    async def blind(self: MemoryBackend, queue: str, **kwargs: Any) -> Any:
        self._lock_of = lambda store, job_id: None  # type: ignore[method-assign]
        try:
            return await check_stalled(self, queue, **kwargs)
        finally:
            del self._lock_of

    monkeypatch.setattr(MemoryBackend, "check_stalled", blind)


def _stall_limit_not_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall limit fails a job at ``stc == max_stalled_count`` instead of above it."""
    monkeypatch.setattr(memory_job_flow, "stall_limit_exceeded", lambda stc, limit: stc >= limit)


def _planted(bug: str) -> Callable[[pytest.MonkeyPatch], None]:
    """Plant one of the memory backend's ``PLANTABLE_BUGS`` in every backend made."""

    def plant(monkeypatch: pytest.MonkeyPatch) -> None:
        init = MemoryBackend.__init__

        def planted(self: MemoryBackend, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.planted_bugs = frozenset({bug})

        monkeypatch.setattr(MemoryBackend, "__init__", planted)

    plant.__name__ = plant.__qualname__ = bug.replace("-", "_")
    return plant


#: remove() deletes a job whose lock is held.
_remove_ignores_lock = _planted("remove-locked-job")


def _clean_ignores_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """clean() deletes active jobs whose lock is still live (rule 3 broken by an operator
    call on a whole state)."""
    clean = MemoryBackend.clean

    async def blind(self: MemoryBackend, *args: Any) -> Any:
        self._lock_of = lambda store, job_id: None  # type: ignore[method-assign]
        try:
            return await clean(self, *args)
        finally:
            del self._lock_of

    monkeypatch.setattr(MemoryBackend, "clean", blind)


def _child_value_not_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A completed child's return value never reaches its parent's processed children (its
    parent is still released)."""
    completed = memory_job_flow.child_completed

    def forgetful(core: Any, queue: str, job_id: str, fields: Any, value: str, now: int) -> None:
        completed(core, queue, job_id, fields, value, now)
        found = parents.parent_of(core, fields)
        keys = None if found is None else found[2].flows.get(found[0].job_id)
        if keys is not None:
            keys.processed.pop(parents.job_key(queue, job_id), None)

    monkeypatch.setattr(memory_job_flow, "child_completed", forgetful)


@pytest.mark.parametrize(
    ("plant", "machine"),
    [
        (_finish_ignores_token, CoreAgreement),
        (_stall_check_ignores_locks, CoreAgreement),
        (_stall_limit_not_strict, CoreAgreement),
        (_remove_ignores_lock, CoreAgreement),
        (_clean_ignores_locks, CoreAgreement),
        # Issue 15's concerns: an add that claims a taken dedup id; activations never counted
        # in the rate-limit window; fetches past the global concurrency; a scheduler making a
        # next iteration for any activation of its jobs (no producer guard).
        (_planted("dedup-ignores-owner"), StorageAgreement),
        (_planted("no-shared-limiter"), StorageAgreement),
        (_planted("ignore-global-concurrency"), StorageAgreement),
        (_planted("scheduler-no-guard"), StorageAgreement),
        # Issue 16's flows: a parent released one child too early (the pending count read
        # before the child was taken out), a fail_parent_on_failure child releasing its parent
        # as continue_parent_on_failure does (no defa, no failed record), a child's value lost.
        (_planted("flow-stale-pending-count"), FlowAgreement),
        (_planted("flow-fpof-continues"), FlowAgreement),
        (_child_value_not_recorded, FlowAgreement),
    ],
)
def test_planted_bug_is_caught(
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
    machine: type[CoreAgreement],
) -> None:
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            machine,
            settings=settings(
                # The search stops at the first failure, so a generous budget costs nothing
                # while the bug is found, and keeps it found when a refactor shifts the
                # derandomized search (each bug is now found within the first 500 examples).
                max_examples=1000,
                stateful_step_count=50,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                print_blob=False,
            ),
        )
