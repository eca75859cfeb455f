// The flow benchmark's Node BullMQ side (bench/flows.py runs it): one parent with `children`
// children, added by a FlowProducer; the children run on a Worker (no-op processor) while a
// second Worker waits for the parent.
//
// Config: {url, prefix, queue (the parent's queue), childQueue, children, concurrency, timeoutMs}.
// Prints: {"event": "measured", "addMs", "childrenMs", "lastChildToParentMs"}: the time
// FlowProducer.add took; from the children worker's start to the last child's completion; and
// from the last child's stored finishedOn to the parent's stored processedOn.
import { FlowProducer, Job, Queue, Worker } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const opts = { connection, prefix: cfg.prefix };
const children = Array.from({ length: cfg.children }, (_, n) => ({
  name: 'child',
  queueName: cfg.childQueue,
  data: { n },
}));
const producer = new FlowProducer(opts);
const addStart = performance.now();
const tree = await producer.add({ name: 'parent', queueName: cfg.queue, data: {}, children });
const addMs = performance.now() - addStart;

let parentStarted;
const started = new Promise((resolve) => (parentStarted = resolve));
const parentWorker = new Worker(cfg.queue, async () => parentStarted(), {
  ...opts,
  connection: connect(cfg),
  drainDelay: 5,
});
let done = 0;
let lastChildMs;
const childStart = performance.now();
const childWorker = new Worker(cfg.childQueue, async () => null, {
  ...opts,
  connection: connect(cfg),
  concurrency: cfg.concurrency,
  drainDelay: 5,
});
childWorker.on('completed', () => {
  if (++done === cfg.children) lastChildMs = performance.now() - childStart;
});
await started;
await new Promise((resolve) => parentWorker.once('completed', resolve));
await childWorker.close();
await parentWorker.close();

const queue = new Queue(cfg.queue, opts);
const parent = await Job.fromId(queue, tree.job.id);
const pipeline = connection.pipeline();
for (const child of tree.children) {
  pipeline.hget(`${cfg.prefix}:${cfg.childQueue}:${child.job.id}`, 'finishedOn');
}
const finished = (await pipeline.exec()).map(([, value]) => Number(value));
emit({
  event: 'measured',
  addMs,
  childrenMs: lastChildMs,
  lastChildToParentMs: parent.processedOn - Math.max(...finished),
});
await queue.close();
await producer.close();
connection.disconnect();
exit(0);
