// Process jobs with a Node BullMQ Worker and print what it saw.
//
// Config: {url, prefix, queue, timeoutMs, and optionally}
//   count          exit after this many finished attempts (local completed + failed events)
//   failAttempts   an attempt fails while the job's attemptsMade is below this (a number,
//                  or {jobName: number})
//   hang           the processor never returns (the test kills the process: a dead worker)
//   progress       report this progress before returning
//   checkerOnly    do not process: only run the stalled checker; exit after `count` stalls
//   lockDuration, stalledInterval, maxStalledCount, concurrency, name, limiter: Worker options
//   workMs         the processor waits this long before returning
//   readChildren   print the job's children as Node sees them before returning (flows)
//   echoData       return the job's data itself
// The processor returns {by: "node", name, echo: data, attemptsMade} (or, with readChildren,
// that and `children`: the children's values).
// Prints: {"event": "processing", "job": {...}} when a processor starts, and
// {"event": "completed" | "failed" | "stalled" | "error", ...}.
import { Worker } from 'bullmq';
import { config, connect, describe, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const count = cfg.count ?? 1;
let finished = 0;
let stalls = 0;

async function processor(job) {
  emit({ event: 'processing', job: describe(job) });
  if (cfg.hang) {
    await new Promise(() => {});
  }
  if (cfg.workMs) {
    await new Promise((resolve) => setTimeout(resolve, cfg.workMs));
  }
  if (cfg.progress !== undefined) {
    await job.updateProgress(cfg.progress);
  }
  const failAttempts =
    typeof cfg.failAttempts === 'object' ? cfg.failAttempts[job.name] : cfg.failAttempts;
  if (job.attemptsMade < (failAttempts ?? 0)) {
    throw new Error(`node attempt ${job.attemptsMade + 1} failed`);
  }
  if (cfg.echoData) {
    return job.data;
  }
  const result = { by: 'node', name: job.name, echo: job.data, attemptsMade: job.attemptsMade };
  if (cfg.readChildren) {
    const children = await job.getChildrenValues();
    emit({
      event: 'children',
      id: job.id,
      values: children,
      ignored: await job.getIgnoredChildrenFailures(),
      dependencies: await job.getDependencies(),
    });
    result.children = children;
  }
  return result;
}

const worker = new Worker(cfg.queue, processor, {
  connection,
  prefix: cfg.prefix,
  autorun: false,
  concurrency: cfg.concurrency ?? 1,
  lockDuration: cfg.lockDuration ?? 30000,
  stalledInterval: cfg.stalledInterval ?? 30000,
  maxStalledCount: cfg.maxStalledCount ?? 1,
  name: cfg.name,
  limiter: cfg.limiter,
  drainDelay: 1,
});

let closing = false;
async function finish() {
  if (closing) return;
  closing = true;
  await worker.close();
  connection.disconnect();
  exit(0);
}

worker.on('completed', (job, result) => {
  emit({ event: 'completed', id: job.id, result, job: describe(job) });
  if (++finished >= count) finish();
});
worker.on('failed', (job, err) => {
  emit({ event: 'failed', id: job?.id ?? null, reason: err.message, job: job ? describe(job) : null });
  if (++finished >= count) finish();
});
worker.on('stalled', (id, prev) => {
  emit({ event: 'stalled', id, prev });
  if (cfg.checkerOnly && ++stalls >= count) finish();
});
worker.on('error', (err) => emit({ event: 'error', message: String(err?.message ?? err) }));

await worker.waitUntilReady();
if (cfg.checkerOnly) {
  await worker.startStalledCheckTimer();
  emit({ event: 'ready' });
} else {
  emit({ event: 'ready' });
  await worker.run();
}
