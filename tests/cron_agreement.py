"""Comparing corral's cron (engine/cron.py) with Node's cron-parser: the shared part of
tests/engine/test_cron_table.py (the checked-in table) and tests/interop/test_cron_agreement.py
(the same, and random patterns, computed live by Node).

A *row* is what tests/interop/node/cron_table.mjs prints for one case: ``pattern``, ``tz``,
``start`` (epoch ms), ``next`` (the times successive ``next()`` calls returned) and, when
cron-parser threw, ``error`` (``"parse: ..."`` or ``"next: ..."``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.engine.cron import next_fire_times
from corral.engine.errors import InvalidArgumentError

TABLE = Path(__file__).resolve().parent / "engine" / "data" / "cron_table.json"

Row = dict[str, Any]

#: cron-parser throws "Invalid expression, loop limit exceeded" from next(): BullMQ swallows it
#: and the schedule silently stops (bullmq-features.md §1.10); corral goes on with the regular
#: next time. All in Australia/Lord_Howe, whose clock moves by 30 minutes.
LOOP = "cron-parser fails (loop limit exceeded) where corral gives the regular next time"
#: cron-parser handles a clock change as if it moved the clock by a whole hour; in zones whose
#: change is 30 min (Australia/Lord_Howe) or starts at :45 (Pacific/Chatham) it then skips
#: existing times, fires a time twice or goes back in time. corral keeps its hour-zone rules.
SHIFT = "cron-parser's whole-hour DST handling in a zone whose clock change is not on the hour"

#: Every row of the table where corral knowingly differs, keyed (pattern, tz, start), and why.
KNOWN_DIVERGENCES: dict[tuple[str, str, str], str] = {
    ("0 * * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 * * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("30 * * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): SHIFT,
    ("30 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z"): SHIFT,
    ("30 * * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("30 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("15,45 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z"): SHIFT,
    ("0,30 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z"): SHIFT,
    ("0,30 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("15,45 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 */2 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 */2 * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 */2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("30 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 2 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 2 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 2 * * *", "Australia/Lord_Howe", "2026-10-02T15:30:00Z"): SHIFT,
    ("0 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 3 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 3 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("15 1,2,3 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("15 1,2,3 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("15 1,2,3 * * *", "Australia/Lord_Howe", "2026-10-02T15:30:00Z"): SHIFT,
    ("15 1,2,3 * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("15 1,2,3 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 0,12 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 0,12 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("5 4 * * sun", "Australia/Lord_Howe", "2028-02-28T23:59:59Z"): LOOP,
    ("5 4 * * sun", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("5 4 * * sun", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 6 1 */3 *", "Australia/Lord_Howe", "2028-02-28T23:59:59Z"): LOOP,
    ("30 0-6/2 * * *", "Australia/Lord_Howe", "2026-10-02T15:30:00Z"): SHIFT,
    ("30 0-6/2 * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("30 0-6/2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("10-20/5 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 12 * * 7", "Australia/Lord_Howe", "2028-02-28T23:59:59Z"): LOOP,
    ("0 12 * * 7", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 12 * * 7", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 12 * * 0", "Australia/Lord_Howe", "2028-02-28T23:59:59Z"): LOOP,
    ("0 12 * * 0", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 12 * * 0", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 15 3 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 15 3 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 30 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 0 2 * * *", "Australia/Lord_Howe", "2026-04-03T15:00:00Z"): LOOP,
    ("0 0 2 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 0 2 * * *", "Australia/Lord_Howe", "2026-10-02T15:30:00Z"): SHIFT,
    ("0 0 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 0 2 * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 0 * * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("0 0 * * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 0 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("0 30 * * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): SHIFT,
    ("0 30 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z"): SHIFT,
    ("0 30 * * * *", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("0 30 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("15 */20 * * * *", "Australia/Lord_Howe", "2026-04-04T14:30:00Z"): SHIFT,
    ("15 */20 * * * *", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("@hourly", "Australia/Lord_Howe", "2026-04-04T12:00:00Z"): LOOP,
    ("@hourly", "Australia/Lord_Howe", "2026-10-03T12:30:00Z"): SHIFT,
    ("@hourly", "Australia/Lord_Howe", "2026-10-03T15:00:00Z"): SHIFT,
    ("15,45 * * * *", "Pacific/Chatham", "2026-04-04T11:00:00Z"): SHIFT,
    ("15,45 * * * *", "Pacific/Chatham", "2026-04-04T13:30:00Z"): SHIFT,
    ("15,45 * * * *", "Pacific/Chatham", "2026-09-26T11:00:00Z"): SHIFT,
}


def row_key(row: Row) -> tuple[str, str, str]:
    """The row's (pattern, tz, start as ISO-8601 UTC) key."""
    start = datetime.fromtimestamp(row["start"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (row["pattern"], row["tz"], start)


def load_table() -> tuple[dict[str, Any], list[Row]]:
    """The checked-in table's header and rows."""
    table = json.loads(TABLE.read_text())
    return table["header"], table["rows"]


def disagreement(row: Row) -> str | None:
    """How corral's answer for ``row`` differs from cron-parser's, or None if it agrees.

    Agreement: both refuse the pattern, or both give the same successive times (as many as
    the row has).
    """
    error = row.get("error", "")
    # Where Node stopped with an error, ask for one time more than it gave.
    count = max(1, len(row["next"]) + (1 if error else 0))
    try:
        ours: list[int] | str = next_fire_times(row["pattern"], row["start"], row["tz"], count)
    except InvalidArgumentError as refusal:
        ours = f"refused: {refusal}"
    if error.startswith("parse"):
        return None if isinstance(ours, str) else f"Node refused ({error}), corral gave {ours}"
    if error:
        return f"Node stopped after {row['next']} ({error}), corral gave {ours}"
    return None if ours == row["next"] else f"Node gave {row['next']}, corral gave {ours}"


def describe(row: Row, problem: str) -> str:
    """One line naming the row and what differs."""
    pattern, tz, start = row_key(row)
    return f"{pattern!r} in {tz} after {start}: {problem}"
