"""What a caller may send: the checks that keep hostile or mistaken input from corrupting what
is stored, shared by the Queue API and both backends.

A custom job id must not name a key of the queue's layout (:data:`RESERVED_JOB_IDS`); strings
stored as they are (names, ids) must be UTF-8 (:func:`check_utf8`); JSON values must not nest
deeper than :data:`MAX_JSON_DEPTH` (:func:`json_nested_deeper`). Readers take string ids and
answer "no such job" for ids no job can have (:func:`lookup_job_id`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Final

from corral.engine.errors import InvalidArgumentError, UnknownOptionError

#: BullMQ's text when the removed ``debounce`` job option is used.
DEBOUNCE_REMOVED: Final = "Debounce option has been removed. Use deduplication option instead"

#: Custom job ids no queue accepts. A job's hash is ``<prefix>:<queue>:<id>``, and every key of
#: the queue's own layout is ``<prefix>:<queue>:<suffix>``: a job with one of these ids would
#: overwrite that key (or be read from it). The list holds every per-queue suffix of BullMQ
#: 6.7 (bullmq-semantics.md §1.2, bullmq-features.md), including those of features corral does
#: not have yet, the suffix corral's instrumented scripts add (``corral-transitions``), and
#: ``logs`` and ``dependencies`` (BullMQ's job sub-key names). Both backends refuse them alike,
#: so that a queue moves between backends unchanged; a test checks the Redis key schema
#: (``backends/redis/keys.py``) against it.
RESERVED_JOB_IDS: Final = frozenset(
    {
        "wait",
        "paused",
        "active",
        "prioritized",
        "pc",
        "delayed",
        "waiting-children",
        "completed",
        "failed",
        "stalled",
        "stalled-check",
        "id",
        "meta",
        "events",
        "marker",
        "limiter",
        "repeat",
        "de",
        "dn",
        "metrics",
        "logs",
        "dependencies",
        "corral-transitions",
    }
)

#: Deepest nesting of lists and objects a stored JSON value may have. Python's JSON decoder
#: recurses once per level and shares the interpreter's recursion limit (1000) with its
#: caller, so a value much deeper than this could be stored and never read back.
MAX_JSON_DEPTH: Final = 256


def check_utf8(text: str, what: str) -> None:
    """Refuse a string that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``):
    Redis stores bytes, and such a string would fail only when sent, on one backend.

    For the strings stored as they are (names, ids); JSON values are stored ASCII-escaped.
    Callers on a hot path test ``text.isascii()`` first (ASCII is always UTF-8).

    Raises:
        InvalidArgumentError: naming ``what`` and the first character that cannot be encoded.
    """
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} {text!r} cannot be encoded as UTF-8: {exc.reason} at index {exc.start} "
            f"({text[exc.start]!r})"
        ) from None


def lookup_job_id(job_id: object) -> bool:
    """Check the id given to a reader (``get_job``, ``remove``, ...): a non-empty string, as
    ``add`` takes. Return False when no job can have it (one of :data:`RESERVED_JOB_IDS`, or
    not UTF-8): the reader then answers "no such job" without asking the store, where the key
    of a reserved name is a structure of the queue, never a job.

    Raises:
        InvalidArgumentError: if the id is not a non-empty string (``get_job(1)``).
    """
    if not isinstance(job_id, str) or not job_id:
        hint = f" (job ids are strings: {str(job_id)!r})" if type(job_id) is int else ""
        raise InvalidArgumentError(f"job id must be a non-empty string, got {job_id!r}{hint}")
    if job_id in RESERVED_JOB_IDS:
        return False
    return job_id.isascii() or _is_utf8(job_id)


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def unknown_option_error(names: Iterable[str], known: Iterable[str]) -> UnknownOptionError:
    """The error for unknown option ``names``, suggesting the closest of the ``known`` ones."""
    names = sorted(names)
    if "debounce" in names:  # removed in BullMQ 6: its own text, as BullMQ throws it
        return UnknownOptionError(DEBOUNCE_REMOVED)
    name = names[0]
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownOptionError(f"unknown job option {name!r}{hint}")


#: For :func:`json_nested_deeper`: brackets of both kinds become ``[]``, and all but brackets and
#: quotes goes.
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE: Final = bytes(set(range(256)) - set(b'[]{}"'))
_STRING: Final = re.compile(rb'"[^"]*"')


def json_nested_deeper(encoded: str, limit: int) -> bool:
    """Whether the JSON text ``encoded`` (ASCII, as the encoder writes it) nests arrays and
    objects more than ``limit`` levels deep.

    Works on the text's skeleton, its brackets outside strings, with C-speed string methods (a
    walk of the value in Python took twice as long as encoding it): each pass that deletes the
    innermost ``[]`` pairs takes one level off.
    """
    if "\\" in encoded:  # escaped quotes and backslashes must not delimit strings
        encoded = encoded.replace("\\\\", "").replace('\\"', "")
    # Adjacent quotes are an empty string or the boundary of two strings with no bracket
    # between them (merged then, harmlessly): dropping them leaves few strings to match.
    skeleton = encoded.encode("ascii").translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if skeleton.count(b"[") <= limit:  # (counts the brackets in strings too: at least all)
        return False
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    for _ in range(limit):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)
