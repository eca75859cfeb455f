"""The checks cron-parser makes on a pattern's fields that croniter does not (engine/cron.py).

cron-parser collects each field's comma-separated parts into one list of values and refuses a
value listed twice: ``1,1``, ``2,TUE``, ``0,7`` and ``0,6-7`` (day of week: a single 7 counts as
0, and a range ending at 7 brings in 0 too) are errors in Node, where croniter merges them. It
also refuses ``#`` together with a list. A scheduler whose pattern Node refuses could not be
advanced by a Node worker, so corral refuses it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from corral.engine.errors import InvalidArgumentError

#: Field names and bounds, in six-field order (seconds first).
FIELDS: Final = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES: Final[tuple[dict[str, str], ...]] = (
    {},
    {},
    {},
    {},
    {name: str(number) for number, name in enumerate(_MONTHS, start=1)},
    {name: str(number) for number, name in enumerate(_DAYS)},
)
DAY_OF_WEEK: Final = 5
#: Month and day names, lower-case.
NAMES: Final = (*_MONTHS, *_DAYS)


def check_fields(pattern: str, fields: Sequence[str]) -> None:
    """Refuse what cron-parser refuses beyond croniter's checks (see the module docstring).

    Raises:
        InvalidArgumentError: naming ``pattern`` and the field.
    """
    for index, text in enumerate(fields):
        name, low, high = FIELDS[index]
        value = text.lower()
        for alias, number in _NAMES[index].items():
            value = value.replace(alias, number)
        if index == DAY_OF_WEEK and "#" in value and "," in value:
            raise InvalidArgumentError(
                f"invalid cron pattern {pattern!r}: '#' cannot be combined with a list"
            )
        seen: list[int | str] = []
        for part in value.split(","):
            values = _values(part, low, high, index == DAY_OF_WEEK)
            if values is None:
                continue  # croniter judges the syntax
            for one in values:
                if one in seen:
                    raise InvalidArgumentError(
                        f"invalid cron pattern {pattern!r}: {one} is listed twice in the "
                        f"{name} field"
                    )
            seen.extend(values)


def _values(part: str, low: int, high: int, day_of_week: bool) -> list[int | str] | None:
    """The values cron-parser collects for one comma-separated part, None if not understood."""
    if part.endswith("l") or "#" in part:
        return [part]  # "L" / "nL" / "n#k": kept as they are
    if part in ("*", "?"):
        return list(_range(low, high, 1, day_of_week))
    base, _, step_text = part.partition("/")
    start_text, dash, end_text = base.partition("-")
    try:
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            start, end = low, high
        else:
            start = int(start_text)
            end = int(end_text) if dash else (high if step_text else start)
    except ValueError:
        return None
    if not dash and not step_text:
        return [start % 7 if day_of_week else start]
    if step <= 0:
        return None
    return list(_range(start, end, step, day_of_week))


def _range(start: int, end: int, step: int, day_of_week: bool) -> list[int | str]:
    # A day-of-week range whose steps end on a multiple of 7 counts Sunday as 0 as well.
    sunday = day_of_week and end % 7 == 0 and (end - start) % step == 0
    values: list[int | str] = [0] if sunday else []
    values.extend(value for value in range(start, end + 1, step) if value not in values)
    return values
