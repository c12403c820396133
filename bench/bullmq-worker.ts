/**
 * The BullMQ baseline's worker process: one Worker on the bench's queue running a no-op
 * processor, BENCH_CONCURRENCY jobs at a time (default 2). Says "ready" over IPC once connected;
 * closes cleanly on SIGTERM (so a --cpu-prof profile is written).
 */
import { Worker } from 'bullmq';

const worker = new Worker('bench', async () => null, {
  connection: { host: '127.0.0.1', port: Number(process.env.BENCH_REDIS_PORT), maxRetriesPerRequest: null },
  concurrency: Number(process.env.BENCH_CONCURRENCY ?? 2),
});
void worker.waitUntilReady().then(() => process.send?.('ready'));
process.on('SIGTERM', () => void worker.close().then(() => process.exit(0)));
process.on('disconnect', () => void worker.close().then(() => process.exit(0)));
