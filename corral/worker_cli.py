"""``corral worker module:function``: run a Worker on a queue in Redis until told to stop.

Like ``rq worker`` or ``celery worker``: the processor is imported from a module path, every job
event is logged with :mod:`logging`, and SIGTERM or SIGINT stops the worker gracefully. A stop
lets running jobs finish for up to ``--grace`` seconds; then the worker closes with force, which
releases the locks of the jobs still running and puts them back at the front of wait at once (no
stall counted, so another worker takes them right away). A second signal forces at once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from corral.cli_common import add_redis_arguments, check_target, connect
from corral.engine import CorralError, Job, UnrecoverableError, Worker
from corral.engine.errors import lock_renewal_error_text
from corral.engine.escapes import PROCESS_EXITS

if TYPE_CHECKING:
    from corral.backends.redis import RedisBackend
    from corral.metrics import Exporter

logger = logging.getLogger("corral.worker")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


DESCRIPTION = """\
Process the jobs of a queue in Redis with the function module:function (async def or plain
def, taking a Job). Every job event is logged. SIGTERM or SIGINT stops the worker: running jobs
may finish for up to --grace seconds, then the ones still running are handed back to the front
of the queue at once (no stall counted). A second signal hands them back at once."""


class ProcessorImportError(Exception):
    """The processor named on the command line cannot be imported or is not callable."""


def load_processor(spec: str) -> Any:
    """Import the callable named ``module:attribute`` (the attribute may be dotted,
    ``module:Class.method``). The current directory is searched too, after ``sys.path``.

    Raises:
        ProcessorImportError: saying what is wrong and how to name a processor.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ProcessorImportError(
            f"the processor must be given as module:function (e.g. myapp.jobs:send_email), "
            f"got {spec!r}"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        # Last, not first: a folder in the current directory must not shadow an installed
        # package (corral itself included, in the worker and in sandboxed children).
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ProcessorImportError(
                f"cannot import module {module_name!r} of processor {spec!r}: {exc}. Is it "
                f"installed, or on PYTHONPATH? (the current directory is searched too)"
            ) from exc
        raise ProcessorImportError(
            f"importing module {module_name!r} of processor {spec!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise ProcessorImportError(
            f"importing module {module_name!r} of processor {spec!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ProcessorImportError(
                f"module {module_name!r} has no attribute {attribute!r} (processor {spec!r})"
            ) from None
    if not callable(target):
        raise ProcessorImportError(
            f"processor {spec!r} is a {type(target).__name__}, not a function"
        )
    return target


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``worker`` subcommand."""
    parser = commands.add_parser(
        "worker",
        help="process the jobs of a queue in Redis with module:function until SIGTERM/SIGINT",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "processor",
        metavar="module:function",
        help="the processor: an async def or plain def taking a Job (its return value is "
        "stored as the job's result)",
    )
    add_redis_arguments(parser)
    parser.add_argument(
        "--concurrency", type=int, default=1, metavar="N", help="jobs run at once (1)"
    )
    parser.add_argument(
        "--lock-duration",
        type=int,
        default=30_000,
        metavar="MS",
        help="lock TTL of a running job, renewed every MS/2 (30000)",
    )
    parser.add_argument(
        "--stalled-interval",
        type=int,
        default=30_000,
        metavar="MS",
        help="time between stalled checks, shared by the queue's workers (30000)",
    )
    parser.add_argument(
        "--max-stalled-count",
        type=int,
        default=1,
        metavar="N",
        help="stalls a job may survive; one more fails it (1)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=8.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running jobs may finish before they are handed back "
        "to the queue (default 8: below docker stop's 10 s and Kubernetes' 30 s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (needs the prometheus "
        "extra; 0 picks a free port)",
    )
    parser.add_argument(
        "--metrics-addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="the address --metrics-port binds: 127.0.0.1 (default) serves this machine only; "
        "0.0.0.0 (or ::) every interface, e.g. for a Prometheus outside the container",
    )
    parser.add_argument(
        "--sandboxed",
        action="store_true",
        help="run each job in a child process (at most --concurrency of them), so CPU-bound "
        "processors cannot starve lock renewal",
    )
    parser.add_argument("--name", help="worker name, stored as the jobs' processedBy (pb)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="INFO (default) logs every job; WARNING only failed attempts, stalls and errors",
    )


def run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Carry out ``corral worker``: 0 after a stop by signal, 1 on a runtime error, 2 on a
    usage error."""
    check_target(args, parser, "worker")
    for option, value, least in (
        ("--concurrency", args.concurrency, 1),
        ("--lock-duration", args.lock_duration, 1),
        ("--stalled-interval", args.stalled_interval, 1),
        ("--max-stalled-count", args.max_stalled_count, 0),
    ):
        if value < least:
            parser.error(f"{option} must be at least {least}, got {value}")
    if args.grace < 0:
        parser.error(f"--grace must not be negative, got {args.grace}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port must be 0..65535, got {args.metrics_port}")
    try:
        processor = load_processor(args.processor)
    except ProcessorImportError as exc:
        print(f"corral worker: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        try:
            import corral.metrics  # noqa: F401 - fails early, naming the extra
        except ImportError as exc:
            print(f"corral worker: --metrics-port: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT, stream=sys.stderr)
    code = asyncio.run(_serve(args, parser, processor))
    _exit_without_stuck_threads(code)
    return code


async def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser, processor: Any) -> int:
    backend = connect(args, parser, "worker")
    exporter: Exporter | None = None
    try:
        try:
            paused = await backend.is_paused(args.queue)  # reach the server now: fail fast
            worker = Worker(
                args.queue,
                args.processor if args.sandboxed else processor,
                backend,
                concurrency=args.concurrency,
                lock_duration=args.lock_duration,
                stalled_interval=args.stalled_interval,
                max_stalled_count=args.max_stalled_count,
                name=args.name,
                sandboxed=args.sandboxed,
            )
        except CorralError as exc:
            logger.error("%s", exc)
            return 1
        _log_events(worker)
        metrics_task: asyncio.Task[None] | None = None
        if args.metrics_port is not None:
            from corral.metrics import instrument, start_exporter

            try:
                exporter = start_exporter(args.metrics_port, args.metrics_addr)
            except OSError as exc:
                logger.error(
                    "cannot serve metrics on %s port %s: %s",
                    args.metrics_addr,
                    args.metrics_port,
                    exc,
                )
                return 1
            host = f"[{args.metrics_addr}]" if ":" in args.metrics_addr else args.metrics_addr
            logger.info("serving Prometheus metrics at http://%s:%s/metrics", host, exporter.port)
            metrics_task = asyncio.create_task(instrument(worker).run())
        logger.info(
            "worker %s on queue %r at %s (prefix %r): processor %s%s, concurrency %d, "
            "lock_duration %d ms, stalled_interval %d ms, max_stalled_count %d, grace %g s",
            worker.id,
            args.queue,
            backend.url,
            args.prefix,
            args.processor,
            " (sandboxed)" if args.sandboxed else "",
            args.concurrency,
            args.lock_duration,
            args.stalled_interval,
            args.max_stalled_count,
            args.grace,
        )
        if paused:
            logger.warning("queue %r is paused: no job is taken until it is resumed", args.queue)
        stopper = _Stopper(worker, args.grace)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopper.signal, signum)
        try:
            await worker.run()
        except PROCESS_EXITS as exc:
            # Raised by a processor: the worker has handed its jobs back; exit as Python would.
            logger.error("the processor raised %r: the worker closed", exc)
            if isinstance(exc, KeyboardInterrupt):
                return 130
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception:
            logger.exception("the worker failed")
            return 1
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await stopper.wait()
            if metrics_task is not None:
                metrics_task.cancel()
        return 0
    finally:
        if exporter is not None:
            exporter.close()
        await _close_backend(backend)


async def _close_backend(backend: RedisBackend) -> None:
    try:
        await backend.close()
    except Exception as exc:  # the server may be gone: nothing left to release
        logger.debug("closing the Redis connections: %s", exc)


class _Stopper:
    """Turns SIGTERM/SIGINT into a graceful close, then a forced one."""

    def __init__(self, worker: Worker, grace: float) -> None:
        self.worker = worker
        self.grace = grace
        self.signals = 0
        self._tasks: list[asyncio.Task[None]] = []

    def signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            self._tasks.append(asyncio.create_task(self._graceful(name)))
        else:
            running = _ids(self.worker.running_jobs)
            logger.warning(
                "second signal (%s): closing now, handing back %s to the front of wait",
                name,
                running or "no running job",
            )
            self._tasks.append(asyncio.create_task(self.worker.close(force=True)))

    async def _graceful(self, name: str) -> None:
        running = _ids(self.worker.running_jobs)
        if running:
            logger.info(
                "%s: closing; waiting up to %g s for %s to finish (a second signal hands "
                "the running jobs back at once)",
                name,
                self.grace,
                running,
            )
        else:
            logger.info("%s: closing", name)
        closing = asyncio.ensure_future(self.worker.close())
        done, _ = await asyncio.wait({closing}, timeout=self.grace)
        if not done:
            logger.warning(
                "grace period of %g s is over: handing back %s to the front of wait",
                self.grace,
                _ids(self.worker.running_jobs) or "no running job",
            )
            await self.worker.close(force=True)
        await closing

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _ids(jobs: list[Job]) -> str:
    if not jobs:
        return ""
    return ("job " if len(jobs) == 1 else "jobs ") + ", ".join(job.id for job in jobs)


def _describe(job: Job) -> str:
    return f"job {job.id} ({job.name})"


def _will_retry(job: Job, error: BaseException) -> bool:
    """Whether the failed attempt leaves attempts to try (``attempts_made`` counts it)."""
    return not isinstance(error, UnrecoverableError) and job.attempts_made < job.opts.attempts


def _log_events(worker: Worker) -> None:
    """Log the worker's events: jobs at INFO, failed attempts and stalls at WARNING, final
    failures and errors at ERROR."""
    clock = worker.clock

    def elapsed(job: Job) -> str:
        if job.processed_on is None:
            return ""
        return f" in {max(0, clock.now_ms() - job.processed_on) / 1000:.3f} s"

    def on_active(job: Job) -> None:
        logger.info("%s active (attempt %d)", _describe(job), job.attempts_started)

    def on_completed(job: Job, _result: object) -> None:
        logger.info("%s completed%s", _describe(job), elapsed(job))

    def on_failed(job: Job | None, error: BaseException) -> None:
        trace = error if error.__traceback__ is not None else None
        if job is None:
            logger.error("a job failed and was removed: %s", error)
        elif _will_retry(job, error):
            logger.warning(
                "%s attempt %d of %d failed%s: %s",
                _describe(job),
                job.attempts_made,
                job.opts.attempts,
                elapsed(job),
                error,
                exc_info=trace,
            )
        else:
            logger.error("%s failed%s: %s", _describe(job), elapsed(job), error, exc_info=trace)

    def on_stalled(job_id: str, previous: str) -> None:
        logger.warning(
            "job %s stalled (its lock lapsed while %s) and is back in wait", job_id, previous
        )

    def on_lock_renewal_failed(job_ids: list[str]) -> None:
        logger.warning(
            "could not renew the lock of %s (gone or taken): the processor was told to stop "
            "through job.cancellation, and the job will be recovered as stalled",
            ("job " if len(job_ids) == 1 else "jobs ") + ", ".join(job_ids),
        )

    def on_error(error: BaseException, job: Job | None) -> None:
        if job is not None and str(error) == lock_renewal_error_text(job.id):
            return  # logged by on_lock_renewal_failed
        where = f"{_describe(job)}: " if job is not None else ""
        trace = None if isinstance(error, CorralError) else error
        logger.error("%s%s", where, error or type(error).__name__, exc_info=trace)

    worker.on("active", on_active)
    worker.on("completed", on_completed)
    worker.on("failed", on_failed)
    worker.on("stalled", on_stalled)
    worker.on("lock_renewal_failed", on_lock_renewal_failed)
    worker.on("error", on_error)
    worker.on("drained", lambda: logger.debug("queue %r drained", worker.queue_name))
    worker.on("closed", lambda: logger.info("worker %s closed", worker.id))


def _exit_without_stuck_threads(code: int) -> None:
    """After a forced close, a plain-function processor may still be running in its thread
    (threads cannot be stopped). Its job is already back in the queue; exit now rather than
    wait for the thread (Python joins such threads at exit)."""
    stuck = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and thread.is_alive() and not thread.daemon
    ]
    if not stuck:
        return
    logger.warning(
        "exiting with %d processor thread(s) still running; their jobs were handed back",
        len(stuck),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
