"""Decoding a fetched job's ``data`` and ``opts`` once, before its processor runs.

Another producer (a Node service, a script writing the hash by hand) may store fields that
cannot be decoded: bytes that are not UTF-8 (the Redis backend reads them with
``surrogateescape``, so each such byte arrives as a lone surrogate; the memory backend stores
what it is given) or text that is not JSON. Running the processor cannot help such a job, and
failing inside it (or inside the fetch) would only make it stall until the stall limit ends it:
the worker fails it at once instead, with a reason naming the field and the problem.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from json.scanner import make_scanner
from typing import Any, cast

from corral.engine.job import Job, decode_opts

_DEFAULT_OPTS = "{}"
# The C scanner behind json.loads, without its Python layers (several times cheaper for the
# small values of most jobs): it reads one value from the start of the text.
_scan_once = make_scanner(cast(Any, json.JSONDecoder()))


def undecodable_reason(job: Job, fields: Mapping[str, str]) -> str | None:
    """Why ``job``'s ``opts`` or ``data`` (its ``fields``) cannot be decoded, or None.

    The decoded data is kept on the job (its processor reads it without a second parse). A job
    whose options cannot be read gets the default ones, so that failing it is possible.
    """
    opts = fields.get("opts")
    if opts:
        problem = _opts_problem(opts)
        if problem is not None:
            job._opts = decode_opts(_DEFAULT_OPTS)
            return f"job {job.id} cannot be decoded: {problem}"
    raw = fields.get("data")
    if not raw:
        return None
    # Run for every job, so the usual case (ASCII, one JSON value, no whitespace around it)
    # takes no more than the scan.
    if raw.isascii():
        try:
            value, end = _scan_once(raw, 0)
        except (StopIteration, ValueError):  # not JSON: the slow path below says why
            end = -1
        if end == len(raw):
            job._data = value
            return None
    try:
        job._data = _decoded(raw, "data")
    except ValueError as exc:
        return f"job {job.id} cannot be decoded: {exc}"
    return None


# Most jobs of a queue share a handful of option strings: each is checked once.
@functools.lru_cache(maxsize=512)
def _opts_problem(raw: str) -> str | None:
    try:
        opts = _decoded(raw, "opts")
    except ValueError as exc:
        return str(exc)
    if not isinstance(opts, dict):
        return f"opts is a JSON {type(opts).__name__}, not an object"
    try:
        decode_opts(raw)
    except (TypeError, ValueError) as exc:
        return f"opts cannot be read ({exc})"
    return None


def _decoded(raw: str, field: str) -> Any:
    """``raw`` decoded as JSON; ValueError naming ``field`` and the problem if it cannot be."""
    if not raw.isascii():
        try:
            raw.encode()
        except UnicodeEncodeError as exc:
            char = ord(raw[exc.start])
            # surrogateescape maps an undecodable byte b to the code point 0xDC00 + b
            what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else "a surrogate"
            raise ValueError(
                f"{field} is not valid UTF-8 ({what} at character {exc.start})"
            ) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{field} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None
