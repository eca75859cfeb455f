"""The flow rules of the state machines of ``test_state_machine`` (issue 16): a mixin of rules
that add small random trees (depth <= 3, fan-out <= 4, random parent options, a leaf now and
then re-using an existing job's id, a root now and then added under an existing job), add
children under a running job (a step job) and move it to waiting-children or delayed, detach
children, and read a parent's dependencies. Completing, failing, retrying, removing, cleaning,
draining and obliterating the flows' jobs are the machine's own rules.

An invariant compares, for every job that took part in a flow, its parent's records as
``get_dependencies`` reads them (pending, processed, ignored, failed) and the flow fields of its
hash (``parentKey``, ``parent``, ``defa``), across the backends and with the model; the
parents' states are in the machine's snapshot (waiting-children is a state).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, multiple, precondition, rule
from machine_support import (
    QUEUE,
    Lease,
    canonical,
    drive,
    keeps,
    leases,
    outcomes,
    tamper,
    tampering,
)

from corral.engine.flows import ParentLink
from corral.engine.job import JobOptions, KeepJobs, encode_json
from corral.engine.storage import Complete, Fail, FetchRequest, FlowNode, Outcome, new_job
from corral.sim.fakeredis_store import FakeRedisStore
from corral.sim.model import QueueModel

#: The fields of a job's hash that flows write.
FLOW_FIELDS = ("parentKey", "parent", "defa")
#: Flow calls that only read.
_READS = frozenset({"get_dependencies"})
#: A failure flag ("" for none), as the child's ``parent`` field holds it.
flags = st.sampled_from(["", "", "fpof", "cpof", "idof", "rdof"])


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of a drawn flow; its id is given when the flow is added."""

    priority: int
    delay: int
    lifo: bool
    flag: str  # how its final failure affects its parent
    remove_on_fail: KeepJobs
    reuse: str | None  # a leaf may take an existing job's id (it is then re-linked)
    children: tuple[NodeSpec, ...] = ()


def _nodes(depth: int, fan_out: int) -> st.SearchStrategy[NodeSpec]:
    leaf = st.builds(
        NodeSpec,
        priority=st.sampled_from([0, 0, 0, 2]),
        delay=st.sampled_from([0, 0, 0, 1_000]),
        lifo=st.booleans(),
        flag=flags,
        remove_on_fail=keeps,
        reuse=st.none() | st.none() | st.sampled_from(["a", "b", "c"]),
    )
    if depth <= 1:
        return leaf
    inner = st.builds(
        NodeSpec,
        priority=st.sampled_from([0, 0, 2]),
        delay=st.sampled_from([0, 0, 0, 1_000]),
        lifo=st.booleans(),
        flag=flags,
        remove_on_fail=keeps,
        reuse=st.none(),
        children=st.lists(_nodes(depth - 1, 2), min_size=1, max_size=fan_out).map(tuple),
    )
    return leaf | inner


#: A flow's root: it has children, three levels at most, four children at most per node.
flow_trees = _nodes(3, 4).filter(lambda node: bool(node.children))
#: A child added under a running job.
leaves = _nodes(1, 0)


def _has_leases(machine: FlowRules) -> bool:
    return bool(machine.leases)


class FlowRules:
    """The flow rules and invariant (a mixin of the machine: see the module docstring)."""

    job_ids = Bundle("job_ids")
    if TYPE_CHECKING:  # provided by the machine
        model: QueueModel
        backends: dict[str, Any]
        known_ids: set[str]
        leases: list[Lease]
        tokens: int

        def now(self) -> int: ...
        def call(self, operation: str, *args: Any, **kwargs: Any) -> Any: ...
        def remember(self, fetched: Any) -> None: ...
        def finish(self, lease: Lease, how: str, outcome: Outcome, *args: Any) -> None: ...

    def __init__(self) -> None:
        super().__init__()
        self.flows_added = 0
        #: Every job that took part in a flow (as a node, or as the parent of one).
        self.flow_ids: set[str] = set()

    def flow_call(self, operation: str, *args: Any) -> Any:
        """Apply one flow call to every backend; the results must be identical."""
        results = {name: _run(backend, operation, args) for name, backend in self.backends.items()}
        expected = results["memory"]
        for name, got in results.items():
            assert got == expected, f"{operation}: {name} returned {got!r}, memory {expected!r}"
        return expected

    def _node(self, spec: NodeSpec, job_id: str, parent: ParentLink | None) -> FlowNode:
        opts = JobOptions(
            delay=spec.delay,
            priority=spec.priority,
            lifo=spec.lifo,
            job_id=job_id,
            remove_on_fail=spec.remove_on_fail,
            parent=parent,
        )
        job = new_job(
            "flow",
            "{}",
            encode_json(opts.to_json(), "opts"),
            self.now(),
            spec.delay,
            spec.priority,
            spec.lifo,
            job_id,
        )
        return FlowNode(QUEUE, job, parent, bool(spec.children))

    def _store_flow(self, nodes: list[FlowNode]) -> object:
        got = self.flow_call("add_flow", nodes, self.now())
        assert got == self.model.add_flow(nodes, self.now())
        ids = [job_id for job_id, created in zip(got.job_ids, got.created, strict=True) if created]
        self.known_ids.update(ids)
        self.flow_ids.update(got.job_ids)
        self.flow_ids.update(node.parent.job_id for node in nodes if node.parent is not None)
        return multiple(*ids)

    # ------------------------------------------------------------------ rules

    @rule(
        target=job_ids,
        tree=flow_trees,
        under=st.none() | st.none() | job_ids | st.just("never-added"),
        flag=flags,
    )
    def add_flow(self, tree: NodeSpec, under: str | None, flag: str) -> object:
        """``FlowProducer.add``: the tree level by level, parents first (its root under an
        existing job, or one that does not exist, now and then)."""
        self.flows_added += 1
        queue_key = self.model.flow_queue_key()
        root_link = None if under is None else ParentLink(queue_key, under, flag)
        nodes: list[FlowNode] = []
        used = {under}
        level = [(tree, f"f{self.flows_added}", root_link)]
        while level:
            below = []
            for spec, job_id, link in level:
                # A leaf re-uses an existing job's id only if that job has no children (so no
                # cycle is drawn: BullMQ would store one, and never finish it).
                reuse = spec.reuse
                if (
                    reuse is not None
                    and reuse not in used
                    and not self.model.get_dependencies(reuse).child_keys()
                ):
                    job_id = reuse
                used.add(job_id)
                nodes.append(self._node(spec, job_id, link))
                for k, child in enumerate(spec.children):
                    below.append(
                        (child, f"{job_id}.{k}", ParentLink(queue_key, job_id, child.flag))
                    )
            level = below
        return self._store_flow(nodes)

    @precondition(_has_leases)
    @rule(
        target=job_ids,
        lease=leases(),
        specs=st.lists(leaves, min_size=1, max_size=2),
        then_wait=st.booleans(),
    )
    def add_step_children(self, lease: Lease, specs: list[NodeSpec], then_wait: bool) -> object:
        """A running job adds children under itself (leaves), and then (the step-job
        pattern) waits for them."""
        queue_key = self.model.flow_queue_key()
        nodes = []
        for spec in specs:
            self.flows_added += 1
            leaf = dataclasses.replace(spec, reuse=None)
            link = ParentLink(queue_key, lease.job_id, spec.flag)
            nodes.append(self._node(leaf, f"s{self.flows_added}", link))
        added = self._store_flow(nodes)
        if then_wait:
            self.move_to_waiting_children(lease, "as-held", "any")
        return added

    @rule(
        work=st.lists(
            st.sampled_from([Complete('"v"'), Complete("1"), Complete("2"), Fail("boom", "[]")])
            | outcomes,
            min_size=1,
            max_size=8,
        )
    )
    def work(self, work: list[Outcome]) -> None:
        """A worker takes the next jobs and finishes each (mostly completes it), so that
        children finish and parents are released."""
        for outcome in work:
            self.tokens += 1
            request = FetchRequest(f"token-{self.tokens}", 30_000, None)
            got = self.call("fetch_next", QUEUE, request, self.now())
            assert got == canonical(self.model.fetch_next(request, self.now()))
            self.remember(got.job)
            if got.job is None:
                return
            lease = Lease(got.job.job_id, got.job.token)
            self.finish(lease, "as-held", outcome, False, 30_000, False, None)

    @precondition(_has_leases)
    @rule(
        lease=leases(),
        how=tampering,
        child=st.sampled_from(["any", "any", "pending", "not-pending"]),
    )
    def move_to_waiting_children(self, lease: Lease, how: str, child: str) -> None:
        """A step job waits for its children (all of them, or one)."""
        job_id, token = tamper(lease, how)
        pending = self.model.get_dependencies(job_id).unprocessed
        child_key = {
            "any": None,
            "pending": pending[0] if pending else None,
            "not-pending": f"{self.model.flow_queue_key()}:never-added",
        }[child]
        args = (job_id, token, child_key, self.now())
        got = self.flow_call("move_to_waiting_children", QUEUE, *args)
        assert got == self.model.move_to_waiting_children(*args)

    @precondition(_has_leases)
    @rule(lease=leases(), how=tampering, delay=st.sampled_from([0, 1, 1_000, 5_000]))
    def move_to_delayed(self, lease: Lease, how: str, delay: int) -> None:
        """A step job delays itself."""
        job_id, token = tamper(lease, how)
        got = self.flow_call("move_to_delayed", QUEUE, job_id, token, delay, self.now())
        assert got == self.model.move_to_delayed(job_id, token, delay, self.now())

    @rule(job_id=job_ids | st.just("never-added"))
    def remove_child_dependency(self, job_id: str) -> None:
        got = self.flow_call("remove_child_dependency", QUEUE, job_id)
        assert got == self.model.remove_child_dependency(job_id)

    @rule(job_id=job_ids | st.just("never-added"))
    def get_dependencies(self, job_id: str) -> None:
        got = self.flow_call("get_dependencies", QUEUE, job_id)
        assert got == self.model.get_dependencies(job_id)

    # ------------------------------------------------------------------ after every step

    @invariant()
    def flows_agree(self) -> None:
        """Each flow job's parent records and flow fields, on every backend and in the model."""
        for job_id in sorted(self.flow_ids):
            got = self.flow_call("get_dependencies", QUEUE, job_id)
            assert got == self.model.get_dependencies(job_id), job_id
            fields = {name: drive(b.get_job(QUEUE, job_id)) for name, b in self.backends.items()}
            expected = self.model.get_job(job_id)
            for name, got_fields in fields.items():
                assert _flow_fields(got_fields) == _flow_fields(expected), (name, job_id)


def _flow_fields(fields: dict[str, str] | None) -> dict[str, str] | None:
    return None if fields is None else {k: v for k, v in fields.items() if k in FLOW_FIELDS}


def _run(backend: Any, operation: str, args: tuple[Any, ...]) -> Any:
    """One flow call on one backend. A :class:`FakeRedisStore` that does not offer the call
    yet is reached through its Redis backend, the transition log delivered as its own calls
    deliver it."""
    method = getattr(backend, operation, None)
    if method is not None:
        return drive(method(*args))
    assert isinstance(backend, FakeRedisStore), backend
    call = getattr(backend.backend, operation)(*args)
    if operation in _READS:
        return backend.run(call)
    return backend._mutate(operation, QUEUE, call)
