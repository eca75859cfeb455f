"""Job schedulers (BullMQ's repeatable jobs): what the Queue stores for a scheduler and what
each iteration job carries. The timing policy (next slots, limits, validation of the repeat
options) lives in :mod:`corral.engine.scheduling`; this module adds the template, the
scheduler hash's fields and the options of each iteration job, and nothing here reads a clock.

A scheduler owns exactly one future job, its *current iteration*, whose id is
``repeat:<scheduler id>:<millis of its slot>``. The next iteration is made when a worker
activates the current one (see :mod:`corral.engine.scheduler_iterations`), not by a timer: a
scheduler therefore needs no process of its own, and survives the crash of any process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.errors import InvalidArgumentError
from corral.engine.job import JobOptions, encode_json
from corral.engine.scheduling import DEBOUNCE_REMOVED, RepeatOptions

#: Names accepted in the ``template`` mapping.
TEMPLATE_NAMES: Final = frozenset({"name", "data", "opts"})
#: How many later slots an ``every`` scheduler tries when its slot's job id is taken (BullMQ's).
EVERY_SLOT_TRIES: Final = 32


def repeat_from_json(raw: Mapping[str, Any]) -> RepeatOptions:
    """Read the ``repeat`` object of an iteration's stored ``opts`` (camelCase, as BullMQ
    writes it; tolerant of what another producer stored).

    Raises:
        ValueError: if a number field holds something that is not a number.
    """

    def number(name: str) -> int | None:
        value = raw.get(name)
        return None if value is None or isinstance(value, bool) else int(value)

    pattern, tz = raw.get("pattern"), raw.get("tz")
    return RepeatOptions(
        every=number("every"),
        pattern=pattern if isinstance(pattern, str) and pattern else None,
        tz=tz if isinstance(tz, str) and tz else None,
        limit=number("limit"),
        start_date=number("startDate"),
        end_date=number("endDate"),
        offset=number("offset"),
        count=number("count") or 0,
    )


def scheduler_fields(repeat: RepeatOptions, name: str) -> dict[str, str]:
    """The scheduler hash fields ``repeat`` sets (``data``, ``opts``, ``ic`` aside)."""
    fields = {"name": name}
    for field, value in (
        ("tz", repeat.tz),
        ("limit", repeat.limit),
        ("pattern", repeat.pattern),
        ("startDate", repeat.start_date),
        ("endDate", repeat.end_date),
        ("every", repeat.every),
        ("offset", repeat.offset or None),
    ):
        if value is not None:
            fields[field] = str(value)
    return fields


@dataclasses.dataclass(frozen=True, slots=True)
class Template:
    """The job every iteration is: its name, data and options, JSON-encoded."""

    name: str
    data: str
    opts: str

    @classmethod
    def build(cls, scheduler_id: str, template: Mapping[str, Any] | None) -> Template:
        """Validate ``upsert_job_scheduler``'s ``template`` (``name`` defaults to the
        scheduler id; ``opts`` takes ``Queue.add``'s options but ``job_id``, ``delay`` and
        ``deduplication``).

        Raises:
            InvalidArgumentError: naming what is wrong.
        """
        template = template or {}
        if not isinstance(template, Mapping):
            raise InvalidArgumentError(f"template must be a mapping, got {template!r}")
        unknown = sorted(set(template) - TEMPLATE_NAMES)
        if unknown:
            raise InvalidArgumentError(
                f"unknown template key {unknown[0]!r}; expected name, data, opts"
            )
        name = template.get("name", scheduler_id)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"template name must be a non-empty string, got {name!r}")
        opts = template.get("opts") or {}
        if not isinstance(opts, Mapping):
            raise InvalidArgumentError(f"template opts must be a mapping, got {opts!r}")
        if "debounce" in opts:
            raise InvalidArgumentError(DEBOUNCE_REMOVED)
        for refused in ("job_id", "delay", "repeat"):
            if refused in opts:
                raise InvalidArgumentError(
                    f"template opts must not set {refused!r}: the scheduler sets it"
                )
        if "deduplication" in opts:
            # BullMQ's scheduler path never deduplicates (an iteration would carry a `deid`
            # nothing claimed), and its types exclude the option from templates.
            raise InvalidArgumentError(
                "template opts must not set 'deduplication': job schedulers do not deduplicate "
                "their iterations"
            )
        encoded = JobOptions.build(opts).to_json()
        encoded.pop("delay", None)
        if "attempts" not in opts:
            encoded.pop("attempts", None)
        data = encode_json(template.get("data", {}), "data of job scheduler {!r}", scheduler_id)
        return cls(name, data, encode_json(encoded, "job scheduler template options"))


def iteration_opts(
    template_opts: Mapping[str, Any],
    scheduler_id: str,
    repeat: RepeatOptions,
    count: int,
    prev_millis: int | None,
) -> dict[str, Any]:
    """The ``opts`` of iteration number ``count`` (the store adds ``jobId``, ``delay``,
    ``timestamp``).

    ``prev_millis`` is the slot of a pattern scheduler's iteration (BullMQ's ``prevMillis``;
    an ``every`` scheduler's slot is computed by the store, and its jobs carry none).
    """
    opts = {
        key: value
        for key, value in template_opts.items()
        if key not in ("jobId", "delay", "timestamp", "prevMillis")
    }
    opts["repeat"] = dataclasses.replace(repeat, count=count, immediately=False).to_bullmq()
    opts["repeatJobKey"] = scheduler_id
    if prev_millis is not None:
        opts["prevMillis"] = prev_millis
    return opts
