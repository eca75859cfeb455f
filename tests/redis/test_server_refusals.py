"""A Redis that is up but refuses operations: out of memory (``maxmemory`` with
``noeviction``), wrong credentials, a user without ACL permissions, an eviction policy that
deletes keys. Each test starts its own ``redis-server`` (see local_redis.py) and runs on a real
event loop.

Out of memory, Redis refuses a script as a whole only when it carries a shebang (Redis 7 script
flags); a flagless script is refused at its first memory-growing command, and not at all once it
has written something: ``finish`` dropped the lock and then completed the job past the limit,
while ``extend_locks`` (whose first write is SET) was refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from local_redis import RedisProcess, redis_server

from corral.backends.redis import RedisAuthenticationError, RedisBackend
from corral.engine.errors import StoreRefusedError
from corral.engine.states import JobState
from corral.engine.storage import Complete, FetchRequest, RetryNow, new_job

Q = "refusals"
PREFIX = "refuse"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with redis_server(tmp_path / "redis", {"maxmemory-policy": "noeviction"}) as started:
        yield started


def layout(admin: redis.Redis) -> dict[bytes, Any]:
    """Every key of the queue with its serialized value (locks by existence: their TTL runs)."""
    return {key: admin.dump(key) for key in sorted(admin.keys(f"{PREFIX}:*"))}


def run_out_of_memory(admin: redis.Redis) -> None:
    """Store filler keys (outside the queue's prefix), then cap maxmemory below what is used."""
    with admin.pipeline(transaction=False) as pipe:
        for i in range(2000):
            pipe.set(f"filler:{i}", "x" * 1000)
        pipe.execute()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used // 2))


def test_out_of_memory_refuses_every_writing_script_whole(server: RedisProcess) -> None:
    """Each operation that adds to memory is refused before its first change, with an error
    naming the operation and the cause; remove and extend_locks (which free memory or only
    overwrite) still run."""

    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix=PREFIX)
        request = FetchRequest(None, 60_000, "w", token_prefix="w:")
        with server.admin() as admin:
            try:
                await backend.add_jobs(Q, [new_job("n", "{}", "{}", 1) for _ in range(6)])
                one = await backend.fetch_next(Q, request, 10)
                two = await backend.fetch_next(Q, request, 10)
                assert one.job is not None
                assert two.job is not None
                await backend.check_stalled(Q, max_stalled_count=1, stalled_interval=1, now=10)
                admin.delete(backend.keys(Q).stalled_check)  # let the next check run
                run_out_of_memory(admin)
                before = layout(admin)
                job, token = one.job.job_id, one.job.token
                attempts: dict[str, Callable[[], Awaitable[Any]]] = {
                    "add_jobs": lambda: backend.add_jobs(Q, [new_job("n", "{}", "{}", 2)]),
                    "fetch_next": lambda: backend.fetch_next(Q, request, 20),
                    "finish": lambda: backend.finish(Q, job, token, Complete("1"), 20, request),
                    "release": lambda: backend.release(Q, job, token, 20),
                    "check_stalled": lambda: backend.check_stalled(
                        Q, max_stalled_count=1, stalled_interval=1, now=20
                    ),
                    "update_progress": lambda: backend.update_progress(Q, job, "50"),
                    "set_paused": lambda: backend.set_paused(Q, True),
                }
                for operation, attempt in attempts.items():
                    with pytest.raises(StoreRefusedError) as refused:
                        await attempt()
                    assert str(refused.value).startswith(
                        f"{operation} refused: Redis is out of memory"
                    ), refused.value
                    assert refused.value.operation == operation
                    assert layout(admin) == before, f"{operation} changed the queue"
                with pytest.raises(StoreRefusedError, match=r"^finish refused"):
                    await backend.finish(Q, job, token, RetryNow("x"), 20)
                assert layout(admin) == before
                # The reads still answer.
                assert (await backend.get_counts(Q))[JobState.ACTIVE] == 2
                # What frees memory or only overwrites still runs: removal, lock renewal.
                assert await backend.remove(Q, "6") == 0
                assert await backend.get_job(Q, "6") is None
                lock = backend.keys(Q).base + f"{job}:lock"
                admin.pexpire(lock, 1000)
                assert await backend.extend_locks(Q, [(job, token)], 60_000) == []
                assert admin.pttl(lock) > 1000
                # Memory back: the same operations go through.
                admin.config_set("maxmemory", "0")
                assert await backend.extend_locks(Q, [(job, token)], 60_000) == []
                assert await backend.finish(Q, job, token, Complete("1"), 30) == 0
            finally:
                admin.config_set("maxmemory", "0")
                await backend.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- credentials, ACLs


def test_authentication_failure_says_so(server: RedisProcess) -> None:
    """A wrong password, or none where one is needed, is "authentication failed" (naming the
    URL without its password), not "cannot reach"."""

    async def main() -> None:
        host = f"127.0.0.1:{server.port}"
        for url, shown in (
            (f"redis://:wrong@{host}/0", f"redis://:***@{host}/0"),
            (f"redis://{host}/0", f"redis://{host}/0"),
        ):
            backend = RedisBackend.from_url(url, prefix=PREFIX)
            try:
                with pytest.raises(RedisAuthenticationError) as failed:
                    await backend.get_counts(Q)
                assert str(failed.value).startswith(f"authentication failed at Redis {shown}: ")
                assert "wrong" not in str(failed.value)
            finally:
                await backend.close()

    with server.admin() as admin:
        admin.config_set("requirepass", "secret")
    try:
        asyncio.run(main())
    finally:
        with redis.Redis(port=server.port, password="secret") as admin:
            admin.config_set("requirepass", "")


def test_missing_acl_permission_names_the_keys_needed(server: RedisProcess) -> None:
    """A user whose ACL lacks the queue's keys gets an error naming the operation and the key
    pattern it needs."""
    with server.admin() as admin:
        admin.acl_setuser(
            "limited", enabled=True, passwords=["+pw"], keys=["other:*"], commands=["+@all"]
        )

    async def main() -> None:
        url = f"redis://limited:pw@127.0.0.1:{server.port}/0"
        backend = RedisBackend.from_url(url, prefix=PREFIX)
        try:
            with pytest.raises(StoreRefusedError) as refused:
                await backend.add_jobs(Q, [new_job("n", "{}", "{}", 1)])
            text = str(refused.value)
            assert text.startswith("add_jobs refused: the Redis user lacks a permission"), text
            assert f"'{PREFIX}:{Q}:*'" in text
        finally:
            await backend.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- eviction policy


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "corral.backends.redis"]


@pytest.mark.parametrize("config_allowed", [True, False], ids=["config-get", "info-only"])
def test_an_evicting_policy_is_warned_once_per_backend(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, config_allowed: bool
) -> None:
    """Under allkeys-lru a backend logs one warning (however many operations it runs) and
    reports it in server_warnings(); read with CONFIG GET, or from INFO for a user without
    CONFIG."""

    async def main(server: RedisProcess) -> None:
        url = server.url
        if not config_allowed:
            with server.admin() as admin:
                admin.acl_setuser(
                    "app",
                    enabled=True,
                    passwords=["+pw"],
                    keys=["*"],
                    channels=["*"],
                    commands=["+@all", "-config"],
                )
            url = f"redis://app:pw@127.0.0.1:{server.port}/0"
        for _ in range(2):
            backend = RedisBackend.from_url(url, prefix=PREFIX)
            try:
                await backend.add_jobs(Q, [new_job("n", "{}", "{}", 1)])
                await backend.get_counts(Q)
                (warning,) = await backend.server_warnings()
                assert "maxmemory-policy is 'allkeys-lru', not 'noeviction'" in warning
            finally:
                await backend.close()

    caplog.set_level(logging.WARNING, logger="corral.backends.redis")
    with redis_server(tmp_path / "redis", {"maxmemory-policy": "allkeys-lru"}) as server:
        asyncio.run(main(server))
    logged = warnings_logged(caplog)
    assert len(logged) == 2, logged  # once per backend
    assert all(re.search(r"maxmemory-policy is 'allkeys-lru'", text) for text in logged)


def test_noeviction_gives_no_warning(server: RedisProcess, caplog: pytest.LogCaptureFixture):
    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix=PREFIX)
        try:
            await backend.get_counts(Q)
            assert await backend.server_warnings() == []
        finally:
            await backend.close()

    caplog.set_level(logging.WARNING, logger="corral.backends.redis")
    asyncio.run(main())
    assert warnings_logged(caplog) == []


def test_inspect_shows_the_eviction_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """``corral inspect`` shows the warning in its human output and in --json."""
    from corral.cli import main as cli

    with redis_server(tmp_path / "redis", {"maxmemory-policy": "volatile-lru"}) as server:
        args = ["inspect", "--url", server.url, "--queue", Q, "--prefix", PREFIX]
        assert cli([*args, "--json"]) == 0
        snapshot = json.loads(capsys.readouterr().out)
        (warning,) = snapshot["warnings"]
        assert "maxmemory-policy is 'volatile-lru'" in warning
        assert cli(args) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "maxmemory-policy is 'volatile-lru', not 'noeviction'" in shown


# ---------------------------------------------------------------------------- Redis 6


def test_scripts_load_without_their_shebang_on_redis_6(
    server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis 6.2 cannot compile ``#!lua``: a backend that finds an older server loads the
    scripts without it (here a Redis 7 made to look like 6.2)."""
    import corral.backends.redis.core as backend_module
    from corral.backends.redis.scripts import load_source
    from corral.backends.redis.server import ServerFacts

    async def redis_6(_client: Any) -> ServerFacts:
        return ServerFacts((6, 2), ("noeviction",))

    monkeypatch.setattr(backend_module, "read_server", redis_6)
    flagged, plain = load_source("add_jobs"), load_source("add_jobs", script_flags=False)
    assert flagged.text.startswith("#!lua\n")
    assert plain.text == flagged.text.removeprefix("#!lua\n")

    async def main() -> None:
        backend = RedisBackend.from_url(server.url, prefix=PREFIX)
        try:
            assert (await backend.add_jobs(Q, [new_job("n", "{}", "{}", 1)])).job_ids == ["1"]
        finally:
            await backend.close()

    asyncio.run(main())
    with server.admin() as admin:
        shas = [hashlib.sha1(s.text.encode()).hexdigest() for s in (plain, flagged)]
        assert admin.script_exists(*shas) == [True, False]
