"""Which workers are serving a queue (BullMQ's ``Queue.getWorkers``).

BullMQ has no registry: a worker names the connection it blocks on for work
``<prefix>:<base64(queue)>`` (``...:w:<worker name>`` when it has a name), and ``getWorkers``
reads the server's ``CLIENT LIST``. A worker is listed while that connection is open, so a
crashed one disappears with its connection. The Redis backend does exactly that; the memory
backend keeps an equivalent registry.
"""

from __future__ import annotations

import base64
from typing import Protocol

#: The prefix of a worker's client name on a store without key prefixes (the memory backend).
DEFAULT_CLIENT_PREFIX = "bull"


def worker_client_name(prefix: str, queue: str, worker_name: str | None) -> str:
    """BullMQ's name for a worker's blocking connection: ``<prefix>:<base64(queue)>``, plus
    ``:w:<worker name>`` for a named worker (standard base64 with padding, as Node's
    ``Buffer.toString('base64')``)."""
    encoded = base64.b64encode(queue.encode()).decode("ascii")
    name = f"{prefix}:{encoded}"
    return name if worker_name is None else f"{name}:w:{worker_name}"


def is_worker_of(client_name: str, prefix: str, queue: str) -> bool:
    """Whether a client name is one of a worker of ``queue`` (as BullMQ's ``getWorkers``)."""
    name = worker_client_name(prefix, queue, None)
    return client_name == name or client_name.startswith(name + ":w:")


class WorkerStorage(Protocol):
    """Which workers are serving a queue."""

    async def register_worker(self, queue: str, worker_name: str | None) -> str:
        """Show a worker of ``queue`` to :meth:`get_workers` until it is unregistered (or its
        connection closes); return the registration to unregister. On Redis, the connection
        the worker blocks on for work is named as BullMQ's (see :func:`worker_client_name`)."""
        ...

    async def unregister_worker(self, queue: str, registration: str) -> None:
        """Stop showing a registered worker (idempotent)."""
        ...

    async def get_workers(self, queue: str) -> list[dict[str, str]]:
        """The workers of ``queue``, each as BullMQ's ``getWorkers`` entry: the connection's
        ``CLIENT LIST`` fields, ``name`` being the queue's name and ``rawname`` the client
        name."""
        ...
