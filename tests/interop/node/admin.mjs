// Queue-level limit settings through Node BullMQ's Queue.
//
// Config: {url, prefix, queue, and optionally}
//   globalConcurrency   call setGlobalConcurrency(n)
//   globalRateLimit     {max, duration}: call setGlobalRateLimit(max, duration)
//   rateLimitMs         call rateLimit(ms)
// Then prints {"event": "limits", "globalConcurrency", "globalRateLimit", "rateLimitTtl"} as
// Node BullMQ reads them back.
import { Queue } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const queue = new Queue(cfg.queue, { connection, prefix: cfg.prefix });

if (cfg.globalConcurrency !== undefined) {
  await queue.setGlobalConcurrency(cfg.globalConcurrency);
}
if (cfg.globalRateLimit !== undefined) {
  await queue.setGlobalRateLimit(cfg.globalRateLimit.max, cfg.globalRateLimit.duration);
}
if (cfg.rateLimitMs !== undefined) {
  await queue.rateLimit(cfg.rateLimitMs);
}
emit({
  event: 'limits',
  globalConcurrency: await queue.getGlobalConcurrency(),
  globalRateLimit: await queue.getGlobalRateLimit(),
  rateLimitTtl: await queue.getRateLimitTtl(),
});
await queue.close();
connection.disconnect();
exit(0);
