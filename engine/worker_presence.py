"""A Worker's entry in its store's list of workers (``Queue.get_workers``; see
:mod:`corral.engine.storage.workers`): made when the worker starts, dropped when it closes."""

from __future__ import annotations

from typing import Any

from corral.engine.events import EventEmitter


async def register(backend: Any, queue: str, name: str | None, events: EventEmitter) -> str | None:
    """List the worker; None if the store cannot (a failure is reported as an ``error``
    event: a worker that is not listed still works)."""
    # A Storage without the workers concern (a proxy that does not forward it yet) lists none.
    register_worker = getattr(backend, "register_worker", None)
    if register_worker is None:
        return None
    try:
        registration: str = await register_worker(queue, name)
    except Exception as exc:
        events.emit("error", exc, None)
        return None
    return registration


async def unregister(
    backend: Any, queue: str, registration: str | None, events: EventEmitter
) -> None:
    """Drop the worker's entry (nothing if it had none)."""
    if registration is None:
        return
    try:
        await backend.unregister_worker(queue, registration)
    except Exception as exc:
        events.emit("error", exc, None)
