"""The messages a sandboxed processor's child process and the worker exchange over their pipe.

**Child → worker: JSON only.** The worker never unpickles what a child sends: a result, a
progress value or an exception's arguments could be any object, and unpickling one can run code
in the worker (``__reduce__``). Results and progress are stored as JSON anyway, so the child
encodes them as the worker would in-process (one that JSON cannot encode fails there, with the
reason the worker gives in-process), and the worker checks every message it reads.

**Worker → child: pickled tuples** of the worker's own data (the job's stored fields are plain
strings), which the child trusts as it trusts the worker that started it; pickle because the
request carries every field of the job and costs a sixth of the JSON encoding.

Every message about a job carries its *run*: the id the worker gave that job's run when it sent it
to the child. The worker acts only on messages of the run it is waiting for, so nothing a finished
run sends (progress from a thread the processor left behind, a late ``update_progress``) can reach
another job. Progress is a round trip: the child waits for the ``ack`` that carries its ``seq``.

Worker → child::

    ("run", 7, queue_name, job_id, token, fields)
    ("ack", 7, seq, error_or_None)
    ("stop",)

Child → worker::

    {"kind": "progress", "run": 7, "seq": 3, "value": <JSON>}
    {"kind": "done", "run": 7, "value": <JSON>}
    {"kind": "failed", "run": 7, "error": {"module": …, "qualname": …, "args": […] | null,
                                           "message": …, "stacktrace": …, "unrecoverable": …}}
    {"kind": "fatal", "message": "cannot import processor …"}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import sys
from typing import Any, Final

from corral.engine.errors import CorralError, InvalidArgumentError, UnrecoverableError
from corral.engine.job import encode_json
from corral.engine.policy import REMOTE_STACKTRACE_ATTRIBUTE, format_stacktrace

__all__ = [
    "SandboxedProcessorError",
    "SandboxedProtocolError",
]


class SandboxedProcessorError(CorralError):
    """A sandboxed processor raised an exception that could not be rebuilt as itself.

    ``str(error)`` is the original message; ``remote_type`` names the original class.
    """

    def __init__(self, message: str, remote_type: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type


class SandboxedProtocolError(CorralError):
    """A sandboxed child process sent something that is not a message of the protocol."""


STOP: Final = pickle.dumps(("stop",))

_DUMPS: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


# ---------------------------------------------------------------------------- worker → child


@dataclasses.dataclass(frozen=True, slots=True)
class RunRequest:
    """Run the processor on this job (as its run ``run``)."""

    run: int
    queue_name: str
    job_id: str
    token: str | None
    fields: dict[str, str]

    def encode(self) -> bytes:
        return pickle.dumps(
            ("run", self.run, self.queue_name, self.job_id, self.token, self.fields),
            pickle.HIGHEST_PROTOCOL,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    """The worker's answer to progress ``seq`` of run ``run``: stored, or why not."""

    run: int
    seq: int
    error: str | None

    def encode(self) -> bytes:
        return pickle.dumps(("ack", self.run, self.seq, self.error), pickle.HIGHEST_PROTOCOL)


def decode_worker_message(data: bytes) -> RunRequest | Ack | None:
    """Read a message from the worker (``None`` is ``stop``); the child trusts its worker."""
    message = pickle.loads(data)
    if message[0] == "run":
        return RunRequest(*message[1:])
    if message[0] == "ack":
        return Ack(*message[1:])
    return None


# ---------------------------------------------------------------------------- child → worker


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteFailure:
    """A processor's exception as a child describes it: data only, never the object."""

    module: str
    qualname: str
    args: list[Any] | None  # the exception's args when JSON can carry them
    message: str
    stacktrace: str  # formatted in the child, as the worker would in-process
    unrecoverable: bool

    @classmethod
    def of(cls, error: BaseException) -> RemoteFailure:
        kind = type(error)
        try:
            message = str(error)
        except Exception:
            message = kind.__name__
        args: list[Any] | None = list(error.args)
        try:
            _DUMPS(args)
        except (TypeError, ValueError, RecursionError):
            args = None
        return cls(
            kind.__module__,
            kind.__qualname__,
            args,
            message,
            format_stacktrace(error),
            isinstance(error, UnrecoverableError),
        )

    @property
    def type_name(self) -> str:
        return f"{self.module}.{self.qualname}"

    def rebuild(self) -> BaseException:
        """The exception to fail the job with, carrying the child's stacktrace.

        It is the original class when that class is already loaded here (nothing is imported on a
        child's word), is an ``Exception``, and called with the JSON ``args`` gives back the same
        message; else a :class:`SandboxedProcessorError` (an :class:`UnrecoverableError` for an
        unrecoverable one) with the message.
        """
        error = self._as_itself()
        if error is None:
            error = (
                UnrecoverableError(self.message)
                if self.unrecoverable
                else SandboxedProcessorError(self.message, self.type_name)
            )
        with contextlib.suppress(AttributeError):  # an exception class with __slots__
            setattr(error, REMOTE_STACKTRACE_ATTRIBUTE, self.stacktrace)
        return error

    def _as_itself(self) -> BaseException | None:
        target: Any = sys.modules.get(self.module)
        if self.args is None or target is None:
            return None
        for part in self.qualname.split("."):
            target = getattr(target, part, None)
        if not isinstance(target, type) or not issubclass(target, Exception):
            return None
        try:
            error = target(*self.args)
            same = str(error) == self.message
        except Exception:
            return None
        if not same or isinstance(error, UnrecoverableError) != self.unrecoverable:
            return None
        return error


@dataclasses.dataclass(slots=True)
class ChildMessage:
    """A message from a child, checked: ``kind`` is one of the four below."""

    kind: str  # "progress", "done", "failed" or "fatal"
    run: int | None = None  # None for "fatal"
    seq: int | None = None  # progress only
    value: Any = None  # the progress value or the result, decoded
    failure: RemoteFailure | None = None
    text: str = ""  # "fatal" only


def encode_progress(run: int, seq: int, encoded: str) -> bytes:
    """Progress ``seq`` of run ``run``; ``encoded`` is the value as JSON already."""
    return f'{{"kind":"progress","run":{run},"seq":{seq},"value":{encoded}}}'.encode()


def encode_result(run: int, job_id: str, result: Any) -> bytes:
    """The end of run ``run``: its result, or its failure if JSON cannot encode the result (the
    reason the worker gives in-process)."""
    try:
        encoded = encode_json(result, "return value of job {}", job_id)
    except InvalidArgumentError as exc:
        return encode_failure(run, UnrecoverableError(str(exc)))
    except RecursionError:
        reason = f"return value of job {job_id} cannot be encoded as JSON: it nests too deeply"
        return encode_failure(run, UnrecoverableError(reason))
    return f'{{"kind":"done","run":{run},"value":{encoded}}}'.encode()


def encode_failure(run: int, error: BaseException) -> bytes:
    failure = dataclasses.asdict(RemoteFailure.of(error))
    return _DUMPS({"kind": "failed", "run": run, "error": failure}).encode()


def encode_fatal(text: str) -> bytes:
    return _DUMPS({"kind": "fatal", "message": text}).encode()


def _field(message: dict[str, Any], name: str, kind: type, where: str = "") -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        where = where or f"{message.get('kind')!r} message"
        raise SandboxedProtocolError(f"{where} without a valid {name!r}")
    return value


def decode_child_message(data: bytes) -> ChildMessage:
    """Read and check a message from a child (untrusted: only JSON is ever decoded).

    Raises:
        SandboxedProtocolError: the data is not one of the protocol's messages.
    """
    try:
        message = _DECODER.decode(data.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SandboxedProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict):
        raise SandboxedProtocolError(f"not a JSON object: {type(message).__name__}")
    kind = message.get("kind")
    if kind == "fatal":
        return ChildMessage("fatal", text=_field(message, "message", str))
    if kind not in ("progress", "done", "failed"):
        raise SandboxedProtocolError(f"unknown message kind {kind!r}")
    run = _field(message, "run", int)
    if kind == "progress":
        if "value" not in message:
            raise SandboxedProtocolError("'progress' message without a value")
        return ChildMessage(kind, run, _field(message, "seq", int), message["value"])
    if kind == "done":
        if "value" not in message:
            raise SandboxedProtocolError("'done' message without a value")
        return ChildMessage(kind, run, value=message["value"])
    error = _field(message, "error", dict)
    where = "the error of a 'failed' message"
    failure = RemoteFailure(
        _field(error, "module", str, where),
        _field(error, "qualname", str, where),
        None if error.get("args") is None else _field(error, "args", list, where),
        _field(error, "message", str, where),
        _field(error, "stacktrace", str, where),
        error.get("unrecoverable") is True,
    )
    return ChildMessage(kind, run, failure=failure)
