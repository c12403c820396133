import { Client, Executor, RemoteError } from '../../sdk';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';

// Tasks stay inside their limits on a real agent: a per-task memory cap from the submit, capped
// output that comes back through the API and the SDK, and an agent log that never sees it.

jest.setTimeout(120_000);

let stack: LocalStack;
let client: Client;
let token: string;
let ep: { endpoint_id: string; endpoint_secret: string };
let agent: AgentProcess;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack();
  token = await stack.createUser('limits-user');
  client = new Client({ apiUrl: stack.apiUrl, token });
  ep = await client.registerEndpoint('limits');
  agent = spawnAgent(stack, ep.endpoint_id, ep.endpoint_secret, { FERRY_TASK_MEMORY_MB: '512', FERRY_TASK_OUTPUT_KB: '16' });
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

async function submit(runtime: 'node' | 'python', source: string, task: Record<string, unknown> = {}): Promise<string> {
  const functionId = await client.registerFunction({ name: 'f', runtime, source, entrypoint: runtime === 'python' ? 'f' : undefined });
  const out = await client.batchRun(ep.endpoint_id, [{ function_id: functionId, args: [], ...task }]);
  return out.task_ids[0]!;
}

async function finished(taskId: string) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const t = await client.getTask(taskId);
    if (['success', 'failed', 'cancelled'].includes(t.status)) return t;
    if (Date.now() > deadline) throw new Error(`task ${taskId} did not finish`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const NODE_HOG = '() => { const keep = []; for (let i = 0; i < 32; i++) keep.push(Buffer.alloc(64 << 20, 1)); return keep.length; }';
const PY_HOG = 'def f():\n    keep = []\n    for _ in range(32):\n        keep.append(b"x" * (64 << 20))\n    return len(keep)\n';
const NODE_FLOOD =
  '() => { const line = "y".repeat(1023) + "\\n"; for (let i = 0; i < 10240; i++) process.stdout.write(line); return "flooded"; }';
const PY_FLOOD =
  'import sys\ndef f():\n    line = "y" * 1023 + "\\n"\n    for _ in range(10240):\n        sys.stdout.write(line)\n    return "flooded"\n';

it('says at start how limits are enforced', () => {
  expect(agent.output()).toMatch(/"task_limits":\{"enforced_by":"(cgroup1|cgroup2|rlimit)[^"]*","memory_mb":512/);
});

describe.each([
  [
    'node',
    NODE_HOG,
    NODE_FLOOD,
    '() => { console.log("hello from node"); console.error("careful"); return 42; }',
    '() => { console.log("about to fail"); throw new TypeError("bad"); }',
  ],
  [
    'python',
    PY_HOG,
    PY_FLOOD,
    'import sys\ndef f():\n    print("hello from python")\n    print("careful", file=sys.stderr)\n    return 42\n',
    'def f():\n    print("about to fail")\n    raise TypeError("bad")\n',
  ],
] as const)('%s', (runtime, hog, flood, chatty, failing) => {
  it('fails a task over the memory it asked for with MemoryLimitExceeded; the next task runs', async () => {
    const t = await finished(await submit(runtime, hog, { memory_mb: 200 }));
    expect(t.status).toBe('failed');
    expect(t.exception).toMatchObject({ type: 'MemoryLimitExceeded' });
    expect(t.exception!.message).toMatch(/200 MB/);
    const ok = await finished(await submit(runtime, chatty));
    expect(ok.status).toBe('success');
  });

  it('returns prints with a success and with an exception', async () => {
    const ok = await finished(await submit(runtime, chatty));
    expect(ok.output).toMatchObject({ stdout: `hello from ${runtime}\n`, stderr: 'careful\n' });
    const bad = await finished(await submit(runtime, failing));
    expect(bad.status).toBe('failed');
    expect(bad.output).toMatchObject({ stdout: 'about to fail\n' });
  });

  it('caps 10 MB of output with a marker, and keeps it out of the agent log', async () => {
    const before = agent.output().length;
    const t = await finished(await submit(runtime, flood));
    expect(t.status).toBe('success');
    expect(t.output!.truncated).toBe(true);
    expect(t.output!.stdout_bytes).toBe(10 * 1024 * 1024);
    expect(t.output!.stdout.length).toBeLessThan(16 * 1024 + 100);
    expect(t.output!.stdout).toMatch(/\[ferry: \d+ bytes of output cut\]/);
    expect(agent.output().length - before).toBeLessThan(4096);
  });
});

it('the SDK reads the output from the future, from the client and from a RemoteError', async () => {
  const ex = new Executor({ endpointId: ep.endpoint_id, apiUrl: stack.apiUrl, token });
  try {
    const ok = ex.submit((x: number) => {
      console.log(`squaring ${x}`);
      return x * x;
    }, 7);
    expect(await ok).toBe(49);
    expect(await ok.output()).toMatchObject({ stdout: 'squaring 7\n', stderr: '' });
    expect((await client.getOutput(ok.taskId!))?.stdout).toBe('squaring 7\n');
    const bad = ex.submit(() => {
      console.error('going down');
      throw new Error('down');
    });
    const err = (await bad.exception()) as RemoteError;
    expect(err).toBeInstanceOf(RemoteError);
    expect(err.output?.stderr).toBe('going down\n');
  } finally {
    await ex.shutdown();
  }
});
