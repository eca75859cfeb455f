"""The oracle's watch over job schedulers (part of :mod:`corral.sim.invariants`).

The invariant: every due iteration of every scheduler is made exactly once — none skipped,
none made twice, none past ``limit``, none by a maker whose clock is past ``end_date`` (nor, for
a cron pattern, due after it) — and a scheduler with a ``limit`` (and no end date) reaches it,
whichever processes crash. Running each iteration is the general oracle's liveness check (every
job ends).

It follows the chain of iterations from outside: each one must be made by the activation of the
one before (the producer the store was told), at the slot the schedule gives, computed here
from the scheduler's options alone and not by the engine's scheduling code it checks:

* ``every``: the first slot is the upsert's instant, or with an ``offset`` the first slot of
  that phase after it; each next is ``every`` after the previous slot or, when the maker is
  already past that, the first slot of the schedule's phase after the maker's clock (missed
  slots are skipped, as in BullMQ).
* cron ``pattern``: the first slot is the upsert's instant with ``immediately``, else the
  pattern's first time after it; each next is the pattern's first time after the later of the
  maker's clock and the previous slot (whole seconds: the clock's milliseconds are dropped, as
  cron-parser does). The times come from croniter, walked in the scheduler's zone
  (:func:`cron_after`); the simulator's patterns match every hour, where croniter and
  cron-parser agree across a daylight-saving change (both copies of a repeated hour fire, a
  skipped hour has no times), so the watch needs none of ``engine/cron.py``'s emulation of
  cron-parser's corner cases.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Collection
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from corral.sim.scenario import SchedulerSpec


def cron_after(pattern: str, tz: str, after_ms: int) -> int:
    """The first time (epoch ms) strictly after ``after_ms``, milliseconds dropped, at which the
    six-field ``pattern`` (seconds first) fires in zone ``tz``, by croniter."""
    start = datetime.datetime.fromtimestamp(after_ms // 1000, datetime.UTC)
    walker = croniter(pattern, start.astimezone(ZoneInfo(tz)), second_at_beginning=True)
    return int(walker.get_next(datetime.datetime).timestamp()) * 1000


def _pattern_after(spec: SchedulerSpec, after_ms: int) -> int:
    assert spec.pattern is not None
    assert spec.tz is not None  # (SchedulerOracle refuses a pattern without one)
    return cron_after(spec.pattern, spec.tz, after_ms)


def phase_slot_after(now: int, every: int, phase: int) -> int:
    """The first slot ``k * every + phase`` strictly after ``now``."""
    return now - (now - phase) % every + every


@dataclasses.dataclass
class _Chain:
    """What the watch knows of one scheduler: its options and the iterations made so far."""

    spec: SchedulerSpec
    end_date: int | None
    last_id: str | None = None
    last_slot: int = 0
    phase: int = 0
    made: int = 0


class SchedulerOracle:
    """The job scheduler invariant (see the module docstring).

    Args:
        specs: the schedulers the producer upserts (a ``pattern`` one must name its ``tz``).
        epoch_ms: the run's start, from which ``end_ms`` counts.
        violations: the list to report to (the general oracle's).

    Raises:
        ValueError: a pattern scheduler without a zone (its times would hang on the host's).
    """

    def __init__(
        self, specs: Collection[SchedulerSpec], epoch_ms: int, violations: list[str]
    ) -> None:
        for spec in specs:
            if spec.pattern is not None and spec.tz is None:
                raise ValueError(f"scheduler {spec.scheduler_id}: a pattern needs a tz here")
        self.chains = {
            spec.scheduler_id: _Chain(spec, None if spec.end_ms is None else epoch_ms + spec.end_ms)
            for spec in specs
        }
        self.violations = violations

    def on_op(self, op: str, args: tuple[Any, ...], result: Any) -> None:
        """Called after each storage operation executed at the store."""
        if op == "upsert_job_scheduler" and isinstance(result, tuple):
            upsert, now = args[1], args[2]
            self._first(upsert.scheduler_id, result[0], now)
        elif op == "update_job_scheduler" and result is not None:
            _, sid, producer, _, _, now = args
            self._next(sid, producer, result, now)

    def _slot(self, sid: str, job_id: str) -> int:
        prefix = f"repeat:{sid}:"
        if not job_id.startswith(prefix) or not job_id[len(prefix) :].isdigit():
            self.violations.append(f"scheduler {sid}: iteration id {job_id!r} is not BullMQ's")
            return 0
        return int(job_id[len(prefix) :])

    def _first(self, sid: str, job_id: str, now: int) -> None:
        chain = self.chains.get(sid)
        if chain is None:
            return
        spec = chain.spec
        slot = self._slot(sid, job_id)
        if chain.last_id is not None:
            self.violations.append(f"scheduler {sid}: upserted twice ({job_id})")
        if spec.every is not None:
            chain.phase = (spec.offset or 0) % spec.every
            expected = phase_slot_after(now, spec.every, chain.phase) if chain.phase else now
            chain.phase = chain.phase or slot % spec.every
        elif spec.immediately:
            expected = now
        else:
            expected = _pattern_after(spec, now)
        if slot != expected:
            self.violations.append(
                f"scheduler {sid}: first slot {slot}, upserted at {now}; expected {expected}"
            )
        chain.last_id, chain.last_slot, chain.made = job_id, slot, 1

    def _expected_next(self, chain: _Chain, now: int) -> int:
        spec = chain.spec
        if spec.every is not None:
            following = chain.last_slot + spec.every
            # Missed slots are skipped: the first slot of the phase after now.
            return following if following >= now else phase_slot_after(now, spec.every, chain.phase)
        return _pattern_after(spec, max(now, chain.last_slot))

    def _next(self, sid: str, producer: str, job_id: str, now: int) -> None:
        chain = self.chains.get(sid)
        if chain is None:
            self.violations.append(f"an iteration {job_id} of an unknown scheduler {sid}")
            return
        slot = self._slot(sid, job_id)
        limit, end_date = chain.spec.limit, chain.end_date
        if producer != chain.last_id:
            self.violations.append(
                f"scheduler {sid}: {job_id} made by the activation of {producer}, but the "
                f"current iteration was {chain.last_id} (an iteration made twice)"
            )
        if limit is not None and chain.made + 1 > limit:
            self.violations.append(
                f"scheduler {sid}: {job_id} is iteration {chain.made + 1}, past its limit of "
                f"{limit}"
            )
        if end_date is not None and now > end_date:
            self.violations.append(
                f"scheduler {sid}: {job_id} made at {now}, after its end date {end_date}"
            )
        expected = self._expected_next(chain, now)
        if chain.spec.pattern is not None and end_date is not None and expected > end_date:
            self.violations.append(
                f"scheduler {sid}: {job_id} made at {now} although the pattern's next time "
                f"{expected} is after its end date {end_date}"
            )
        elif slot != expected:
            self.violations.append(
                f"scheduler {sid}: {job_id} after slot {chain.last_slot} made at {now}; "
                f"the next slot was {expected} (an iteration skipped or misplaced)"
            )
        chain.last_id, chain.last_slot = job_id, slot
        chain.made += 1

    def at_end(self) -> None:
        """After the liveness phase: a scheduler with a limit made all its iterations."""
        for sid, chain in self.chains.items():
            limit = chain.spec.limit
            if chain.end_date is None and limit is not None and chain.made != limit:
                self.violations.append(
                    f"scheduler {sid}: stopped after {chain.made} of its {limit} iterations "
                    f"(last {chain.last_id})"
                )
