"""The oracle's watch over deduplication (part of :mod:`corral.sim.invariants`).

It follows, from the transitions the store reports (each with the job's hash, whose ``deid``
field names its dedup id) and the adds it answers, which stored jobs hold each dedup id, and
flags:

- two live jobs (stored and not finished) with one dedup id, in the modes that promise at most
  one: a dedup id without a ``ttl`` (simple, debounce without ttl) or with
  ``keep_last_if_active`` (whose parked job is not stored until the owner finishes: at most one
  active and one parked);
- a debounce add (``replace``) dropped while the job holding its id was still delayed: the last
  data must win;
- a job stored for a ``keep_last_if_active`` id when its owner finished whose data is not that
  of the last add parked for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from corral.engine.deduplication import Deduplication
from corral.engine.states import JobState
from corral.engine.storage import AddResult, NewJob


def _option(opts: str) -> Deduplication | None:
    if '"de":' not in opts:
        return None
    try:
        raw = json.loads(opts)
    except ValueError:
        return None
    return Deduplication.from_json(raw.get("de")) if isinstance(raw, dict) else None


class DedupWatch:
    """Live jobs per dedup id, and the violations of deduplication's promises."""

    def __init__(self, violate: Callable[[str], None]) -> None:
        self._violate = violate
        self.live: dict[str, set[str]] = {}
        self._promises: dict[str, bool] = {}
        self._parked: dict[str, str] = {}  # keep_last id -> data of the last add parked
        self.deduplicated = 0
        self.debounced = 0
        self.parked_stored = 0

    def on_transition(
        self,
        job_id: str,
        source: JobState | None,
        target: JobState | None,
        fields: Mapping[str, str],
    ) -> None:
        """A job moved; ``fields`` is its hash at that moment."""
        dedup_id = fields.get("deid")
        if dedup_id is None:
            return
        live = self.live.setdefault(dedup_id, set())
        if target is None or target.is_terminal:
            live.discard(job_id)
            return
        if job_id in live:
            return
        live.add(job_id)
        if dedup_id not in self._promises:
            option = _option(fields.get("opts", ""))
            self._promises[dedup_id] = option is not None and (
                option.ttl is None or option.keep_last_if_active
            )
        if source is None and dedup_id in self._parked:  # stored from dn:<id>
            self.parked_stored += 1
            parked = self._parked.pop(dedup_id)
            if fields.get("data") != parked:
                self._violate(
                    f"job {job_id}: stored for keep_last_if_active id {dedup_id} with data "
                    f"{fields.get('data')}, but the last add parked {parked}"
                )
        if len(live) > 1 and self._promises[dedup_id]:
            self._violate(
                f"dedup id {dedup_id}: two live jobs hold it at once ({', '.join(sorted(live))})"
            )

    def on_add(
        self, jobs: Sequence[NewJob], result: AddResult, state_of: Callable[[str], Any]
    ) -> None:
        """An ``add_jobs`` answered (after its transitions)."""
        for job, job_id, created in zip(jobs, result.job_ids, result.created, strict=True):
            option = _option(job[2])
            if option is None:
                continue
            if created:
                self.debounced += option.replace
                continue
            self.deduplicated += 1
            owner_state = state_of(job_id)
            if option.replace and owner_state is JobState.DELAYED and job[7] is None:
                self._violate(
                    f"debounce id {option.id}: an add was dropped while job {job_id} was "
                    "still delayed (the last data must win)"
                )
            if option.keep_last_if_active and owner_state is JobState.ACTIVE:
                self._parked[option.id] = job[1]
