import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..');
const INHERITED_SECRETS = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'FERRY_WORKER_ROLE_ARN',
  'FERRY_WORKER_ROLE_ID',
];

export interface AgentProcess {
  child: ChildProcess;
  /** Everything the agent printed so far (when its output is captured). */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once the agent says it is serving its endpoint (or has exited). */
  ready: Promise<void>;
}

/**
 * A worker agent in its own process, configured by `env`: from source through tsx, or with
 * `bundle` the esbuild bundle that the container runs (`npm run build:worker` makes it).
 * With `detached` it leads its own process group, so a Ctrl-C at the terminal reaches only
 * this process, which then signals the agent once (see AgentSupervisor).
 */
export function spawnAgentProcess(
  env: Record<string, string | undefined>,
  opts: { inherit?: boolean; bundle?: boolean; detached?: boolean; nodeArgs?: string[] } = {},
): AgentProcess {
  // nodeArgs: options for node itself, e.g. the bench's --cpu-prof (which NODE_OPTIONS may not carry).
  const args = [
    ...(opts.nodeArgs ?? []),
    ...(opts.bundle ? [join(ROOT, 'dist', 'worker', 'main.js')] : ['--import', 'tsx', join(ROOT, 'workers', 'main.ts')]),
  ];
  // An agent works with the credentials vended to its endpoint, never with whatever this process
  // (the local stack, which runs as the account's admin) holds: those are left out of what it inherits.
  const inherited = { ...process.env };
  for (const name of INHERITED_SECRETS) delete inherited[name];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    // FERRY_PARENT_PID: the agent drains and stops if this process dies without stopping it (kill -9).
    env: { ...inherited, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', FERRY_PARENT_PID: String(process.pid), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached ?? false,
  });
  let out = '';
  let onReady!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const collect = (to: NodeJS.WriteStream) => (chunk: Buffer) => {
    if (opts.inherit) to.write(chunk);
    else out += chunk.toString();
    if (chunk.toString().includes('serving endpoint') || out.includes('serving endpoint')) onReady();
  };
  child.stdout!.on('data', collect(process.stdout));
  child.stderr!.on('data', collect(process.stderr));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      onReady();
      resolve({ code, signal });
    }),
  );
  return { child, output: () => out, exited, ready };
}
