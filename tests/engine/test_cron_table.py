"""corral's cron against the table of Node cron-parser results checked in at
tests/engine/data/cron_table.json, so the agreement is checked where Node is absent too.

Regenerate the table (after changing the cases in tests/interop/node/cron_table.mjs or the
pinned cron-parser) with::

    node tests/interop/node/cron_table.mjs > tests/engine/data/cron_table.json

tests/interop/test_cron_agreement.py checks that the file is what Node prints today.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cron_agreement import KNOWN_DIVERGENCES, LOOP, describe, disagreement, load_table, row_key

from corral.engine.cron import next_fire_times

HEADER, ROWS = load_table()
BY_KEY = {row_key(row): row for row in ROWS}


def test_table_covers_what_the_brief_asks() -> None:
    valid = {row["pattern"] for row in ROWS if not row.get("error", "").startswith("parse")}
    zones = {row["tz"] for row in ROWS}
    assert len(valid) >= 50
    assert {"UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"} <= zones
    assert HEADER["count"] >= 3
    assert HEADER["cronParser"] == "5.10.3"
    # Starts within a day before each 2026 DST change of New York, both directions.
    starts = {row["start"] for row in ROWS if row["tz"] == "America/New_York"}
    for change in ("2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"):
        at = int(datetime.fromisoformat(change).astimezone(UTC).timestamp() * 1000)
        assert any(at - 86_400_000 <= start <= at for start in starts), change


def test_every_row_agrees_except_the_known_divergences() -> None:
    problems = [
        describe(row, problem)
        for row in ROWS
        if row_key(row) not in KNOWN_DIVERGENCES and (problem := disagreement(row)) is not None
    ]
    assert not problems, f"{len(problems)} of {len(ROWS)} rows differ:\n" + "\n".join(problems)


def test_known_divergences_are_rows_of_the_table() -> None:
    assert set(KNOWN_DIVERGENCES) <= set(BY_KEY)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(key, marks=pytest.mark.xfail(strict=True, reason=reason), id="|".join(key))
        for key, reason in KNOWN_DIVERGENCES.items()
    ],
)
def test_known_divergence(key: tuple[str, str, str]) -> None:
    row = BY_KEY[key]
    problem = disagreement(row)
    assert problem is None, describe(row, problem)


@pytest.mark.parametrize("key", [key for key, why in KNOWN_DIVERGENCES.items() if why == LOOP])
def test_where_node_fails_corral_agrees_until_then(key: tuple[str, str, str]) -> None:
    """Before cron-parser throws, the times it gave are corral's too."""
    row = BY_KEY[key]
    assert row["error"].startswith("next:")
    given = row["next"]
    assert next_fire_times(row["pattern"], row["start"], row["tz"], len(given)) == given
