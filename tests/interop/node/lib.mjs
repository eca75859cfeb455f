// Shared helpers of the Node BullMQ scripts that tests/interop drives.
//
// Every script takes one JSON argument (its configuration: at least `url`, `prefix`, `queue`),
// prints JSON lines on stdout, and exits by itself: on success, or with code 3 once
// `timeoutMs` (default 20 s) has passed.
import { Redis } from 'ioredis';

export function config() {
  const cfg = JSON.parse(process.argv[2] ?? '{}');
  for (const key of ['url', 'prefix', 'queue']) {
    if (!cfg[key]) {
      fail(`missing configuration key ${key}`);
    }
  }
  setTimeout(() => {
    emit({ event: 'timeout' });
    process.exit(3);
  }, cfg.timeoutMs ?? 20000);
  return cfg;
}

// A connection for one BullMQ object (workers need maxRetriesPerRequest: null).
export function connect(cfg) {
  return new Redis(cfg.url, { maxRetriesPerRequest: null });
}

export function emit(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

export function fail(message) {
  process.stderr.write(message + '\n');
  process.exit(2);
}

// Flush stdout, then exit: process.exit() may cut off output still buffered for a pipe.
export function exit(code = 0) {
  process.stdout.write('', () => process.exit(code));
}

// The parts of a Node Job that the tests compare with what corral stored.
export function describe(job) {
  return {
    id: job.id,
    name: job.name,
    data: job.data,
    opts: job.opts,
    timestamp: job.timestamp,
    delay: job.delay,
    priority: job.priority,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted,
    stalledCounter: job.stalledCounter,
    progress: job.progress,
    returnvalue: job.returnvalue ?? null,
    failedReason: job.failedReason ?? null,
    stacktrace: job.stacktrace ?? [],
    deferredFailure: job.deferredFailure ?? null,
    processedBy: job.processedBy ?? null,
  };
}
