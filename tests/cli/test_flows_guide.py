"""The Flows guide (docs/flows.md): its examples run as they are printed, and README links it."""

from __future__ import annotations

import re

import pytest
from processes import ROOT, python_in_root

GUIDE = ROOT / "docs" / "flows.md"
#: Each complete example opens with ``import asyncio`` and prints what its comment says.
EXAMPLES = re.findall(r"```python\n(import asyncio\n.*?)```", GUIDE.read_text("utf-8"), re.DOTALL)


def test_the_guide_has_its_examples_and_readme_links_it() -> None:
    assert len(EXAMPLES) == 2
    assert "(docs/flows.md)" in (ROOT / "README.md").read_text("utf-8")


@pytest.mark.parametrize("example", EXAMPLES, ids=["flow", "step-job"])
def test_guide_example_runs_and_prints_what_it_says(example: str) -> None:
    done = python_in_root("-", stdin=example)
    assert done.returncode == 0, done.stderr
    printed = re.findall(r"print\(.*\)  # (.*)", example)
    assert done.stdout.splitlines() == printed
