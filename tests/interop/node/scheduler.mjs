// Upsert or read a job scheduler with Node BullMQ.
//
// Config: {url, prefix, queue, id, and optionally}
//   repeat     upsert the scheduler with these RepeatOptions (BullMQ's names), and
//   template   its template ({name, data, opts})
// Prints: {"event": "upserted", "jobId": ...} after an upsert, then
// {"event": "scheduler", "scheduler": <getJobScheduler(id) or null>, "count": <getJobSchedulersCount()>}.
import { Queue } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const queue = new Queue(cfg.queue, { connection, prefix: cfg.prefix });
if (cfg.repeat) {
  const job = await queue.upsertJobScheduler(cfg.id, cfg.repeat, cfg.template ?? {});
  emit({ event: 'upserted', jobId: job?.id ?? null });
}
const scheduler = (await queue.getJobScheduler(cfg.id)) ?? null;
emit({ event: 'scheduler', scheduler, count: await queue.getJobSchedulersCount() });
await queue.close();
connection.disconnect();
exit(0);
