"""Structural checks of a queue in BullMQ's Redis layout, and the reader of the transition log.

:func:`check_queue` is the Redis counterpart of ``MemoryBackend.check()``: it reads one queue's
structures atomically (one Lua script) and asserts

- every job is in exactly one of ``wait``, ``active``, ``prioritized``, ``delayed``,
  ``completed``, ``failed``, ``waiting-children`` (and at most once in the lists), and has its
  hash;
- every job hash under the queue's key base is in one of them (no job is stored unplaced);
- only active jobs hold a lock, and the ``stalled`` set holds only active jobs;
- the fields each state implies (``finishedOn`` when finished, ``processedOn`` when active, a
  priority when prioritized), and no marker while the queue is paused;
- no job's log (``<id>:logs``) outlives the job (a full read only).

:func:`read_layout` with ``job_ids`` reads only what concerns those jobs (plus the sizes and the
stalled set), which is cheap enough to follow every operation (the simulator does).

Job hashes are found by their key (``<prefix>:<queue>:<id>`` holding a hash; not ``meta``, nor
BullMQ's other hashes: ``metrics:*``, ``repeat:*``, a flow's ``<id>:processed`` and
``<id>:failed``), so a queue whose name extends another's with a colon (``a`` and ``a:b``) would
show the other's jobs as unplaced here: give such queues separate prefixes when checking them.

:func:`read_layout` with ``drain_log`` also reads and empties the transition log that scripts
loaded with ``Instrumentation(transition_log=True)`` keep (see
:mod:`corral.backends.redis.scripts`), looking at the jobs it names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from corral.backends.field_rules import assert_job_fields
from corral.backends.redis.keys import TRANSITION_LOG, QueueKeys
from corral.engine.states import JobState, Transition, next_state

if TYPE_CHECKING:
    from corral.backends.redis.backend import RedisBackend

#: The structures a job can be in, in the order the layout script reads them.
PLACES: Final = (
    JobState.WAITING,
    JobState.ACTIVE,
    JobState.PRIORITIZED,
    JobState.DELAYED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.WAITING_CHILDREN,
)

# KEYS: wait active prioritized delayed completed failed stalled marker meta waiting-children
# ARGV: base, the transition log's key or "" (to drain it first and look at the jobs it names),
#       then "*" for every job, or the ids of the jobs to look at.
# Returns: {sizes, placements {id, {state, ...}}, stalled {id, in active}, paused, marker size,
#           jobs {id, {field, value, ...}}, locked ids, log entries, ids of orphan logs}
_LAYOUT_LUA: Final = r"""
local base = ARGV[1]
local names = {'waiting', 'active', 'prioritized', 'delayed', 'completed', 'failed',
  'waiting-children'}
local place_keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[10]}
local checked = {'finishedOn', 'processedOn', 'priority'}
local sizes, placements, order = {}, {}, {}
local full = ARGV[3] == '*'
local function consider(id)
  if not placements[id] then
    placements[id] = {}
    order[#order + 1] = id
    return true
  end
  return false
end
local function place(id)
  if consider(id) then
    for s = 1, #place_keys do
      local count
      if s <= 2 then
        count = #redis.call('LPOS', place_keys[s], id, 'COUNT', 0)
      elseif redis.call('ZSCORE', place_keys[s], id) then
        count = 1
      else
        count = 0
      end
      for _ = 1, count do
        table.insert(placements[id], names[s])
      end
    end
  end
end
local entries = {}
if ARGV[2] ~= '' then
  entries = redis.call('LRANGE', ARGV[2], 0, -1)
  redis.call('DEL', ARGV[2])
  if not full then
    for _, entry in ipairs(entries) do
      place(cjson.decode(entry)[1])
    end
  end
end
for i = 1, #place_keys do
  local key = place_keys[i]
  if i <= 2 then
    sizes[i] = redis.call('LLEN', key)
  else
    sizes[i] = redis.call('ZCARD', key)
  end
  if full then
    local members
    if i <= 2 then
      members = redis.call('LRANGE', key, 0, -1)
    else
      members = redis.call('ZRANGE', key, 0, -1)
    end
    for _, id in ipairs(members) do
      consider(id)
      table.insert(placements[id], names[i])
    end
  end
end
local hashes, orphan_logs = {}, {}
if full then
  local pattern = string.gsub(base, '([%*%?%[%]\\])', '\\%1') .. '*'
  for _, key in ipairs(redis.call('KEYS', pattern)) do
    local suffix = string.sub(key, #base + 1)
    local kind = redis.call('TYPE', key)['ok']
    if kind == 'hash' and suffix ~= 'meta' and string.find(suffix, '^metrics:') == nil
        -- (a scheduler's hash is repeat:<id>; its iterations' hashes, repeat:<id>:<ms>, hold rjk)
        and (string.find(suffix, '^repeat:') == nil or redis.call('HEXISTS', key, 'rjk') == 1)
        and string.find(suffix, '^dn:') == nil
        and string.find(suffix, ':processed$') == nil
        and string.find(suffix, ':failed$') == nil then
      consider(suffix)
      hashes[suffix] = true
    elseif kind == 'string' and string.sub(suffix, -5) == ':lock' then
      consider(string.sub(suffix, 1, -6))
    elseif kind == 'list' and string.sub(suffix, -5) == ':logs'
        and redis.call('EXISTS', base .. string.sub(suffix, 1, -6)) == 0 then
      orphan_logs[#orphan_logs + 1] = string.sub(suffix, 1, -6)
    end
  end
else
  for i = 4, #ARGV do
    place(ARGV[i])
  end
end
local placed, jobs, locked = {}, {}, {}
for _, id in ipairs(order) do
  placed[#placed + 1] = id
  placed[#placed + 1] = placements[id]
  local fields = {}
  if not full then
    fields = redis.call('HGETALL', base .. id)
  elseif hashes[id] then
    local values = redis.call('HMGET', base .. id, unpack(checked))
    for f = 1, #checked do
      if values[f] then
        fields[#fields + 1] = checked[f]
        fields[#fields + 1] = values[f]
      end
    end
    fields[#fields + 1] = ''  -- present even when none of the checked fields is
    fields[#fields + 1] = ''
  end
  if #fields > 0 then
    jobs[#jobs + 1] = id
    jobs[#jobs + 1] = fields
  end
  if redis.call('EXISTS', base .. id .. ':lock') == 1 then
    locked[#locked + 1] = id
  end
end
local stalled = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  stalled[#stalled + 1] = id
  stalled[#stalled + 1] = redis.call('LPOS', KEYS[2], id) and 1 or 0
end
return {sizes, placed, stalled, redis.call('HEXISTS', KEYS[9], 'paused'),
  redis.call('ZCARD', KEYS[8]), jobs, locked, entries, orphan_logs}
"""


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class LoggedTransition:
    """One state change an instrumented script made.

    Attributes:
        job_id: the job.
        transition: the table's transition the script named.
        source: the state the script took the job from (None: not stored yet).
        target: where the transition table says that leads (None: deleted).
        fields: the job's hash at the moment of the change.
    """

    job_id: str
    transition: Transition
    source: JobState | None
    target: JobState | None
    fields: dict[str, str]

    @classmethod
    def parse(cls, entry: str) -> LoggedTransition:
        """Decode one log entry.

        Raises:
            corral.engine.states.InvalidTransitionError: if the table has no such move (a bug
                in a script).
        """
        job_id, name, source_name, flat = json.loads(entry)
        transition = Transition[name]
        source = JobState(source_name) if source_name else None
        pairs = flat if isinstance(flat, list) else []
        fields = {pairs[i]: pairs[i + 1] for i in range(0, len(pairs), 2)}
        return cls(job_id, transition, source, next_state(source, transition), fields)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What :func:`read_layout` saw of one queue.

    Attributes:
        sizes: the length of each structure (:data:`PLACES`).
        placements: for each job looked at, every structure it is in (a list twice if it is
            in a list twice); empty when it is in none.
        jobs: the hash of each job looked at that has one (in a full read, only the fields
            the checks look at).
        locked: the jobs looked at whose lock key exists.
        stalled: each member of the ``stalled`` set, and whether it is in ``active``.
        paused: whether ``meta`` says paused.
        marker_size: the number of members of the marker.
        complete: whether every job of the queue was looked at (a full read).
        log: the transition log drained before reading (``drain_log``), oldest change first.
        orphan_logs: the ids whose ``<id>:logs`` list exists without the job's hash (a full
            read only).
    """

    sizes: dict[JobState, int]
    placements: dict[str, list[JobState]]
    jobs: dict[str, dict[str, str]]
    locked: frozenset[str]
    stalled: dict[str, bool]
    paused: bool
    marker_size: int
    complete: bool
    log: list[LoggedTransition] = dataclasses.field(default_factory=list)
    orphan_logs: frozenset[str] = frozenset()


async def read_layout(
    client: Any,
    keys: QueueKeys,
    job_ids: Iterable[str] | None = None,
    *,
    drain_log: bool = False,
) -> Layout:
    """Read one queue's structures in one atomic step: everything (``job_ids`` None) or what
    concerns the given jobs.

    Args:
        client: a redis-py asyncio client (``decode_responses`` either way).
        keys: the queue's keys.
        job_ids: the jobs to look at; None for all of them (found in the structures and by
            their hash and lock keys).
        drain_log: first read and empty the queue's transition log (scripts loaded with
            ``Instrumentation(transition_log=True)`` keep it), and look at the jobs it names
            too; the changes are in :attr:`Layout.log`.

    Raises:
        corral.engine.states.InvalidTransitionError: if the log holds a move the transition
            table does not allow (a bug in a script).
    """
    script = client.register_script(_LAYOUT_LUA)
    names = ("wait", "active", "prioritized", "delayed", "completed", "failed")
    key_list = [keys.key(name) for name in names] + [keys.stalled, keys.marker, keys.meta]
    key_list.append(keys.key("waiting-children"))
    log = keys.base + TRANSITION_LOG if drain_log else ""
    args = [keys.base, log, "*"] if job_ids is None else [keys.base, log, "-", *job_ids]
    raw = await script(keys=key_list, args=args)
    sizes_raw, placed, stalled, paused, marker_size, jobs, locked, entries, orphans = raw
    placements = {
        _str(placed[i]): [JobState(_str(state)) for state in placed[i + 1]]
        for i in range(0, len(placed), 2)
    }
    fields_of = {}
    for i in range(0, len(jobs), 2):
        flat = jobs[i + 1]
        fields = {_str(flat[j]): _str(flat[j + 1]) for j in range(0, len(flat), 2)}
        fields.pop("", None)
        fields_of[_str(jobs[i])] = fields
    return Layout(
        sizes=dict(zip(PLACES, (int(size) for size in sizes_raw), strict=True)),
        placements=placements,
        jobs=fields_of,
        locked=frozenset(_str(job_id) for job_id in locked),
        stalled={_str(stalled[i]): stalled[i + 1] == 1 for i in range(0, len(stalled), 2)},
        paused=paused == 1,
        marker_size=int(marker_size),
        complete=job_ids is None,
        log=[LoggedTransition.parse(_str(entry)) for entry in entries],
        orphan_logs=frozenset(_str(job_id) for job_id in orphans),
    )


def check_layout(
    queue: str,
    layout: Layout,
    index: Mapping[str, JobState | None] | None = None,
    *,
    job_count: int | None = None,
) -> None:
    """Assert the structural invariants on what :func:`read_layout` saw.

    Args:
        queue: the queue's name, for messages.
        layout: what was read.
        index: where each job should be (None: gone), e.g. as a transition log says; jobs
            looked at but not in it are only checked for consistency.
        job_count: how many jobs the queue should hold in all (checked against the sizes).

    Raises:
        AssertionError: naming the queue, the job and the broken rule.
    """
    where = f"queue {queue!r}"
    for job_id, places in layout.placements.items():
        fields = layout.jobs.get(job_id)
        if len(places) > 1:
            raise AssertionError(f"{where}: job {job_id} is in {', '.join(places)} at once")
        state = places[0] if places else None
        if state is None and fields is not None:
            raise AssertionError(f"{where}: job {job_id} is stored unplaced")
        if state is not None:
            assert_job_fields(where, job_id, state, fields)
        if job_id in layout.locked and state is not JobState.ACTIVE:
            raise AssertionError(f"{where}: job {job_id} holds a lock but is {state}")
        if index is not None and job_id in index and index[job_id] is not state:
            raise AssertionError(
                f"{where}: job {job_id} should be {index[job_id]} but is {state or 'gone'}"
            )
    for job_id, active in layout.stalled.items():
        if not active:
            raise AssertionError(f"{where}: job {job_id} is marked stalled but is not active")
    if layout.orphan_logs:
        raise AssertionError(f"{where}: logs of deleted jobs {sorted(layout.orphan_logs)}")
    if layout.paused and layout.marker_size:
        raise AssertionError(f"{where}: the marker is set while the queue is paused")
    placed = sum(layout.sizes.values())
    if layout.complete and placed != len(layout.jobs):
        raise AssertionError(
            f"{where}: {placed} places but {len(layout.jobs)} stored jobs: a job is listed twice"
        )
    if job_count is not None and placed != job_count:
        raise AssertionError(
            f"{where}: {placed} places but {job_count} jobs: a job is missing or listed twice"
        )
    if layout.complete and index is not None:
        missing = {job_id for job_id, state in index.items() if state is not None} - set(
            layout.placements
        )
        if missing:
            raise AssertionError(f"{where}: jobs {sorted(missing)} are gone")


async def check_queue(backend: RedisBackend, queue: str) -> None:
    """Assert every structural invariant of ``queue`` (see the module docs).

    Raises:
        AssertionError: naming the queue, the job and the broken rule.
    """
    check_layout(queue, await read_layout(backend.client, backend.keys(queue)))


__all__ = [
    "PLACES",
    "Layout",
    "LoggedTransition",
    "check_layout",
    "check_queue",
    "read_layout",
]
