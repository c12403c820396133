import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Executor, RemoteError, TaskCancelled, TaskTimeout } from '../../sdk';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { runCommand } from '../helpers/proc';

jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');
let stack: LocalStack;
let token: string;
let client: Client;
let served: { endpoint_id: string; endpoint_secret: string };
let idle: { endpoint_id: string };
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack();
  token = await stack.createUser('sdk-user');
  client = new Client({ apiUrl: stack.apiUrl, token });
  served = await client.registerEndpoint('served');
  // An endpoint with no worker: its tasks stay queued.
  idle = await client.registerEndpoint('idle');
  const agent = spawnAgent(stack, served.endpoint_id, served.endpoint_secret);
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

const executor = (endpointId: string, opts: Record<string, unknown> = {}) =>
  new Executor({ endpointId, apiUrl: stack.apiUrl, token, ...opts });

const run = (cmd: string, args: string[], env: Record<string, string> = {}) => runCommand(cmd, args, { env });

describe('the tutorial', () => {
  it('runs examples/tutorial.ts against the local stack and prints what the Globus tutorial shows', async () => {
    const out = await run(process.execPath, ['--import', 'tsx', 'examples/tutorial.ts'], {
      FERRY_API_URL: stack.apiUrl,
      FERRY_TOKEN: token,
      FERRY_ENDPOINT_ID: served.endpoint_id,
    });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const lines = out.stdout.trim().split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        'Submit returned: ComputeFuture',
        'Is the future done? false',
        'Result: Hello World!',
        'Is the future done now? true',
        'Remote exception: RangeError: division by zero',
        'getSum(40, 2) = 42',
        `Date on the endpoint: ${new Date().toISOString().slice(0, 10)}`,
      ]),
    );
    expect(out.stdout).toMatch(/Echo: Hello World from \S+/);
    const estimates = [...out.stdout.matchAll(/Estimate \d: (\d\.\d+)/g)].map((m) => Number(m[1]));
    expect(estimates).toHaveLength(3);
    estimates.forEach((e) => expect(Math.abs(e - Math.PI)).toBeLessThan(0.05));
    expect(out.stdout).toMatch(/Endpoint status: online \(workers: 2/);
  });
});

describe('Executor', () => {
  it('sends 1,000 submits made in one tick in ceil(1000/batch) requests, registering the function once', async () => {
    const gce = executor(idle.endpoint_id, { batchSize: 250 });
    const noop = () => null;
    const futures = Array.from({ length: 1000 }, () => gce.submit(noop));
    await eventuallyTrue(() => futures.every((f) => f.taskId !== undefined), 30_000);
    expect(gce.stats.submitRequests).toBeLessThanOrEqual(4);
    expect(gce.stats.registrations).toBe(1);
    expect(new Set(futures.map((f) => f.taskId)).size).toBe(1000);
    const group = await client.getTaskGroup(gce.taskGroupId);
    expect(group).toHaveLength(1000);
    expect(new Set(group.map((t) => t.function_id)).size).toBe(1);
    await gce.shutdown({ cancelFutures: true });
    await expect(futures[0]!.result()).rejects.toBeInstanceOf(TaskCancelled);
  });

  it('cancels a queued task and says so on the server', async () => {
    const gce = executor(idle.endpoint_id);
    const f = gce.submit(() => 'never');
    await eventuallyTrue(() => f.taskId !== undefined);
    expect(await f.cancel()).toBe(true);
    await expect(f.result()).rejects.toBeInstanceOf(TaskCancelled);
    expect(f.status()).toBe('cancelled');
    expect((await client.getTask(f.taskId!)).status).toBe('cancelled');
    await gce.shutdown();
  });

  it('gives a RemoteError with the remote type, message and traceback', async () => {
    const gce = executor(served.endpoint_id);
    const err = await gce
      .submit(function explode() {
        throw new TypeError('no such thing');
      })
      .exception();
    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).remoteType).toBe('TypeError');
    expect((err as RemoteError).message).toBe('no such thing');
    expect((err as RemoteError).remoteTraceback).toContain('explode');
    await gce.shutdown();
  });

  it('times out a wait without losing the task, and resolves a future awaited after shutdown', async () => {
    const gce = executor(served.endpoint_id);
    const slow = gce.submit((ms: number) => new Promise((r) => setTimeout(() => r('late'), ms)), 1500);
    await expect(slow.result({ timeoutMs: 100 })).rejects.toBeInstanceOf(TaskTimeout);
    await gce.shutdown({ wait: false });
    expect(() => gce.submit(() => 1)).toThrow(/shut down/);
    expect(await slow).toBe('late');
    expect(slow.done()).toBe(true);
  });

  it('carries a 20 MB argument and a 20 MB result through S3', async () => {
    const gce = executor(served.endpoint_id);
    const big = Buffer.alloc(20 * 1024 * 1024, 9);
    const out = await gce.submit((b: Buffer) => {
      let sum = 0;
      for (const x of b) sum += x;
      return { sum, echo: Buffer.from(b).reverse() };
    }, big);
    expect(out.sum).toBe(9 * big.length);
    expect(Buffer.isBuffer(out.echo)).toBe(true);
    expect(out.echo.length).toBe(big.length);
    await gce.shutdown();
  });

  it('maps over items and runs registered functions with kwargs', async () => {
    const gce = executor(served.endpoint_id);
    expect(await gce.map((x: number) => x * x, [1, 2, 3, 4])).toEqual([1, 4, 9, 16]);
    const pyId = await client.registerFunction({
      name: 'greet',
      runtime: 'python',
      entrypoint: 'greet',
      source: 'def greet(name, greeting="Hello"):\n    return f"{greeting}, {name}"\n',
    });
    const f = gce.submitToRegisteredFunction(pyId, ['Ferry'], { greeting: 'Hi' });
    // Python functions take JSON arguments from the TypeScript SDK and answer in JSON.
    expect(await f).toBe('Hi, Ferry');
    await gce.shutdown();
  });
});

describe('ferry CLI', () => {
  const ferry = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [join(ROOT, 'cli', 'bin.js'), ...args], { FERRY_API_URL: stack.apiUrl, FERRY_TOKEN: token, ...env });

  it('prints JSON with --json and exits 0', async () => {
    const list = await ferry(['--json', 'endpoint', 'list']);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).map((e: { name: string }) => e.name)).toEqual(expect.arrayContaining(['served', 'idle']));
    const status = await ferry(['--json', 'endpoint', 'status', served.endpoint_id]);
    expect(JSON.parse(status.stdout)).toMatchObject({ status: 'online' });
    const human = await ferry(['endpoint', 'list']);
    expect(human.stdout).toMatch(/^ENDPOINT_ID\s+NAME/);
  });

  it('runs a file and exits 0 on success, 3 on a remote failure, 4 on a timeout, 2 on bad usage', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    writeFileSync(join(dir, 'sum.js'), '(a, b) => a + b\n');
    writeFileSync(join(dir, 'fail.py'), 'def fail():\n    return 1 / 0\n');
    const ok = await ferry(['--json', 'run', join(dir, 'sum.js'), '--endpoint', served.endpoint_id, '--args', '[40, 2]']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ status: 'success', result: 42 });
    const failed = await ferry(['run', join(dir, 'fail.py'), '--entrypoint', 'fail', '--endpoint', served.endpoint_id]);
    expect(failed.code).toBe(3);
    expect(failed.stdout).toContain('ZeroDivisionError');
    const queued = await ferry([
      '--json',
      'run',
      join(dir, 'sum.js'),
      '--endpoint',
      idle.endpoint_id,
      '--args',
      '[1, 1]',
      '--timeout',
      '1',
    ]);
    expect(queued.code).toBe(4);
    expect((await ferry(['run', join(dir, 'sum.js')])).code).toBe(2);
    expect((await ferry(['run', join(dir, 'sum.js'), '--endpoint', served.endpoint_id, '--args', '{oops'])).code).toBe(2);
    expect((await ferry(['endpoint', 'list'], { FERRY_TOKEN: 'fry_' + 'z'.repeat(43) })).code).toBe(1);
    const noCreds = await run(process.execPath, [join(ROOT, 'cli', 'bin.js'), 'endpoint', 'list'], {
      FERRY_API_URL: '',
      FERRY_TOKEN: '',
      HOME: dir,
      FERRY_CREDENTIALS: '',
    });
    expect(noCreds.code).toBe(2);
    expect(noCreds.stderr).toMatch(/no Ferry credentials/);
  });

  it('registers an endpoint, writes a worker config and reports a cancelled task with exit 3', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    const cfg = join(dir, 'ep.json');
    const reg = await ferry(['--json', 'endpoint', 'register', '--name', 'cli-ep', '--write-config', cfg]);
    expect(reg.code).toBe(0);
    const ep = JSON.parse(reg.stdout);
    expect(ep.endpoint_secret).toMatch(/^fes_/);
    const id = await client.run(await client.registerFunction(() => 1), ep.endpoint_id);
    expect((await ferry(['task', 'cancel', id])).code).toBe(0);
    const got = await ferry(['--json', 'task', 'get', id]);
    expect(got.code).toBe(3);
    expect(JSON.parse(got.stdout).status).toBe('cancelled');
    expect((await ferry(['endpoint', 'delete', ep.endpoint_id])).code).toBe(0);
  });
});

describe('ferry worker start', () => {
  it('serves an endpoint from a config file written by endpoint register, and drains on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    const cfg = join(dir, 'ep.json');
    const reg = await run(
      process.execPath,
      [join(ROOT, 'cli', 'bin.js'), '--json', 'endpoint', 'register', '--name', 'cli-worker', '--write-config', cfg],
      {
        FERRY_API_URL: stack.apiUrl,
        FERRY_TOKEN: token,
      },
    );
    const ep = JSON.parse(reg.stdout);
    const worker = spawn(
      process.execPath,
      [join(ROOT, 'cli', 'bin.js'), 'worker', 'start', '--config', cfg, '--pool-size', '1', '--runtimes', 'node'],
      {
        cwd: ROOT,
        env: { ...process.env, ...stack.workerEnv },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let log = '';
    worker.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    await eventuallyTrue(() => log.includes('serving endpoint'), 30_000);
    const gce = executor(ep.endpoint_id);
    expect(await gce.submit((a: number, b: number) => a * b, 6, 7)).toBe(42);
    await gce.shutdown();
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
    const missing = await run(process.execPath, [join(ROOT, 'cli', 'bin.js'), 'worker', 'start'], {
      FERRY_API_URL: '',
      FERRY_ENDPOINT_ID: '',
      FERRY_ENDPOINT_SECRET: '',
      FERRY_WORKER_CONFIG: '',
    });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing configuration/);
  });
});

async function eventuallyTrue(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
