"""Shared fixtures. ``async def`` tests run on a virtual-time loop: sleeps and lock TTLs take no
real time, and the same test always sees the same timestamps."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import redis
from hypothesis import settings
from session_services import SessionServices

from corral.backends.memory import MemoryBackend
from corral.backends.redis import RedisBackend
from corral.engine.storage import Storage, StoredEvent
from corral.sim.loop import VirtualClock, VirtualTimeLoop, run_virtual

T = TypeVar("T")

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def loop() -> Iterator[VirtualTimeLoop]:
    """The virtual-time loop the test runs on (closed after the test)."""
    virtual = VirtualTimeLoop()
    yield virtual
    if not virtual.is_closed():
        virtual.close()


@pytest.fixture
def clock(loop: VirtualTimeLoop) -> VirtualClock:
    """The loop's clock: epoch plus virtual elapsed time."""
    return loop.clock


# ---------------------------------------------------------------------------- storage backends
#
# "memory" is the reference. "fakeredis" is the Redis backend on a fresh in-process fakeredis
# server per test whose clock is the test's virtual clock (lock and throttle TTLs expire in
# virtual time). "redis" is the Redis backend on the real server at 127.0.0.1:6379 (override with
# CORRAL_REDIS_URL; without one answering there, a private redis-server the session starts: see
# session_services.py) under a unique key prefix per test; its TTLs follow wall-clock time, so
# tests that need a TTL to run out in virtual time (marked ``virtual_ttl``) skip there. Without a
# server the "redis" runs skip, unless CORRAL_REQUIRE_REDIS=1 (then they fail).

BACKENDS = ["memory", "fakeredis", "redis"]
#: The session's services (see pytest_configure).
SERVICES = pytest.StashKey[SessionServices]()
VIRTUAL_TTL_REASON = "real Redis TTLs follow wall-clock time, not the test's virtual clock"

#: Async callables run on the test's loop after an ``async def`` test (see pytest_pyfunc_call).
ASYNC_CLEANUPS = pytest.StashKey[list[Callable[[], Awaitable[None]]]]()

#: Conformance tests that need a lock or the stalled-check throttle to expire in virtual time.
#: A test can also say so itself with ``@pytest.mark.virtual_ttl``.
VIRTUAL_TTL_TESTS = frozenset(
    {
        # test_queue.py
        "test_remove_locked_active_job_is_refused",
        "test_check_stalled_recovers_and_throttles",
        "test_check_stalled_fails_over_the_limit",
        # test_stalls.py
        "test_dead_owner_job_is_recovered_at_the_check_after_its_mark",
        "test_renewal_rearms_a_held_lock_but_never_recreates_an_expired_one",
        "test_stall_limit_is_strict_and_stalls_do_not_use_attempts",
        "test_worker_fails_a_job_that_stalls_too_often",
        "test_late_finish_by_the_old_owner_is_refused",
        "test_stalled_check_is_throttled_across_workers",
        "test_skip_stalled_check_runs_no_checks",
        "test_forced_close_requeues_at_once_but_a_crash_waits_for_checks",
        "test_a_job_retaken_by_the_same_worker_keeps_its_new_lock",
        # test_worker.py
        "test_lock_token_is_worker_id_and_fetch_number",  # reads an exact PTTL
        "test_skip_lock_renewal_lets_the_job_stall",
        "test_lost_lock_is_signalled_to_the_processor",
        "test_finishing_without_the_lock_is_refused",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "virtual_ttl: needs store TTLs to expire in virtual time (skips on real Redis)"
    )
    services = SessionServices(config)
    config.stash[SERVICES] = services
    config.pluginmanager.register(services, "corral-session-services")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the virtual-TTL tests, and leave out their real-Redis runs: those cannot work there,
    so they are deselected (counted as such) rather than reported as skipped, which is kept for
    a missing server."""
    kept, dropped = [], []
    for item in items:
        if isinstance(item, pytest.Function) and item.originalname in VIRTUAL_TTL_TESTS:
            item.add_marker(pytest.mark.virtual_ttl)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "redis" and item.get_closest_marker("virtual_ttl"):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _add_async_cleanup(request: pytest.FixtureRequest, cleanup: Callable[[], Awaitable[None]]):
    request.node.stash.setdefault(ASYNC_CLEANUPS, []).append(cleanup)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, clock: VirtualClock) -> Storage:
    """Each storage backend in turn, on the test's virtual clock."""
    if request.param == "memory":
        return MemoryBackend(clock=clock)
    if request.param == "fakeredis":
        return _fakeredis_backend(request, clock)
    if request.param == "redis":
        return _real_redis_backend(request)
    raise AssertionError(f"unknown backend {request.param}")


def _fakeredis_backend(request: pytest.FixtureRequest, clock: VirtualClock) -> RedisBackend:
    import fakeredis
    import fakeredis.aioredis

    from corral.backends.redis.fake import virtual_fakeredis

    patch = virtual_fakeredis(clock)
    patch.__enter__()
    request.addfinalizer(lambda: patch.__exit__(None, None, None))
    client = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    backend = RedisBackend(client, url="fakeredis://")

    async def close() -> None:
        await backend.close()
        await client.aclose()

    _add_async_cleanup(request, close)
    return backend


def _require_redis(config: pytest.Config) -> str:
    """The URL of the test Redis server; skips the test (fails it when CORRAL_REQUIRE_REDIS=1)
    if none answers and none could be started."""
    services = config.stash[SERVICES]
    problem = services.redis_problem()
    if problem is not None:
        if os.environ.get("CORRAL_REQUIRE_REDIS") == "1":
            pytest.fail(f"{problem} (CORRAL_REQUIRE_REDIS=1)")
        pytest.skip(problem)
    return services.url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of the real Redis server for tests (see _require_redis)."""
    return _require_redis(request.config)


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to the test; its keys on the real server are deleted afterwards."""
    prefix = f"corral-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    _delete_keys(request.config, prefix)


def _delete_keys(config: pytest.Config, prefix: str) -> None:
    services = config.stash[SERVICES]
    if services.redis_problem() is not None:
        return
    with redis.Redis.from_url(services.url) as admin:
        doomed = list(admin.scan_iter(match=f"{prefix}:*", count=1000))
        if doomed:
            admin.delete(*doomed)


def _real_redis_backend(request: pytest.FixtureRequest) -> Storage:
    if request.node.get_closest_marker("virtual_ttl") is not None:
        pytest.skip(VIRTUAL_TTL_REASON)
    url = _require_redis(request.config)
    prefix = f"corral-test-{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: _delete_keys(request.config, prefix))
    backend = RedisBackend.from_url(url, prefix=prefix)
    _add_async_cleanup(request, backend.close)
    return VirtualTimeRedis(backend)


class VirtualTimeRedis:
    """A real-Redis backend made fit for a virtual-time test.

    A reply from a real server takes real time, during which a virtual-time loop would jump to
    its next timer; so every call holds the loop's external work (virtual time stands still
    until the reply is in). ``wait_for_work`` cannot block in Redis (virtual time could not
    move while it waits), so it polls the marker after every other call made through this
    object and otherwise waits in virtual time: the test's process is the only writer.
    """

    def __init__(self, inner: RedisBackend) -> None:
        self.inner = inner
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<VirtualTimeRedis {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                with _holding_time():
                    return await target(*args, **kwargs)
            finally:
                self._wake()

        return call

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _poll(self, attempt: Callable[[], Awaitable[T]], timeout_ms: int) -> T | None:
        """Run ``attempt`` until it returns something truthy, waiting (in virtual time) between
        tries for another call through this object; None after ``timeout_ms``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_ms, 1) / 1000
        while True:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            with _holding_time():
                result = await attempt()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives
            # just as the waiter completes, and a closing worker's cancel would be lost.
            done, _ = await asyncio.wait({waiter}, timeout=remaining)
            if not done:
                return None

    async def wait_for_work(
        self, queue: str, timeout_ms: int, registration: str | None = None
    ) -> bool:
        """Consume the marker if it is set, else wait (in virtual time) for a call that may
        have set it; False after ``timeout_ms`` (a worker's ``registration`` changes nothing
        here: the wait is a poll)."""
        marker = self.inner.keys(queue).marker
        return bool(await self._poll(lambda: self.inner.client.zpopmin(marker), timeout_ms))

    async def wait_for_events(
        self, queue: str, after: str, timeout_ms: int, count: int = 1000
    ) -> list[StoredEvent]:
        """Events after ``after``, waiting (in virtual time) like :meth:`wait_for_work`."""
        found = await self._poll(lambda: self.inner.get_events(queue, after, count), timeout_ms)
        return found or []


def _holding_time() -> Any:
    loop = asyncio.get_running_loop()
    if isinstance(loop, VirtualTimeLoop):
        return loop.external_work()
    return contextlib.nullcontext()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests to completion on the test's virtual-time loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    funcargs = pyfuncitem.funcargs
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    test_loop = funcargs.get("loop")
    if not isinstance(test_loop, VirtualTimeLoop):
        test_loop = VirtualTimeLoop()
    cleanups = pyfuncitem.stash.get(ASYNC_CLEANUPS, [])

    async def test_then_cleanups() -> None:
        try:
            await pyfuncitem.obj(**kwargs)
        finally:
            for cleanup in reversed(cleanups):
                await cleanup()

    run_virtual(test_then_cleanups(), loop=test_loop)
    return True
