"""docs/operating.md: every Python example runs and prints what the guide says it prints, and
the bull-board recipe it shows is the one the interop tests run."""

from __future__ import annotations

import re

import pytest
from processes import ROOT, python_in_root

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
