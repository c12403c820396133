import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { WorkerAgent } from '../agent/agent';
import {
  isolationOrRefuse,
  mpiLauncherOrRefuse,
  startOrRefuse,
  workerConfigFromEnv,
  workerSettingsFromEnv,
  type WorkerConfig,
} from '../main';
import { parseProcessRuntimes } from '../../core/runtimes';
import { RelayTaskSource } from './relay-client';

/**
 * A worker agent inside an endpoint manager's block (one per node of a Slurm job, or a local
 * process): the agent of `ferry worker start`, plus what a block needs —
 * - it reports its slots and running tasks to the manager every FERRY_BLOCK_REPORT_MS (the
 *   manager's address and token are in the 0600 file FERRY_MANAGER_FILE), so the manager knows
 *   which blocks are idle and never releases one that holds a task;
 * - it stops taking tasks FERRY_BLOCK_DRAIN_SECONDS before the job's end (FERRY_BLOCK_END, epoch
 *   seconds), finishes what it holds by then, and exits, so the job ends before the scheduler kills it;
 * - when the manager answers a report with `drain` (an idle block released, the manager stopping)
 *   it drains the same way; SIGTERM in a Slurm job means the scheduler is ending it (see below);
 * - a local block's agent (FERRY_PARENT_PID) drains when its manager dies;
 * - in relay mode (FERRY_RELAY=1) it takes tasks from the manager and hands results back to it
 *   (relay.ts): it needs no AWS access, no Ferry API and no endpoint secret.
 * The rest of its configuration is the agent's: FERRY_WORKER_CONFIG, FERRY_POOL_SIZE, ...
 */

interface ManagerContact {
  url: string;
  token: string;
}

export interface BlockReport {
  block_id: string;
  job_id: string;
  worker_id: string;
  host: string;
  workers: number;
  idle_workers: number;
  running: number;
  completed: number;
  draining: boolean;
  stopped: boolean;
  /** What the agent runs (node, python, shell, and mpi when it has a launcher): the manager beats with it in relay mode. */
  runtimes?: string[];
  /** The job's end, epoch seconds. */
  end_at?: number;
}

const int = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);
const log = (msg: string, extra: Record<string, unknown> = {}) =>
  console.error(JSON.stringify({ at: new Date().toISOString(), block: process.env.FERRY_BLOCK_ID, msg, ...extra }));

async function main(env = process.env): Promise<number> {
  const relay = env.FERRY_RELAY === '1';
  const contact: ManagerContact | undefined = env.FERRY_MANAGER_FILE ? JSON.parse(readFileSync(env.FERRY_MANAGER_FILE, 'utf8')) : undefined;
  if (relay && !contact) throw new Error('relay mode needs FERRY_MANAGER_FILE');
  // Relay mode: no secret and no API; the endpoint id comes from the manager.
  const cfg: WorkerConfig = relay ? { api_url: '', endpoint_id: '', endpoint_secret: '' } : workerConfigFromEnv(env);
  const settings = workerSettingsFromEnv(env);
  const blockId = env.FERRY_BLOCK_ID ?? 'b?';
  const jobId = env.FERRY_BLOCK_JOB_ID ?? '';
  const endAt = int(env.FERRY_BLOCK_END);
  const drainSeconds = int(env.FERRY_BLOCK_DRAIN_SECONDS) ?? 0;

  const isolation = isolationOrRefuse(settings);
  if (!isolation) return 2;
  const mpiLauncher = mpiLauncherOrRefuse(settings);
  if (mpiLauncher === false) return 2;
  let workerId = '';
  const agent: WorkerAgent = new WorkerAgent({
    source: relay ? new RelayTaskSource(contact!, () => workerId, blockId, log) : undefined,
    apiUrl: cfg.api_url.replace(/\/+$/, ''),
    endpointId: cfg.endpoint_id,
    endpointSecret: cfg.endpoint_secret,
    workerId: `${hostname()}-${blockId}-${jobId}-${process.pid}`,
    poolSize: int(env.FERRY_POOL_SIZE),
    runtimes: parseProcessRuntimes(env.FERRY_RUNTIMES),
    graceMs: int(env.FERRY_GRACE_MS),
    heartbeatMs: int(env.FERRY_HEARTBEAT_MS),
    visibilitySeconds: int(env.FERRY_VISIBILITY_SECONDS),
    startedReportDelayMs: int(env.FERRY_STARTED_REPORT_MS),
    isolation,
    idleMs: settings.idleSeconds === undefined ? undefined : settings.idleSeconds * 1000,
    maxProcesses: settings.maxProcesses,
    pythonCommand: settings.python,
    mpiLauncher,
  });
  workerId = agent.workerId;

  let draining = false;
  let stopped = false;
  const report = async () => {
    if (!contact) return;
    const body: BlockReport = {
      block_id: blockId,
      job_id: jobId,
      worker_id: agent.workerId,
      host: hostname(),
      ...agent.status(),
      completed: agent.completed,
      runtimes: agent.runtimes,
      draining,
      stopped,
      end_at: endAt,
    };
    try {
      const res = await fetch(`${contact.url}/v1/block-reports`, {
        method: 'POST',
        headers: { authorization: `Bearer ${contact.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(5_000),
      });
      if (!res.ok) return log('the manager refused a report', { status: res.status });
      const answer = (await res.json()) as { drain?: boolean };
      if (answer.drain) drain('the manager released this block');
    } catch (err) {
      log('could not report to the manager', { error: String(err) });
    }
  };

  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  const drain = (why: string, graceMs?: number) => {
    if (draining) return;
    draining = true;
    log(`${why}: taking no more tasks, finishing running ones, then stopping`);
    void report();
    agent.stop(graceMs).then(
      () => resolveExit(0),
      () => resolveExit(1),
    );
  };
  agent.onFatal(async (err) => {
    console.error(`ferry worker: ${err.message}`);
    await agent.stop(0).catch(() => undefined);
    resolveExit(2);
  });
  process.on('SIGTERM', () => {
    // In a Slurm job, SIGTERM is the scheduler ending the job (scancel, preemption, time limit, a
    // failed node) and it reaches every process of the step, the runtimes running tasks included:
    // a result now would be the task's false failure. Leave at once, reporting nothing; what this
    // agent held comes back through the queue when its visibility lapses. The manager never
    // signals: it asks a block to drain in its answer to a report.
    if (env.SLURM_JOB_ID) {
      log('SIGTERM from the scheduler: leaving now; held tasks will be delivered again');
      process.exit(143);
    }
    drain('SIGTERM');
  });
  process.on('SIGINT', () => drain('SIGINT'));
  if (!(await startOrRefuse(agent))) return 2;
  console.error(
    `ferry worker: serving endpoint ${cfg.endpoint_id || '(through the manager)'}${relay ? ' (relay mode)' : ''} as ${agent.workerId} in block ${blockId} (job ${jobId})`,
  );

  const timers: NodeJS.Timeout[] = [];
  await report();
  timers.push(setInterval(() => void report(), int(env.FERRY_BLOCK_REPORT_MS) ?? 5_000));
  if (endAt !== undefined) {
    const drainAt = (endAt - drainSeconds) * 1000;
    // What is running may use the drain window, less a margin for its result to travel.
    const grace = Math.max(0, drainSeconds * 1000 - 3_000);
    timers.push(setTimeout(() => drain('the job nears its walltime', grace), Math.max(0, drainAt - Date.now())));
  }
  const parent = int(env.FERRY_PARENT_PID);
  if (parent) timers.push(setInterval(() => process.ppid !== parent && drain(`the manager (pid ${parent}) has gone`), 1_000));

  const code = await exit;
  for (const t of timers) clearInterval(t);
  stopped = true;
  await report();
  return code;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(`ferry worker: ${err?.message ?? err}`);
      process.exit(1);
    },
  );
}
