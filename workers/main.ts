import { readFileSync } from 'node:fs';
import { WorkerAgent } from './agent';
import { SecretRefused } from './grant';
import type { RuntimeName } from './runtime/pool';

/**
 * The agent's process entry, configured by environment variables (the container's way) or a
 * JSON config file written by `ferry endpoint register --write-config`:
 *   FERRY_API_URL, FERRY_ENDPOINT_ID, FERRY_ENDPOINT_SECRET, or FERRY_WORKER_CONFIG=<file>;
 *   optional FERRY_POOL_SIZE, FERRY_RUNTIMES (node,python), FERRY_GRACE_MS, FERRY_HEARTBEAT_MS,
 *   FERRY_VISIBILITY_SECONDS (how long a task a dead agent held stays hidden; default 60).
 * Exits 0 after a graceful stop (SIGTERM/SIGINT), 2 if the endpoint secret is refused.
 */
export interface WorkerConfig {
  api_url: string;
  endpoint_id: string;
  endpoint_secret: string;
}

export function workerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const file = env.FERRY_WORKER_CONFIG;
  const fromFile: Partial<WorkerConfig> = file ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const cfg = {
    api_url: env.FERRY_API_URL ?? fromFile.api_url,
    endpoint_id: env.FERRY_ENDPOINT_ID ?? fromFile.endpoint_id,
    endpoint_secret: env.FERRY_ENDPOINT_SECRET ?? fromFile.endpoint_secret,
  };
  const missing = Object.entries(cfg).filter(([, v]) => !v).map(([k]) => `FERRY_${k.toUpperCase()}`);
  if (missing.length) throw new Error(`missing configuration: ${missing.join(', ')} (or FERRY_WORKER_CONFIG=<file>)`);
  return cfg as WorkerConfig;
}

export async function runAgent(
  cfg: WorkerConfig,
  opts: { poolSize?: number; runtimes?: RuntimeName[]; graceMs?: number; heartbeatMs?: number; visibilitySeconds?: number } = {},
): Promise<number> {
  const agent = new WorkerAgent({
    apiUrl: cfg.api_url.replace(/\/+$/, ''),
    endpointId: cfg.endpoint_id,
    endpointSecret: cfg.endpoint_secret,
    ...opts,
  });
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  agent.onFatal(async (err) => {
    console.error(`ferry worker: ${err.message}`);
    await agent.stop(0).catch(() => undefined);
    resolveExit(2);
  });
  const shutdown = (signal: string) => {
    console.error(`ferry worker: ${signal}: finishing running tasks, then stopping`);
    agent.stop().then(
      () => resolveExit(0),
      () => resolveExit(1),
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  try {
    await agent.start();
  } catch (err) {
    if (err instanceof SecretRefused) {
      console.error(`ferry worker: ${err.message}`);
      await agent.stop(0).catch(() => undefined);
      return 2;
    }
    throw err;
  }
  console.error(`ferry worker: serving endpoint ${cfg.endpoint_id} as ${agent.workerId}`);
  return exit;
}

const int = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);

if (require.main === module) {
  let cfg: WorkerConfig;
  try {
    cfg = workerConfigFromEnv();
  } catch (err) {
    console.error(`ferry worker: ${(err as Error).message}`);
    process.exit(2);
  }
  runAgent(cfg, {
    poolSize: int(process.env.FERRY_POOL_SIZE),
    runtimes: process.env.FERRY_RUNTIMES?.split(',').map((s) => s.trim()) as RuntimeName[] | undefined,
    graceMs: int(process.env.FERRY_GRACE_MS),
    heartbeatMs: int(process.env.FERRY_HEARTBEAT_MS),
    visibilitySeconds: int(process.env.FERRY_VISIBILITY_SECONDS),
  }).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`ferry worker: ${err?.message ?? err}`);
      process.exit(1);
    },
  );
}
