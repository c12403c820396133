import { readFileSync } from 'node:fs';
import { WorkerAgent } from './agent/agent';
import { taskProtectionFromEnv } from './ecs-protection';
import { SecretRefused } from './grant';
import { IsolationConfigError, ISOLATION_MODES, resolveIsolation, type IsolationMode, type IsolationSettings } from './runtime/isolation';
import {
  describeMpiLauncher,
  MpiConfigError,
  MPI_LAUNCHER_SETTINGS,
  resolveMpiLauncher,
  type MpiLauncher,
  type MpiLauncherSetting,
} from './runtime/mpi';
import { parseProcessRuntimes, type ProcessRuntime } from '../core/runtimes';

/**
 * The agent's process entry, configured by environment variables (the container's way) or a
 * JSON config file written by `ferry endpoint register --write-config`:
 *   FERRY_API_URL, FERRY_ENDPOINT_ID, FERRY_ENDPOINT_SECRET, or FERRY_WORKER_CONFIG=<file>;
 *   optional FERRY_POOL_SIZE, FERRY_RUNTIMES (node,python), FERRY_GRACE_MS, FERRY_HEARTBEAT_MS,
 *   FERRY_VISIBILITY_SECONDS (how long a task a dead agent held stays hidden; default 60),
 *   FERRY_STARTED_REPORT_MS (a task running this long gets a separate "started" report; a quicker one
 *   sends only its result; default 30, 0 reports every start at once),
 *   FERRY_PARENT_PID (set by the Ferry process that spawned it: drain when that process dies).
 * On ECS (ECS_AGENT_URI, set by ECS): task scale-in protection while tasks are held, each grant
 *   FERRY_PROTECTION_MINUTES long (default 15), renewed every third of that (workers/ecs-protection.ts).
 * Isolation between the users of a shared endpoint (env, or the same keys in lower case in the file):
 *   FERRY_ISOLATION auto|multi-user|sandbox|none (default auto), FERRY_USER_MAP (JSON {user id: account}),
 *   FERRY_TASK_ENV (JSON {name: value}), FERRY_ENV_PASSTHROUGH (names, comma-separated),
 *   FERRY_SANDBOX_NETWORK (true|false; default true), FERRY_OWNER_UNSANDBOXED (default false),
 *   FERRY_IDLE_SECONDS (default 60), FERRY_MAX_PROCESSES (default 2 × pool size × runtimes),
 *   FERRY_PYTHON (default python3).
 * MPI functions: FERRY_MPI_LAUNCHER / mpi_launcher auto|mpiexec|srun|none (default auto: srun inside a
 *   Slurm job, else mpiexec on PATH, else none).
 * Exits 0 after a graceful stop (SIGTERM/SIGINT, or its parent process died), 2 if the endpoint secret is refused or the
 * configured isolation cannot work here.
 */
export interface WorkerConfig {
  api_url: string;
  endpoint_id: string;
  endpoint_secret: string;
}

/** Isolation and runtime settings, from the same file and environment as WorkerConfig. */
export interface WorkerSettings extends IsolationSettings {
  idleSeconds?: number;
  maxProcesses?: number;
  python?: string;
  mpiLauncher?: MpiLauncherSetting;
}

interface SettingsFile {
  isolation?: string;
  user_map?: Record<string, string>;
  task_env?: Record<string, string>;
  env_passthrough?: string[] | string;
  sandbox_network?: boolean | string;
  owner_unsandboxed?: boolean | string;
  idle_seconds?: number | string;
  max_processes?: number | string;
  python?: string;
  mpi_launcher?: string;
}

export function workerSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerSettings {
  const file = env.FERRY_WORKER_CONFIG;
  const f: SettingsFile = file ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const json = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    try {
      return JSON.parse(value) as unknown;
    } catch {
      throw new Error(`${name} must be JSON`);
    }
  };
  const flag = (name: string, value: boolean | string | undefined): boolean | undefined => {
    if (value === undefined || typeof value === 'boolean') return value;
    if (/^(1|true|on|yes)$/i.test(value)) return true;
    if (/^(0|false|off|no)$/i.test(value)) return false;
    throw new Error(`${name} must be true or false, not ${JSON.stringify(value)}`);
  };
  const count = (name: string, value: number | string | undefined): number | undefined => {
    if (value === undefined || value === '') return undefined;
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number`);
    return n;
  };
  const object = (name: string, value: unknown): Record<string, string> | undefined => {
    if (value === undefined) return undefined;
    if (!value || typeof value !== 'object' || Array.isArray(value) || Object.values(value).some((v) => typeof v !== 'string')) {
      throw new Error(`${name} must be an object of strings`);
    }
    return value as Record<string, string>;
  };
  const isolation = env.FERRY_ISOLATION ?? f.isolation;
  if (isolation !== undefined && !ISOLATION_MODES.includes(isolation as IsolationMode)) {
    throw new Error(`isolation must be one of ${ISOLATION_MODES.join(', ')}, not ${JSON.stringify(isolation)}`);
  }
  const mpiLauncher = env.FERRY_MPI_LAUNCHER ?? f.mpi_launcher;
  if (mpiLauncher !== undefined && !MPI_LAUNCHER_SETTINGS.includes(mpiLauncher as MpiLauncherSetting)) {
    throw new Error(`mpi_launcher must be one of ${MPI_LAUNCHER_SETTINGS.join(', ')}, not ${JSON.stringify(mpiLauncher)}`);
  }
  const passthrough = env.FERRY_ENV_PASSTHROUGH ?? f.env_passthrough;
  return {
    isolation: isolation as IsolationMode | undefined,
    userMap: object('user_map', json('FERRY_USER_MAP', env.FERRY_USER_MAP) ?? f.user_map),
    taskEnv: object('task_env', json('FERRY_TASK_ENV', env.FERRY_TASK_ENV) ?? f.task_env),
    envPassthrough:
      typeof passthrough === 'string'
        ? passthrough
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : passthrough,
    sandboxNetwork: flag('sandbox_network', env.FERRY_SANDBOX_NETWORK ?? f.sandbox_network),
    ownerUnsandboxed: flag('owner_unsandboxed', env.FERRY_OWNER_UNSANDBOXED ?? f.owner_unsandboxed),
    idleSeconds: count('idle_seconds', env.FERRY_IDLE_SECONDS ?? f.idle_seconds),
    maxProcesses: count('max_processes', env.FERRY_MAX_PROCESSES ?? f.max_processes),
    python: env.FERRY_PYTHON ?? f.python,
    mpiLauncher: mpiLauncher as MpiLauncherSetting | undefined,
  };
}

export function workerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const file = env.FERRY_WORKER_CONFIG;
  const fromFile: Partial<WorkerConfig> = file ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const cfg = {
    api_url: env.FERRY_API_URL ?? fromFile.api_url,
    endpoint_id: env.FERRY_ENDPOINT_ID ?? fromFile.endpoint_id,
    endpoint_secret: env.FERRY_ENDPOINT_SECRET ?? fromFile.endpoint_secret,
  };
  const missing = Object.entries(cfg)
    .filter(([, v]) => !v)
    .map(([k]) => `FERRY_${k.toUpperCase()}`);
  if (missing.length) throw new Error(`missing configuration: ${missing.join(', ')} (or FERRY_WORKER_CONFIG=<file>)`);
  return cfg as WorkerConfig;
}

/** The isolation the settings ask for; undefined, having said why, when it cannot work here (fail closed). */
export function isolationOrRefuse(settings: WorkerSettings): ReturnType<typeof resolveIsolation> | undefined {
  try {
    return resolveIsolation(settings, { warn: (line) => console.error(line) });
  } catch (err) {
    if (!(err instanceof IsolationConfigError)) throw err;
    console.error(`ferry worker: ${err.message}`);
    return undefined;
  }
}

/** The MPI launcher the settings ask for (null: none); false, having said why, when it cannot work here. */
export function mpiLauncherOrRefuse(settings: WorkerSettings): MpiLauncher | null | false {
  try {
    return resolveMpiLauncher(settings.mpiLauncher ?? 'auto') ?? null;
  } catch (err) {
    if (!(err instanceof MpiConfigError)) throw err;
    console.error(`ferry worker: ${err.message}`);
    return false;
  }
}

/** Starts the agent; false, having said why and stopped it, when its secret is refused. */
export async function startOrRefuse(agent: WorkerAgent): Promise<boolean> {
  try {
    await agent.start();
    return true;
  } catch (err) {
    if (!(err instanceof SecretRefused)) throw err;
    console.error(`ferry worker: ${err.message}`);
    await agent.stop(0).catch(() => undefined);
    return false;
  }
}

export async function runAgent(
  cfg: WorkerConfig,
  opts: {
    poolSize?: number;
    runtimes?: ProcessRuntime[];
    graceMs?: number;
    heartbeatMs?: number;
    visibilitySeconds?: number;
    startedReportDelayMs?: number;
    parentPid?: number;
  } = {},
  settings: WorkerSettings = {},
): Promise<number> {
  const isolation = isolationOrRefuse(settings);
  if (!isolation) return 2;
  const mpiLauncher = mpiLauncherOrRefuse(settings);
  if (mpiLauncher === false) return 2;
  // On ECS (ECS_AGENT_URI set): scale-in protection while the agent holds tasks.
  const protection = taskProtectionFromEnv((msg, extra) => console.error(JSON.stringify({ at: new Date().toISOString(), msg, ...extra })));
  const agent = new WorkerAgent({
    apiUrl: cfg.api_url.replace(/\/+$/, ''),
    endpointId: cfg.endpoint_id,
    endpointSecret: cfg.endpoint_secret,
    ...opts,
    isolation,
    idleMs: settings.idleSeconds === undefined ? undefined : settings.idleSeconds * 1000,
    maxProcesses: settings.maxProcesses,
    pythonCommand: settings.python,
    mpiLauncher,
    onHeld: protection && ((count) => protection.held(count)),
  });
  let resolveExit!: (code: number) => void;
  const exit = new Promise<number>((r) => (resolveExit = r));
  agent.onFatal(async (err) => {
    console.error(`ferry worker: ${err.message}`);
    await agent.stop(0).catch(() => undefined);
    resolveExit(2);
  });
  // One drain, whatever asks for it first (SIGTERM, SIGINT, the parent's death); a repeated
  // SIGTERM is only noted, a second Ctrl-C (SIGINT) stops at once, as an operator expects.
  let draining = false;
  const shutdown = (why: string) => {
    if (draining && why === 'SIGINT') {
      console.error('ferry worker: SIGINT again: stopping at once; unfinished tasks will be delivered again');
      process.exit(130);
    }
    if (draining) return console.error(`ferry worker: ${why}: already finishing running tasks`);
    draining = true;
    console.error(`ferry worker: ${why}: finishing running tasks, then stopping`);
    agent.stop().then(
      () => resolveExit(0),
      () => resolveExit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  if (opts.parentPid) watchParent(opts.parentPid, () => shutdown(`its parent process ${opts.parentPid} has died`));
  if (!(await startOrRefuse(agent))) return 2;
  console.error(
    `ferry worker: serving endpoint ${cfg.endpoint_id} as ${agent.workerId}; isolation ${isolation.describe()}; mpi launcher ${describeMpiLauncher(mpiLauncher ?? undefined)}${protection ? '; ECS task scale-in protection while busy' : ''}`,
  );
  const code = await exit;
  await protection?.close();
  return code;
}

/**
 * An agent started by another Ferry process (npm start, an endpoint manager; FERRY_PARENT_PID)
 * must not run on after that process is killed (kill -9 gives it no chance to stop the agent):
 * once this process is handed to another parent (init or a subreaper), it drains like on SIGTERM.
 * Its output pipe broke with its parent, so writes to it are dropped rather than crashing the drain.
 */
function watchParent(parent: number, onDeath: () => void, everyMs = 1000): void {
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    for (const stream of [process.stdout, process.stderr]) {
      stream.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EPIPE') throw err;
      });
    }
    onDeath();
  }, everyMs);
  timer.unref();
}

const int = (v: string | undefined) => (v && /^\d+$/.test(v) ? Number(v) : undefined);

if (require.main === module) {
  let cfg: WorkerConfig;
  let settings: WorkerSettings;
  let runtimes: ProcessRuntime[] | undefined;
  try {
    cfg = workerConfigFromEnv();
    settings = workerSettingsFromEnv();
    runtimes = parseProcessRuntimes(process.env.FERRY_RUNTIMES);
  } catch (err) {
    console.error(`ferry worker: ${(err as Error).message}`);
    process.exit(2);
  }
  runAgent(
    cfg,
    {
      poolSize: int(process.env.FERRY_POOL_SIZE),
      runtimes,
      graceMs: int(process.env.FERRY_GRACE_MS),
      heartbeatMs: int(process.env.FERRY_HEARTBEAT_MS),
      visibilitySeconds: int(process.env.FERRY_VISIBILITY_SECONDS),
      startedReportDelayMs: int(process.env.FERRY_STARTED_REPORT_MS),
      parentPid: int(process.env.FERRY_PARENT_PID),
    },
    settings,
  ).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`ferry worker: ${err?.message ?? err}`);
      process.exit(1);
    },
  );
}
