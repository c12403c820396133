/**
 * The BullMQ baseline for issue 13's workload: a private redis-server (Debian's, on a free
 * loopback port, no persistence, in a temporary directory), one producer in the bench process,
 * one worker process with concurrency 2 running a no-op processor; as Ferry's (bench/workload.ts):
 * 200 sequential round trips right after start (add, then waitUntilFinished), a warm-up burst,
 * 200 round trips again, then 5,000 jobs added at once (addBulk) until all complete.
 * Completed jobs are kept (BullMQ's default), as Ferry keeps results.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Queue, QueueEvents } from 'bullmq';
import { version as bullmqVersion } from 'bullmq/package.json';

export interface WorkloadFigures {
  /** The round trips measured after the warm-up. */
  samples: number[];
  /** The same number of round trips right after start, before the warm-up. */
  cold: number[];
  tasks: number;
  secs: number;
  /** Per-task counts for the table, already formatted, by column. */
  perTask: Record<string, string>;
  notes: string[];
}

/** Times `n` round trips, one after another; their durations in ms. */
export async function timedRoundTrips(n: number, roundTrip: () => PromiseLike<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await roundTrip();
    samples.push(performance.now() - t0);
  }
  return samples;
}

export const redisServerAvailable = (): boolean => spawnSync('redis-server', ['--version']).status === 0;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

export async function bullmqWorkload(opts: {
  rounds: number;
  burst: number;
  warmup: number;
  profileDir?: string;
}): Promise<WorkloadFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-redis-'));
  const port = await freePort();
  const redis = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'yes'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const redisExited = new Promise((r) => redis.once('exit', r));
  let queue: Queue | undefined;
  let events: QueueEvents | undefined;
  const prof = opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(opts.profileDir, 'bullmq-worker')}`] : [];
  const worker = spawn(process.execPath, [...prof, '--import', 'tsx', join(__dirname, 'bullmq-worker.ts')], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, BENCH_REDIS_PORT: String(port), BENCH_CONCURRENCY: '2' },
  });
  const workerExited = new Promise((r) => worker.once('exit', r));
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      redis.stdout!.on('data', (c: Buffer) => ((out += c.toString()), /Ready to accept connections/.test(out) && resolve()));
      redis.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
    });
    const connection = { host: '127.0.0.1', port };
    queue = new Queue('bench', { connection });
    events = new QueueEvents('bench', { connection });
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), new Promise<unknown>((r) => worker.once('message', r))]);
    const client = await queue.client;
    const commands = async () =>
      Number(
        /total_commands_processed:(\d+)/.exec(await (client as unknown as { info(section: string): Promise<string> }).info('stats'))![1],
      );

    const roundTrip = async () => {
      const job = await queue!.add('noop', {});
      await job.waitUntilFinished(events!);
    };
    const rounds = (n: number) => timedRoundTrips(n, roundTrip);
    // All at once: count completions as QueueEvents sees them. Resolves with the seconds taken.
    const burst = async (n: number) => {
      let done = 0;
      let allDone!: () => void;
      const finished = new Promise<void>((r) => (allDone = r));
      // Unset until addBulk answers; the completed handler reads it before then.
      let wanted: Set<string> | undefined = undefined;
      // Completions seen before addBulk answered with the jobs' ids.
      const early: string[] = [];
      const complete = (id: string) => wanted!.delete(id) && ++done === n && allDone();
      const onCompleted = ({ jobId }: { jobId: string }) => (wanted ? complete(jobId) : early.push(jobId));
      events!.on('completed', onCompleted);
      const t0 = performance.now();
      const jobs = await queue!.addBulk(Array.from({ length: n }, () => ({ name: 'noop', data: {} })));
      wanted = new Set(jobs.map((j) => j.id!));
      early.forEach(complete);
      await finished;
      events!.off('completed', onCompleted);
      return (performance.now() - t0) / 1000;
    };
    await rounds(20);
    const cold = await rounds(opts.rounds);
    await burst(opts.warmup);
    await rounds(20);
    const c0 = await commands();
    const samples = await rounds(opts.rounds);
    const c1 = await commands();
    const secs = await burst(opts.burst);
    const c2 = await commands();
    return {
      samples,
      cold,
      tasks: opts.burst,
      secs,
      perTask: {
        redis: `${((c2 - c1) / opts.burst).toFixed(1)} Redis commands (${((c1 - c0) / opts.rounds).toFixed(1)} in the round trips)`,
      },
      notes: [
        `BullMQ ${bullmqVersion} on redis-server ${/v=(\S+)/.exec(spawnSync('redis-server', ['--version']).stdout.toString())?.[1]}, one worker process with concurrency 2, jobs kept after completion (the default).`,
      ],
    };
  } finally {
    worker.kill('SIGTERM');
    await workerExited;
    await events?.close();
    await queue?.close();
    redis.kill('SIGTERM');
    await redisExited;
    rmSync(dir, { recursive: true, force: true });
  }
}
