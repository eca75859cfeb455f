"""Fixtures of the interop tests."""

from __future__ import annotations

import pytest
from node_bullmq import require_node


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with the pinned npm packages installed in tests/interop."""
    return require_node()
