// bull-board over corral's queues. corral's Redis backend stores a queue exactly as BullMQ
// does, so the board reads and operates it through Node BullMQ's own Queue class.
//
//   npm install --save-exact bullmq@6.7.0 ioredis@5.11.1 express@5.2.1 \
//       @bull-board/api@9.10.1 @bull-board/express@9.10.1
//   REDIS_URL=redis://127.0.0.1:6379 QUEUES=emails,reports node board.mjs
//
// Environment: QUEUES, the queue names (comma-separated); REDIS_URL (default
// redis://127.0.0.1:6379); PREFIX, the prefix corral's RedisBackend uses (default "bull");
// PORT (default 3000; 0 takes a free one); HOST (default 127.0.0.1: the board retries,
// cleans and deletes jobs, so put authentication in front of it before listening wider).
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import express from 'express';
import { Redis } from 'ioredis';

const names = (process.env.QUEUES ?? '').split(',').filter(Boolean);
if (names.length === 0) {
  console.error('set QUEUES to the names of the queues to show, e.g. QUEUES=emails,reports');
  process.exit(2);
}
const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
  maxRetriesPerRequest: null,
});
const prefix = process.env.PREFIX ?? 'bull';
const queues = names.map((name) => new Queue(name, { connection, prefix }));

const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath('/');
createBullBoard({ queues: queues.map((queue) => new BullMQAdapter(queue)), serverAdapter });

const app = express();
app.use('/', serverAdapter.getRouter());
const host = process.env.HOST ?? '127.0.0.1';
const server = app.listen(Number(process.env.PORT ?? 3000), host, () => {
  console.log(`bull-board on http://${host}:${server.address().port}/`);
});
