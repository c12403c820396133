import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { LocalStack } from '../../local/stack';

const ROOT = join(__dirname, '..', '..');

export interface AgentProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once the agent says it is serving its endpoint. */
  ready: Promise<void>;
}

/** A real worker agent process (workers/main.ts) for an endpoint of the stack. */
export function spawnAgent(stack: LocalStack, endpointId: string, secret: string, env: Record<string, string> = {}): AgentProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'workers', 'main.ts')], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...stack.awsEnv,
      FERRY_API_URL: stack.apiUrl,
      FERRY_ENDPOINT_ID: endpointId,
      FERRY_ENDPOINT_SECRET: secret,
      FERRY_POOL_SIZE: '2',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let onReady!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const collect = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.includes('serving endpoint')) onReady();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      onReady();
      resolve({ code, signal });
    }),
  );
  return { child, output: () => out, exited, ready };
}

export async function stopAgents(agents: AgentProcess[]): Promise<void> {
  await Promise.all(
    agents.map(async (a) => {
      if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
      await a.exited;
    }),
  );
}
