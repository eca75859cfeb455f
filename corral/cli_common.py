"""Helpers shared by the ``corral`` commands that work on a queue in Redis."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from corral.engine.errors import InvalidArgumentError
from corral.engine.job import validate_queue_name

if TYPE_CHECKING:
    from rich.console import Console

    from corral.backends.redis import RedisBackend

#: URL schemes ``RedisBackend.from_url`` accepts.
REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_problem(url: str | None, command: str) -> str | None:
    """Why ``url`` cannot be used by ``corral <command>`` (which needs a store shared across
    processes, so Redis), or None if it names a Redis server."""
    hint = "pass --url with a Redis URL, e.g. --url redis://localhost:6379/0"
    if not url:
        return f"corral {command} needs the Redis server the queue lives in: {hint}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return (
            f"corral {command} cannot use {url!r}: the in-memory backend lives inside one "
            f"process, so a separate `corral {command}` process would see an empty queue of "
            f"its own. Run Queue and Worker on MemoryBackend inside your program instead, or "
            f"{hint}"
        )
    if scheme not in REDIS_SCHEMES:
        return (
            f"corral {command}: unsupported URL {url!r} (expected redis://, rediss:// or unix://)"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        return f"corral {command}: invalid URL {url!r}: {exc}"
    return None


def check_target(args: argparse.Namespace, parser: argparse.ArgumentParser, command: str) -> None:
    """Exit with a usage error (status 2) unless ``--url`` names a Redis server and ``--queue``
    is a valid queue name."""
    problem = url_problem(args.url, command)
    if problem is None:
        try:
            validate_queue_name(args.queue)
        except InvalidArgumentError as exc:
            problem = f"corral {command}: {exc}"
    if problem is not None:
        parser.error(problem)


def connect(
    args: argparse.Namespace, parser: argparse.ArgumentParser, command: str
) -> RedisBackend:
    """The Redis backend named by ``--url`` and ``--prefix``; a usage error (status 2) if
    redis-py cannot parse the URL."""
    from corral.backends.redis import RedisBackend

    try:
        return RedisBackend.from_url(args.url, prefix=args.prefix)
    except ValueError as exc:
        parser.error(f"corral {command}: invalid URL {args.url!r}: {exc}")


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """The options naming a queue in Redis: ``--url`` and ``--queue`` (both required),
    ``--prefix``."""
    parser.add_argument(
        "--url",
        required=True,
        metavar="URL",
        help="required: Redis URL of the queue's server, e.g. redis://localhost:6379/0 "
        "(rediss:// and unix:// work too)",
    )
    parser.add_argument("--queue", required=True, metavar="NAME", help="required: the queue's name")
    parser.add_argument("--prefix", default="bull", help="key prefix (default: bull, as BullMQ)")


def rich_console(command: str, *, stderr: bool = False, file: TextIO | None = None) -> Console:
    """A rich Console for a command's human-readable output.

    Raises:
        SystemExit: with a message naming the ``cli`` extra when rich is not installed.
    """
    try:
        from rich.console import Console
    except ImportError:
        raise SystemExit(
            f"corral {command}: the human-readable output needs rich; install the cli extra "
            f"(pip install 'corral[cli]') or pass --json"
        ) from None
    options: dict[str, Any] = {"highlight": False, "stderr": stderr}
    if file is not None:
        options["file"] = file
    return Console(**options)
