"""corral's cron (engine/cron.py) against Node's cron-parser, computed live.

tests/interop/node/cron_table.mjs runs cron-parser at the version bullmq 6.7.0 pins (package.json
pins it too). Two checks: the standard table, which must also be byte for byte the one checked
in at tests/engine/data/cron_table.json (tests/engine/test_cron_table.py checks corral against
that file where Node is absent); and random patterns in the zones whose clock changes by a
whole hour, where corral knows no divergence at all.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from cron_agreement import KNOWN_DIVERGENCES, TABLE, Row, describe, disagreement, row_key
from node_bullmq import HERE, INSTALL_HINT, require_node

pytestmark = pytest.mark.interop

SCRIPT = HERE / "node" / "cron_table.mjs"
#: Zones with no clock change, or one of a whole hour (both directions, both hemispheres).
ZONES = ["UTC", "Asia/Kolkata", "Europe/Paris", "America/New_York", "Australia/Sydney"]
#: DST changes of those zones (2026, 2027), to start walks near.
CHANGES = [
    "2026-03-29T01:00:00Z",
    "2026-10-25T01:00:00Z",
    "2026-03-08T07:00:00Z",
    "2026-11-01T06:00:00Z",
    "2026-04-04T16:00:00Z",
    "2026-10-03T16:00:00Z",
    "2027-03-14T07:00:00Z",
    "2027-11-07T06:00:00Z",
]
#: Another seed: CORRAL_CRON_SEED=<n> (seeds 1-6 and this one agreed when last run).
SEED = int(os.environ.get("CORRAL_CRON_SEED", "20261206"))
RANDOM_PATTERNS = 400


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with the pinned cron-parser installed in tests/interop."""
    executable = require_node()
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"]["cron-parser"]
    installed = HERE / "node_modules" / "cron-parser" / "package.json"
    if not installed.is_file() or json.loads(installed.read_text())["version"] != pinned:
        problem = f"cron-parser {pinned} is not installed in tests/interop: {INSTALL_HINT}"
        if os.environ.get("CORRAL_REQUIRE_NODE") == "1":
            pytest.fail(f"{problem} (CORRAL_REQUIRE_NODE=1)")
        pytest.skip(problem)
    return executable


def run_node(node: str, request: dict[str, Any] | None = None) -> str:
    """What the table script prints, for the standard cases or for ``request``."""
    args = [node, str(SCRIPT)] + (["-"] if request is not None else [])
    done = subprocess.run(
        args,
        input=json.dumps(request) if request is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout


def test_checked_in_table_is_what_node_prints(node: str) -> None:
    printed = run_node(node)
    assert printed == TABLE.read_text(), (
        "tests/engine/data/cron_table.json is stale: regenerate it with "
        "`node tests/interop/node/cron_table.mjs > tests/engine/data/cron_table.json`"
    )
    rows: list[Row] = json.loads(printed)["rows"]
    problems = [
        describe(row, problem)
        for row in rows
        if row_key(row) not in KNOWN_DIVERGENCES and (problem := disagreement(row)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_random_patterns_agree(node: str) -> None:
    rng = random.Random(SEED)
    cases = []
    for _ in range(RANDOM_PATTERNS):
        pattern = random_pattern(rng)
        for tz in rng.sample(ZONES, 3):
            for start in (random_start(rng), near_change(rng)):
                cases.append({"pattern": pattern, "tz": tz, "start": start})
    rows: list[Row] = json.loads(run_node(node, {"cases": cases, "count": 4}))["rows"]
    assert len(rows) == len(cases)
    problems = [describe(row, p) for row in rows if (p := disagreement(row)) is not None]
    assert not problems, f"{len(problems)} of {len(rows)} differ (seed {SEED}):\n" + "\n".join(
        problems
    )


MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def random_pattern(rng: random.Random) -> str:
    """A cron pattern in cron-parser's grammar (some deliberately out of range)."""
    fields = [
        field(rng, 0, 59),
        field(rng, 0, 59),
        field(rng, 0, 23),
        day_of_month(rng),
        field(rng, 1, 12, MONTHS),
        day_of_week(rng),
    ]
    return " ".join(fields if rng.random() < 0.4 else fields[1:])


def field(rng: random.Random, low: int, high: int, names: list[str] | None = None) -> str:
    def value() -> str:
        # Now and then one past the range: both libraries must refuse it.
        number = rng.randint(low, high + (1 if rng.random() < 0.02 else 0))
        if names and rng.random() < 0.3 and low <= number <= high:
            return names[number - low]
        return str(number)

    kind = rng.random()
    if kind < 0.35:
        return "*"
    if kind < 0.5:
        return f"*/{rng.randint(1, max(1, (high - low) // 2))}"
    if kind < 0.7:
        return ",".join(sorted({value() for _ in range(rng.randint(2, 4))}))
    if kind < 0.85:
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        step = f"/{rng.randint(1, 5)}" if rng.random() < 0.4 else ""
        return f"{a}-{b}{step}"
    return value()


def day_of_month(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return "L"
    if kind < 0.2:
        return "?"
    return field(rng, 1, 31)


def day_of_week(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return f"{rng.randint(0, 6)}L"
    if kind < 0.2:
        return f"{rng.choice(DAYS)}#{rng.randint(1, 5)}"
    if kind < 0.3:
        return "?"
    return field(rng, 0, 7, [*DAYS, "SUN"])


def random_start(rng: random.Random) -> int:
    low = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    high = int(datetime(2028, 1, 1, tzinfo=UTC).timestamp())
    return rng.randint(low, high) * 1000 + rng.choice([0, 0, rng.randint(1, 999)])


def near_change(rng: random.Random) -> int:
    change = datetime.fromisoformat(rng.choice(CHANGES)).timestamp()
    return int(change * 1000) + rng.randint(-3 * 3600, 3600) * 1000
