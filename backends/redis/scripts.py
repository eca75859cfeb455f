"""Loads the Lua scripts in ``lua/`` as redis-py Script objects.

Each ``lua/<operation>.lua`` opens with a Redis 7 shebang line: ``#!lua`` for a script that
writes, ``#!lua flags=no-writes`` for a read. A script with a shebang and without the
``allow-oom`` flag is refused as a whole, before its first command, while the server is over
``maxmemory``; a script without one is refused only at its first memory-growing command, and
not at all once it has written anything (a ``DEL`` first, then writes past the limit). The
shebang is what keeps an out-of-memory refusal from landing between two writes of a script. It
is dropped (``script_flags=False``) for servers that do not know it: Redis 6.2 and fakeredis,
which would fail to compile it.

After the shebang comes a header comment whose ``KEYS:`` line names the queue
keys the script takes, in order (suffixes of :data:`corral.backends.redis.keys.KEY_TYPES`), and
whose ``Transitions:`` line names the :class:`corral.engine.states.Transition` members it
performs. Loading a script:

1. keeps the shebang line first (or drops it, see above);
2. replaces each ``--- @include "name"`` line with ``lua/includes/<name>.lua``;
3. puts a prelude in front that binds ``K`` (the queue keys by name, ``K.stalled_check`` for
   ``stalled-check``) and ``base`` (``ARGV[1]``, the ``<prefix>:<queue>:`` string job keys are
   built from), so that the names in the header are the only place the KEYS order is written;
4. registers the text with the client (``client.register_script``): calls go out as EVALSHA
   through the backend's :class:`~corral.backends.redis.pipeline.CommandQueue`, which loads the
   script again on NOSCRIPT (after a SCRIPT FLUSH or a restart); on Redis 7 (a single server)
   every script is instead a function of one library (:func:`load_library`), called as FCALL.

The prelude also defines two hooks for tests and the simulator (:class:`Instrumentation`), which
production loads as no-ops: ``moved(id, transition, source)``, which the scripts call at each
state change they make (in the order they make them, where the memory backend records the same
change), and the ``PLANTED`` table of deliberate bugs (empty unless asked for).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import re
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from corral.backends.redis.keys import KEY_TYPES, TRANSITION_LOG, QueueKeys
from corral.backends.redis.pipeline import CommandQueue, Head

#: The scripts, one per storage operation (plus the reads that must be atomic).
SCRIPT_NAMES: Final = (
    "add_jobs",
    "fetch_next",
    "finish",
    "extend_locks",
    "release",
    "check_stalled",
    "update_progress",
    "remove",
    "set_paused",
    "get_state",
    "get_counts",
    "get_lock",
    "retry_job",
    "promote_job",
    "update_data",
    "change_priority",
    "change_delay",
    "add_log",
    "get_job_logs",
    "move_jobs_to_wait",
    "clean",
    "drain",
    "obliterate",
    "trim_events",
    "get_counts_per_priority",
    "limit_settings",
    "move_to_wait",
    "add_job_scheduler",
    "update_job_scheduler",
    "remove_job_scheduler",
    "add_flow",
    "get_dependencies",
    "remove_child_dependency",
    "move_to_waiting_children",
    "move_to_delayed",
)

_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"$', re.MULTILINE)
_KEYS_LINE = re.compile(r"^\s*KEYS:\s*(.+)$", re.MULTILINE)
_TRANSITIONS = re.compile(r"Transitions:(.*?)\]\]", re.DOTALL)
_SHEBANG = re.compile(r"^#!lua(?: flags=([a-z,-]+))?\n")


class ScriptSourceError(Exception):
    """A Lua file in the package is malformed (a bug in corral, never a runtime condition)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScriptSource:
    """One operation's Lua program, ready to load.

    Attributes:
        name: the operation (the file's stem).
        keys: the queue key suffixes the script takes as KEYS, in order.
        transitions: the names of the transitions the header says it performs.
        flags: the shebang's flags (``("no-writes",)`` for a read; none for a script that
            writes, which Redis then refuses whole when out of memory).
        text: the full program (shebang unless dropped, prelude, includes and body).
        includes: the names of the includes the file asks for.
        body: the file after its shebang, without its include lines.
    """

    name: str
    keys: tuple[str, ...]
    transitions: tuple[str, ...]
    flags: tuple[str, ...]
    text: str
    includes: tuple[str, ...]
    body: str


#: The deliberate bugs the scripts can be loaded with (as the memory backend's PLANTABLE_BUGS).
PLANTABLE_BUGS: Final = frozenset(
    {
        "skip-token-check",
        "renew-without-owner",
        "lose-stalled-mark",
        "no-stall-limit",
        "finish-not-idempotent",
        "dedup-ignores-owner",
        "no-shared-limiter",
        "ignore-global-concurrency",
        "scheduler-no-guard",
        "remove-locked-job",
        "flow-release-before-record",
        "flow-stale-pending-count",
        "flow-fpof-continues",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class Instrumentation:
    """Hooks compiled into the scripts for tests and the simulator; the default has none.

    Attributes:
        transition_log: append every state change a script makes to the transition log of
            the queue the script was called on (the list ``ARGV[1]`` +
            :data:`~corral.backends.redis.keys.TRANSITION_LOG`) as the JSON array ``[job id,
            transition name, source state or false, [field, value, ...], job's queue base,
            [child key, value, ...]]``: the job's hash at that moment, the ``<prefix>:<queue>:``
            of the queue the job is in (a flow's script moves jobs of other queues too: one
            log keeps the order of all its moves), and the job's ``processed`` children at
            that moment (what a parent leaving waiting-children carries). Whoever turns it on
            drains the list (``corral.backends.redis.checks.read_layout(..., drain_log=True)``).
        planted_bugs: deliberate bugs to compile in (names from :data:`PLANTABLE_BUGS`), so
            that the simulator can show that it catches them.
    """

    transition_log: bool = False
    planted_bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.planted_bugs - PLANTABLE_BUGS
        if unknown:
            raise ValueError(f"unknown planted bug(s) {sorted(unknown)}")

    def prelude(self) -> str:
        """The Lua that defines ``moved`` and ``PLANTED``."""
        if self.transition_log:
            moved = (
                "local function moved(id, transition, source)\n"
                f"  redis.call('RPUSH', ARGV[1] .. '{TRANSITION_LOG}', cjson.encode({{id,"
                " transition, source or false, redis.call('HGETALL', base .. id), base,"
                " redis.call('HGETALL', base .. id .. ':processed')}))\n"
                "end\n"
            )
        else:
            moved = "local function moved(id, transition, source) end\n"
        planted = ", ".join(f"['{name}'] = true" for name in sorted(self.planted_bugs))
        return moved + f"local PLANTED = {{{planted}}}\n"


def _read(relative: str) -> str:
    return importlib.resources.files("corral.backends.redis").joinpath("lua", relative).read_text()


@functools.cache
def load_source(
    name: str, instrumentation: Instrumentation = Instrumentation(), script_flags: bool = True
) -> ScriptSource:
    """Read ``lua/<name>.lua`` and build its full program, with ``instrumentation``'s hooks.

    With ``script_flags=False`` the program has no shebang line (for Redis 6.2 and fakeredis).

    Raises:
        ScriptSourceError: if the file does not open with a ``#!lua`` line, the header lacks a
            ``KEYS:`` line, names an unknown key, or an include is missing.
    """
    body = _read(f"{name}.lua")
    shebang = _SHEBANG.match(body)
    if shebang is None:
        raise ScriptSourceError(f"{name}.lua: the first line is not '#!lua [flags=...]'")
    body = body[shebang.end() :]
    flags = tuple(shebang.group(1).split(",")) if shebang.group(1) else ()
    keys_line = _KEYS_LINE.search(body)
    if keys_line is None:
        raise ScriptSourceError(f"{name}.lua: the header has no 'KEYS:' line")
    listed = keys_line.group(1).strip()
    keys = () if listed == "(none)" else tuple(listed.split())
    unknown = [key for key in keys if key not in KEY_TYPES]
    if unknown:
        raise ScriptSourceError(f"{name}.lua: unknown queue key(s) {unknown}")
    transitions_line = _TRANSITIONS.search(body)
    if transitions_line is None:
        raise ScriptSourceError(f"{name}.lua: the header has no 'Transitions:' line")
    transitions = tuple(re.findall(r"\b[A-Z][A-Z_]+\b", transitions_line.group(1)))

    def include(match: re.Match[str]) -> str:
        try:
            return _read(f"includes/{match.group(1)}.lua")
        except FileNotFoundError:
            raise ScriptSourceError(f"{name}.lua: no include {match.group(1)!r}") from None

    prelude = f"local K = {_bindings(keys)}\nlocal base = ARGV[1]\n" + instrumentation.prelude()
    if script_flags:
        prelude = shebang.group(0) + prelude
    includes = tuple(match.group(1) for match in _INCLUDE.finditer(body))
    helpers = "".join(include(match) for match in _INCLUDE.finditer(body))
    body = _INCLUDE.sub("", body)
    text = prelude + used_part(helpers, body) + body
    return ScriptSource(name, keys, transitions, flags, text, includes, body)


def _bindings(keys: tuple[str, ...]) -> str:
    """The Lua table of a script's queue keys by name (``K``), from its KEYS."""
    # (``repeat`` is a Lua keyword: scripts read that key as ``K['repeat']``.)
    pairs = ", ".join(
        f"['{key}'] = KEYS[{i}]" if key == "repeat" else f"{key.replace('-', '_')} = KEYS[{i}]"
        for i, key in enumerate(keys, start=1)
    )
    return "{" + pairs + "}"


#: The includes in the order a function library defines them (each after those it uses).
INCLUDE_ORDER: Final = ("common", "state", "dedup", "limits", "scheduler", "flows")


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionLibrary:
    """Every script as a function of one Redis 7 function library.

    The includes are defined once, when the library loads, and shared by every function, rather
    than made anew on each call as EVALSHA makes them. One library rather than one per script:
    the server's Lua state then holds one copy of the helpers instead of dozens, and each call
    runs faster with the smaller heap (measured in bench/compare/README.md).

    Attributes:
        name: ``corral_<digest>``, the digest of :attr:`text`: versions of corral sharing a
            server keep their own library.
        text: the library (``#!lua name=...``, the includes, one ``register_function`` per
            script).
        functions: each script's function name (``corral_<script>_<digest>``) by script name.
    """

    name: str
    text: str
    functions: dict[str, str]


@functools.cache
def load_library(instrumentation: Instrumentation = Instrumentation()) -> FunctionLibrary:
    """Build the function library of every script in :data:`SCRIPT_NAMES`.

    Each function binds, at the start of each call, what a script's program binds as it starts:
    ``KEYS``, ``ARGV`` and ``base`` (locals of the library: a function gets them as arguments),
    ``K`` (its own keys), the flow hooks (set only for the scripts that include "flows", as
    their programs set them) and the batched marker flags of "common" (cleared: a call cut short
    by an error must not leave them set for the next).

    Raises:
        ScriptSourceError: if a script includes a file :data:`INCLUDE_ORDER` does not list.
    """
    sources = [load_source(name, instrumentation) for name in SCRIPT_NAMES]
    unknown = {name for source in sources for name in source.includes} - set(INCLUDE_ORDER)
    if unknown:
        raise ScriptSourceError(f"includes missing from INCLUDE_ORDER: {sorted(unknown)}")
    parts = ["local KEYS, ARGV, K, base\n", instrumentation.prelude()]
    parts += [_read(f"includes/{name}.lua") for name in INCLUDE_ORDER]
    parts.append("local FLOW_HOOKS = {child_failed = FLOW.child_failed, forget = FLOW.forget}\n")
    for source in sources:
        hooks = (
            "FLOW_HOOKS.child_failed, FLOW_HOOKS.forget"
            if "flows" in source.includes
            else "nil, nil"
        )
        flags = ", ".join(f"'{flag}'" for flag in source.flags)
        parts.append(
            f"redis.register_function{{function_name = '%(function:{source.name})s', "
            f"flags = {{{flags}}}, callback = function(keys, args)\n"
            f"KEYS, ARGV, base = keys, args, args[1]\nK = {_bindings(source.keys)}\n"
            f"FLOW.child_failed, FLOW.forget = {hooks}\nbatch_ready, made_ready = false, false\n"
            f"{source.body}\nend}}\n"
        )
    text = "".join(parts)
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    functions = {source.name: f"corral_{source.name}_{digest}" for source in sources}
    for script, function in functions.items():
        text = text.replace(f"%(function:{script})s", function)
    name = f"corral_{digest}"
    return FunctionLibrary(name, f"#!lua name={name}\n" + text, functions)


# A top-level definition of an include: ``local function name(`` up to the ``end`` at column 0,
# or ``local NAME = ...`` with its continuation lines (indented, or a closing ``}``).
_DEFINITION = re.compile(
    r"^local function (?P<function>\w+)\((?s:.*?)^end\n"
    r"|^local (?P<value>\w+) = [^\n]*\n(?:[ }][^\n]*\n)*",
    re.MULTILINE,
)
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
_COMMENT = re.compile(r"--\[\[.*?\]\]|--[^\n]*", re.DOTALL)


def _names(text: str) -> set[str]:
    """The words of Lua ``text`` outside its comments (strings included)."""
    return set(_NAME.findall(_COMMENT.sub(" ", text)))


def used_part(library: str, body: str) -> str:
    """``library`` (the included helpers) without the top-level definitions ``body`` does not
    reach, directly or through the definitions it uses.

    Every ``local function`` and ``local`` value of an include is a closure or table made anew
    each time the script runs, before its first command: with every helper of every include
    that is a few microseconds per call of the hottest scripts, for helpers they never call.
    Whatever is not a definition (a hook such as ``FLOW.forget = function ...``) is kept, and
    so is everything it names. A name is "reached" when it appears as a word in kept code
    (strings included), so the pruning can keep too much, never too little.
    """
    definitions = [
        (match.start(), match.end(), match.group("function") or match.group("value"))
        for match in _DEFINITION.finditer(library)
    ]
    kept_text = [body]
    previous = 0
    for start, end, _ in definitions:
        kept_text.append(library[previous:start])
        previous = end
    kept_text.append(library[previous:])
    reached = _names("".join(kept_text))
    kept = [False] * len(definitions)
    changed = True
    while changed:
        changed = False
        for index, (start, end, defined) in enumerate(definitions):
            if not kept[index] and defined in reached:
                kept[index] = changed = True
                reached.update(_names(library[start:end]))
    parts = []
    previous = 0
    for index, (start, end, _) in enumerate(definitions):
        parts.append(library[previous:start])
        if kept[index]:
            parts.append(library[start:end])
        previous = end
    parts.append(library[previous:])
    return "".join(parts)


class Scripts:
    """The scripts of one client, run through its :class:`CommandQueue`.

    Each script is registered with the client (``client.register_script``, which gives its
    SHA1) and run as EVALSHA in call order with the backend's other commands; on NOSCRIPT
    (after SCRIPT FLUSH or a server restart) the queue loads it again and repeats the call.
    With ``functions`` each is instead called as its function in the scripts' one library (see
    :func:`load_library`): a script's includes then cost nothing per call, where EVALSHA
    makes every helper closure of every include anew on each call (a fifth of the server's work
    for a job's finish, as measured with callgrind). On "Function not found" the queue loads the
    library again and repeats the call as EVAL.

    Args:
        client: the redis-py asyncio client the scripts are registered with.
        commands: the queue the calls go through.
        instrumentation: hooks to compile in (tests and the simulator only).
        script_flags: load the scripts with their shebang (Redis 7 script flags); False for
            servers that do not know it (Redis 6.2, fakeredis).
        functions: call the scripts as Redis functions (their libraries loaded already).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        commands: CommandQueue,
        instrumentation: Instrumentation = Instrumentation(),
        script_flags: bool = True,
        functions: bool = False,
    ) -> None:
        self._commands = commands
        self._scripts: dict[str, tuple[ScriptSource, str]] = {}
        self._heads: dict[tuple[str, str], Head] = {}
        self._call = "FCALL" if functions else "EVALSHA"
        library = load_library(instrumentation) if functions else None
        for name in SCRIPT_NAMES:
            source = load_source(name, instrumentation, script_flags)
            if library is not None:
                function = library.functions[name]
                commands.add_function(function, library.text, source.text)
                self._scripts[name] = (source, function)
            else:
                script = client.register_script(source.text)
                commands.add_script(script.sha, source.text)
                self._scripts[name] = (source, script.sha)

    def run(self, name: str, keys: QueueKeys, args: Sequence[str | int]) -> Awaitable[Any]:
        """Run script ``name`` on the queue ``keys``: ``ARGV`` is the queue's key base followed
        by ``args``. The call is queued before this returns."""
        head = self._heads.get((name, keys.base))
        if head is None:
            source, program = self._scripts[name]
            head = self._heads[name, keys.base] = Head(
                self._call,
                program,
                len(source.keys),
                *[keys.base + suffix for suffix in source.keys],
                keys.base,
            )
        return self._commands.call(head, *args)


async def load_functions(client: Redis) -> bool:
    """Load the scripts' function library (:func:`load_library`) if the server lacks it; False
    if it will not take it (Redis 6, a proxy or ACL that refuses FUNCTION): the scripts then
    run as EVALSHA.

    The library's name carries the digest of its text, so a library found under that name is
    this one, and versions of corral sharing a server keep their own. It stays on the server
    (in its RDB, like keys): one per corral version.
    """
    library = load_library()
    try:
        listed: list[Any] = await client.function_list(library="corral_*")
        if library.name not in {_library_name(entry) for entry in listed}:
            await client.function_load(library.text, replace=True)
    except ResponseError:
        return False
    return True


def _library_name(entry: Any) -> str:
    """The ``library_name`` of one FUNCTION LIST entry (a flat list or a map, by protocol)."""
    fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
    name = fields.get("library_name", fields.get(b"library_name", ""))
    return name.decode() if isinstance(name, bytes) else str(name)
