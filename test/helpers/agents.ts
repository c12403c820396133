import { spawnAgentProcess, type AgentProcess } from '../../local/agent-process';
import type { LocalStack } from '../../local/stack';

export type { AgentProcess };

/** A real worker agent process for an endpoint of the stack (two runtime processes unless told). */
export function spawnAgent(
  stack: LocalStack,
  endpointId: string,
  secret: string,
  env: Record<string, string> = {},
  opts: { bundle?: boolean } = {},
): AgentProcess {
  const agentEnv = {
    // Where the AWS servers are, and no credentials: the agent trades its secret for vended ones.
    ...stack.workerEnv,
    FERRY_API_URL: stack.apiUrl,
    FERRY_ENDPOINT_ID: endpointId,
    FERRY_ENDPOINT_SECRET: secret,
    FERRY_POOL_SIZE: '2',
    ...env,
  };
  return spawnAgentProcess(agentEnv, opts);
}

export async function stopAgents(agents: AgentProcess[]): Promise<void> {
  await Promise.all(
    agents.map(async (a) => {
      if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
      await a.exited;
    }),
  );
}
