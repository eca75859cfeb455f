"""The memory backend: the embedded, in-process Storage (see :mod:`.backend`), one module per
concern of the Storage protocol."""

from corral.backends.memory.backend import MemoryBackend
from corral.backends.memory.core import PLANTABLE_BUGS, TransitionListener
from corral.backends.memory.store import (
    MAX_EVENTS,
    PROMOTE_LIMIT,
    TRIM_LIMIT,
    QueueStore,
    delayed_score,
    priority_score,
)

__all__ = [
    "MAX_EVENTS",
    "PLANTABLE_BUGS",
    "PROMOTE_LIMIT",
    "TRIM_LIMIT",
    "MemoryBackend",
    "QueueStore",
    "TransitionListener",
    "delayed_score",
    "priority_score",
]
