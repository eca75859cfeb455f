"""What a worker does with a BaseException that escapes its processor.

An ``Exception`` fails the attempt as usual. Anything else is not meant as an error, but a
processor can raise it all the same, and the worker must neither die of it nor leave the job
active under a lock nobody renews:

* a ``CancelledError`` from the worker's own cancellation of the slot (a forced close) is the
  worker's business and goes on up, as does ``GeneratorExit`` (the coroutine is being closed);
* ``KeyboardInterrupt`` and ``SystemExit`` ask the process to stop: the worker closes as a forced
  close does (locks released, jobs back in line) and ``Worker.run`` re-raises it;
* any other (a ``CancelledError`` the worker did not cause, a custom ``BaseException``) fails the
  attempt with a :class:`ProcessorEscapeError` naming it, and the worker goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from corral.engine.errors import CorralError

#: What a processor raises to stop the whole process, not just its attempt.
PROCESS_EXITS: Final = (KeyboardInterrupt, SystemExit)
# ... and, besides, GeneratorExit: the coroutine itself is being closed, not failing.
_NOT_OURS: Final = (*PROCESS_EXITS, GeneratorExit)


class ProcessorEscapeError(CorralError):
    """An attempt failed because its processor raised a BaseException that is not an Exception.

    The original is the ``__cause__`` (its traceback is stored in the job's ``stacktrace``).
    """


def escaped_failure(error: BaseException, slot: asyncio.Task[Any]) -> ProcessorEscapeError | None:
    """The error to fail the attempt with for ``error`` (not an ``Exception``), raised by a
    processor that ``slot`` ran; None if the worker must not swallow it (see the module docs).
    """
    if isinstance(error, _NOT_OURS):
        return None
    kind = type(error).__name__
    if isinstance(error, asyncio.CancelledError):
        if slot.cancelling():
            return None  # the worker cancelled it
        why = "but nothing cancelled it"
    else:
        why = "a BaseException, not an Exception"
    detail = f" ({error})" if str(error) else ""
    failure = ProcessorEscapeError(f"the processor raised {kind}{detail}, {why}")
    failure.__cause__ = error
    return failure
