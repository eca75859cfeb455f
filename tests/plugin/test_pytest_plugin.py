"""corral's pytest plugin (corral.testing), exercised the way users meet it: inner pytest runs
through ``pytester``, with the plugin loaded from its ``pytest11`` entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.S)


# Inner runs turn warnings into errors, except one that only the in-process runs can meet: when an
# earlier test of this suite left the repository root on sys.path, pytest finds corral's source
# egg-info there and asks to rewrite the already imported corral package.
STRICT = ("-W", "error", "-W", "ignore::pytest.PytestAssertRewriteWarning")


def guide_examples() -> dict[str, str]:
    """The files of the guide's example, by file name."""
    return {m["name"]: m["code"] for m in EXAMPLE.finditer(GUIDE.read_text(encoding="utf-8"))}


def test_the_plugin_is_loaded_from_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--trace-config", "--co", "-q")
    result.stdout.fnmatch_lines(["*corral.testing*"])
    fixtures = pytester.runpytest("--fixtures")
    for name in ("corral_loop", "corral_clock", "corral_backend", "corral_queue", "corral_run"):
        fixtures.stdout.fnmatch_lines([f"{name} -- *"])


def test_the_guide_example_passes(pytester: pytest.Pytester) -> None:
    examples = guide_examples()
    assert set(examples) == {"emails.py", "test_emails.py"}
    pytester.makepyfile(**{name.removesuffix(".py"): code for name, code in examples.items()})
    # In a fresh process, as a user runs it: the plugin comes from the entry point alone.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=5)


def test_fixtures_share_one_virtual_loop_and_clock(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        import pytest

        from corral import MemoryBackend, Queue
        from corral.sim.loop import VirtualTimeLoop, current_clock


        @pytest.mark.corral
        async def test_async(corral_loop, corral_clock, corral_backend, corral_queue):
            assert asyncio.get_running_loop() is corral_loop
            assert isinstance(corral_loop, VirtualTimeLoop)
            assert current_clock() is corral_clock
            assert isinstance(corral_backend, MemoryBackend)
            assert corral_backend.clock is corral_clock
            assert isinstance(corral_queue, Queue)
            assert (corral_queue.name, corral_queue.backend) == ("test", corral_backend)
            start = corral_clock.now_ms()
            await asyncio.sleep(3 * 86_400)
            assert corral_clock.now_ms() - start == 3 * 86_400_000


        @pytest.mark.corral
        async def test_marked_without_asking_for_the_loop():
            await asyncio.sleep(3600)
            assert asyncio.get_running_loop().time() == 3600


        def test_plain(corral_run, corral_clock):
            async def later():
                await asyncio.sleep(60)
                return corral_clock.now_ms()

            assert corral_run(later()) == 1_700_000_060_000
            assert corral_run(later()) == 1_700_000_120_000


        class TestOverriddenName:
            @pytest.fixture
            def corral_queue_name(self):
                return "emails"

            def test_queue_name_can_be_overridden(self, corral_queue):
                assert corral_queue.name == "emails"
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=4)


def test_only_marked_async_tests_are_taken(pytester: pytest.Pytester) -> None:
    """Unmarked async tests are left to pytest (which fails them) or to another plugin; a
    marked one runs exactly once."""
    pytester.makepyfile(
        """
        import pytest

        RUNS = []


        async def test_unmarked():
            pass


        @pytest.mark.corral
        async def test_marked():
            RUNS.append(1)


        def test_ran_once():
            assert RUNS == [1]
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_unmarked _*", "async def functions are not natively supported*"]
    )


def test_a_test_claimed_by_pytest_asyncio_too_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    asyncio: stands in for pytest-asyncio's marker\n")
    pytester.makepyfile(
        """
        import pytest


        @pytest.mark.asyncio
        @pytest.mark.corral
        async def test_both():
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*marked both 'corral' and 'asyncio'*corral_run*"])


def test_drain_reports_stalls_and_times_out_on_a_paused_queue(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from datetime import timedelta

        import pytest

        from corral.engine.storage import FetchRequest
        from corral.testing import DrainTimeoutError

        pytestmark = pytest.mark.corral


        async def test_a_crashed_workers_job_is_recovered(
            corral_queue, corral_backend, corral_drain
        ):
            job = await corral_queue.add("lost")
            # A worker takes the job and dies: nobody renews its 30 s lock or finishes it.
            taken = await corral_backend.fetch_next(
                "test", FetchRequest("dead:1", 30_000), corral_queue.clock.now_ms()
            )
            assert taken.job.job_id == job.id

            result = await corral_drain(lambda job: "again", stalled_interval=30_000)

            assert result.stalled == [job.id]
            assert result.results == {job.id: "again"}
            assert result.errors == []
            # Marked at the first check (t=0), found without its lock at the next (t=30 s).
            assert result.elapsed_ms == 30_000


        async def test_a_paused_queue_never_drains(corral_queue, corral_drain):
            await corral_queue.add("stuck")
            await corral_queue.pause()
            with pytest.raises(DrainTimeoutError, match=r"1 waiting.*the queue is paused"):
                await corral_drain(lambda job: None, timeout=timedelta(hours=1))
            assert await corral_queue.get_job_counts("waiting") == {"waiting": 1}


        async def test_an_empty_queue_drains_at_once(corral_drain):
            result = await corral_drain(lambda job: None)
            assert (result.completed, result.failed, result.elapsed_ms) == ([], [], 0)
        """
    )
    pytester.runpytest(*STRICT).assert_outcomes(passed=3)
