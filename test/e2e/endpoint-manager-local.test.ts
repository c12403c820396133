import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually } from '../helpers/api';
import { startManager } from '../helpers/manager';
import { processEnvironments } from '../helpers/proc';

/** `ferry endpoint start` with a LocalProvider: blocks are agent processes on this machine. */
jest.setTimeout(90_000);

let stack: LocalStack;
let api: ReturnType<typeof caller>;
beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 250 });
  api = caller(stack.apiUrl, await stack.createUser('local-manager'));
});
afterAll(async () => stack?.close());

it('starts an agent block on demand, releases it when idle, and stops cleanly on SIGTERM', async () => {
  const ep = (await api('POST', '/v1/endpoints', { name: 'local-blocks' })).body;
  const m = startManager({
    apiUrl: stack.apiUrl,
    endpoint: { id: ep.endpoint_id, secret: ep.endpoint_secret },
    config: [
      'amqp_port: 443',
      'engine:',
      '  max_workers_per_node: 1',
      '  max_idletime: 2',
      '  provider:',
      '    type: LocalProvider',
      '    max_blocks: 1',
    ].join('\n'),
    env: stack.workerEnv,
    pollSeconds: 0.5,
  });
  const { child, exited, status } = m;
  try {
    await eventually(async () => status(), 30_000, 'the manager to start');
    expect(m.output()).toContain('amqp_port: a Globus Compute setting Ferry ignores');
    expect(status()!.blocks).toEqual([]);
    const fn = await api('POST', '/v1/functions', { name: 'pid', runtime: 'node', source: '() => 6 * 7' });
    const sub = await api('POST', `/v1/endpoints/${ep.endpoint_id}/submit`, { tasks: [{ function_id: fn.body.function_id, args: [] }] });
    const id = sub.body.task_ids[0];
    const t = await eventually(
      async () => {
        const r = await api('GET', `/v1/tasks/${id}`);
        return r.body.status === 'success' && r.body;
      },
      40_000,
      'the task to run',
      200,
    );
    expect(t.result.value).toBe(42);
    const ended = await eventually(
      async () => status()!.blocks.find((b) => b.state === 'ended'),
      30_000,
      'the idle block to be released',
      200,
    );
    expect(ended.drain_reason).toMatch(/^idle/);
    expect(ended.scheduler_state).toBe('COMPLETED');
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
});

it('relay mode: agents without AWS or API access run tasks through the manager, large payloads included', async () => {
  const ep = (await api('POST', '/v1/endpoints', { name: 'local-relay' })).body;
  // The manager reaches AWS and the API; its agents get no AWS_* and no API address (a closed port here, were it passed on).
  const m = startManager({
    apiUrl: stack.apiUrl,
    endpoint: { id: ep.endpoint_id, secret: ep.endpoint_secret },
    config: [
      'engine:',
      '  relay: true',
      '  address: 127.0.0.1',
      '  max_workers_per_node: 2',
      '  max_idletime: 30',
      '  provider:',
      '    type: LocalProvider',
      '    max_blocks: 1',
    ].join('\n'),
    env: { ...stack.workerEnv, FERRY_API_URL: 'http://127.0.0.1:9' },
    pollSeconds: 0.5,
  });
  const { child, exited, dir, statusFile } = m;
  try {
    await eventually(async () => existsSync(statusFile), 30_000, 'the manager to start');
    const source = '(s) => ({ got: s.length, big: "r".repeat(100 * 1024) })';
    const fn = await api('POST', '/v1/functions', { name: 'relay', runtime: 'node', source });
    const sub = await api('POST', `/v1/endpoints/${ep.endpoint_id}/submit`, {
      tasks: [{ function_id: fn.body.function_id, args: ['a'.repeat(100 * 1024)] }],
    });
    expect(sub.status).toBe(202);
    const id = sub.body.task_ids[0];
    const t = await eventually(
      async () => {
        const r = await api('GET', `/v1/tasks/${id}`);
        return ['success', 'failed'].includes(r.body.status) && r.body;
      },
      40_000,
      'the task to run',
      200,
    );
    expect(t.status).toBe('success');
    // A result over the inline limit went to S3 through the manager: the API hands out a URL.
    expect(t.result.url).toBeDefined();
    const value = t.result.value ?? JSON.parse(Buffer.from(await (await fetch(t.result.url)).arrayBuffer()).toString('utf8'));
    expect(value.got).toBe(100 * 1024);
    expect(value.big.length).toBe(100 * 1024);
    // The agent's own environment: nothing that would let it reach AWS or the API, and no secret.
    const agentEnvs = processEnvironments().filter(
      (e) => e.includes(`FERRY_MANAGER_FILE=${join(dir, 'state', 'manager.json')}`) && e.includes('FERRY_RELAY=1'),
    );
    expect(agentEnvs.length).toBeGreaterThan(0);
    for (const e of agentEnvs) expect(e.filter((v) => /^(AWS_|FERRY_API_URL=|FERRY_ENDPOINT_SECRET=)/.test(v))).toEqual([]);
    expect(readFileSync(join(dir, 'state', 'agent.json'), 'utf8')).not.toMatch(/api_url|endpoint_secret/);
    // The manager beats for its relay agents: the endpoint shows their workers.
    await eventually(
      async () => (await api('GET', `/v1/endpoints/${ep.endpoint_id}/status`)).body.workers === 2,
      20_000,
      'the relay workers in the status',
      250,
    );
    expect(m.output()).toContain('"mode":"relay"');
  } catch (err) {
    const agentsOut = readdirSync(join(dir, 'state'))
      .filter((f) => f.endsWith('.out'))
      .map((f) => readFileSync(join(dir, 'state', f), 'utf8'));
    throw new Error(`${String(err)}\nmanager:\n${m.output().slice(-3000)}\nagents:\n${agentsOut.join('\n').slice(-3000)}`, { cause: err });
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
});
