import { jsonEnvelope } from '../helpers/envelope';
import { DeleteQueueCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient, type Message } from '@aws-sdk/client-sqs';
import type { ResultMessage } from '../../core/messages';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../../core/clients';
import { config, resetConfig } from '../../core/config';
import { getTask, transitionTask } from '../../core/tables/task-records';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually, vendedCredentials } from '../helpers/api';

/**
 * Every task ends: a task that can no longer be delivered — its message outlived the queue's
 * retention unread, or its endpoint's queue was deleted behind Ferry's back — is failed by the
 * sweep (the local stack's timer, the scheduled Lambda in AWS) with a type that says why, and a
 * worker's report and the sweep never give one task two final states.
 */

// SQS: a queue keeps messages for at least 60 s, so the expiry cases wait that long (once, together).
const RETENTION_S = 60;
const MARGIN_S = 2;
const GRACE_S = 2;
const SWEEP_MS = 500;
jest.setTimeout(150_000);

const region = 'us-east-1';
let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let fnId: string;
let admin: SQSClient;

interface Endpoint {
  id: string;
  secret: string;
  queueUrl: string;
  resultsQueueUrl: string;
  sqs: SQSClient;
}
const endpoints: Endpoint[] = [];

async function endpoint(name: string): Promise<Endpoint> {
  const ep = await alice('POST', '/v1/endpoints', { name });
  expect(ep.status).toBe(201);
  const { endpoint_id: id, endpoint_secret: secret } = ep.body;
  const { grant, credentials } = await vendedCredentials(stack.apiUrl, id, secret);
  const e = {
    id,
    secret,
    queueUrl: grant.queue_url,
    resultsQueueUrl: grant.results_queue_url,
    sqs: new SQSClient({ region, credentials }),
  };
  endpoints.push(e);
  return e;
}

async function submit(ep: Endpoint, n = 1, walltime_ms?: number): Promise<string[]> {
  const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, {
    tasks: Array.from({ length: n }, () => ({ function_id: fnId, args: [1, 2], walltime_ms })),
  });
  expect(sub.status).toBe(202);
  return sub.body.task_ids;
}

const view = async (taskId: string) => (await alice('GET', `/v1/tasks/${taskId}`)).body;
const ended = (taskId: string, within: number) =>
  eventually(
    async () => {
      const t = await view(taskId);
      return ['success', 'failed', 'cancelled'].includes(t.status) && t;
    },
    within,
    `task ${taskId} to end`,
    200,
  );

/** Take the endpoint's messages as its worker would (held in flight, never deleted here). */
async function receive(ep: Endpoint, count: number): Promise<Message[]> {
  const got: Message[] = [];
  await eventually(
    async () => {
      const out = await ep.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: ep.queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 600 }),
      );
      got.push(...(out.Messages ?? []));
      return got.length >= count;
    },
    10_000,
    'task messages',
  );
  return got;
}

/** A worker's report, sent with the endpoint's vended credentials to the results queue. */
async function report(ep: Endpoint, taskId: string, kind: 'started' | 'success'): Promise<void> {
  const base = { v: 1 as const, task_id: taskId, endpoint_id: ep.id, worker_id: 'w-test', at: new Date().toISOString() };
  const msg: ResultMessage = kind === 'started' ? { ...base, kind } : { ...base, kind, result: jsonEnvelope(3) };
  await ep.sqs.send(new SendMessageCommand({ QueueUrl: ep.resultsQueueUrl, MessageBody: JSON.stringify(msg) }));
}

beforeAll(async () => {
  stack = await startLocalStack({
    authorizerCacheSeconds: 0,
    sweepIntervalMs: SWEEP_MS,
    settings: {
      FERRY_QUEUE_RETENTION_SECONDS: String(RETENTION_S),
      FERRY_EXPIRY_MARGIN_SECONDS: String(MARGIN_S),
      FERRY_QUEUE_GONE_GRACE_SECONDS: String(GRACE_S),
    },
  });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  fnId = (await alice('POST', '/v1/functions', { name: 'add', runtime: 'node', source: '(a, b) => a + b' })).body.function_id;
  admin = new SQSClient({
    region,
    credentials: { accessKeyId: stack.awsEnv.AWS_ACCESS_KEY_ID!, secretAccessKey: stack.awsEnv.AWS_SECRET_ACCESS_KEY! },
  });
});
afterAll(async () => {
  for (const e of endpoints) e.sqs.destroy();
  admin?.destroy();
  await stack?.close();
});

describe("an endpoint queue deleted behind Ferry's back", () => {
  test("fails its open tasks with EndpointQueueGone; another endpoint's tasks stay queued", async () => {
    const gone = await endpoint('gone');
    const other = await endpoint('other');
    const [g1, g2] = await submit(gone, 2);
    const [o1] = await submit(other);
    // One of them a worker had taken before the queue went: it reports "started", then goes silent.
    const [running] = await submit(gone, 1, 600_000);
    await report(gone, running!, 'started');
    await eventually(async () => (await view(running!)).status === 'running', 10_000, 'the started report');

    const deletedAt = Date.now();
    await admin.send(new DeleteQueueCommand({ QueueUrl: gone.queueUrl }));
    for (const id of [g1!, g2!]) {
      const t = await ended(id, 15_000);
      expect(t.status).toBe('failed');
      expect(t.exception).toMatchObject({ type: 'EndpointQueueGone' });
      expect(t.exception.message).toMatch(/queue no longer exists/);
      expect(t.transitions.at(-1)).toMatchObject({ state: 'failed', by: 'sweep' });
    }
    // Not before the grace: SQS may call a queue missing for a moment after CreateQueue.
    expect(Date.now() - deletedAt).toBeGreaterThanOrEqual(GRACE_S * 1000);
    // A running task's worker may still report (the results queue is not the endpoint's): it is left to its walltime.
    expect((await view(running!)).status).toBe('running');
    await report(gone, running!, 'success');
    expect(await ended(running!, 10_000)).toMatchObject({ status: 'success', result: { value: 3 } });
    expect((await view(o1!)).status).toBe('waiting-for-endpoint');
  });

  test('an endpoint deleted through the API fails its tasks once, as EndpointDeleted', async () => {
    const ep = await endpoint('deleted');
    const [t1] = await submit(ep);
    expect((await alice('DELETE', `/v1/endpoints/${ep.id}`)).status).toBe(200);
    // Several sweeps and a grace later, the API's own failure stands alone.
    await new Promise((r) => setTimeout(r, (GRACE_S + 2) * 1000));
    const t = await view(t1!);
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('EndpointDeleted');
    expect(t.transitions.filter((x: { state: string }) => x.state === 'failed')).toHaveLength(1);
  });
});

describe("a message that outlives its queue's retention", () => {
  test('the task ends TaskExpired within retention + margin + a sweep; tasks that were taken are not touched; a late report changes nothing', async () => {
    const idle = await endpoint('idle');
    const served = await endpoint('served');
    const late = await endpoint('late');
    const slow = await endpoint('slow');
    const submittedAt = Date.now();
    const [never] = await submit(idle);
    const [done] = await submit(served);
    const [lost] = await submit(late);
    const [long] = await submit(slow, 1, 600_000);

    // served: picked up and finished well before its message could expire.
    await receive(served, 1);
    await report(served, done!, 'started');
    await report(served, done!, 'success');
    expect(await ended(done!, 10_000)).toMatchObject({ status: 'success' });
    // late: a worker holds the message, but its "started" never arrives before the sweep.
    await receive(late, 1);
    // slow: a worker started it and is still within its walltime when the message's retention runs out.
    await receive(slow, 1);
    await report(slow, long!, 'started');
    await eventually(async () => (await view(long!)).status === 'running', 10_000, 'the started report');

    const t = await ended(never!, (RETENTION_S + MARGIN_S + 20) * 1000);
    const endedAfter = Date.now() - submittedAt;
    expect(t).toMatchObject({ status: 'failed', exception: { type: 'TaskExpired' } });
    expect(t.exception.message).toBe('its message expired unread after 60 s: no worker took it');
    expect(t.transitions.at(-1)).toMatchObject({ state: 'failed', by: 'sweep' });
    // Bounded: not before the message could have been read, and within a few sweeps after.
    expect(endedAfter).toBeGreaterThanOrEqual((RETENTION_S + MARGIN_S) * 1000);
    expect(endedAfter).toBeLessThan((RETENTION_S + MARGIN_S) * 1000 + 10_000);

    const lostView = await ended(lost!, 10_000);
    expect(lostView).toMatchObject({ status: 'failed', exception: { type: 'TaskExpired' } });
    // The worker's report comes after the sweep failed the task: a final state is never left.
    await report(late, lost!, 'started');
    await report(late, lost!, 'success');
    await new Promise((r) => setTimeout(r, 2_000));
    const after = await view(lost!);
    expect(after).toMatchObject({ status: 'failed', exception: { type: 'TaskExpired' } });
    expect(after.result).toBeUndefined();
    expect(after.transitions).toEqual(lostView.transitions);

    // The finished task keeps its result; the running one is still running (its worker may report) and its result counts.
    expect(await view(done!)).toMatchObject({ status: 'success', result: { value: 3 } });
    expect((await view(long!)).status).toBe('running');
    await report(slow, long!, 'success');
    expect(await ended(long!, 10_000)).toMatchObject({ status: 'success', result: { value: 3 } });
  });

  test("the sweep's conditional write loses to a report that lands between its read and its write", async () => {
    const ep = await endpoint('race');
    const [id] = await submit(ep);
    const seen = (await getTask(id!))!;
    expect(seen.state).toBe('waiting-for-endpoint');
    await report(ep, id!, 'started');
    await eventually(async () => (await getTask(id!))?.state === 'running', 10_000, 'the started report');
    // The sweep's move, guarded by what it read: refused, since the record moved meanwhile.
    const exception = { type: 'TaskExpired', message: 'test', traceback: '' };
    expect(
      await transitionTask(id!, 'failed', { by: 'sweep', exception, from: [seen.state], ifUpdatedAt: seen.updated_at, endpointId: ep.id }),
    ).toBeUndefined();
    // Read again, the guard matches, and once failed the task keeps its one final state.
    const now = (await getTask(id!))!;
    expect(
      await transitionTask(id!, 'failed', { by: 'sweep', exception, from: [now.state], ifUpdatedAt: now.updated_at, endpointId: ep.id }),
    ).toMatchObject({ state: 'failed' });
    await report(ep, id!, 'success');
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await view(id!)).toMatchObject({ status: 'failed', exception: { type: 'TaskExpired' } });
  });
});

describe('an endpoint deleted through the API with more open tasks than its request has time for', () => {
  test('is gone at once; the sweep fails the rest as EndpointDeleted, then deletes its record', async () => {
    const ep = await endpoint('deleted-slowly');
    const ids = await submit(ep, 250);
    // No time at all: the request fails nothing itself.
    process.env.FERRY_DELETE_BUDGET_MS = '0';
    resetConfig();
    let del;
    try {
      del = await alice('DELETE', `/v1/endpoints/${ep.id}`);
    } finally {
      delete process.env.FERRY_DELETE_BUDGET_MS;
      resetConfig();
    }
    expect(del).toMatchObject({ status: 200, body: { endpoint_id: ep.id, deleted: true, failed_tasks: 0, still_failing: true } });
    // Gone for every reader and writer at once, though its record lingers for the sweep.
    expect((await alice('GET', `/v1/endpoints/${ep.id}`)).status).toBe(404);
    expect((await alice('GET', '/v1/endpoints')).body.endpoints.map((e: { endpoint_id: string }) => e.endpoint_id)).not.toContain(ep.id);
    expect((await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fnId, args: [1, 2] }] })).status).toBe(404);
    expect((await alice('DELETE', `/v1/endpoints/${ep.id}`)).status).toBe(404);
    const record = () => dynamo().send(new GetCommand({ TableName: config().tables.endpoints, Key: { endpoint_id: ep.id } }));

    await eventually(async () => !(await record()).Item, 30_000, 'the sweep to delete the record', 200);
    const read = await alice('POST', '/v1/tasks/batch', { task_ids: ids });
    expect(read.body.tasks).toHaveLength(250);
    for (const t of read.body.tasks) {
      expect(t).toMatchObject({ status: 'failed', exception: { type: 'EndpointDeleted' } });
      expect(t.transitions.filter((x: { state: string }) => x.state === 'failed')).toEqual([expect.objectContaining({ by: 'sweep' })]);
    }
  });
});
