import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { Client } from '../../sdk';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { runCommand } from '../helpers/proc';

jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');

describe('ferry run and ferry task wait against the local stack', () => {
  let stack: LocalStack;
  let agents: AgentProcess[] = [];
  let env: Record<string, string | undefined>;
  let endpointId: string;
  let client: Client;
  const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-tasks-'));
  const ferry = (args: string[]) => runCommand(process.execPath, [join(ROOT, 'cli', 'bin.js'), ...args], { env });

  beforeAll(async () => {
    stack = await startLocalStack();
    const token = await stack.createUser('cli-user');
    env = {
      FERRY_API_URL: stack.apiUrl,
      FERRY_TOKEN: token,
      FERRY_HOME: dir,
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
    };
    client = new Client({ apiUrl: stack.apiUrl, token });
    const ep = await client.registerEndpoint('cli-tasks');
    endpointId = ep.endpoint_id;
    agents = [spawnAgent(stack, ep.endpoint_id, ep.endpoint_secret)];
    await agents[0]!.ready;
  });
  afterAll(async () => {
    await stopAgents(agents);
    await stack?.close();
  });

  it('ferry run registers a function, runs it once and prints its result', async () => {
    const file = join(dir, 'sum.js');
    writeFileSync(file, '(a, b) => a + b\n');
    const run = await ferry(['run', file, '--endpoint', endpointId, '--args', '[40, 2]', '--timeout', '60']);
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('42');
    expect(run.code).toBe(0);
  });

  it('ferry task wait gives up at its timeout (exit 4) while a task runs, then reports every task once all finish', async () => {
    const slow = await client.registerFunction({
      name: 'slow',
      runtime: 'node',
      source: '(ms) => new Promise((r) => setTimeout(() => r(ms), ms))',
    });
    const { task_ids } = await client.batchRun(endpointId, [
      { function_id: slow, args: [10] },
      { function_id: slow, args: [4000] },
    ]);
    const early = await ferry(['--json', 'task', 'wait', ...task_ids, '--timeout', '0.5']);
    expect(early.code).toBe(4);
    const late = await ferry(['--json', 'task', 'wait', ...task_ids, '--timeout', '60']);
    expect(late.code).toBe(0);
    const views = JSON.parse(late.stdout) as { task_id: string; status: string }[];
    expect(views.map((v) => [v.task_id, v.status])).toEqual(task_ids.map((id) => [id, 'success']));
  });

  it('ferry task wait names unknown ids and exits non-zero', async () => {
    const out = await ferry(['task', 'wait', '00000000-0000-4000-8000-000000000000', '--timeout', '5']);
    expect(out.stderr).toContain('unknown task ids: 00000000-0000-4000-8000-000000000000');
    expect(out.code).not.toBe(0);
  });
});
