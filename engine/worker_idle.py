"""How a Worker's slot waits when it has no job to run: for work (the store's marker, bounded by
``drain_delay`` or the due time of the next delayed job), out a rate limit, after a failed
fetch, or while the worker is paused. Every such wait is *idle*: ``close()`` wakes it, and a
wait for work is also woken by ``pause()``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from corral.engine.policy import fetch_backoff_ms
from corral.engine.rate_limited import idle_timeout_ms

if TYPE_CHECKING:
    from corral.engine.clock import Clock
    from corral.engine.events import EventEmitter
    from corral.engine.storage import FetchResult, Storage
    from corral.engine.worker_pause import PauseGate


class IdleSlots:
    """A Worker's idle waits (mixed into :class:`~corral.engine.worker.Worker`)."""

    if TYPE_CHECKING:  # provided by Worker
        queue_name: str
        backend: Storage
        clock: Clock
        drain_delay: int
        maximum_rate_limit_delay: int
        _events: EventEmitter
        _pause: PauseGate
        _closing: bool
        _fetch_errors: int
        _refused_writes: int
        _limit_until: int
        _registration: str | None
        _idle_slots: dict[asyncio.Task[None], None]
        _waiting_for_work: set[asyncio.Task[None]]

    async def _wait_for_work(self, slot: asyncio.Task[None], result: FetchResult) -> bool | None:
        """Wait after a fetch that brought no job (see
        :func:`~corral.engine.rate_limited.idle_timeout_ms`): True to fetch again, False if
        the worker began closing after a failed wait, None if close() or pause() woke it."""
        timeout, rest = idle_timeout_ms(
            result, self.drain_delay, self.maximum_rate_limit_delay, self.clock.now_ms()
        )
        self._idle_slots[slot] = None
        self._waiting_for_work.add(slot)
        try:
            # (a rate limit: the rest is slept to its end, see rate_limited.BLOCK_SLACK_MS)
            until = asyncio.get_running_loop().time() + (timeout + rest) / 1000
            if self._registration is None:
                woken = await self.backend.wait_for_work(self.queue_name, timeout)
            else:
                woken = await self.backend.wait_for_work(
                    self.queue_name, timeout, self._registration
                )
            if not woken and rest:
                await asyncio.sleep(max(0.0, until - asyncio.get_running_loop().time()))
            self._fetch_errors = 0
        except asyncio.CancelledError:
            if self._closing or self._pause.was_woken(slot):
                return None
            raise
        except Exception as exc:
            self._events.emit("error", exc, None)
            failed = True
        else:
            failed = False
        finally:
            self._idle_slots.pop(slot, None)
            self._waiting_for_work.discard(slot)
        # (backed off as a plain idle slot: no longer waiting for work, which pause() wakes)
        return await self._back_off(slot) if failed else True

    async def _sleep_out_limit(self, slot: asyncio.Task[None], now: int) -> bool:
        """Sleep until the worker's ``limitUntil`` (a job given back with RateLimitError; see
        :mod:`corral.engine.rate_limited`): BullMQ's worker sleeps, it does not block on the
        marker, which the given-back job itself set. False once the worker is closing."""
        return await self._idle(slot, asyncio.sleep((self._limit_until - now) / 1000))

    async def _park(self, slot: asyncio.Task[None]) -> bool:
        """Wait while the worker is paused; False once it is closing."""
        return await self._idle(slot, self._pause.park(slot))

    async def _back_off(self, slot: asyncio.Task[None]) -> bool:
        """Wait after a failed fetch or wait, or while the store refuses writes (see
        :func:`~corral.engine.policy.fetch_backoff_ms`); False if the worker began closing
        meanwhile."""
        self._fetch_errors += 1
        delay_ms = fetch_backoff_ms(self._fetch_errors, self._refused_writes)
        return await self._idle(slot, asyncio.sleep(delay_ms / 1000))

    async def _idle(self, slot: asyncio.Task[None], wait: Awaitable[None]) -> bool:
        """Await ``wait`` as an idle slot (which close() wakes); False if the worker began
        closing meanwhile."""
        self._idle_slots[slot] = None
        try:
            await wait
        except asyncio.CancelledError:
            if self._closing:
                return False
            raise
        finally:
            self._idle_slots.pop(slot, None)
        return not self._closing
