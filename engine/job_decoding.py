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
from typing import Any

from corral.engine.job import Job, decode_opts

_DEFAULT_OPTS = "{}"


def undecodable_reason(job: Job) -> str | None:
    """Why ``job``'s ``opts`` or ``data`` cannot be decoded, or None once both are decoded.

    The decoded data is kept on the job (its processor reads it without a second parse). A job
    whose options cannot be read gets the default ones, so that failing it is possible.
    """
    fields = job.fields
    problem = _opts_problem(fields.get("opts") or _DEFAULT_OPTS)
    if problem is not None:
        job._opts = decode_opts(_DEFAULT_OPTS)
    else:
        raw = fields.get("data")
        if not raw:
            return None
        try:
            job._data = _decoded(raw, "data")
            return None
        except ValueError as exc:
            problem = str(exc)
    return f"job {job.id} cannot be decoded: {problem}"


@functools.lru_cache(maxsize=512)
def _opts_problem(raw: str) -> str | None:
    # Memoised, as decode_opts is: most jobs of a queue share a few option strings.
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
