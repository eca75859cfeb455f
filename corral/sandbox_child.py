"""The child side of a sandboxed processor (see :mod:`corral.sandbox`): a process that imports
the processor once, then runs the jobs the worker sends, one at a time.

One thread reads the pipe (``run`` requests for the main thread, ``ack`` answers for whichever
thread awaits that progress); any thread may send, one message at a time. Each job's run carries
the run id the worker gave it: progress reported for a run that has ended (from a thread or task
the processor left behind) is refused here, and the worker drops any that slips through.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from corral.engine.errors import CorralError
from corral.engine.job import Job, encode_json
from corral.sandbox_protocol import (
    Ack,
    RunRequest,
    decode_worker_message,
    encode_failure,
    encode_fatal,
    encode_progress,
    encode_result,
)


class _Reply:
    """The worker's answer to one progress report, awaited by the thread that sent it."""

    __slots__ = ("error", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: str | None = None

    def set(self, error: str | None) -> None:
        self.error = error
        self.event.set()


class ParentLink:
    """The child's end of the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._state = threading.Lock()  # guards the fields below
        self._run: int | None = None  # the run the main thread is in
        self._waiting: dict[int, _Reply] = {}  # by seq
        self._seqs = itertools.count(1)
        self._gone = False
        #: Jobs to run, in order; ``None`` once the worker asked to stop or went away.
        self.requests: queue.SimpleQueue[RunRequest | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, name="corral-sandbox-pipe", daemon=True).start()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._conn.send_bytes(data)

    def begin(self, run: int | None) -> None:
        """Enter run ``run`` (``None``: the run ended)."""
        with self._state:
            self._run = run

    def report_progress(self, run: int, job_id: str, encoded: str) -> None:
        """Send progress of run ``run``, and wait until the worker stored it.

        Raises:
            CorralError: the run has ended, or the worker could not store it.
        """
        reply = _Reply()
        with self._state:
            if self._gone:
                raise CorralError(f"cannot report progress of job {job_id}: the worker is gone")
            if run != self._run:
                raise CorralError(
                    f"progress of job {job_id} reported after its processor returned is dropped"
                )
            seq = next(self._seqs)
            self._waiting[seq] = reply
        self.send(encode_progress(run, seq, encoded))
        reply.event.wait()
        if reply.error is not None:
            raise CorralError(reply.error)

    # The only reader of the pipe.
    def _read(self) -> None:
        try:
            while True:
                message = decode_worker_message(self._conn.recv_bytes())
                if isinstance(message, Ack):
                    with self._state:
                        reply = self._waiting.pop(message.seq, None)
                    if reply is not None:
                        reply.set(message.error)
                else:  # a job, or None: stop after the current job (acks may still come)
                    self.requests.put(message)
        except (EOFError, OSError):
            pass
        with self._state:
            self._gone = True
            waiting = list(self._waiting.values())
            self._waiting.clear()
        for reply in waiting:
            reply.set("the worker closed the sandbox before storing the progress")
        self.requests.put(None)


class ChildJob(Job):
    """The job as a sandboxed processor sees it: progress goes to the worker, tagged with the
    job's run."""

    __slots__ = ("_link", "_run")

    def __init__(self, request: RunRequest, link: ParentLink) -> None:
        super().__init__(
            request.queue_name,
            request.job_id,
            request.fields,
            progress_writer=self._write_progress,
            token=request.token,
        )
        self._link = link
        self._run = request.run

    async def _write_progress(self, job_id: str, encoded: str) -> None:
        # Off the child's loop, so an async processor's other tasks keep running meanwhile.
        await asyncio.to_thread(self._link.report_progress, self._run, job_id, encoded)

    def update_progress_sync(self, value: Any) -> None:
        """Report progress from a plain ``def`` processor (or a thread of one)."""
        encoded = encode_json(value, "progress of job {}", self.id)
        self._link.report_progress(self._run, self.id, encoded)
        self._set_field("progress", encoded)


def _watch_parent() -> None:
    """Exit at once if the worker's process dies (no orphan keeps running doomed work)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="corral-sandbox-parent-watch", daemon=True).start()


def child_main(conn: Connection, spec: str) -> None:
    """Entry point of a sandbox child: import the processor, then run jobs until told to stop."""
    _watch_parent()
    # Imported here: corral.sandbox imports this module.
    from corral.sandbox import import_processor

    try:
        function = import_processor(spec)
    except BaseException as exc:
        text = f"cannot import processor {spec!r} in the sandboxed process: {exc}"
        conn.send_bytes(encode_fatal(text))
        return
    link = ParentLink(conn)
    with asyncio.Runner() as runner:
        while (request := link.requests.get()) is not None:
            link.begin(request.run)
            outcome = _run_one(function, runner, request, link)
            link.begin(None)  # before the answer: nothing of this run is sent after it
            link.send(outcome)


def _run_one(
    function: Callable[..., Any], runner: asyncio.Runner, request: RunRequest, link: ParentLink
) -> bytes:
    job = ChildJob(request, link)
    try:
        result = function(job)
        if inspect.isawaitable(result):
            result = runner.run(_awaited(result))
    except Exception as exc:
        return encode_failure(request.run, exc)
    return encode_result(request.run, job.id, result)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
