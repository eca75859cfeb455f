"""docs/operating.md: every Python example runs and prints what the guide says it prints, and
the bull-board recipe it shows is the one the interop tests run."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess

import pytest
from processes import CORRAL, ROOT, python_in_root

from corral.backends.redis import RedisBackend
from corral.engine import Job, Queue, Worker

GUIDE = ROOT / "docs" / "operating.md"
#: The bull-board recipe the interop tests run (tests/interop/test_bull_board.py).
RECIPE = ROOT / "tests" / "interop" / "node" / "board.mjs"
#: A ```python block, then (after blank lines) the ```text block of what it prints.
EXAMPLE = re.compile(
    r"^## (?P<title>[^\n]+)\n.*?```python\n(?P<code>.*?)```\s*```text\n(?P<out>.*?)```",
    re.DOTALL | re.MULTILINE,
)


def examples() -> list[tuple[str, str, str]]:
    """Each example's section title, code and printed output."""
    text = GUIDE.read_text(encoding="utf-8")
    return [(m["title"], m["code"], m["out"]) for m in EXAMPLE.finditer(text)]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z]+", "-", title.lower()).strip("-")


def test_the_guide_has_its_examples_with_their_output() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    # Every Python example is followed by its output, so that each one is checked below.
    assert text.count("```python\n") == len(examples()) == 5


@pytest.mark.parametrize(
    ("title", "code", "output"), [pytest.param(*e, id=_slug(e[0])) for e in examples()]
)
def test_a_guide_example_prints_what_the_guide_says(title: str, code: str, output: str) -> None:
    done = python_in_root("-", stdin=code)  # like `python example.py` in the repository root
    assert done.returncode == 0, f"{title}: {done.stderr}"
    assert done.stdout == output, title


def test_the_guide_shows_the_bull_board_recipe_that_is_tested() -> None:
    blocks = re.findall(r"```js\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    assert RECIPE.read_text(encoding="utf-8") in blocks, "the guide must show board.mjs verbatim"


def console_session() -> list[tuple[str, str]]:
    """The commands of the guide's command-line session, each with what it prints."""
    text = GUIDE.read_text(encoding="utf-8")
    session = re.search(r"^## From the command line\n.*?```console\n(.*?)```", text, re.S | re.M)
    assert session is not None, "the guide's command-line session is gone"
    steps: list[tuple[str, str]] = []
    for line in session.group(1).splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].strip(), ""))
        else:
            steps[-1] = (steps[-1][0], steps[-1][1] + line)
    return steps


async def _fill(url: str, prefix: str) -> None:
    """The queue the session starts from: jobs 2 and 3 failed, 1 completed, 4 delayed."""
    backend = RedisBackend.from_url(url, prefix=prefix)
    try:
        queue = Queue("emails", backend)
        for n in range(3):
            await queue.add("welcome", {"n": n})
        await queue.add("digest", None, delay=3_600_000)
        finished: list[str] = []

        async def send(job: Job) -> str:
            if job.data["n"] > 0:
                raise ConnectionError("smtp down")
            return "sent"

        worker = Worker("emails", send, backend, drain_delay=200)
        worker.on("completed", lambda job, result: finished.append(job.id))
        worker.on("failed", lambda job, error: finished.append(job.id))
        running = asyncio.create_task(worker.run())
        while len(finished) < 3 and not running.done():
            await asyncio.sleep(0.02)
        await worker.close()
        await running
        assert await queue.get_job_counts("completed", "failed", "delayed") == {
            "completed": 1,
            "failed": 2,
            "delayed": 1,
        }
    finally:
        await backend.close()


@pytest.mark.redis
def test_the_guides_command_line_session_prints_what_it_shows(
    redis_url: str, key_prefix: str
) -> None:
    asyncio.run(_fill(redis_url, key_prefix))
    steps = console_session()
    assert [command.split()[1] for command, _ in steps] == [
        "retry",
        "promote",
        "clean",
        "pause",
        "remove",
        "drain",
        "resume",
        "obliterate",
    ]
    for command, shown in steps:
        argv = shlex.split(command.replace("$REDIS", redis_url))
        assert argv[0] == "corral"
        done = subprocess.run(
            [str(CORRAL), *argv[1:], "--prefix", key_prefix],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stdout + done.stderr) == (0, shown), command
