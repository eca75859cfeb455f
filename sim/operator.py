"""The operator process: a person at the dashboard, acting on the queue while the swarm runs.

During the safety phase an operator process does, at seeded random moments, what BullMQ users
do on day 2, through the public :class:`~corral.engine.queue.Queue` and
:class:`~corral.engine.job.Job` API only (so over the simulated network, with its partitions,
lost replies and timeouts): retry failed (and now and then completed) jobs one by one or all at
once, promote delayed jobs, change priorities and delays, update data, write log rows, remove
jobs (running ones included: those must be refused), clean old jobs of every state, drain, and
pause the queue for a while. Refusals and timeouts are part of the job: they are recorded and
the operator carries on.

In the liveness phase it stops acting, makes sure the queue is resumed, waits until nothing is
left to run, and obliterates the queue. The oracle knows every job an operator deleted (from
the deletions the store reports), so those are never counted as lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final

from corral.engine.errors import CorralError
from corral.engine.job import Job
from corral.engine.queue import Queue
from corral.sim.network import SimulatedConnectionError
from corral.sim.scenario import OperatorSettings

#: The states an operator picks a job from, for the calls that take one job.
PICK_STATES: Final = ("waiting", "prioritized", "delayed", "active", "completed", "failed")
#: The states ``clean`` is asked to clean.
CLEAN_STATES: Final = ("completed", "failed", "active", "wait", "delayed", "prioritized")


Record = Callable[[str, str, str], None]


class Operator:
    """One operator process's program (see the module docstring).

    Args:
        name: the process's name, for the trace.
        queue: a Queue over the process's simulated connection.
        rng: the operator's seeded randomness.
        record: ``record(kind, job, detail)`` appends to the world's trace.
        healed: whether the liveness phase has begun.
        producer_done: whether every job has been added.
        settings: how often and what it does.
    """

    def __init__(
        self,
        name: str,
        queue: Queue,
        rng: random.Random,
        record: Record,
        healed: Callable[[], bool],
        producer_done: Callable[[], bool],
        settings: OperatorSettings,
    ) -> None:
        self.name = name
        self.queue = queue
        self.rng = rng
        self._record = record
        self._healed = healed
        self._producer_done = producer_done
        self.settings = settings
        #: Set once the queue has been obliterated at the end of the run.
        self.done = False
        self._actions: list[tuple[float, Callable[[], Awaitable[str]]]] = [
            (3.0, self._retry_one),
            (1.0, self._retry_all),
            (2.0, self._promote_one),
            (0.5, self._promote_all),
            (2.0, self._change_priority),
            (2.0, self._change_delay),
            (1.0, self._update_data),
            (1.0, self._log),
            (2.0, self._remove),
            (2.0, self._clean),
            (settings.drain_weight, self._drain),
            (1.0, self._pause_for_a_while),
        ]

    async def run(self) -> None:
        """Act until the liveness phase, then resume, wait for the queue to empty, obliterate."""
        await self._until_done(self.queue.resume, "resume")  # a predecessor may have paused it
        while not self._healed():
            await asyncio.sleep(self.rng.expovariate(1000 / self.settings.mean_gap_ms))
            if self._healed():
                break
            weights = [weight for weight, _ in self._actions]
            action = self.rng.choices([act for _, act in self._actions], weights)[0]
            await self._attempt(action)
        await self._until_done(self.queue.resume, "resume")
        while not (self._producer_done() and await self._queue_is_idle()):
            await asyncio.sleep(5)
        await self._until_done(self.queue.obliterate, "obliterate")
        self.done = True

    async def _attempt(self, action: Callable[[], Awaitable[str]]) -> None:
        name = action.__name__.strip("_")
        try:
            detail = await action()
        except SimulatedConnectionError as exc:
            self._record("op-timeout", "", f"{name}: {exc}")
        except CorralError as exc:  # refused as BullMQ refuses it: nothing changed
            self._record("op-refused", "", f"{name}: {exc}")
        else:
            self._record("op", "", f"{name} {detail}".rstrip())

    async def _until_done(self, call: Callable[[], Awaitable[object]], what: str) -> None:
        """Repeat ``call`` until it answers (the liveness phase has no faults; before it, a
        partition can swallow a few tries)."""
        while True:
            try:
                await call()
            except SimulatedConnectionError:
                self._record("op-timeout", "", what)
                await asyncio.sleep(1)
            except CorralError as exc:
                self._record("op-refused", "", f"{what}: {exc}")
                await asyncio.sleep(1)
            else:
                self._record("op", "", what)
                return

    async def _queue_is_idle(self) -> bool:
        try:
            counts = await self.queue.get_job_counts()
        except SimulatedConnectionError:
            return False
        return not any(counts[state] for state in ("waiting", "prioritized", "delayed", "active"))

    async def _pick(self, *states: str) -> Job | None:
        """One of the first ten jobs of a state drawn from those of ``states`` that have jobs
        (as an operator picks from what the dashboard shows)."""
        counts = await self.queue.get_job_counts()
        present = [state for state in states or PICK_STATES if counts[state]]
        if not present:
            return None
        jobs = await self.queue.get_jobs(self.rng.choice(present), 0, 9)
        return self.rng.choice(jobs) if jobs else None

    # ------------------------------------------------------------------ the actions

    async def _retry_one(self) -> str:
        job = await self._pick("failed", "failed", "completed")
        if job is None:
            return "nothing finished"
        state = await self.queue.get_job_state(job.id)
        reset = self.rng.random() < 0.5
        # A job that left ``state`` meanwhile is a refusal (not in the <state> state).
        await job.retry(
            state if state in ("completed", "failed") else "failed",
            reset_attempts_made=reset,
            reset_attempts_started=reset,
        )
        return f"{job.id} from {state} reset={reset}"

    async def _retry_all(self) -> str:
        state = self.rng.choices(["failed", "completed"], [4, 1])[0]
        await self.queue.retry_jobs(state, count=self.rng.randint(1, 50))
        return state

    async def _promote_one(self) -> str:
        job = await self._pick("delayed")
        if job is None:
            return "nothing delayed"
        await job.promote()
        return job.id

    async def _promote_all(self) -> str:
        await self.queue.promote_jobs(count=self.rng.randint(1, 50))
        return ""

    async def _change_priority(self) -> str:
        job = await self._pick("waiting", "prioritized", "delayed", "active")
        if job is None:
            return "no job"
        priority, lifo = self.rng.randint(0, 10), self.rng.random() < 0.3
        await job.change_priority(priority, lifo=lifo)
        return f"{job.id} to {priority} lifo={lifo}"

    async def _change_delay(self) -> str:
        job = await self._pick("delayed", "delayed", "delayed", "waiting")  # refusals too
        if job is None:
            return "no job"
        delay = self.rng.randint(0, 30_000)
        await job.change_delay(delay)
        return f"{job.id} to {delay}ms"

    async def _update_data(self) -> str:
        job = await self._pick()
        if job is None:
            return "no job"
        await job.update_data({"edited-by": self.name})
        return job.id

    async def _log(self) -> str:
        job = await self._pick()
        if job is None:
            return "no job"
        rows = await job.log(f"looked at by {self.name}")
        return f"{job.id} rows={rows}"

    async def _remove(self) -> str:
        job = await self._pick()
        if job is None:
            return "no job"
        removed = await job.remove()  # a running job's lock makes this a refusal
        return f"{job.id} removed={removed}"

    async def _clean(self) -> str:
        state = self.rng.choice(CLEAN_STATES)
        grace = self.rng.choice([0, 10_000, 60_000])
        limit = self.rng.choice([0, 1, 5, 20])
        ids = await self.queue.clean(grace, limit, state)
        return f"{state} grace={grace} limit={limit}: {len(ids)} deleted"

    async def _drain(self) -> str:
        delayed = self.rng.random() < 0.5
        await self.queue.drain(delayed=delayed)
        return f"delayed={delayed}"

    async def _pause_for_a_while(self) -> str:
        await self.queue.pause()
        self._record("op", "", "pause")
        await asyncio.sleep(self.rng.randint(1_000, self.settings.pause_max_ms) / 1000)
        await self.queue.resume()  # lost? the next operator, or the liveness phase, resumes
        return "resume"
