// Listen with a Node BullMQ QueueEvents and print every event it receives.
//
// Config: {url, prefix, queue, until: {"<event>": count, ...}, timeoutMs}. Reads the events
// stream from its start (lastEventId "0"), so nothing is missed whenever it starts. Exits once
// it has seen `count` events of every kind named in `until`.
// Prints: {"event": "ready"}, then {"event": <name>, "streamId": ..., ...the event's fields}.
import { QueueEvents } from 'bullmq';
import { config, connect, emit, exit } from './lib.mjs';

const NAMES = [
  'added', 'waiting', 'active', 'progress', 'delayed', 'completed', 'failed',
  'retries-exhausted', 'stalled', 'removed', 'drained', 'paused', 'resumed', 'duplicated',
];
const cfg = config();
const until = cfg.until ?? {};
const seen = {};
const connection = connect(cfg);
const events = new QueueEvents(cfg.queue, {
  connection,
  prefix: cfg.prefix,
  lastEventId: '0',
  blockingTimeout: 200,
});
let done = false;
async function finish() {
  done = true;
  await events.close();
  connection.disconnect();
  exit(0);
}
for (const name of NAMES) {
  events.on(name, (fields, streamId) => {
    if (done) return;
    // `drained` is emitted with the stream id only.
    const record = name === 'drained' ? { streamId: fields } : { ...fields, streamId };
    emit({ event: name, ...record });
    seen[name] = (seen[name] ?? 0) + 1;
    if (Object.entries(until).every(([event, count]) => (seen[event] ?? 0) >= count)) {
      finish();
    }
  });
}
events.on('error', (err) => emit({ event: 'error', message: String(err?.message ?? err) }));
await events.waitUntilReady();
emit({ event: 'ready' });
