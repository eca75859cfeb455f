"""Deduplication (BullMQ 6.7's ``deduplication`` job option): the option, and what an add does
when its dedup id is already taken — as pure functions; the backends only store and apply.

A job added with ``deduplication={"id": ...}`` claims the key ``de:<id>`` (its value: the id of
the job that owns the dedup id). While the key lives, further adds with that id are dropped and
return the owner's id. The modes (BullMQ's docs names):

- *simple*: no ``ttl``; the key lives until the owner completes or fails for good;
- *throttle*: ``ttl`` ms from the claim, even after the owner finished (``extend`` restarts it
  on each duplicate add);
- *debounce*: ``replace`` (usually with ``delay``, ``ttl`` and ``extend``): a duplicate add
  replaces an owner that is still delayed, so the last data wins;
- ``keep_last_if_active``: while the owner is active, a duplicate add is parked in ``dn:<id>``
  (latest wins) and stored as a new job when the owner finishes: at most one active and one
  pending job per id;
- ``reschedule``: a duplicate add moves a delayed owner's due time to ``now + delay``.

:func:`decide` says which of these applies to one add; :class:`Action` lists the outcomes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Final

from corral.engine.errors import InvalidArgumentError
from corral.engine.inputs import DEBOUNCE_REMOVED, check_utf8
from corral.engine.states import JobState

__all__ = [
    "DEBOUNCE_REMOVED",
    "ID_REQUIRED",
    "Action",
    "Deduplication",
    "Owner",
    "decide",
    "dedup_id_of_opts",
    "releases_on_finish",
    "releases_on_remove",
    "replaced_key_ttl",
    "reschedules",
]

#: BullMQ's text when the dedup id is missing.
ID_REQUIRED: Final = "Deduplication id must be provided"

#: The option's keys: snake_case as the API takes them -> BullMQ's camelCase in ``opts.de``.
_WIRE_NAMES: Final = {
    "id": "id",
    "ttl": "ttl",
    "extend": "extend",
    "replace": "replace",
    "reschedule": "reschedule",
    "keep_last_if_active": "keepLastIfActive",
}
_FLAGS: Final = ("extend", "replace", "reschedule", "keep_last_if_active")


@dataclasses.dataclass(frozen=True, slots=True)
class Deduplication:
    """A job's ``deduplication`` option (validated).

    Attributes:
        id: the dedup id (jobs sharing it are deduplicated).
        ttl: milliseconds the claim lasts (None: until the owner finishes).
        extend: a duplicate add restarts the ttl.
        replace: a duplicate add replaces an owner that is still delayed (debounce).
        reschedule: a duplicate add moves a delayed owner to ``now + delay``.
        keep_last_if_active: park the last duplicate added while the owner is active.
    """

    id: str
    ttl: int | None = None
    extend: bool = False
    replace: bool = False
    reschedule: bool = False
    keep_last_if_active: bool = False

    @classmethod
    def parse(cls, spec: object) -> Deduplication | None:
        """Validate the user's option: a mapping with snake_case keys (or a Deduplication).

        Raises:
            InvalidArgumentError: naming the unknown key or the invalid value.
        """
        if spec is None or isinstance(spec, Deduplication):
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidArgumentError(f"deduplication must be a dict, got {spec!r}")
        unknown = set(spec) - _WIRE_NAMES.keys()
        if unknown:
            raise InvalidArgumentError(
                f"unknown deduplication option(s) {sorted(map(str, unknown))}; "
                f"expected {sorted(_WIRE_NAMES)}"
            )
        dedup_id = spec.get("id")
        if dedup_id is None or dedup_id == "":
            raise InvalidArgumentError(ID_REQUIRED)
        if not isinstance(dedup_id, str):
            raise InvalidArgumentError(f"deduplication id must be a string, got {dedup_id!r}")
        if not dedup_id.isascii():
            check_utf8(dedup_id, "deduplication id")
        ttl = spec.get("ttl")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise InvalidArgumentError(
                f"deduplication ttl must be an int of milliseconds > 0, got {ttl!r}"
            )
        flags = {}
        for name in _FLAGS:
            value = spec.get(name, False)
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"deduplication {name} must be a bool, got {value!r}")
            flags[name] = value
        return cls(dedup_id, ttl, **flags)

    def to_json(self) -> dict[str, Any]:
        """BullMQ's ``opts.de`` (camelCase; defaults left out)."""
        encoded: dict[str, Any] = {"id": self.id}
        if self.ttl is not None:
            encoded["ttl"] = self.ttl
        for name in _FLAGS:
            if getattr(self, name):
                encoded[_WIRE_NAMES[name]] = True
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> Deduplication | None:
        """Decode a stored ``opts.de`` (tolerant: another producer may have written it)."""
        if not isinstance(raw, Mapping) or raw.get("id") in (None, ""):
            return None
        ttl = raw.get("ttl")
        return cls(
            str(raw["id"]),
            ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 else None,
            *(raw.get(_WIRE_NAMES[name]) is True for name in _FLAGS),
        )

    @property
    def key_ttl(self) -> int | None:
        """The TTL a claim sets on ``de:<id>``: none with ``keep_last_if_active``, which keeps
        the key until the owner finishes (BullMQ ignores ``ttl`` then)."""
        return None if self.keep_last_if_active else self.ttl


class Action(enum.Enum):
    """What an add with a taken (or free) dedup id does."""

    #: The id is free: claim ``de:<id>`` for the new job and add it.
    CLAIM = "claim"
    #: The key outlived its owner (no TTL, owner's hash gone): drop ``de``/``dn``, then claim.
    RECOVER = "recover"
    #: Debounce: remove the delayed owner (event ``removed``), point the key at the new job,
    #: add it (event ``deduplicated`` with ``jobId`` = the new job).
    REPLACE = "replace"
    #: keep_last_if_active with an active owner: park the new job in ``dn:<id>``, drop the
    #: key's TTL; event ``deduplicated``; the add returns the owner.
    PARK = "park"
    #: ttl + extend: restart the key's TTL; event ``deduplicated``; the add returns the owner.
    EXTEND = "extend"
    #: The add is dropped; event ``deduplicated``; the add returns the owner.
    DROP = "drop"
    #: replace, owner not delayed: the add is dropped without any event.
    IGNORE = "ignore"


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """What the store knows about the job holding ``de:<id>``.

    Attributes:
        job_id: the owner's id (the key's value).
        state: where the owner is (None: its hash is gone).
        key_has_ttl: the key expires (throttle/debounce) rather than living until released.
    """

    job_id: str
    state: JobState | None
    key_has_ttl: bool


def decide(option: Deduplication, owner: Owner | None) -> Action:
    """What an add with ``option`` does, given the current holder of its dedup id (None: the
    key does not exist). BullMQ 6.7's order of checks (bullmq-features.md §4.2)."""
    if owner is None:
        return Action.CLAIM
    if option.replace and owner.state is JobState.DELAYED:
        return Action.REPLACE
    # A key without a TTL whose owner is gone would block its id for ever (BullMQ #4311).
    if not owner.key_has_ttl and owner.state is None:
        return Action.RECOVER
    if option.keep_last_if_active and owner.state is JobState.ACTIVE:
        return Action.PARK
    if option.replace:
        return Action.IGNORE
    if option.ttl is not None and option.extend:
        return Action.EXTEND
    return Action.DROP


def reschedules(option: Deduplication, action: Action, owner: Owner | None) -> bool:
    """Whether a dropped add moves its delayed owner to ``now + delay`` (``reschedule``; BullMQ
    ignores it with ``replace``)."""
    return (
        option.reschedule
        and not option.replace
        and action in (Action.DROP, Action.EXTEND)
        and owner is not None
        and owner.state is JobState.DELAYED
    )


def releases_on_finish(key_owner: str | None, key_has_ttl: bool, job_id: str) -> bool:
    """Whether a job finishing for good (completed, or failed with no retry left) deletes
    ``de:<id>``: only a key without a TTL that it owns. A key with a TTL is left to expire
    (throttle outlives the job)."""
    return key_owner == job_id and not key_has_ttl


def releases_on_remove(key_owner: str | None, job_id: str) -> bool:
    """Whether removing a job deletes ``de:<id>`` and ``dn:<id>``: only if it owns the key (a
    newer owner's key stays; BullMQ #3232)."""
    return key_owner == job_id


def dedup_id_of_opts(opts: Mapping[str, Any]) -> str | None:
    """The dedup id stored in a job's decoded ``opts`` (its ``de.id``), or None."""
    de = opts.get("de")
    if isinstance(de, Mapping):
        dedup_id = de.get("id")
        if isinstance(dedup_id, str) and dedup_id:
            return dedup_id
    return None


def replaced_key_ttl(option: Deduplication) -> tuple[bool, int | None]:
    """How ``de:<id>`` expires once a debounce (:attr:`Action.REPLACE`) re-points it at the new
    job: ``(True, _)`` keeps the key's remaining TTL (a ttl without ``extend``), else
    ``(False, ttl)``, a fresh TTL (None: none; always None with ``keep_last_if_active``)."""
    if option.keep_last_if_active:
        return False, None
    if option.ttl is not None and not option.extend:
        return True, option.ttl
    return False, option.ttl
