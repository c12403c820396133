import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { encodeJsonArgs, inlineBytes, inlineEnvelope } from '../../core/payload';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { WorkerAgent } from '../../workers/agent/agent';
import type { TaskSource } from '../../workers/agent/task-source';
import type { TaskView } from '../../sdk/types';
import { caller, eventually } from '../helpers/api';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';

jest.setTimeout(120_000);

let stack: LocalStack;
let api: ReturnType<typeof caller>;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 250, settings: { FERRY_CREDENTIALS_TTL_SECONDS: '4' } });
  api = caller(stack.apiUrl, await stack.createUser('e2e'));
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

async function endpoint(name: string, extra: Record<string, unknown> = {}) {
  const ep = await api('POST', '/v1/endpoints', { name, ...extra });
  expect(ep.status).toBe(201);
  return { id: ep.body.endpoint_id as string, secret: ep.body.endpoint_secret as string };
}

async function agentFor(ep: { id: string; secret: string }, env: Record<string, string> = {}) {
  const a = spawnAgent(stack, ep.id, ep.secret, env);
  agents.push(a);
  await a.ready;
  return a;
}

interface Submit {
  runtime?: 'node' | 'python';
  entrypoint?: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  payload?: { codec: string; data: string };
  walltime_ms?: number;
}

async function submit(endpointId: string, source: string, s: Submit = {}, count = 1): Promise<string[]> {
  const fn = await api('POST', '/v1/functions', { name: 'f', runtime: s.runtime ?? 'node', source, entrypoint: s.entrypoint });
  expect(fn.status).toBeLessThan(300);
  const task = { function_id: fn.body.function_id, args: s.args, kwargs: s.kwargs, payload: s.payload, walltime_ms: s.walltime_ms };
  const sub = await api('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: Array.from({ length: count }, () => task) });
  expect(sub.status).toBe(202);
  return sub.body.task_ids;
}

const finished = (taskId: string, timeoutMs = 30_000) =>
  eventually(
    async () => {
      const r = await api('GET', `/v1/tasks/${taskId}`);
      return ['success', 'failed', 'cancelled'].includes(r.body.status) && r.body;
    },
    timeoutMs,
    `task ${taskId} to finish`,
    100,
  );

async function resultBytes(view: { result: { data?: string; url?: string; sha256: string } }): Promise<Buffer> {
  const bytes =
    view.result.data !== undefined
      ? Buffer.from(view.result.data, 'base64')
      : Buffer.from(await (await fetch(view.result.url!)).arrayBuffer());
  expect(createHash('sha256').update(bytes).digest('hex')).toBe(view.result.sha256);
  return bytes;
}

const v8Args = (args: unknown[], kwargs: Record<string, unknown> = {}) => ({
  codec: 'node-v8',
  data: serialize({ args, kwargs }).toString('base64'),
});

describe('node functions on a real agent', () => {
  let ep: { id: string; secret: string };
  beforeAll(async () => {
    ep = await endpoint('node-ep');
    await agentFor(ep);
  });

  it('runs hello world and shows the endpoint online', async () => {
    const [id] = await submit(ep.id, '() => "Hello World!"');
    const t = await finished(id!);
    expect(t.status).toBe('success');
    expect(t.result.value).toBe('Hello World!');
    expect(t.transitions.map((x: { state: string }) => x.state)).toEqual(['received', 'waiting-for-endpoint', 'running', 'success']);
    const status = (await api('GET', `/v1/endpoints/${ep.id}/status`)).body;
    expect(status).toMatchObject({ status: 'online', workers: 2 });
  });

  it('reports an exception with its type, message and traceback', async () => {
    const [id] = await submit(ep.id, 'function divide(a, b) { if (b === 0) throw new RangeError("division by zero"); return a / b; }', {
      args: [1, 0],
    });
    const t = await finished(id!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('RangeError');
    expect(t.exception.message).toBe('division by zero');
    expect(t.exception.traceback).toContain('divide');
  });

  it('passes args and kwargs, and keeps Dates, Maps and BigInts with the node-v8 codec', async () => {
    const [sum] = await submit(ep.id, 'function getSum(a, b) { return a + b; }', { args: [40, 2] });
    expect((await finished(sum!)).result.value).toBe(42);
    const [kw] = await submit(ep.id, '(name, opts) => `${opts.greeting}, ${name}`', { args: ['Ferry'], kwargs: { greeting: 'Hi' } });
    expect((await finished(kw!)).result.value).toBe('Hi, Ferry');
    const [rich] = await submit(ep.id, '(d, m, n) => ({ year: d.getUTCFullYear(), keys: [...m.keys()], next: n + 1n })', {
      payload: v8Args([new Date('2026-01-02T00:00:00Z'), new Map([['a', 1]]), 41n]),
    });
    const t = await finished(rich!);
    expect(t.result.codec).toBe('node-v8');
    expect(deserialize(await resultBytes(t))).toEqual({ year: 2026, keys: ['a'], next: 42n });
  });

  it('imports a module inside the body and runs an external program', async () => {
    const [date] = await submit(
      ep.id,
      'async () => { const { format } = await import("node:util"); const os = require("os"); return format("%s|%s", new Date().getUTCFullYear(), typeof os.hostname()); }',
    );
    expect((await finished(date!)).result.value).toBe(`${new Date().getUTCFullYear()}|string`);
    const [echo] = await submit(
      ep.id,
      '() => require("child_process").execSync("echo Hello World from $HOSTNAME", { env: { ...process.env, HOSTNAME: "ferry-test" } }).toString().trim()',
    );
    expect((await finished(echo!)).result.value).toBe('Hello World from ferry-test');
  });

  it('fails a task that calls process.exit(3) alone; the next task on the agent succeeds', async () => {
    const [dead] = await submit(ep.id, '() => process.exit(3)');
    const t = await finished(dead!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('WorkerProcessDied');
    expect(t.exception.message).toMatch(/3/);
    const [next] = await submit(ep.id, '() => "still here"');
    expect((await finished(next!)).result.value).toBe('still here');
  });

  it('kills a task past its walltime and fails it with a timeout', async () => {
    const [slow] = await submit(ep.id, '() => new Promise((r) => setTimeout(r, 60_000))', { walltime_ms: 1000 });
    const t = await finished(slow!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('TaskTimeout');
    const [next] = await submit(ep.id, '() => 1 + 1');
    expect((await finished(next!)).result.value).toBe(2);
  });

  it('fails a result JSON cannot carry with a serialisation error', async () => {
    const [id] = await submit(ep.id, '() => 10n ** 30n', { args: [] });
    const t = await finished(id!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('SerializationError');
  });

  it('brings a 20 MB result back through S3', async () => {
    const [id] = await submit(ep.id, '(n) => Buffer.alloc(n, 7)', { payload: v8Args([20 * 1024 * 1024]) });
    const t = await finished(id!, 60_000);
    expect(t.status).toBe('success');
    expect(t.result.url).toBeDefined();
    const value = deserialize(await resultBytes(t)) as Buffer;
    expect(value.length).toBe(20 * 1024 * 1024);
    expect(value.every((b) => b === 7)).toBe(true);
  });
});

describe('many tasks across agents', () => {
  const PI = `function pi(samples) { let inside = 0; for (let i = 0; i < samples; i++) { const x = Math.random(), y = Math.random(); if (x * x + y * y <= 1) inside++; } return inside * 4 / samples; }`;
  const PY_PI = `
def pi(num_points):
    from random import random
    inside = 0
    for _ in range(num_points):
        x, y = random(), random()
        if x ** 2 + y ** 2 < 1:
            inside += 1
    return (inside * 4 / num_points)
`;

  it('runs 200 Monte Carlo tasks in node and 200 in python across two agents', async () => {
    const ep = await endpoint('pool');
    await Promise.all([agentFor(ep), agentFor(ep)]);
    const nodeIds = await submit(ep.id, PI, { args: [20_000] }, 200);
    const pyIds = await submit(ep.id, PY_PI, { runtime: 'python', entrypoint: 'pi', args: [20_000] }, 200);
    const all = [...nodeIds, ...pyIds];
    const done = await eventually(
      async () => {
        const views: TaskView[] = [];
        for (let i = 0; i < all.length; i += 1000)
          views.push(...(await api('POST', '/v1/tasks/batch', { task_ids: all.slice(i, i + 1000) })).body.tasks);
        return views.every((v) => v.status === 'success') && views;
      },
      90_000,
      '400 tasks',
      1000,
    );
    const estimates = done.map((v) => v.result!.value as number);
    const mean = estimates.reduce((a: number, b: number) => a + b, 0) / estimates.length;
    expect(Math.abs(mean - Math.PI)).toBeLessThan(0.01);
    const workers = new Set(done.map((v) => v.transitions.find((t) => t.state === 'success')!.by));
    expect(workers.size).toBe(2);
  });
});

describe('python functions on a real agent', () => {
  let ep: { id: string; secret: string };
  beforeAll(async () => {
    ep = await endpoint('py-ep');
    await agentFor(ep, { FERRY_RUNTIMES: 'python' });
  });

  it('runs with args and kwargs, imports inside the body and runs echo', async () => {
    const [sum] = await submit(ep.id, 'def get_sum(a, b, c=0):\n    return a + b + c\n', {
      runtime: 'python',
      entrypoint: 'get_sum',
      args: [40, 1],
      kwargs: { c: 1 },
    });
    expect((await finished(sum!)).result.value).toBe(42);
    const [date] = await submit(ep.id, 'def get_date():\n    from datetime import date\n    return str(date.today().year)\n', {
      runtime: 'python',
      entrypoint: 'get_date',
    });
    expect((await finished(date!)).result.value).toBe(String(new Date().getFullYear()));
    const [echo] = await submit(ep.id, "def echo():\n    import os\n    return os.popen('echo Hello World').read()\n", {
      runtime: 'python',
      entrypoint: 'echo',
    });
    expect((await finished(echo!)).result.value).toBe('Hello World\n');
  });

  it('fails ZeroDivisionError with the remote traceback, and re-raises it from the pickle', async () => {
    const pickled = execFileSync('python3', [
      '-c',
      'import pickle,sys,base64; sys.stdout.write(base64.b64encode(pickle.dumps(((1, 0), {}))).decode())',
    ]).toString();
    const [id] = await submit(ep.id, 'def div(a, b):\n    return a / b\n', {
      runtime: 'python',
      entrypoint: 'div',
      payload: { codec: 'python-pickle', data: pickled },
    });
    const t = await finished(id!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('ZeroDivisionError');
    expect(t.exception.traceback).toContain('return a / b');
    const raised = execFileSync('python3', [
      '-c',
      'import pickle,sys,base64\ntry:\n    raise pickle.loads(base64.b64decode(sys.argv[1]))\nexcept ZeroDivisionError as e:\n    print("caught", type(e).__name__, e)',
      t.exception.payload.data,
    ]).toString();
    expect(raised.trim()).toBe('caught ZeroDivisionError division by zero');
  });

  it('fails os._exit alone', async () => {
    const [dead] = await submit(ep.id, 'def die():\n    import os\n    os._exit(3)\n', { runtime: 'python', entrypoint: 'die' });
    expect((await finished(dead!)).exception.type).toBe('WorkerProcessDied');
    const [next] = await submit(ep.id, 'def ok():\n    return "ok"\n', { runtime: 'python', entrypoint: 'ok' });
    expect((await finished(next!)).result.value).toBe('ok');
  });
});

describe('a shared endpoint on a real agent (isolation auto: sandbox here)', () => {
  it("runs another user's task in a process of its own, with a minimal environment, never as root", async () => {
    const ep = await endpoint('shared');
    expect((await api('POST', `/v1/endpoints/${ep.id}/share`, { shared_with: ['e2e-guest'] })).status).toBe(200);
    const agent = await agentFor(ep);
    expect(agent.output()).toMatch(/isolation sandbox/);
    const guest = caller(stack.apiUrl, await stack.createUser('e2e-guest'));
    const look =
      "() => ({ uid: process.getuid(), env: Object.keys(process.env), mark: (globalThis.__mark ??= Math.random()), pids: require('fs').readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).length })";
    const run = async (as: ReturnType<typeof caller>) => {
      const fn = await as('POST', '/v1/functions', { name: 'look', runtime: 'node', source: look });
      const sub = await as('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fn.body.function_id }] });
      expect(sub.status).toBe(202);
      const id = sub.body.task_ids[0];
      return (
        await eventually(
          async () => {
            const r = await as('GET', `/v1/tasks/${id}`);
            return ['success', 'failed'].includes(r.body.status) && r.body;
          },
          30_000,
          'the task',
        )
      ).result.value;
    };
    const owner = await run(api);
    const other = await run(guest);
    expect(other.mark).not.toBe(owner.mark);
    for (const seen of [owner, other]) {
      expect(seen.uid).not.toBe(0);
      expect(seen.env.filter((n: string) => /^(FERRY_|AWS_)/.test(n))).toEqual([]);
      expect(seen.pids).toBeLessThan(5);
    }
  });
});

describe('faults and shutdown', () => {
  it('finishes a task exactly once after its agent is SIGKILLed mid-task', async () => {
    const ep = await endpoint('kill');
    const first = await agentFor(ep, { FERRY_VISIBILITY_SECONDS: '2', FERRY_POOL_SIZE: '1' });
    const [id] = await submit(ep.id, '() => new Promise((r) => setTimeout(() => r("survived"), 1500))');
    await eventually(async () => (await api('GET', `/v1/tasks/${id}`)).body.status === 'running', 15_000, 'running');
    first.child.kill('SIGKILL');
    await first.exited;
    await agentFor(ep, { FERRY_VISIBILITY_SECONDS: '2', FERRY_POOL_SIZE: '1' });
    const t = await finished(id!);
    expect(t.status).toBe('success');
    expect(t.result.value).toBe('survived');
    const states = t.transitions.map((x: { state: string }) => x.state);
    expect(states.filter((s: string) => s === 'running')).toHaveLength(2);
    expect(states.filter((s: string) => s === 'success')).toHaveLength(1);
  });

  it('drains on SIGTERM: the running task finishes, the agent exits 0 and says goodbye', async () => {
    const ep = await endpoint('drain');
    const agent = await agentFor(ep, { FERRY_POOL_SIZE: '1' });
    const [id] = await submit(ep.id, '() => new Promise((r) => setTimeout(() => r("drained"), 1500))');
    await eventually(async () => (await api('GET', `/v1/tasks/${id}`)).body.status === 'running', 15_000, 'running');
    agent.child.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
    const t = await finished(id!);
    expect(t.result.value).toBe('drained');
    expect((await api('GET', `/v1/endpoints/${ep.id}/status`)).body.status).toBe('offline');
    // Work queued after the drain waits for the next agent.
    const [later] = await submit(ep.id, '() => "later"');
    await new Promise((r) => setTimeout(r, 500));
    expect((await api('GET', `/v1/tasks/${later}`)).body.status).toBe('waiting-for-endpoint');
    await agentFor(ep);
    expect((await finished(later!)).result.value).toBe('later');
  });

  it('keeps serving across credential renewals', async () => {
    // The stack vends 4 s credentials here, so this agent renews them several times.
    const ep = await endpoint('renew');
    const agent = await agentFor(ep);
    await new Promise((r) => setTimeout(r, 6000));
    const [id] = await submit(ep.id, '() => "fresh"');
    expect((await finished(id!)).result.value).toBe('fresh');
    expect(agent.output().match(/credentials renewed/g)!.length).toBeGreaterThanOrEqual(2);
  });

  it('runs from the bundle the container uses, under plain node', async () => {
    execFileSync('npm', ['run', '-s', 'build:worker'], { cwd: join(__dirname, '..', '..'), stdio: 'ignore' });
    const ep = await endpoint('bundled');
    const agent = spawnAgent(stack, ep.id, ep.secret, {}, { bundle: true });
    agents.push(agent);
    await agent.ready;
    const [node] = await submit(ep.id, '() => process.versions.node');
    expect((await finished(node!)).result.value).toBe(process.versions.node);
    const [py] = await submit(ep.id, 'def hi():\n    return "hi from python"\n', { runtime: 'python', entrypoint: 'hi' });
    expect((await finished(py!)).result.value).toBe('hi from python');
    agent.child.kill('SIGTERM');
    expect((await agent.exited).code).toBe(0);
  });

  it('exits non-zero with a clear message when its secret is refused', async () => {
    const ep = await endpoint('bad-secret');
    const agent = spawnAgent(stack, ep.id, 'fes_' + 'x'.repeat(43));
    agents.push(agent);
    const { code } = await agent.exited;
    expect(code).toBe(2);
    expect(agent.output()).toMatch(/refused this endpoint's secret \(HTTP 401\)/);
  });
});

describe('started reports', () => {
  /** A source holding one task message, recording what the agent sends and deletes, in order. */
  function fakeSource(tasks: { task_id: string; source: string }[]) {
    const events: { what: 'send' | 'finish'; body?: Record<string, unknown> }[] = [];
    let given = false;
    const message = {
      v: 1,
      endpoint_id: 'ep',
      user_id: 'owner',
      function: { function_id: 'f', runtime: 'node', source: tasks[0]!.source },
      tasks: tasks.map((t) => ({ task_id: t.task_id, args: inlineEnvelope(encodeJsonArgs([]), 'json'), walltime_ms: 10_000 })),
      submitted_at: new Date().toISOString(),
    };
    const source: TaskSource = {
      start: async () => ({ endpointId: 'ep', ownerId: 'owner' }),
      receive: async (_max, _vis, _wait, signal) => {
        if (!given) {
          given = true;
          return [{ id: 'm1', receipt: 'r1', body: JSON.stringify(message) }];
        }
        await new Promise((r) => signal.addEventListener('abort', r));
        return [];
      },
      extend: async () => undefined,
      release: async () => undefined,
      finish: async () => void events.push({ what: 'finish' }),
      drop: async () => undefined,
      send: async (report) => void events.push({ what: 'send', body: JSON.parse(report) }),
      readArgs: async (env) => inlineBytes(env),
      storePayload: async (bytes, codec) => inlineEnvelope(bytes, codec),
      heartbeat: async () => 'ok',
      stop: async () => undefined,
    };
    return { source, events };
  }

  async function run(source: string, delayMs: number) {
    const fake = fakeSource([{ task_id: 't1', source }]);
    const agent = new WorkerAgent({
      apiUrl: 'http://unused',
      endpointId: 'ep',
      endpointSecret: 's',
      source: fake.source,
      poolSize: 1,
      runtimes: ['node'],
      startedReportDelayMs: delayMs,
      log: () => undefined,
    });
    await agent.start();
    await eventually(async () => fake.events.some((e) => e.what === 'finish'), 20_000, 'the message to be deleted', 20);
    await agent.stop(1000);
    return fake.events;
  }

  it('a task done within the delay sends only its result, carrying started_at, then its message goes', async () => {
    const events = await run('() => 1', 5_000);
    expect(events.map((e) => (e.what === 'send' ? e.body!.kind : e.what))).toEqual(['success', 'finish']);
    const result = events[0]!.body!;
    expect(Date.parse(result.started_at as string)).toBeLessThanOrEqual(Date.parse(result.at as string));
  });

  it('a task still running after the delay sends "started" first, and its result without started_at', async () => {
    const events = await run('() => new Promise((r) => setTimeout(() => r(1), 300))', 20);
    expect(events.map((e) => (e.what === 'send' ? e.body!.kind : e.what))).toEqual(['started', 'success', 'finish']);
    expect(events[1]!.body!.started_at).toBeUndefined();
    // The "started" report says when the task started, not when the report was due.
    expect(Date.parse(events[0]!.body!.at as string)).toBeLessThanOrEqual(Date.parse(events[1]!.body!.at as string) - 250);
  });

  it('with a delay of 0 every task reports "started" at once, as before', async () => {
    const events = await run('() => 1', 0);
    expect(events.map((e) => (e.what === 'send' ? e.body!.kind : e.what))).toEqual(['started', 'success', 'finish']);
  });
});
