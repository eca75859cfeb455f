"""Rules every backend's stored job hash obeys in each state (used by the structural checks)."""

from __future__ import annotations

from collections.abc import Mapping

from corral.engine.states import JobState


def assert_job_fields(
    where: str, job_id: str, state: JobState, fields: Mapping[str, str] | None
) -> None:
    """Raise AssertionError, naming ``where`` and the job, if its hash breaks a rule of its
    state: it must exist; finished jobs have ``finishedOn``; active ones ``processedOn``;
    prioritized ones a priority above 0."""
    if fields is None:
        raise AssertionError(f"{where}: job {job_id} is {state} but has no hash")
    if state.is_terminal and "finishedOn" not in fields:
        raise AssertionError(f"{where}: job {job_id} is {state} without finishedOn")
    if state is JobState.ACTIVE and "processedOn" not in fields:
        raise AssertionError(f"{where}: job {job_id} is active without processedOn")
    if state is JobState.PRIORITIZED and not int(fields.get("priority") or 0):
        raise AssertionError(f"{where}: job {job_id} is prioritized with priority 0")
