"""The repository layout: top-level ``engine/``, ``backends/`` and ``sim/`` are ``corral.engine``,
``corral.backends`` and ``corral.sim``, also for a Python started in the repository root."""

from __future__ import annotations

import re
from pathlib import Path

from processes import ROOT, python_in_root


def test_corral_subpackages_import_from_the_repository_root() -> None:
    # The current directory comes first on sys.path, so the checkout's corral/ is the package:
    # it must reach the top-level folders too.
    code = (
        "import corral, corral.backends.memory, corral.engine.queue, corral.sim.campaign\n"
        "for m in (corral.backends.memory, corral.engine.queue, corral.sim.campaign):\n"
        "    print(m.__file__)\n"
    )
    done = python_in_root("-c", code)
    assert done.returncode == 0, done.stderr
    files = [Path(line).resolve() for line in done.stdout.split()]
    assert files == [
        ROOT / "backends" / "memory" / "__init__.py",
        ROOT / "engine" / "queue.py",
        ROOT / "sim" / "campaign.py",
    ]


def test_readme_example_runs_from_the_repository_root() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(import asyncio\n.*?)```", readme, re.DOTALL)
    assert example is not None, "the README's first example is gone"
    done = python_in_root("-", stdin=example.group(1))  # like `python try_readme.py` in the root
    assert done.returncode == 0, done.stderr


def test_python_m_pytest_collects_from_the_repository_root() -> None:
    done = python_in_root("-m", "pytest", "--co", "-q", "tests/engine/test_smoke.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_smoke.py::" in done.stdout
