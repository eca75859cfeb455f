"""The flow benchmark: one parent with N children (10,000 by default), corral and Node BullMQ 6.7
on the same Redis.

Measured per run, for each side: the time to add the flow (one ``FlowProducer.add``); the time
for one worker (no-op processor, ``--concurrency`` slots) to run the children; and the time from
the last child's completion to the parent's start (the last child's stored ``finishedOn`` to
the parent's stored ``processedOn``, both stamped by the client's clock; a worker is already
waiting on the parent's queue). Prints the medians of ``--runs`` runs and the ratios
corral / Node. Not part of the test run. From the repository root::

    .venv/bin/python bench/flows.py --runs 3

The Node side is ``tests/interop/node/flow_bench.mjs`` (the pinned bullmq in tests/interop:
``npm ci --prefix tests/interop``). Every run works under a key prefix of its own and deletes
its keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from corral.backends.redis import RedisBackend
from corral.engine import FlowProducer, Job, Queue, Worker

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "tests" / "interop" / "node" / "flow_bench.mjs"
PARENTS, CHILDREN = "bench-flow-parent", "bench-flow-children"
COLUMNS = ("add_ms", "children_ms", "last_child_to_parent_ms")


async def corral_run(url: str, prefix: str, children: int, concurrency: int) -> dict[str, float]:
    backend = RedisBackend.from_url(url, prefix=prefix)
    try:
        flow = {
            "name": "parent",
            "queue_name": PARENTS,
            "data": {},
            "children": [
                {"name": "child", "queue_name": CHILDREN, "data": {"n": n}} for n in range(children)
            ],
        }
        start = time.perf_counter()
        tree = await FlowProducer(backend).add(flow)
        add_ms = (time.perf_counter() - start) * 1000

        parent_started = asyncio.Event()
        done = 0
        last_child_ms = 0.0

        async def parent(job: Job) -> None:
            parent_started.set()

        async def child(job: Job) -> None:
            return None

        def completed(job: Job, result: Any) -> None:
            nonlocal done, last_child_ms
            done += 1
            if done == children:
                last_child_ms = (time.perf_counter() - child_start) * 1000

        parent_worker = Worker(PARENTS, parent, backend, drain_delay=5000)
        parent_task = asyncio.create_task(parent_worker.run())
        child_start = time.perf_counter()
        child_worker = Worker(CHILDREN, child, backend, concurrency=concurrency, drain_delay=5000)
        child_worker.on("completed", completed)
        child_task = asyncio.create_task(child_worker.run())
        await asyncio.wait_for(parent_started.wait(), 600)
        await child_worker.close()
        await parent_worker.close()
        await asyncio.gather(child_task, parent_task)

        stored = await Queue(PARENTS, backend).get_job(tree.job.id)
        assert stored is not None
        assert stored.processed_on is not None
        child_queue = Queue(CHILDREN, backend)
        finished = []
        for node in tree.children or []:
            job = await child_queue.get_job(node.job.id)
            assert job is not None
            assert job.finished_on is not None
            finished.append(job.finished_on)
        return {
            "add_ms": add_ms,
            "children_ms": last_child_ms,
            "last_child_to_parent_ms": float(stored.processed_on - max(finished)),
        }
    finally:
        await backend.close()


def node_run(url: str, prefix: str, children: int, concurrency: int) -> dict[str, float]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("Node.js is not installed: the Node side cannot run")
    config = {
        "url": url,
        "prefix": prefix,
        "queue": PARENTS,
        "childQueue": CHILDREN,
        "children": children,
        "concurrency": concurrency,
        "timeoutMs": 600_000,
    }
    done = subprocess.run(
        [node, str(NODE_SCRIPT), json.dumps(config)],
        cwd=NODE_SCRIPT.parent,
        capture_output=True,
        text=True,
        timeout=660,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the Node side failed ({done.returncode}): {done.stderr[-2000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "add_ms": record["addMs"],
        "children_ms": record["childrenMs"],
        "last_child_to_parent_ms": float(record["lastChildToParentMs"]),
    }


def delete_keys(url: str, prefix: str) -> None:
    with redis.Redis.from_url(url) as client:
        doomed = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(doomed), 1000):
            client.delete(*doomed[start : start + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {"corral": [], "node": []}
    for run in range(args.runs):  # interleaved, so a load change hits both sides alike
        for side in ("corral", "node"):
            prefix = f"bench-flows-{uuid.uuid4().hex[:8]}"
            try:
                if side == "corral":
                    measured = asyncio.run(
                        corral_run(args.url, prefix, args.children, args.concurrency)
                    )
                else:
                    measured = node_run(args.url, prefix, args.children, args.concurrency)
            finally:
                delete_keys(args.url, prefix)
            results[side].append(measured)
            shown = ", ".join(f"{k} {v:.1f}" for k, v in measured.items())
            print(f"run {run + 1} {side}: {shown}", flush=True)

    medians = {
        side: {column: statistics.median(r[column] for r in runs) for column in COLUMNS}
        for side, runs in results.items()
    }
    print(
        f"\n{args.children} children, concurrency {args.concurrency}, "
        f"medians of {args.runs} runs (ms)\n"
    )
    print("| measure | corral | Node BullMQ 6.7 | corral / Node |")
    print("| --- | ---: | ---: | ---: |")
    for column in COLUMNS:
        corral, node = medians["corral"][column], medians["node"][column]
        ratio = f"{corral / node:.2f}" if node else "n/a"
        print(f"| {column} | {corral:.1f} | {node:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
