import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents } from './agents';
import { caller } from './api';
import { runCommand, type CommandRun } from './proc';

const ROOT = join(__dirname, '..', '..');

/** What a Python script needs to import ferry_compute from the repository; no credentials file may leak in. */
export const pythonEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  PYTHONPATH: join(ROOT, 'python'),
  PYTHONDONTWRITEBYTECODE: '1',
  FERRY_CREDENTIALS: join(ROOT, 'python', 'tests', 'no-such-credentials.json'),
  ...extra,
});

export interface PythonStack {
  stack: LocalStack;
  /** Runs python3 with the stack's API, a user's token and the endpoint in its environment. */
  python(args: string[], timeoutMs: number): Promise<CommandRun>;
  stop(): Promise<void>;
}

/** A fresh local stack, a user, and an endpoint served by one real agent (two runtime processes, `agentEnv` on top). */
export async function startPythonStack(
  name: string,
  agentEnv: Record<string, string> = {},
  scriptEnv: Record<string, string> = {},
): Promise<PythonStack> {
  const stack = await startLocalStack({ sweepIntervalMs: 1000 });
  const token = await stack.createUser(name);
  const ep = await caller(stack.apiUrl, token)('POST', '/v1/endpoints', { name });
  if (ep.status !== 201) throw new Error(`could not register an endpoint: ${ep.status}`);
  const agent = spawnAgent(stack, ep.body.endpoint_id, ep.body.endpoint_secret, { FERRY_POOL_SIZE: '2', ...agentEnv });
  await agent.ready;
  const env = pythonEnv({ FERRY_API_URL: stack.apiUrl, FERRY_TOKEN: token, FERRY_ENDPOINT_ID: ep.body.endpoint_id, ...scriptEnv });
  return {
    stack,
    python: (args, timeoutMs) => runCommand('python3', args, { env, timeoutMs }),
    stop: async () => {
      await stopAgents([agent]);
      await stack.close();
    },
  };
}
