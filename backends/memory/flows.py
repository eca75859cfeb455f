"""Flows on the memory backend (``corral.engine.storage.FlowStorage``): trees added across
queues under the one lock, a parent's children, and step jobs. What a child's finish does to
its parent is in :mod:`corral.backends.memory.parents`, called by the job flow's own steps."""

from __future__ import annotations

from collections.abc import Sequence

from corral.backends.memory import parents
from corral.backends.memory.job_flow import JobFlowOps
from corral.backends.memory.store import ParentKeys
from corral.engine.errors import ResultCode
from corral.engine.flows import Dependencies, parse_parent_field
from corral.engine.states import JobState, Transition
from corral.engine.storage import FlowAdded, FlowNode, hash_fields


class FlowOps(JobFlowOps):
    """Flows: trees of jobs, a parent's children, step jobs."""

    def flow_queue_key(self, queue: str) -> str:
        return parents.queue_key(queue)

    def parent_processed(self, queue: str, job_id: str) -> dict[str, str]:
        """A parent's processed children (child key -> result), read without the lock: for the
        simulator's oracle, inside the operation that moves the parent."""
        keys = self._store(queue).flows.get(job_id)
        return {} if keys is None else dict(keys.processed)

    def _flow_refusal(self, nodes: Sequence[FlowNode]) -> FlowAdded | None:
        """Why the flow may not be stored (-5, -7), checked before anything is written."""
        in_flow = {parents.job_key(node.queue, node.job[7] or "") for node in nodes}
        for node in nodes:
            link = node.parent
            if link is None:
                continue
            if link.key not in in_flow and parents.locate_key(self, link.key) is None:
                return FlowAdded([], [], ResultCode.MISSING_PARENT, link.key)
            store = self._queues.get(node.queue)
            existing = None if store is None else store.jobs.get(node.job[7] or "")
            old_key = None if existing is None else existing.get("parentKey")
            if old_key and old_key != link.key and parents.locate_key(self, old_key) is not None:
                return FlowAdded([], [], ResultCode.PARENT_CANNOT_BE_REPLACED, link.key)
        return None

    async def add_flow(self, nodes: Sequence[FlowNode], now: int) -> FlowAdded:
        with self._mutex:
            refused = self._flow_refusal(nodes)
            if refused is not None:
                return refused
            job_ids: list[str] = []
            created: list[bool] = []
            for node in nodes:
                store = self._store(node.queue)
                job_id = node.job[7] or ""
                if node.waits_for_children and job_id not in store.jobs:
                    store.id_counter += 1
                    store.jobs[job_id] = hash_fields(node.job)
                    store.flows[job_id] = ParentKeys()
                    self._move(node.queue, store, job_id, Transition.ADD_WAITING_CHILDREN)
                    store.waiting_children.add(job_id, node.job[3])
                    self._emit(
                        store,
                        ("added", "jobId", job_id, "name", node.job[0]),
                        ("waiting-children", "jobId", job_id),
                    )
                    is_new = True
                else:
                    added = await self.add_jobs(node.queue, [node.job])
                    job_id, is_new = added.job_ids[0], added.created[0]
                    if node.waits_for_children:
                        store.flows.setdefault(job_id, ParentKeys())
                job_ids.append(job_id)
                created.append(is_new)
                if node.parent is not None:
                    self._link_child(node, job_id)
            for node in nodes:  # parents whose children all exist and completed already
                if node.waits_for_children:
                    self._release_if_done(node.queue, node.job[7] or "", now)
            return FlowAdded(job_ids, created)

    def _link_child(self, node: FlowNode, job_id: str) -> None:
        """Write a child's parent fields and add it to its parent's dependencies (or, a job that
        completed already, its result to the parent's processed)."""
        link = node.parent
        assert link is not None
        store = self._queues[node.queue]
        fields = store.jobs[job_id]
        fields["parentKey"] = link.key
        fields["parent"] = link.field()
        found = parents.locate_key(self, link.key)
        assert found is not None  # (checked by _flow_refusal)
        _, parent_store, parent_id = found
        keys = parent_store.flows.setdefault(parent_id, ParentKeys())
        child_key = parents.job_key(node.queue, job_id)
        if store.states.get(job_id) is JobState.COMPLETED:
            keys.processed[child_key] = fields.get("returnvalue", "null")
        else:
            keys.dependencies[child_key] = None

    def _release_if_done(self, queue: str, job_id: str, now: int) -> None:
        store = self._queues[queue]
        keys = store.flows.get(job_id)
        if (
            keys is not None
            and not keys.dependencies
            and store.states.get(job_id) is JobState.WAITING_CHILDREN
        ):
            parents.release_parent(self, queue, store, job_id, now, to_wait=False)

    async def get_dependencies(self, queue: str, job_id: str) -> Dependencies:
        with self._mutex:
            keys = self._store(queue).flows.get(job_id)
            if keys is None:
                return Dependencies()
            # (a sorted set: by failure time, then by key, as ZRANGE orders equal scores)
            failed = sorted(keys.unsuccessful, key=lambda key: (keys.unsuccessful[key], key))
            return Dependencies(
                dict(keys.processed), sorted(keys.dependencies), dict(keys.failed), failed
            )

    async def remove_child_dependency(self, queue: str, job_id: str) -> int:
        with self._mutex:
            store = self._store(queue)
            fields = store.jobs.get(job_id)
            if fields is None:
                return ResultCode.MISSING_JOB
            link = parse_parent_field(fields.get("parent"), fields.get("parentKey"))
            if link is None:
                return 1
            found = parents.locate_key(self, link.key)
            if found is None:
                return ResultCode.MISSING_PARENT
            parent_queue, parent_store, parent_id = found
            keys = parent_store.flows.get(parent_id)
            child_key = parents.job_key(queue, job_id)
            if keys is None or child_key not in keys.dependencies:
                return 1
            del keys.dependencies[child_key]
            del fields["parentKey"]
            fields.pop("parent", None)
            if (
                not keys.dependencies
                and parent_store.states.get(parent_id) is JobState.WAITING_CHILDREN
            ):
                parents.release_parent(
                    self, parent_queue, parent_store, parent_id, self._mutex.now, to_wait=True
                )
            return ResultCode.OK

    async def move_to_waiting_children(
        self, queue: str, job_id: str, token: str, child_key: str | None, now: int
    ) -> int:
        with self._mutex:
            store = self._store(queue)
            if job_id not in store.jobs:
                return ResultCode.MISSING_JOB
            keys = store.flows.get(job_id)
            if keys is not None and keys.unsuccessful:
                return ResultCode.FAILED_CHILDREN
            pending = keys is not None and (
                child_key in keys.dependencies if child_key else bool(keys.dependencies)
            )
            if not pending:
                return 1
            code = self._check_owner(store, job_id, token)
            if code is not ResultCode.OK:
                return code
            self._take_from_active(store, job_id)
            self._move(queue, store, job_id, Transition.MOVE_TO_WAITING_CHILDREN)
            store.waiting_children.add(job_id, now)
            self._emit(store, ("waiting-children", "jobId", job_id, "prev", "active"))
            return ResultCode.OK

    async def move_to_delayed(
        self, queue: str, job_id: str, token: str, delay: int, now: int
    ) -> ResultCode:
        with self._mutex:
            store = self._store(queue)
            code = self._check_owner(store, job_id, token)
            if code is not ResultCode.OK:
                return code
            self._take_from_active(store, job_id)
            store.jobs[job_id]["delay"] = str(delay)
            self._move(queue, store, job_id, Transition.MOVE_TO_DELAYED)
            due = now + delay
            self._push_delayed(store, job_id, due)
            self._emit(store, ("delayed", "jobId", job_id, "delay", str(due)))
            return ResultCode.OK
