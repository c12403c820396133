import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Client, Executor, ResultsUnavailable } from '../../sdk';
import { MAX_RESPONSE_BYTES, observeApiResponses, type ApiResponseRecord } from '../../local/api-server';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { runCommand } from '../helpers/proc';
import { pythonEnv } from '../helpers/python';

/**
 * Results too large to read in one response, through both SDKs against the local stack and a real
 * agent: the stand-in refuses any Lambda response over 6 MB as AWS does, so every future resolving
 * means the reads paged. Results of ~100 KB travel inline here (the inline limit is raised to
 * 128 KiB), the largest a task view can be made.
 */
jest.setTimeout(180_000);

let stack: LocalStack;
let token: string;
let endpointId: string;
const agents: AgentProcess[] = [];
const seen: ApiResponseRecord[] = [];
let stopWatching: () => void;

beforeAll(async () => {
  stopWatching = observeApiResponses((r) => seen.push(r));
  stack = await startLocalStack({ sweepIntervalMs: 5000, settings: { FERRY_INLINE_LIMIT: String(128 * 1024) } });
  token = await stack.createUser('limits-aws');
  const ep = await new Client({ apiUrl: stack.apiUrl, token }).registerEndpoint('big-results');
  endpointId = ep.endpoint_id;
  const agent = spawnAgent(stack, ep.endpoint_id, ep.endpoint_secret);
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  stopWatching?.();
  await stopAgents(agents);
  await stack?.close();
});

const batchReads = () => seen.filter((r) => r.routeKey === 'POST /v1/tasks/batch');

it('80 tasks with ~100 KB results all resolve through the TypeScript SDK, and no API response exceeds 6 MB', async () => {
  seen.length = 0;
  const ex = new Executor({ endpointId, apiUrl: stack.apiUrl, token });
  const futures = Array.from({ length: 80 }, (_, i) => ex.submit((n: number) => ({ n, text: 'x'.repeat(100_000) }), i));
  const results = await Promise.all(futures.map((f) => f.result()));
  expect(results.map((r) => r.n)).toEqual(Array.from({ length: 80 }, (_, i) => i));
  expect(results.every((r) => r.text.length === 100_000)).toBe(true);
  await ex.shutdown();

  // Reading all 80 at once (~10 MB of views) takes more than one response.
  const before = batchReads().length;
  const { tasks } = await ex.client.getTasks(futures.map((f) => f.taskId!));
  expect(tasks.map((t) => t.task_id)).toEqual(futures.map((f) => f.taskId));
  expect(batchReads().length - before).toBeGreaterThan(1);

  expect(seen.length).toBeGreaterThan(0);
  expect(seen.filter((r) => r.status >= 500)).toEqual([]);
  expect(Math.max(...seen.map((r) => r.payloadBytes))).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
});

/** A Python script run from a file (the client sends a function's source, which it reads from the file). */
function python(script: string, env: Record<string, string>) {
  const file = join(mkdtempSync(join(tmpdir(), 'ferry-limits-')), 'script.py');
  writeFileSync(file, script);
  return runCommand('python3', [file], { env: pythonEnv(env), timeoutMs: 150_000 });
}

it('50 tasks with ~100 KB results resolve through the Python Executor, and get_batch_result reads them all', async () => {
  seen.length = 0;
  const run = await python(
    `
from ferry_compute import Client, Executor
def big(n):
    return (n, "x" * 100_000)
with Executor() as ex:
    futures = [ex.submit(big, i) for i in range(50)]
    results = [f.result(timeout=120) for f in futures]
assert [r[0] for r in results] == list(range(50)), results[:3]
assert all(len(r[1]) == 100_000 for r in results)
batch = Client().get_batch_result([f.task_id for f in futures])
assert len(batch) == 50 and all(b["status"] == "success" and b["result"][1] == "x" * 100_000 for b in batch.values())
print("ok", len(results))
`,
    { FERRY_API_URL: stack.apiUrl, FERRY_TOKEN: token, FERRY_ENDPOINT_ID: endpointId },
  );
  expect(run.stderr).toBe('');
  expect(run.stdout.trim()).toBe('ok 50');
  expect(seen.filter((r) => r.status >= 500)).toEqual([]);
  expect(Math.max(...seen.map((r) => r.payloadBytes))).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
  // ~6.7 MB of pickled results: at least one read took a second response.
  expect(batchReads().length).toBeGreaterThan(1);
});

describe('a poll that keeps failing', () => {
  // A real HTTP hop in front of the stack that answers the reads of results (POST /v1/tasks/wait, /v1/tasks/batch) with API Gateway's 500 while told to.
  let proxy: Server;
  let proxyUrl: string;
  let failing = 0;

  beforeAll(async () => {
    proxy = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      if (req.method === 'POST' && (req.url === '/v1/tasks/wait' || req.url === '/v1/tasks/batch') && failing > 0) {
        failing--;
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"Internal Server Error"}');
        return;
      }
      const headers = Object.fromEntries(
        Object.entries(req.headers).filter(([k]) => !['host', 'content-length', 'connection'].includes(k)),
      ) as Record<string, string>;
      const up = await fetch(stack.apiUrl + req.url, {
        method: req.method,
        headers,
        body: chunks.length ? Buffer.concat(chunks) : undefined,
      });
      res
        .writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/json' })
        .end(Buffer.from(await up.arrayBuffer()));
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => proxy.close(() => r())));

  const executor = () => new Executor({ endpointId, apiUrl: proxyUrl, token, maxAttempts: 2, pollFailureLimit: 3, pollMaxMs: 50 });

  it('fails the TypeScript futures with ResultsUnavailable instead of retrying forever', async () => {
    failing = Number.MAX_SAFE_INTEGER;
    const ex = executor();
    const f = ex.submit((x: number) => x + 1, 1);
    const err = await f.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResultsUnavailable);
    expect((err as ResultsUnavailable).polls).toBe(3);
    expect((err as Error).message).toMatch(/3 polls in a row failed; last error: Internal Server Error/);
    failing = 0;
  });

  it('rides out a failure that passes', async () => {
    // Two failed requests: one poll fails after its retry, the next one reads the result.
    failing = 2;
    const ex = executor();
    expect(await ex.submit((x: number) => x + 1, 41).result()).toBe(42);
    expect(failing).toBe(0);
  });

  it('fails the Python futures with ResultsUnavailable, and rides out a failure that passes', async () => {
    failing = Number.MAX_SAFE_INTEGER;
    const env = { FERRY_API_URL: proxyUrl, FERRY_TOKEN: token, FERRY_ENDPOINT_ID: endpointId };
    const failed = await python(
      `
from ferry_compute import Executor, ResultsUnavailable
def power(a, b):
    return a ** b
with Executor(poll_failure_limit=2, max_poll_interval=0.05) as ex:
    ex.client.http.max_attempts = 1
    f = ex.submit(power, 2, 10)
    try:
        f.result(timeout=60)
        print("resolved")
    except ResultsUnavailable as exc:
        print("unavailable", exc.polls)
`,
      env,
    );
    expect(failed.stdout.trim()).toBe('unavailable 2');
    failing = 1;
    const passed = await python(
      `
from ferry_compute import Executor
def power(a, b):
    return a ** b
with Executor(poll_failure_limit=2, max_poll_interval=0.05) as ex:
    ex.client.http.max_attempts = 1
    print(ex.submit(power, 2, 10).result(timeout=60))
`,
      env,
    );
    expect(passed.stdout.trim()).toBe('1024');
    expect(failing).toBe(0);
  });
});
