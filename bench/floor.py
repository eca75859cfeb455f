"""A floor for the speed goal: the bookkeeping of adding and processing a job, with no layers.

What one no-op job costs at the least, whatever the design: the writes BullMQ's layout makes for
it (the job hash, the wait list, the state index, the lock, the active set, the finished set, four
event-log entries), a returned job object for the producer and one for the processor, and one
awaited processor coroutine — all inlined in a single coroutine, with no Storage protocol, no
operation lock, no result objects, no transition-table check, no validation and no worker events.
``bench/instructions.py --scenarios task,floor`` counts its instructions per job next to the
asyncio-task yardstick and the real engine's; the engine's cost above this floor is what its
layers cost.

This is a measuring stick, not an implementation: nothing in corral uses it.
"""

from __future__ import annotations

import collections
import time

CHUNK = 1_000  # jobs per bulk add, as in test_memory_throughput
_OPTS = '{"attempts":1,"delay":0}'


class _Job:
    __slots__ = ("fields", "id", "token")

    def __init__(self, job_id: str, fields: dict[str, str], token: str | None = None) -> None:
        self.id = job_id
        self.fields = fields
        self.token = token


async def _noop(job: _Job) -> None:
    return None


async def run(jobs: int) -> None:
    """Add ``jobs`` no-op jobs in bulk, then process them one at a time."""
    hashes: dict[str, dict[str, str]] = {}
    states: dict[str, str] = {}
    wait: collections.deque[str] = collections.deque()
    active: dict[str, None] = {}
    locks: dict[str, tuple[str, int]] = {}
    stalled: dict[str, None] = {}
    completed: dict[str, int] = {}
    completed_unsorted: list[str] = []  # members; their scores are in ``completed``
    events: collections.deque[tuple[int | str, ...]] = collections.deque(maxlen=10_000)
    counter = last_ms = seq = 0
    for start in range(0, jobs, CHUNK):
        now = time.time_ns() // 1_000_000
        added = []
        for data in range(start, min(start + CHUNK, jobs)):
            counter += 1
            job_id = str(counter)
            fields = {
                "name": "noop",
                "data": int.__repr__(data),
                "opts": _OPTS,
                "timestamp": str(now),
                "delay": "0",
                "priority": "0",
            }
            hashes[job_id] = fields
            if now > last_ms:
                last_ms, seq = now, 0
            else:
                seq += 1
            events.append((last_ms, seq, "added", "jobId", job_id, "name", "noop"))
            states[job_id] = "waiting"
            wait.appendleft(job_id)
            seq += 1
            events.append((last_ms, seq, "waiting", "jobId", job_id))
            added.append(_Job(job_id, dict(fields)))
    fetches = 0
    while wait:
        now = time.time_ns() // 1_000_000
        fetches += 1
        token = "worker:" + str(fetches)
        job_id = wait.pop()
        states[job_id] = "active"
        active[job_id] = None
        locks[job_id] = (token, now + 30_000)
        fields = hashes[job_id]
        fields["processedOn"] = str(now)
        fields["ats"] = str(int(fields.get("ats") or 0) + 1)
        if now > last_ms:
            last_ms, seq = now, 0
        else:
            seq += 1
        events.append((last_ms, seq, "active", "jobId", job_id, "prev", "waiting"))
        result = await _noop(_Job(job_id, dict(fields), token))
        return_value = "null" if result is None else repr(result)
        now = time.time_ns() // 1_000_000
        lock = locks.get(job_id)
        if lock is None or lock[0] != token or job_id not in active:
            raise AssertionError(f"job {job_id} lost its lock")
        del active[job_id]
        locks.pop(job_id, None)
        stalled.pop(job_id, None)
        fields["atm"] = str(int(fields.get("atm") or 0) + 1)
        fields["returnvalue"] = return_value
        fields["finishedOn"] = str(now)
        states[job_id] = "completed"
        completed[job_id] = now
        completed_unsorted.append(job_id)
        if now > last_ms:
            last_ms, seq = now, 0
        else:
            seq += 1
        events.append(
            (
                last_ms,
                seq,
                "completed",
                "jobId",
                job_id,
                "returnvalue",
                return_value,
                "prev",
                "active",
            )
        )
    if len(completed) != jobs:
        raise AssertionError(f"{len(completed)} of {jobs} jobs completed")
