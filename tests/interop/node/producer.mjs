// Add jobs with Node BullMQ, one `Queue.add` after another (so ids and order are fixed).
//
// Config: {url, prefix, queue, jobs: [{name, data, opts}]}; `opts` are BullMQ's JobsOptions
// (delay, priority, attempts, backoff, removeOnComplete, ...).
// Prints: {"event": "added", "ids": [...]}.
import { Queue } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const queue = new Queue(cfg.queue, { connection, prefix: cfg.prefix });
const ids = [];
for (const job of cfg.jobs) {
  const added = await queue.add(job.name, job.data, job.opts ?? {});
  ids.push(added.id);
}
emit({ event: 'added', ids });
await queue.close();
connection.disconnect();
exit(0);
