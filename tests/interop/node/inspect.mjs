// Read jobs and counts the way Node BullMQ sees them.
//
// Config: {url, prefix, queue, ids: [...]}.
// Prints: {"event": "counts", "counts": {...}}, then for each id
// {"event": "job", "id", "state", "job": {...} | null}.
import { Job, Queue } from 'bullmq';
import { config, connect, describe, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const queue = new Queue(cfg.queue, { connection, prefix: cfg.prefix });
emit({
  event: 'counts',
  counts: await queue.getJobCounts(
    'waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed',
  ),
});
for (const id of cfg.ids ?? []) {
  const job = await Job.fromId(queue, id);
  emit({
    event: 'job',
    id,
    state: await queue.getJobState(id),
    job: job ? describe(job) : null,
  });
}
await queue.close();
connection.disconnect();
exit(0);
