// Make Node BullMQ's operator calls (job and queue management) on a queue, one after another.
//
// Config: {url, prefix, queue, ops: [{op, ...arguments}], timeoutMs}. Each op is one call:
//   {op: "retry", id, state?, resetAttemptsMade?, resetAttemptsStarted?}   job.retry
//   {op: "promote", id}                      job.promote
//   {op: "changePriority", id, priority, lifo?}   {op: "changeDelay", id, delay}
//   {op: "updateData", id, data}             {op: "log", id, row}     {op: "remove", id}
//   {op: "waitUntilFinished", id, ttl?}      job.waitUntilFinished (with a QueueEvents)
//   {op: "retryJobs", state?, count?, timestamp?}   {op: "promoteJobs", count?}
//   {op: "clean", grace, limit, type}        {op: "drain", delayed?}
//   {op: "obliterate", force?, count?}       {op: "pause"}
//   {op: "getJobLogs", id, start?, end?, asc?}
//   {op: "getWorkers"}   {op: "getCountsPerPriority", priorities}
// Prints, per op in order: {"event": "done", "op", "value"} when the call returned (or
// resolved), or {"event": "refused", "op", "message"} when it threw (or rejected); the next op
// runs either way. For waitUntilFinished it first prints {"event": "listening", "id"}.
import { Job, Queue, QueueEvents } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const cfg = config();
const connection = connect(cfg);
const queue = new Queue(cfg.queue, { connection, prefix: cfg.prefix });
let queueEvents = null;

async function job(id) {
  const found = await Job.fromId(queue, id);
  if (!found) throw new Error(`no job ${id}`);
  return found;
}

async function events() {
  if (queueEvents === null) {
    queueEvents = new QueueEvents(cfg.queue, {
      connection: connect(cfg),
      prefix: cfg.prefix,
      blockingTimeout: 200,
    });
    await queueEvents.waitUntilReady();
  }
  return queueEvents;
}

// BullMQ spreads an options object over its defaults: a key set to undefined would erase one.
function given(options) {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

const CALLS = {
  retry: async (a) =>
    (await job(a.id)).retry(a.state ?? 'failed', {
      resetAttemptsMade: a.resetAttemptsMade ?? false,
      resetAttemptsStarted: a.resetAttemptsStarted ?? false,
    }),
  promote: async (a) => (await job(a.id)).promote(),
  changePriority: async (a) =>
    (await job(a.id)).changePriority({ priority: a.priority, lifo: a.lifo ?? false }),
  changeDelay: async (a) => (await job(a.id)).changeDelay(a.delay),
  updateData: async (a) => (await job(a.id)).updateData(a.data),
  log: async (a) => (await job(a.id)).log(a.row),
  remove: async (a) => (await job(a.id)).remove(),
  waitUntilFinished: async (a) => {
    const listener = await events();
    const waited = (await job(a.id)).waitUntilFinished(listener, a.ttl);
    emit({ event: 'listening', id: a.id });
    return waited;
  },
  retryJobs: (a) =>
    queue.retryJobs(given({ state: a.state, count: a.count, timestamp: a.timestamp })),
  promoteJobs: (a) => queue.promoteJobs(given({ count: a.count })),
  clean: (a) => queue.clean(a.grace, a.limit, a.type),
  drain: (a) => queue.drain(a.delayed ?? false),
  obliterate: (a) => queue.obliterate(given({ force: a.force, count: a.count })),
  pause: () => queue.pause(),
  getJobLogs: (a) => queue.getJobLogs(a.id, a.start ?? 0, a.end ?? -1, a.asc ?? true),
  getWorkers: () => queue.getWorkers(),
  getCountsPerPriority: (a) => queue.getCountsPerPriority(a.priorities),
};

for (const spec of cfg.ops) {
  const call = CALLS[spec.op];
  if (!call) {
    emit({ event: 'refused', op: spec.op, message: `ops.mjs knows no op ${spec.op}` });
    continue;
  }
  try {
    const value = await call(spec);
    emit({ event: 'done', op: spec.op, value: value ?? null });
  } catch (err) {
    emit({ event: 'refused', op: spec.op, message: String(err?.message ?? err) });
  }
}
if (queueEvents !== null) await queueEvents.close();
await queue.close();
connection.disconnect();
exit(0);
