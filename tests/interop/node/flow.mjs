// Add flows with a Node BullMQ FlowProducer, and read flows back the way Node BullMQ sees them.
//
// Config: {url, prefix, queue, and any of}
//   flows      [{name, queueName, data, opts, children}]: added with FlowProducer.addBulk
//              (one flow: FlowProducer.add), in BullMQ's own format
//   read       [{queue, id}]: for each job, its state, parent fields and children getters
//   getFlow    {queueName, id, depth?, maxChildren?}: FlowProducer.getFlow
// Prints: {"event": "added", "trees": [tree]} where tree = {id, queue, children?: [tree]};
//   {"event": "job", queue, id, state, parentKey, parent, childrenValues, ignored,
//    dependencies, counts} per job read (null fields for a missing job);
//   {"event": "flow", "tree": tree | null}.
import { FlowProducer, Job, Queue } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const producer = new FlowProducer({ connection, prefix: cfg.prefix });

function tree(node) {
  if (!node?.job) return null;
  const out = { id: node.job.id, queue: node.job.queueName };
  if (node.children?.length) out.children = node.children.map(tree);
  return out;
}

if (cfg.flows) {
  const added =
    cfg.flows.length === 1 ? [await producer.add(cfg.flows[0])] : await producer.addBulk(cfg.flows);
  emit({ event: 'added', trees: added.map(tree) });
}

const queues = new Map();
function queueOf(name) {
  if (!queues.has(name)) queues.set(name, new Queue(name, { connection, prefix: cfg.prefix }));
  return queues.get(name);
}

for (const { queue, id } of cfg.read ?? []) {
  const q = queueOf(queue);
  const job = await Job.fromId(q, id);
  if (!job) {
    emit({ event: 'job', queue, id, state: await q.getJobState(id), missing: true });
    continue;
  }
  emit({
    event: 'job',
    queue,
    id,
    state: await job.getState(),
    parentKey: job.parentKey ?? null,
    parent: job.parent ?? null,
    failedReason: job.failedReason ?? null,
    returnvalue: job.returnvalue ?? null,
    childrenValues: await job.getChildrenValues(),
    ignored: await job.getIgnoredChildrenFailures(),
    dependencies: await job.getDependencies(),
    counts: await job.getDependenciesCount(),
  });
}

if (cfg.getFlow) {
  // (keys left out, not undefined: getFlow's defaults are overridden by undefined values)
  emit({ event: 'flow', tree: tree(await producer.getFlow(cfg.getFlow)) });
}

for (const q of queues.values()) await q.close();
await producer.close();
connection.disconnect();
exit(0);
