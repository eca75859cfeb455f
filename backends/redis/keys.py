"""The Redis key schema, in one place: BullMQ's names and types.

Every key of a queue is ``<prefix>:<queue>:<suffix>``; a job's hash is ``<prefix>:<queue>:<id>``
and its lock ``<prefix>:<queue>:<id>:lock`` (bullmq-semantics.md §1). Scripts receive the queue's
fixed keys as ``KEYS`` and build job keys from the ``<prefix>:<queue>:`` string passed in
``ARGV``, as BullMQ does, so in Redis Cluster the prefix or the queue name must carry a hash tag.
"""

from __future__ import annotations

import dataclasses
from typing import Final

#: BullMQ's default key prefix.
DEFAULT_PREFIX: Final = "bull"

#: Suffix of the transition log that instrumented scripts keep (tests and the simulator only;
#: see :class:`corral.backends.redis.scripts.Instrumentation`). Not part of BullMQ's layout.
TRANSITION_LOG: Final = "corral-transitions"

#: Every per-queue key this backend uses, with its Redis type (BullMQ's layout).
KEY_TYPES: Final = {
    "wait": "list",
    "active": "list",
    "prioritized": "zset",
    "delayed": "zset",
    "completed": "zset",
    "failed": "zset",
    "stalled": "set",
    "stalled-check": "string",
    "id": "string",
    "pc": "string",
    "marker": "zset",
    "events": "stream",
    "meta": "hash",
    "limiter": "string",
    "repeat": "zset",
    "waiting-children": "zset",
}


@dataclasses.dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue.

    Attributes:
        base: ``<prefix>:<queue>:``, the start of every key of the queue (scripts get it to
            build job keys).
    """

    base: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueKeys:
        """The keys of ``queue`` under ``prefix``."""
        return cls(f"{prefix}:{queue}:")

    @property
    def wait(self) -> str:
        """``<prefix>:<queue>:wait``."""
        return self.base + "wait"

    @property
    def active(self) -> str:
        """``<prefix>:<queue>:active``."""
        return self.base + "active"

    @property
    def prioritized(self) -> str:
        """``<prefix>:<queue>:prioritized``."""
        return self.base + "prioritized"

    @property
    def delayed(self) -> str:
        """``<prefix>:<queue>:delayed``."""
        return self.base + "delayed"

    @property
    def completed(self) -> str:
        """``<prefix>:<queue>:completed``."""
        return self.base + "completed"

    @property
    def failed(self) -> str:
        """``<prefix>:<queue>:failed``."""
        return self.base + "failed"

    @property
    def stalled(self) -> str:
        """``<prefix>:<queue>:stalled``."""
        return self.base + "stalled"

    @property
    def stalled_check(self) -> str:
        """``<prefix>:<queue>:stalled-check``."""
        return self.base + "stalled-check"

    @property
    def id(self) -> str:
        """``<prefix>:<queue>:id``."""
        return self.base + "id"

    @property
    def pc(self) -> str:
        """``<prefix>:<queue>:pc``."""
        return self.base + "pc"

    @property
    def marker(self) -> str:
        """``<prefix>:<queue>:marker``."""
        return self.base + "marker"

    @property
    def events(self) -> str:
        """``<prefix>:<queue>:events``."""
        return self.base + "events"

    @property
    def meta(self) -> str:
        """``<prefix>:<queue>:meta``."""
        return self.base + "meta"

    @property
    def limiter(self) -> str:
        """``<prefix>:<queue>:limiter`` (the rate-limit window counter)."""
        return self.base + "limiter"

    def waiting_children(self) -> str:
        """``<prefix>:<queue>:waiting-children`` (flows: parents waiting for children)."""
        return self.base + "waiting-children"

    def key(self, suffix: str) -> str:
        """The queue key ending in ``suffix`` (one of :data:`KEY_TYPES`)."""
        if suffix not in KEY_TYPES:
            raise KeyError(suffix)
        return self.base + suffix

    def job(self, job_id: str) -> str:
        """The job's hash."""
        return self.base + job_id

    def lock(self, job_id: str) -> str:
        """The job's lock (a string holding the owner's token, with a PX TTL)."""
        return f"{self.base}{job_id}:lock"
