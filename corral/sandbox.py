"""Sandboxed processors: run each job in a child process, so CPU-bound work cannot starve the
worker's event loop (lock renewal, stalled checks and the other slots keep running).

``Worker(..., processor="pkg.module:function", sandboxed=True)`` builds a
:class:`SandboxedRunner`; pass one as ``processor_runner=`` to choose its options.

How it works:

- **A pool of reused children.** At most ``concurrency`` child processes, started on demand with
  the ``spawn`` (default) or ``forkserver`` start method, never ``fork`` (the worker has threads
  and an event loop). A child imports the processor once by name and then runs one job at a time,
  for as many jobs as it lives. It inherits the parent's ``sys.path``.
- **The job in the child** is a :class:`corral.engine.Job` built from the same stored fields (id,
  name, data, opts, attempts_made, ...). ``await job.update_progress(v)`` and
  ``job.update_progress_sync(v)`` send the value to the worker, which stores it on the real job
  (``progress`` event) and answers; the call returns once it is stored, and raises if it could
  not be. Progress reported once the processor has returned (by a thread or task it left
  behind) raises and is stored nowhere. ``job.cancellation`` is never set in a child: see
  cancellation below.
- **Only JSON comes back** (:mod:`corral.sandbox_protocol`): the worker never unpickles what a
  child sends. (The worker sends the job's stored fields pickled: its own data, which the child
  trusts.) Every message of a job carries its *run* (an id the worker gives each job it sends):
  the worker takes only the messages of the run it waits for and drops (and logs at debug) the
  rest, so nothing of a finished run reaches another job.
- **Results and errors come back** as JSON. The result is encoded in the child; one JSON cannot
  encode fails the job (unrecoverable) with the reason a worker gives in-process ("return value
  of job 7 cannot be encoded as JSON: ..."). An exception fails the attempt as usual (retries,
  backoff, :class:`UnrecoverableError` stays unrecoverable) and the job's stored stacktrace is
  the one formatted *in the child*. It is rebuilt as its own class when that class is already
  loaded in the worker (nothing is imported on a child's word) and its JSON ``args`` give back
  the same message; otherwise it arrives as a :class:`SandboxedProcessorError` with the same
  message (an unrecoverable one as an :class:`UnrecoverableError`).
- **A child that breaks the protocol** (sends anything but the protocol's JSON messages) is
  killed, its job fails with :class:`SandboxedProtocolError`, and a fresh child takes later jobs.
- **A child that dies mid-job** (killed, segfault, ``os._exit``, ``sys.exit``) fails that
  attempt with :class:`SandboxedProcessExitedError` ("sandboxed processor process exited with
  code -9 (SIGKILL) while running job 7") and is replaced by a fresh child for later jobs.
- **Cancellation terminates the child.** Code in another process cannot observe the worker's
  cancellation token, and a CPU-bound child would not poll it anyway; so when the job's
  cancellation fires (lock lost, ``worker.cancel_job``), the child gets SIGTERM (SIGKILL after
  ``kill_grace`` seconds), the attempt fails with :class:`JobCancelledError`, and a fresh child
  takes later jobs. A forced close kills the busy children at once.
- **Closing** (the worker does it when it stops): graceful asks every child to exit after its
  current job and waits (killing those still alive after ``stop_timeout`` seconds); forced kills.
  Children never outlive the worker's process: each watches its parent and exits when it dies.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import signal
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from corral.engine.errors import CorralError, InvalidArgumentError, JobCancelledError
from corral.engine.job import Job
from corral.sandbox_child import child_main
from corral.sandbox_protocol import (
    STOP,
    Ack,
    ChildMessage,
    RunRequest,
    SandboxedProcessorError,
    SandboxedProtocolError,
    decode_child_message,
)

__all__ = [
    "SandboxedProcessExitedError",
    "SandboxedProcessorError",
    "SandboxedProtocolError",
    "SandboxedRunner",
    "import_processor",
    "processor_spec",
]

logger = logging.getLogger("corral.sandbox")

#: Start methods a sandbox may use (``fork`` is refused: the worker has threads and a loop).
START_METHODS: Final = ("spawn", "forkserver")


class SandboxedProcessExitedError(CorralError):
    """The child process running a job exited before answering."""

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------- naming processors


def import_processor(spec: str) -> Callable[..., Any]:
    """Import a processor named ``"package.module:function"`` (``function`` may be dotted).

    Raises:
        InvalidArgumentError: the name is malformed, the module cannot be imported, it has no
            such attribute, or the attribute is not callable.
    """
    named = 'processor must be callable, or named as "package.module:function"'
    if not isinstance(spec, str):
        raise InvalidArgumentError(f"{named}; got {spec!r}")
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name.strip() or not qualname.strip():
        raise InvalidArgumentError(f"{named}; got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidArgumentError(
            f"cannot import the module of processor {spec!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidArgumentError(
                f"processor {spec!r}: module {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not callable(target):
        raise InvalidArgumentError(f"processor {spec!r} is not callable: {target!r}")
    return target  # type: ignore[no-any-return]


def processor_spec(processor: object) -> tuple[str, Callable[..., Any]]:
    """Return the ``"module:function"`` name a child imports, and the function it names.

    Accepts such a name, or a function defined at the top level of an importable module (not
    ``__main__``, not a lambda, closure or bound method): one that importing its
    ``__module__`` and ``__qualname__`` gives back.

    Raises:
        InvalidArgumentError: anything else, or a name that cannot be imported here.
    """
    if isinstance(processor, str):
        return processor, import_processor(processor)
    module = getattr(processor, "__module__", None)
    qualname = getattr(processor, "__qualname__", None)
    hint = (
        'a sandboxed processor must be named as "package.module:function", or be a function '
        "defined at the top level of an importable module (the child process imports it by name)"
    )
    if not callable(processor):
        raise InvalidArgumentError(f"{hint}; got {processor!r}")
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise InvalidArgumentError(f"{hint}; {processor!r} cannot be imported by name")
    if module == "__main__":
        raise InvalidArgumentError(
            f"{hint}; {processor!r} is defined in __main__, which a child process does not "
            "import: move it to a module"
        )
    spec = f"{module}:{qualname}"
    if import_processor(spec) is not processor:
        raise InvalidArgumentError(f"{hint}; {spec!r} does not import {processor!r}")
    return spec, processor


# ---------------------------------------------------------------------------- the parent side

# Every child process alive, across runners: killed at interpreter exit if a worker was never
# closed (multiprocessing would otherwise wait for them forever).
_LIVE: weakref.WeakSet[BaseProcess] = weakref.WeakSet()
_atexit_registered = False


def _kill_live_children() -> None:
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.kill()
            process.join(1)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "closed its pipe"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited with code {code} ({signal.Signals(-code).name})"
    return f"exited with code {code}"


class _Child:
    """One child process, its pipe and its reader thread, as seen from the worker's loop."""

    def __init__(self, process: BaseProcess, conn: Connection, loop: asyncio.AbstractEventLoop):
        self.process = process
        self.pid = process.pid
        self.conn = conn
        self.loop = loop
        self.exited: asyncio.Future[int | None] = loop.create_future()
        self.fatal: str | None = None  # the child could not import the processor
        self.retired = False  # terminated or told to stop: not to be given another job
        # The run in progress: its id (None between runs and once its answer arrived), its job,
        # the future of its answer and the tasks storing its progress.
        self._run: int | None = None
        self._job: Job | None = None
        self._result: asyncio.Future[Any] | None = None
        self._progress: set[asyncio.Task[None]] = set()
        self._reader = threading.Thread(
            target=self._read, name=f"corral-sandbox-reader-{self.pid}", daemon=True
        )
        self._reader.start()

    @property
    def reusable(self) -> bool:
        return not self.retired and not self.exited.done()

    # Runs on the reader thread: the only reader of the pipe, and the only thing that waits.
    def _read(self) -> None:
        sentinel = self.process.sentinel
        while True:
            ready = multiprocessing.connection.wait([self.conn, sentinel])
            if self.conn not in ready:
                break  # the process exited and everything it sent has been read
            try:
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                break
            message: ChildMessage | SandboxedProtocolError
            try:  # decoded here, off the loop
                message = decode_child_message(data)
            except SandboxedProtocolError as exc:
                message = exc
            if not self._post(self._on_message, message):
                return
        self.process.join(5)
        code = self.process.exitcode
        for _ in range(50):  # another thread's waitpid (multiprocessing's cleanup) may have
            if code is not None:  # reaped it a moment ago and not yet recorded the code
                break
            time.sleep(0.01)
            code = self.process.exitcode
        self._post(self._on_exit, code)

    def _post(self, callback: Callable[..., None], *args: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _on_message(self, message: ChildMessage | SandboxedProtocolError) -> None:
        if isinstance(message, SandboxedProtocolError):
            self._misbehaved(str(message))
            return
        if message.kind == "fatal":
            self.fatal = message.text
            return
        job, result = self._job, self._result
        if message.run != self._run or job is None or result is None or result.done():
            # A finished run's: from a thread or task its processor left behind. Never another
            # job's; the child's reporter gets an answer, so that it does not wait forever.
            logger.debug(
                "sandboxed process %s: dropped %s of run %s (current run: %s)",
                self.pid,
                message.kind,
                message.run,
                self._run,
            )
            if message.kind == "progress" and message.run is not None and message.seq is not None:
                reason = f"progress of a finished run ({message.run}) is dropped"
                self.send(Ack(message.run, message.seq, reason).encode())
            return
        if message.kind == "progress":
            task = self.loop.create_task(self._forward_progress(job, message))
            self._progress.add(task)
            task.add_done_callback(self._progress.discard)
            return
        self._run = None  # answered: nothing more of this run is taken
        if message.kind == "done":
            result.set_result(message.value)
        elif message.failure is not None:
            result.set_exception(message.failure.rebuild())

    def _misbehaved(self, reason: str) -> None:
        """The child sent something outside the protocol: fail its job, and replace it."""
        job, result = self._job, self._result
        self._run = None
        text = f"sandboxed processor process {self.pid} broke the protocol ({reason})"
        if job is not None and result is not None and not result.done():
            result.set_exception(
                SandboxedProtocolError(f"{text} while running job {job.id}; it was killed")
            )
        else:
            logger.warning("%s between jobs; it was killed", text)
        self.kill()

    async def _forward_progress(self, job: Job, message: ChildMessage) -> None:
        error: str | None = None
        try:
            await job.update_progress(message.value)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
        if message.run is not None and message.seq is not None:
            self.send(Ack(message.run, message.seq, error).encode())

    def _on_exit(self, code: int | None) -> None:
        _LIVE.discard(self.process)
        self.conn.close()  # closed here, on the loop thread that sends, never under a send
        for task in self._progress:
            task.cancel()
        if not self.exited.done():
            self.exited.set_result(code)
        self._fail_for_exit(code)

    def _fail_for_exit(self, code: int | None) -> None:
        result, job = self._result, self._job
        if result is not None and not result.done() and job is not None:
            text = f"sandboxed processor process {_exit_text(code)} while running job {job.id}"
            if self.fatal is not None:
                text = f"{text}: {self.fatal}"
            result.set_exception(SandboxedProcessExitedError(text, code))

    # Runs on the loop.
    def send(self, data: bytes) -> bool:
        if self.conn.closed:
            return False
        try:
            self.conn.send_bytes(data)
        except (OSError, ValueError):
            return False
        return True

    def terminate(self, kill_grace: float) -> None:
        """SIGTERM now, SIGKILL after ``kill_grace`` seconds if still alive."""
        self.retired = True
        if self.exited.done():
            return
        with contextlib.suppress(Exception):
            self.process.terminate()
        handle = self.loop.call_later(kill_grace, self.kill)
        self.exited.add_done_callback(lambda _: handle.cancel())

    def kill(self) -> None:
        self.retired = True
        if not self.exited.done():
            with contextlib.suppress(Exception):
                self.process.kill()

    async def wait_exited(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        return self.exited.done()

    async def run(self, job: Job, run: int, kill_grace: float) -> Any:
        result: asyncio.Future[Any] = self.loop.create_future()
        self._run, self._job, self._result = run, job, result
        request = RunRequest(run, job.queue_name, job.id, job.token, dict(job.fields))
        if not self.send(request.encode()) and self.exited.done():
            self._fail_for_exit(self.exited.result())
        cancelled = asyncio.ensure_future(job.cancellation.wait())
        try:
            await asyncio.wait((result, cancelled), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # a forced close: the job goes back to wait at once
            self._detach()
            self.kill()
            raise
        finally:
            cancelled.cancel()
        if result.done():
            self._run = self._job = self._result = None
            if self._progress:  # this run's progress is stored before its result
                await asyncio.wait(set(self._progress))
            return result.result()
        self._detach()
        self.terminate(kill_grace)
        await self.wait_exited(kill_grace + 5)
        raise JobCancelledError(
            f"{job.cancellation.reason} (the sandboxed process running it was terminated)"
        )

    def _detach(self) -> None:
        if self._result is not None and not self._result.done():
            self._result.cancel()
        self._run = self._job = self._result = None


class SandboxedRunner:
    """Runs a named processor in a pool of reused child processes (see the module docstring).

    Args:
        processor: ``"package.module:function"``, or a top-level function importable by name
            (see :func:`processor_spec`); plain ``def`` or ``async def``, taking the job.
        concurrency: most children at once (the worker's ``concurrency``).
        start_method: ``"spawn"`` (default) or ``"forkserver"``.
        kill_grace: seconds between SIGTERM and SIGKILL when a job's run is cancelled.
        stop_timeout: seconds a graceful :meth:`close` waits before killing children.

    Raises:
        InvalidArgumentError: at construction, for a processor that cannot be imported by name
            or a bad option.
    """

    def __init__(
        self,
        processor: str | Callable[..., Any],
        *,
        concurrency: int = 1,
        start_method: str = "spawn",
        kill_grace: float = 1.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.spec, self.function = processor_spec(processor)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if start_method not in START_METHODS:
            raise InvalidArgumentError(
                f"start_method must be one of {START_METHODS}, got {start_method!r} (fork is "
                "unsafe in a process that has threads and an event loop)"
            )
        if start_method not in multiprocessing.get_all_start_methods():
            raise InvalidArgumentError(f"start method {start_method!r} is not available here")
        for label, value in (("kill_grace", kill_grace), ("stop_timeout", stop_timeout)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"{label} must be a number of seconds >= 0: {value!r}")
        self.concurrency = concurrency
        self.start_method = start_method
        self.kill_grace = float(kill_grace)
        self.stop_timeout = float(stop_timeout)
        self._context = (
            multiprocessing.get_context("spawn")
            if start_method == "spawn"
            else multiprocessing.get_context("forkserver")
        )
        self._children: set[_Child] = set()  # every child not yet seen exiting
        self._idle: list[_Child] = []
        self._slots: asyncio.Semaphore | None = None
        self._starter: concurrent.futures.ThreadPoolExecutor | None = None
        self._numbers = itertools.count(1)
        self._runs = itertools.count(1)  # every job sent to a child is a new run
        self._closed = False

    def __repr__(self) -> str:
        return f"<SandboxedRunner {self.spec!r} children={len(self._children)}>"

    @property
    def pids(self) -> list[int]:
        """Process ids of the children alive now."""
        return sorted(c.pid for c in self._children if c.pid is not None)

    async def run(self, job: Job) -> Any:
        """Run the processor on ``job`` in a child; return its result or raise its error."""
        if self._closed:
            raise CorralError("this sandbox is closed")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            child = self._take_idle() or await self._start()
            try:
                return await child.run(job, next(self._runs), self.kill_grace)
            finally:
                if child.reusable and not self._closed:
                    self._idle.append(child)

    async def close(self, force: bool = False) -> None:
        """Stop every child: ask them to exit after their current job, or kill them (force)."""
        self._closed = True
        self._idle.clear()
        children = list(self._children)
        for child in children:
            if force:
                child.kill()
            else:
                child.retired = True
                child.send(STOP)
        for child in children:
            if not await child.wait_exited(self.stop_timeout if not force else 5.0):
                child.kill()
                await child.wait_exited(5.0)
        if self._starter is not None:
            self._starter.shutdown(wait=False)

    def _take_idle(self) -> _Child | None:
        while self._idle:
            child = self._idle.pop()
            if child.reusable:
                return child
        return None

    async def _start(self) -> _Child:
        global _atexit_registered
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=child_main,
            args=(child_conn, self.spec),
            name=f"corral-sandbox-{next(self._numbers)}",
        )
        if self._starter is None:
            # One thread, so that starts never race inside multiprocessing's bookkeeping.
            self._starter = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="corral-sandbox-start"
            )
        started = loop.run_in_executor(self._starter, process.start)
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            started.add_done_callback(lambda _: _abandon(process, parent_conn, child_conn))
            raise
        except Exception as exc:
            _abandon(process, parent_conn, child_conn)
            raise CorralError(f"cannot start a sandboxed process: {exc}") from exc
        child_conn.close()  # the child has its own copy now; ours would hide its exit
        _LIVE.add(process)
        if not _atexit_registered:  # after multiprocessing's own hook, so it runs before it
            atexit.register(_kill_live_children)
            _atexit_registered = True
        child = _Child(process, parent_conn, loop)
        self._children.add(child)
        child.exited.add_done_callback(lambda _: self._children.discard(child))
        return child


def _abandon(process: BaseProcess, *conns: Connection) -> None:
    if process.pid is not None:
        with contextlib.suppress(Exception):
            process.kill()
            process.join(1)
    for conn in conns:
        conn.close()
