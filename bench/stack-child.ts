import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { StackReply, StackRequest } from './stack-process';

export type StackCounts = Extract<StackReply, { type: 'counts' }>;

/** The bench's handle on a local stack running in its own process (bench/stack-process.ts). */
export interface StackChild {
  apiUrl: string;
  workerEnv: Record<string, string>;
  child: ChildProcess;
  createUser(name: string): Promise<string>;
  /** The stack process's counts since the last reset; with `reset`, starts them again. */
  counts(reset?: boolean): Promise<StackCounts>;
  close(): Promise<void>;
}

/**
 * Starts the local stack in a child process under tsx, as `npm start` does. With `profileDir`,
 * node writes the child's CPU profiles there when it exits (--cpu-prof; a file per thread), under
 * stack-<label>/.
 */
export async function spawnStackChild(opts: { profileDir?: string; label?: string } = {}): Promise<StackChild> {
  const prof = opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(opts.profileDir, `stack-${opts.label ?? 'bench'}`)}`] : [];
  const preload = ['--require', join(__dirname, 'dynalite-gsi-capacity.js')];
  const child = spawn(process.execPath, [...prof, ...preload, '--import', 'tsx', join(__dirname, 'stack-process.ts')], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', FERRY_COUNT_CAPACITY: '1' },
  });
  // One request at a time of each type: replies come back in order.
  const waiting = new Map<string, ((m: StackReply) => void)[]>();
  const next = (type: StackReply['type']) =>
    new Promise<StackReply>((resolve) => waiting.set(type, [...(waiting.get(type) ?? []), resolve]));
  child.on('message', (m: StackReply) => waiting.get(m.type)?.shift()?.(m));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = (await Promise.race([next('ready'), exited.then(() => undefined)])) as Extract<StackReply, { type: 'ready' }> | undefined;
  if (!ready) throw new Error('the bench stack process exited before it was ready');
  const ask = async <T extends StackReply['type']>(req: StackRequest, reply: T) => {
    const answer = next(reply);
    child.send(req);
    return (await answer) as Extract<StackReply, { type: T }>;
  };
  return {
    apiUrl: ready.apiUrl,
    workerEnv: ready.workerEnv,
    child,
    createUser: async (name) => (await ask({ type: 'user', name }, 'user')).token,
    counts: (reset) => ask({ type: 'counts', reset }, 'counts'),
    close: async () => {
      if (child.exitCode === null) child.send({ type: 'close' } satisfies StackRequest);
      // A request still running in the stack (say, a long endpoint delete) must not hold the bench.
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
