import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import type { ManagerStatus } from '../../workers/manager/manager';
import { caller, eventually } from '../helpers/api';

/** `ferry endpoint start` with a LocalProvider: blocks are agent processes on this machine. */
const ROOT = join(__dirname, '..', '..');
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
  const dir = mkdtempSync(join(tmpdir(), 'ferry-ep-local-'));
  writeFileSync(join(dir, 'ep.json'), JSON.stringify({ api_url: stack.apiUrl, endpoint_id: ep.endpoint_id, endpoint_secret: ep.endpoint_secret }), { mode: 0o600 });
  writeFileSync(
    join(dir, 'endpoint.yaml'),
    ['credentials: ep.json', 'amqp_port: 443', 'engine:', '  max_workers_per_node: 1', '  max_idletime: 2', '  provider:', '    type: LocalProvider', '    max_blocks: 1'].join('\n'),
  );
  const statusFile = join(dir, 'status.json');
  const env: Record<string, string | undefined> = { ...process.env, ...stack.workerEnv };
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'FERRY_WORKER_ROLE_ARN', 'FERRY_WORKER_ROLE_ID']) delete env[k];
  const child = spawn(process.execPath, [join(ROOT, 'cli', 'bin.js'), 'endpoint', 'start', '--config', join(dir, 'endpoint.yaml'), '--state-dir', join(dir, 'state'), '--status-file', statusFile, '--poll-seconds', '0.5'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const status = () => (existsSync(statusFile) ? (JSON.parse(readFileSync(statusFile, 'utf8')) as ManagerStatus) : undefined);
  try {
    await eventually(async () => status(), 30_000, 'the manager to start');
    expect(out).toContain('amqp_port: a Globus Compute setting Ferry ignores');
    expect(status()!.blocks).toEqual([]);
    const fn = await api('POST', '/v1/functions', { name: 'pid', runtime: 'node', source: '() => 6 * 7' });
    const sub = await api('POST', `/v1/endpoints/${ep.endpoint_id}/submit`, { tasks: [{ function_id: fn.body.function_id, args: [] }] });
    const id = sub.body.task_ids[0];
    const t = await eventually(async () => {
      const r = await api('GET', `/v1/tasks/${id}`);
      return r.body.status === 'success' && r.body;
    }, 40_000, 'the task to run', 200);
    expect(t.result.value).toBe(42);
    const ended = await eventually(async () => status()!.blocks.find((b) => b.state === 'ended'), 30_000, 'the idle block to be released', 200);
    expect(ended.drain_reason).toMatch(/^idle/);
    expect(ended.scheduler_state).toBe('COMPLETED');
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
});
