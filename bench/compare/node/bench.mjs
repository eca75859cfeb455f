// Node BullMQ's side of the comparison benchmark: the phases of ../harness.py, in JavaScript.
// Run by ../run.py; prints one JSON object on its last stdout line.
//
//   node bench.mjs --prefix P [--redis-url URL] [--jobs N] [--chunk C] [--concurrency 1,10,50]
//                  [--phases add_single,add_bulk,process] [--phase-timeout S]

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);
const { version } = require('bullmq/package.json');

const { values: opts } = parseArgs({
  options: {
    'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379/0' },
    prefix: { type: 'string' },
    jobs: { type: 'string', default: '20000' },
    chunk: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '1,10,50' },
    phases: { type: 'string', default: 'add_single,add_bulk,process' },
    'phase-timeout': { type: 'string', default: '180' },
  },
});
if (!opts.prefix) {
  console.error('--prefix is required');
  process.exit(2);
}
const prefix = opts.prefix;
const jobs = Number(opts.jobs);
const chunk = Number(opts.chunk);
const phaseTimeoutMs = Number(opts['phase-timeout']) * 1000;

function connectionOptions(url) {
  const parsed = new URL(url);
  const options = {
    host: parsed.hostname || '127.0.0.1',
    port: Number(parsed.port || 6379),
    db: Number(parsed.pathname.replace('/', '') || 0),
  };
  if (parsed.password) options.password = decodeURIComponent(parsed.password);
  if (parsed.username) options.username = decodeURIComponent(parsed.username);
  return options;
}
const connection = connectionOptions(opts['redis-url']);
const client = new IORedis({ ...connection, maxRetriesPerRequest: 1 });

async function deleteKeys(pattern) {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await client.unlink(...keys);
  } while (cursor !== '0');
}

async function expect(command, key, expected) {
  const found = Number(await client.call(command, key));
  if (found !== expected) throw new Error(`${command} ${key} is ${found}, expected ${expected}`);
}

const key = (queue, suffix) => `${prefix}:${queue}:${suffix}`;
const producer = (queue) => new Queue(queue, { connection, prefix });

async function addBulk(queue) {
  for (let start = 0; start < jobs; start += chunk) {
    const batch = [];
    for (let i = start; i < Math.min(start + chunk, jobs); i++) {
      batch.push({ name: 'noop', data: { i } });
    }
    await queue.addBulk(batch);
  }
}

async function addSingle(name) {
  const queue = producer(name);
  try {
    await queue.add('noop', { i: -1 }); // connect and load scripts before the clock starts
    const started = performance.now();
    for (let i = 0; i < jobs; i++) {
      await queue.add('noop', { i });
    }
    return (performance.now() - started) / 1000;
  } finally {
    await queue.close();
    await expect('LLEN', key(name, 'wait'), jobs + 1);
  }
}

async function addBulkPhase(name) {
  const queue = producer(name);
  try {
    await queue.add('noop', { i: -1 });
    const started = performance.now();
    await addBulk(queue);
    return (performance.now() - started) / 1000;
  } finally {
    await queue.close();
    await expect('LLEN', key(name, 'wait'), jobs + 1);
  }
}

async function processPhase(name, concurrency) {
  const queue = producer(name);
  try {
    await addBulk(queue);
  } finally {
    await queue.close();
  }
  await expect('LLEN', key(name, 'wait'), jobs);
  let completed = 0;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  const started = performance.now();
  const worker = new Worker(name, async () => undefined, { connection, prefix, concurrency });
  worker.on('completed', () => {
    completed += 1;
    if (completed === jobs) resolveDone();
  });
  worker.on('error', (err) => console.error('worker error:', err));
  let elapsed;
  try {
    await done;
    elapsed = (performance.now() - started) / 1000;
  } finally {
    await worker.close(elapsed === undefined);
  }
  await expect('ZCARD', key(name, 'completed'), jobs);
  return elapsed;
}

async function phase(name, run) {
  const queue = `${name}-node`;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${opts['phase-timeout']} s`)),
      phaseTimeoutMs,
    );
  });
  try {
    const seconds = await Promise.race([run(queue), timeout]);
    return { jobs, seconds, rate: jobs / seconds };
  } catch (err) {
    console.error(err);
    return { error: String(err && err.message ? err.message : err) };
  } finally {
    clearTimeout(timer);
    await deleteKeys(`${prefix}:${queue}:*`);
  }
}

async function main() {
  const wanted = new Set(opts.phases.split(','));
  const phases = {};
  await client.ping();
  try {
    if (wanted.has('add_single')) phases.add_single = await phase('add_single', addSingle);
    if (wanted.has('add_bulk')) phases.add_bulk = await phase('add_bulk', addBulkPhase);
    if (wanted.has('process')) {
      for (const c of opts.concurrency.split(',').map(Number)) {
        phases[`process_c${c}`] = await phase(`process_c${c}`, (q) => processPhase(q, c));
      }
    }
  } finally {
    await deleteKeys(`${prefix}:*`);
  }
  console.log(JSON.stringify({ impl: 'bullmq-node', version, phases }));
  await client.quit();
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('benchmark failed:', err);
    process.exit(1);
  },
);
