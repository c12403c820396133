import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetQueueAttributesCommand, ListQueuesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { argsKey } from '../../core/bucket';
import { revokeToken } from '../../core/tables/tokens';
import { API_ROUTES } from '../../lambdas/routes';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { Client, TaskPending } from '../../sdk';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { caller, eventually, vendedCredentials } from '../helpers/api';

/**
 * The hostile suite: a second user (mallory) on an endpoint that alice shares with her tries what
 * a curious or malicious tenant would, with real agent and runtime processes and the local AWS
 * servers enforcing credentials as IAM does. Every try is counted; the suite prints what it
 * tried and what was refused, and fails if anything got through.
 */

jest.setTimeout(180_000);

let stack: LocalStack;
let alice: Client;
let mallory: Client;
let aliceToken: string;
let malloryToken: string;
let shared: { endpoint_id: string; endpoint_secret: string };
let idle: { endpoint_id: string; endpoint_secret: string };
let own: { endpoint_id: string; endpoint_secret: string };
let agent: AgentProcess;
let ownerFiles: string;
let agentConfig: string;

const tries: { what: string; refused: boolean; detail: string }[] = [];

/** Records one attempt; `refused` says whether the system held. */
function tried(what: string, refused: boolean, detail = ''): void {
  tries.push({ what, refused, detail });
}

beforeAll(async () => {
  stack = await startLocalStack({ authorizerCacheSeconds: 0, settings: { FERRY_INLINE_LIMIT: '1024' } });
  aliceToken = await stack.createUser('alice');
  malloryToken = await stack.createUser('mallory');
  alice = new Client({ apiUrl: stack.apiUrl, token: aliceToken });
  mallory = new Client({ apiUrl: stack.apiUrl, token: malloryToken });
  shared = await alice.registerEndpoint('alice-shared');
  await alice.shareEndpoint(shared.endpoint_id, { shared_with: ['mallory'] });
  idle = await alice.registerEndpoint('alice-idle'); // no worker: its tasks wait in the queue
  own = await mallory.registerEndpoint('mallory-own');

  // The owner's files, as `npm start` keeps them: a token and the agent's config, both 0600.
  ownerFiles = mkdtempSync(join(tmpdir(), 'ferry-owner-'));
  writeFileSync(join(ownerFiles, 'credentials.json'), JSON.stringify({ token: aliceToken }));
  agentConfig = join(ownerFiles, 'endpoint.json');
  writeFileSync(agentConfig, JSON.stringify({ api_url: stack.apiUrl, ...shared }));
  for (const f of ['credentials.json', 'endpoint.json']) chmodSync(join(ownerFiles, f), 0o600);
  agent = spawnAgent(stack, shared.endpoint_id, shared.endpoint_secret, { FERRY_WORKER_CONFIG: agentConfig, HOME: ownerFiles });
  await agent.ready;
});

afterAll(async () => {
  const refused = tries.filter((t) => t.refused).length;
  const lines = tries.map((t) => `  ${t.refused ? 'refused ' : 'ALLOWED '} ${t.what}${t.detail ? ` (${t.detail})` : ''}`);
  console.log(`hostile suite: ${tries.length} tries, ${refused} refused, ${tries.length - refused} got through\n${lines.join('\n')}`);
  await stopAgents(agent ? [agent] : []);
  await stack?.close();
});

type Spec = { runtime: 'node'; source: string } | { runtime: 'python'; source: string; entrypoint: string };

/** Registers and runs one function as `who` on an endpoint; the result, or the remote error. */
async function run(who: Client, endpointId: string, spec: Spec, args: unknown[] = []): Promise<unknown> {
  const functionId = await who.registerFunction({ name: 'hostile', ...spec });
  const { task_ids } = await who.batchRun(endpointId, [{ function_id: functionId, args }]);
  return eventually(
    async () => {
      try {
        return { value: await who.getResult(task_ids[0]!) };
      } catch (err) {
        if (err instanceof TaskPending) return undefined;
        return { value: err };
      }
    },
    60_000,
    'the task to end',
  ).then((r) => r.value);
}

const node = (source: string): Spec => ({ runtime: 'node', source });
const python = (source: string, entrypoint: string): Spec => ({ runtime: 'python', source, entrypoint });

/** Vended credentials for an endpoint, through the route its worker uses. */
async function workerCredentials(ep: { endpoint_id: string; endpoint_secret: string }) {
  const { grant, credentials } = await vendedCredentials(stack.apiUrl, ep.endpoint_id, ep.endpoint_secret);
  return { grant, credentials, region: grant.region as string };
}

const refusedBy = async (call: Promise<unknown>): Promise<string | undefined> =>
  call.then(
    () => undefined,
    (err: { name?: string; $metadata?: { httpStatusCode?: number } }) =>
      err.$metadata?.httpStatusCode === 403 ? (err.name ?? 'AccessDenied') : undefined,
  );

describe('a shared user inside her task', () => {
  it('finds no secret in the environment', async () => {
    const env = (await run(mallory, shared.endpoint_id, node('() => process.env'))) as Record<string, string>;
    const names = Object.keys(env);
    const leaked = names.filter(
      (k) => /^(FERRY_|AWS_)/.test(k) || [shared.endpoint_secret, aliceToken].some((s) => String(env[k]).includes(s)),
    );
    tried(
      'node: read the endpoint secret, tokens or AWS credentials from process.env',
      leaked.length === 0,
      `saw ${names.length} variables`,
    );
    const pyEnv = (await run(
      mallory,
      shared.endpoint_id,
      python('def env():\n    import os\n    return dict(os.environ)\n', 'env'),
    )) as Record<string, string>;
    const pyLeaked = Object.keys(pyEnv).filter((k) => /^(FERRY_|AWS_)/.test(k) || String(pyEnv[k]).includes(shared.endpoint_secret));
    tried('python: read secrets from os.environ', pyLeaked.length === 0);
    expect([...leaked, ...pyLeaked]).toEqual([]);
  });

  it("cannot read the agent's config, the owner's token, or the agent through /proc", async () => {
    const readFile = '(p) => { try { return require("fs").readFileSync(p, "utf8"); } catch (e) { return "refused: " + e.code; } }';
    for (const [what, file] of [
      ["the agent's config file (holds the endpoint secret)", agentConfig],
      ["the owner's credentials file (holds her token)", join(ownerFiles, 'credentials.json')],
      [`the agent's environment, /proc/${agent.child.pid}/environ`, `/proc/${agent.child.pid}/environ`],
      [`the agent's command line, /proc/${agent.child.pid}/cmdline`, `/proc/${agent.child.pid}/cmdline`],
    ] as const) {
      const out = String(await run(mallory, shared.endpoint_id, node(readFile), [file]));
      const refused = out.startsWith('refused') && !out.includes(shared.endpoint_secret) && !out.includes(aliceToken);
      tried(`node: read ${what}`, refused, out.slice(0, 40));
      expect(refused).toBe(true);
    }
    // Every process it can see, searched for the secret.
    const scan = `() => {
      const fs = require('fs'); const found = [];
      for (const pid of fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p))) {
        for (const f of ['environ', 'cmdline']) { try { found.push(fs.readFileSync('/proc/' + pid + '/' + f, 'latin1')); } catch {} }
      }
      return found.join('\\n');
    }`;
    const all = String(await run(mallory, shared.endpoint_id, node(scan)));
    const refused = !all.includes(shared.endpoint_secret) && !all.includes('FERRY_ENDPOINT_SECRET');
    tried('node: search every visible /proc/*/environ for the endpoint secret', refused);
    expect(refused).toBe(true);
    const py = String(
      await run(
        mallory,
        shared.endpoint_id,
        python(
          'def grab(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return "refused: " + type(e).__name__\n',
          'grab',
        ),
        [agentConfig],
      ),
    );
    tried("python: read the agent's config file", py.startsWith('refused'), py.slice(0, 40));
    expect(py.startsWith('refused')).toBe(true);
  });

  it("cannot poison the runtime that runs the owner's next task", async () => {
    // Pids say nothing inside a sandbox (each runner is pid 2 of its own namespace): a mark left
    // on the global object tells whether the owner's task ran in the process mallory's did.
    const poison = `() => {
      globalThis.__ferryMark = 'mallory';
      JSON.stringify = () => '"pwned"';
      Array.prototype.map = function () { return ['pwned']; };
      return 'planted';
    }`;
    expect(await run(mallory, shared.endpoint_id, node(poison))).toBe('planted');
    const add = node('(a, b) => ({ sum: a + b, mark: globalThis.__ferryMark ?? null, mapped: [1, 2].map((x) => x * 2) })');
    const results = (await Promise.all([1, 2, 3, 4].map(() => run(alice, shared.endpoint_id, add, [40, 2])))) as {
      sum: number;
      mark: string | null;
      mapped: number[];
    }[];
    const clean = results.every((r) => r.sum === 42 && r.mapped.join() === '2,4' && r.mark === null);
    tried(
      "node: patch JSON.stringify and Array.prototype.map to change the owner's results (4 tries)",
      clean,
      `owner saw ${results.map((r) => r.sum).join(',')}`,
    );
    expect(clean).toBe(true);

    await run(
      mallory,
      shared.endpoint_id,
      python('def poison():\n    import builtins\n    builtins.sum = lambda *a, **k: "pwned"\n    return 1\n', 'poison'),
    );
    const totals = await Promise.all(
      [1, 2].map(() => run(alice, shared.endpoint_id, python('def total(xs):\n    return sum(xs)\n', 'total'), [[40, 2]])),
    );
    tried(
      "python: patch builtins.sum to change the owner's results",
      totals.every((t) => t === 42),
      `owner saw ${totals.join(',')}`,
    );
    expect(totals).toEqual([42, 42]);
  });

  it("cannot read the owner's scratch files", async () => {
    const where = (await run(
      alice,
      shared.endpoint_id,
      node('() => { require("fs").writeFileSync("notes.txt", "alice private"); return process.cwd(); }'),
    )) as string;
    const peek = `(dir) => {
      const fs = require('fs'); const out = [];
      try { out.push(fs.readFileSync(dir + '/notes.txt', 'utf8')); } catch (e) { out.push('refused: ' + e.code); }
      try { out.push(fs.readdirSync(dir).join(',')); } catch (e) { out.push('refused: ' + e.code); }
      return out;
    }`;
    const seen = (await run(mallory, shared.endpoint_id, node(peek), [where])) as string[];
    const refused = seen.every((s) => s.startsWith('refused'));
    tried("node: read a file the owner's task left in its scratch directory", refused, seen.join(' | ').slice(0, 60));
    expect(refused).toBe(true);
  });

  it('cannot use the local AWS servers without credentials', async () => {
    const probe = `async (url) => {
      try {
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.ListQueues' }, body: '{}' });
        return res.status;
      } catch (e) { return 'unreachable'; }
    }`;
    const status = await run(mallory, shared.endpoint_id, node(probe), [stack.awsEnv.AWS_ENDPOINT_URL_SQS]);
    tried('node: list every queue on the local SQS server with an unsigned request', status !== 200, String(status));
    expect(status).not.toBe(200);
  });
});

describe("a shared user against the owner's data", () => {
  it("cannot read the owner's tasks, results or groups through the API", async () => {
    const id = await alice.run(await alice.registerFunction(() => 'alice result'), shared.endpoint_id);
    await eventually(async () => (await alice.getTask(id)).status === 'success', 30_000, 'the task to finish');
    const as = caller(stack.apiUrl, malloryToken);
    const group = (await alice.getTask(id)).task_group_id;
    const answers = [
      await as('GET', `/v1/tasks/${id}`),
      await as('POST', '/v1/tasks/batch', { task_ids: [id] }),
      await as('GET', `/v1/task-groups/${group}`),
      await as('POST', `/v1/tasks/${id}/cancel`),
    ];
    const refused =
      answers[0]!.status === 404 && answers[1]!.body.tasks.length === 0 && answers[2]!.status === 404 && answers[3]!.status === 404;
    tried("API: read, batch-poll, list the group of, and cancel the owner's task", refused, answers.map((a) => a.status).join(','));
    expect(refused).toBe(true);
  });

  it("cannot forge a result for the owner's task with her own endpoint's credentials", async () => {
    const fn = await alice.registerFunction(() => 'real');
    const waiting = await alice.run(fn, idle.endpoint_id);
    const { grant, credentials, region } = await workerCredentials(own);
    const sqs = new SQSClient({ region, credentials });
    const forged = (endpointId: string) =>
      JSON.stringify({
        v: 1,
        kind: 'success',
        task_id: waiting,
        endpoint_id: endpointId,
        worker_id: 'mallory',
        at: new Date().toISOString(),
        result: {
          v: 1,
          codec: 'json',
          size: 7,
          sha256: '3b2fdd41d0e52fa3a2b2a7bad2e9b6ec79bc04a3a6a21dca0d5a4ff1d87e0c35',
          inline: Buffer.from('"forged"').toString('base64'),
        },
      });
    // Once claiming her own endpoint, once claiming the task's: the sender decides, not the body.
    await sqs.send(new SendMessageCommand({ QueueUrl: grant.results_queue_url, MessageBody: forged(own.endpoint_id) }));
    await sqs.send(new SendMessageCommand({ QueueUrl: grant.results_queue_url, MessageBody: forged(idle.endpoint_id) }));
    // Wait until the results consumer has taken both (the queue is empty), then look.
    const admin = new SQSClient({});
    await eventually(
      async () => {
        const a = (
          await admin.send(
            new GetQueueAttributesCommand({
              QueueUrl: grant.results_queue_url,
              AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
            }),
          )
        ).Attributes!;
        return a.ApproximateNumberOfMessages === '0' && a.ApproximateNumberOfMessagesNotVisible === '0';
      },
      20_000,
      'the results queue to drain',
    );
    admin.destroy();
    const view = await alice.getTask(waiting);
    tried(
      "results queue: send 'success' for the owner's waiting task, body naming either endpoint (2 tries)",
      view.status === 'waiting-for-endpoint' && !view.result,
      view.status,
    );
    expect(view.status).toBe('waiting-for-endpoint');
    sqs.destroy();
  });

  it("cannot reach another endpoint's queue, payloads or the tables with her worker credentials", async () => {
    const fn = await alice.registerFunction((s: string) => s.length);
    const big = await alice.run(fn, idle.endpoint_id, ['x'.repeat(4096)]); // over the 1 KiB inline limit: its arguments sit in S3
    const { grant, credentials, region } = await workerCredentials(own);
    const sqs = new SQSClient({ region, credentials });
    const s3 = new S3Client({ region, credentials, forcePathStyle: true });
    const ddb = new DynamoDBClient({ region, credentials });
    const idleQueue = grant.queue_url.replace(own.endpoint_id, idle.endpoint_id);
    const attempts: [string, () => Promise<unknown>][] = [
      ["receive from the owner's endpoint queue", () => sqs.send(new ReceiveMessageCommand({ QueueUrl: idleQueue, WaitTimeSeconds: 0 }))],
      ["send a task into the owner's endpoint queue", () => sqs.send(new SendMessageCommand({ QueueUrl: idleQueue, MessageBody: '{}' }))],
      ['list every queue', () => sqs.send(new ListQueuesCommand({}))],
      [
        "read the owner's task arguments from S3",
        () => s3.send(new GetObjectCommand({ Bucket: grant.bucket, Key: argsKey(idle.endpoint_id, big) })),
      ],
      ['scan the tasks table', () => ddb.send(new ScanCommand({ TableName: 'ferry-local-tasks' }))],
      ['scan the tokens table', () => ddb.send(new ScanCommand({ TableName: 'ferry-local-tokens' }))],
    ];
    for (const [what, call] of attempts) {
      const code = await refusedBy(call());
      tried(`worker credentials: ${what}`, code !== undefined, code ?? 'allowed');
      expect({ what, refused: code !== undefined }).toEqual({ what, refused: true });
    }
    for (const c of [sqs, s3, ddb]) c.destroy();
  });
});

describe('every route with a bad or foreign token', () => {
  it('answers 401 to none, malformed, expired and revoked tokens and 404 to another user, changing nothing', async () => {
    const fn = await alice.registerFunction(() => 1);
    const task = await alice.run(fn, idle.endpoint_id);
    const group = (await alice.getTask(task)).task_group_id;
    const expired = await stack.createUser('expired-user', 1);
    const revoked = await stack.createUser('revoked-user');
    await revokeToken(revoked);
    await new Promise((r) => setTimeout(r, 1100));
    const ids: Record<string, string> = {
      '/v1/functions/{id}': fn,
      '/v1/tasks/{id}': task,
      '/v1/task-groups/{id}': group,
      '/v1/tasks/{id}/cancel': task,
    };
    const bodies: Record<string, unknown> = {
      'POST /v1/functions': { name: 'x', runtime: 'node', source: '() => 1' },
      'POST /v1/endpoints': { name: 'x' },
      'POST /v1/endpoints/{id}/share': { public: true },
      'POST /v1/endpoints/{id}/heartbeat': { worker_id: 'w', workers: 1, idle_workers: 1, running: 0 },
      'POST /v1/endpoints/{id}/submit': { tasks: [{ function_id: fn }] },
      'POST /v1/tasks/batch': { task_ids: [task] },
      'POST /v1/tasks/wait': { task_ids: [task], wait_ms: 0 },
      'POST /v1/payloads': { endpoint_id: idle.endpoint_id, codec: 'node-v8', size: 10, sha256: '0'.repeat(64) },
    };
    const FOREIGN: Record<string, number[]> = {
      'POST /v1/functions': [200, 201],
      'GET /v1/functions': [200],
      'POST /v1/endpoints': [200, 201],
      'GET /v1/endpoints': [200],
      'POST /v1/tasks/batch': [200], // alice's id comes back under `unknown`
      'POST /v1/tasks/wait': [200], // the same
      'POST /v1/endpoints/{id}/heartbeat': [403], // a user token is not an endpoint secret
      'POST /v1/endpoints/{id}/credentials': [403],
    };
    const tokens: [string, string | undefined, number[]][] = [
      ['no token', undefined, [401]],
      ['a malformed token', 'Bearer', [401]],
      ['an expired token', expired, [401]],
      ['a revoked token', revoked, [401]],
      ['another user', malloryToken, []],
    ];
    let bad = 0;
    for (const { routeKey } of API_ROUTES) {
      const [method, template] = routeKey.split(' ') as [string, string];
      const path = template.replace('{id}', ids[template] ?? idle.endpoint_id);
      for (const [kind, token, allowed] of tokens) {
        const r = await caller(stack.apiUrl, token)(method, path, bodies[routeKey]);
        // Another user: her own collections answer with her own things; anything of alice's is unknown (404).
        const expected = kind === 'another user' ? (FOREIGN[routeKey] ?? [404]) : allowed;
        if (kind === 'another user' && routeKey === 'POST /v1/tasks/batch')
          expect(r.body).toEqual({ tasks: [], unknown: [task], unread: [] });
        if (kind === 'another user' && routeKey === 'POST /v1/tasks/wait')
          expect(r.body).toEqual({ tasks: [], unknown: [task], unread: [], pending: 0 });
        const ok = expected.includes(r.status) && (r.status < 300 || typeof r.body?.error?.code === 'string');
        if (!ok) bad++;
        tried(`${routeKey} with ${kind}`, ok, String(r.status));
        expect({ routeKey, kind, status: r.status, shaped: r.status < 300 || typeof r.body?.error?.code === 'string' }).toEqual({
          routeKey,
          kind,
          status: expected.includes(r.status) ? r.status : `one of ${expected.join('/')}`,
          shaped: true,
        });
      }
    }
    expect(bad).toBe(0);
    // Nothing of alice's changed.
    expect((await alice.getTask(task)).status).toBe('waiting-for-endpoint');
    expect((await alice.getEndpoint(idle.endpoint_id)).public).toBe(false);
    expect(await alice.getFunction(fn)).toMatchObject({ function_id: fn });
  });
});
