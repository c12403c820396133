import { jsonEnvelope } from '../helpers/envelope';
import { createHash } from 'node:crypto';
import { DeleteMessageCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { S3Client } from '@aws-sdk/client-s3';
import { readPayload, resultKey, storePayload } from '../../core/bucket';
import { taskMessageSchema, type ResultMessage, type TaskInMessage, type TaskMessage } from '../../core/messages';
import { revokeToken } from '../../core/tables/tokens';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo, sqsClient } from '../../core/clients';
import { config } from '../../core/config';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually, type Answer } from '../helpers/api';

jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
let anon: ReturnType<typeof caller>;
let aliceToken: string;

const ADD = '(a, b) => a + b';

beforeAll(async () => {
  // A one-second authorizer cache, where API Gateway's is 30 s: revocation is seen within it.
  stack = await startLocalStack({ sweepIntervalMs: 200, authorizerCacheSeconds: 1, settings: { FERRY_INLINE_LIMIT: String(16 * 1024) } });
  aliceToken = await stack.createUser('alice');
  alice = caller(stack.apiUrl, aliceToken);
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
  anon = caller(stack.apiUrl);
});
afterAll(() => stack?.close());

/** Plays an endpoint's worker through the SQS SDK, with the credentials the API vends to it. */
async function workerFor(endpointId: string, secret: string) {
  const grant = await caller(stack.apiUrl, secret)('POST', `/v1/endpoints/${endpointId}/credentials`);
  expect(grant.status).toBe(200);
  const g = grant.body;
  const credentials = {
    accessKeyId: g.credentials.access_key_id,
    secretAccessKey: g.credentials.secret_access_key,
    sessionToken: g.credentials.session_token,
  };
  const sqs = new SQSClient({ region: g.region, credentials });
  const s3 = new S3Client({ region: g.region, credentials, forcePathStyle: true });
  return {
    grant: g,
    sqs,
    s3,
    /** The tasks of the next messages, each with its function and its message's receipt handle. */
    async receive(n = 1): Promise<{ msg: TaskInMessage & Pick<TaskMessage, 'function'>; receipt: string }[]> {
      const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: g.queue_url, MaxNumberOfMessages: n, WaitTimeSeconds: 5 }));
      return (out.Messages ?? []).flatMap((m) => {
        const bundle = taskMessageSchema.parse(JSON.parse(m.Body!));
        return bundle.tasks.map((t) => ({ msg: { ...t, function: bundle.function }, receipt: m.ReceiptHandle! }));
      });
    },
    async report(msg: ResultMessage) {
      await sqs.send(new SendMessageCommand({ QueueUrl: g.results_queue_url, MessageBody: JSON.stringify(msg) }));
    },
    async done(receipt: string) {
      await sqs.send(new DeleteMessageCommand({ QueueUrl: g.queue_url, ReceiptHandle: receipt }));
    },
    /** Queue depth, read as the operator: the worker role may not read queue attributes. */
    async depth() {
      const out = await sqsClient().send(
        new GetQueueAttributesCommand({
          QueueUrl: g.queue_url,
          AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
        }),
      );
      return Number(out.Attributes!.ApproximateNumberOfMessages) + Number(out.Attributes!.ApproximateNumberOfMessagesNotVisible);
    },
    close() {
      sqs.destroy();
      s3.destroy();
    },
  };
}

async function setup(name = 'ep', extra: Record<string, unknown> = {}) {
  const fn = await alice('POST', '/v1/functions', { name: 'add', runtime: 'node', source: ADD });
  const ep = await alice('POST', '/v1/endpoints', { name, ...extra });
  expect(ep.status).toBe(201);
  const worker = await workerFor(ep.body.endpoint_id, ep.body.endpoint_secret);
  return {
    functionId: fn.body.function_id as string,
    endpointId: ep.body.endpoint_id as string,
    secret: ep.body.endpoint_secret as string,
    worker,
  };
}

const waitFor = (taskId: string, status: string) =>
  eventually(
    async () => {
      const r = await alice('GET', `/v1/tasks/${taskId}`);
      return r.body.status === status && r.body;
    },
    10_000,
    `task ${taskId} to be ${status}`,
  );

describe('registration', () => {
  it('gives the same id to exactly the same function, and a new one for another name or source', async () => {
    const a = await alice('POST', '/v1/functions', { name: 'f', runtime: 'node', source: '() => 1' });
    const same = await alice('POST', '/v1/functions', { name: 'f', runtime: 'node', source: '() => 1' });
    const renamed = await alice('POST', '/v1/functions', { name: 'f again', runtime: 'node', source: '() => 1' });
    const c = await alice('POST', '/v1/functions', { name: 'f', runtime: 'node', source: '() => 2' });
    expect([a.status, same.status, renamed.status, c.status]).toEqual([201, 200, 201, 201]);
    expect(same.body.function_id).toBe(a.body.function_id);
    expect(renamed.body.function_id).not.toBe(a.body.function_id);
    expect(c.body.function_id).not.toBe(a.body.function_id);
    const got = await alice('GET', `/v1/functions/${a.body.function_id}`);
    expect(got.body).toMatchObject({ name: 'f', runtime: 'node', source: '() => 1' });
    expect((await alice('GET', `/v1/functions/${renamed.body.function_id}`)).body.name).toBe('f again');
  });

  it('creates the endpoint queue and its DLQ, and shows the secret only once', async () => {
    const ep = await alice('POST', '/v1/endpoints', { name: 'hpc-login-1' });
    expect(ep.status).toBe(201);
    expect(ep.body.endpoint_secret).toMatch(/^fes_/);
    const again = await alice('GET', `/v1/endpoints/${ep.body.endpoint_id}`);
    expect(again.body.name).toBe('hpc-login-1');
    expect(JSON.stringify(again.body)).not.toContain(ep.body.endpoint_secret);
    const w = await workerFor(ep.body.endpoint_id, ep.body.endpoint_secret);
    expect(w.grant.queue_url).toContain(`ferry-local-ep-${ep.body.endpoint_id}`);
    expect(w.grant.dlq_url).toContain(`ferry-local-ep-${ep.body.endpoint_id}-dlq`);
    expect(await w.depth()).toBe(0);
    const list = await alice('GET', '/v1/endpoints');
    expect(list.body.endpoints.map((e: { endpoint_id: string }) => e.endpoint_id)).toContain(ep.body.endpoint_id);
    w.close();
  });
});

describe('the whole loop with a test consumer playing the worker', () => {
  it('submits, queues, runs and reads back success with the value', async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [40, 2] }] });
    expect(sub.status).toBe(202);
    const [taskId] = sub.body.task_ids;
    expect((await alice('GET', `/v1/tasks/${taskId}`)).body.status).toBe('waiting-for-endpoint');

    const [{ msg, receipt }] = await worker.receive();
    expect(msg.task_id).toBe(taskId);
    expect(msg.function.source).toBe(ADD);
    const { args } = JSON.parse((await readPayload(msg.args, worker.s3, worker.grant.bucket)).toString());
    await worker.report({ v: 1, kind: 'started', task_id: taskId, endpoint_id: endpointId, worker_id: 'w1', at: new Date().toISOString() });
    await waitFor(taskId, 'running');
    await worker.report({
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: endpointId,
      worker_id: 'w1',
      at: new Date().toISOString(),
      result: jsonEnvelope(args[0] + args[1]),
    });
    await worker.done(receipt);

    const done = await waitFor(taskId, 'success');
    expect(done.result.value).toBe(42);
    expect(done.transitions.map((t: { state: string }) => t.state)).toEqual(['received', 'waiting-for-endpoint', 'running', 'success']);
    expect(await worker.depth()).toBe(0);
    worker.close();
  });

  it('carries a result over the inline limit through S3, checksum verified', async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 2] }] });
    const [{ msg, receipt }] = await worker.receive();
    const big = Buffer.alloc(200 * 1024, 7);
    const result = await storePayload(big, 'node-v8', resultKey(endpointId, msg.task_id), {
      s3: worker.s3,
      bucket: worker.grant.bucket,
      inlineLimit: worker.grant.inline_limit,
    });
    expect(result.ref).toBe(`payloads/${endpointId}/${msg.task_id}/result`);
    await worker.report({
      v: 1,
      kind: 'success',
      task_id: msg.task_id,
      endpoint_id: endpointId,
      worker_id: 'w1',
      at: new Date().toISOString(),
      result,
    });
    await worker.done(receipt);
    const done = await waitFor(sub.body.task_ids[0], 'success');
    expect(done.result.data).toBeUndefined();
    const bytes = Buffer.from(await (await fetch(done.result.url)).arrayBuffer());
    expect(bytes.length).toBe(big.length);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(done.result.sha256);
    // A corrupted envelope is refused, never returned as data.
    await expect(readPayload({ ...result, sha256: '0'.repeat(64) }, worker.s3, worker.grant.bucket)).rejects.toThrow(/checksum/);
    worker.close();
  });

  it('keeps the first final state when a result is delivered twice or late', async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 1] }] });
    const taskId = sub.body.task_ids[0];
    const [{ receipt }] = await worker.receive();
    const at = new Date().toISOString();
    await worker.report({ v: 1, kind: 'success', task_id: taskId, endpoint_id: endpointId, worker_id: 'w1', at, result: jsonEnvelope(2) });
    await waitFor(taskId, 'success');
    await worker.report({ v: 1, kind: 'success', task_id: taskId, endpoint_id: endpointId, worker_id: 'w2', at, result: jsonEnvelope(99) });
    await worker.report({
      v: 1,
      kind: 'failed',
      task_id: taskId,
      endpoint_id: endpointId,
      worker_id: 'w2',
      at,
      exception: { type: 'Error', message: 'late', traceback: '' },
    });
    await worker.report({ v: 1, kind: 'started', task_id: taskId, endpoint_id: endpointId, worker_id: 'w3', at });
    // Wait until the results queue has drained those three, then read.
    await eventually(async () => {
      const q = await sqsClient().send(
        new GetQueueAttributesCommand({ QueueUrl: worker.grant.results_queue_url, AttributeNames: ['All'] }),
      );
      return Number(q.Attributes!.ApproximateNumberOfMessages) + Number(q.Attributes!.ApproximateNumberOfMessagesNotVisible) === 0;
    });
    const t = (await alice('GET', `/v1/tasks/${taskId}`)).body;
    expect(t.status).toBe('success');
    expect(t.result.value).toBe(2);
    expect(t.transitions.filter((x: { state: string }) => x.state === 'success')).toHaveLength(1);
    await worker.done(receipt);
    worker.close();
  });

  it('ignores a result about a task of another endpoint, whichever endpoint the body names', async () => {
    const a = await setup('a');
    const b = await setup('b');
    const sub = await alice('POST', `/v1/endpoints/${a.endpointId}/submit`, { tasks: [{ function_id: a.functionId, args: [1, 1] }] });
    const taskId = sub.body.task_ids[0];
    await b.worker.report({
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: b.endpointId,
      worker_id: 'intruder',
      at: new Date().toISOString(),
      result: jsonEnvelope(666),
    });
    await b.worker.report({
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: a.endpointId,
      worker_id: 'intruder',
      at: new Date().toISOString(),
      result: jsonEnvelope(666),
    });
    await a.worker.report({
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: a.endpointId,
      worker_id: 'w',
      at: new Date().toISOString(),
      result: jsonEnvelope(2),
    });
    const done = await waitFor(taskId, 'success');
    expect(done.result.value).toBe(2);
    a.worker.close();
    b.worker.close();
  });
});

describe('submitting batches', () => {
  it('accepts 120 tasks in one request, bundled three to a message, readable as a paginated group', async () => {
    const { functionId, endpointId, worker } = await setup();
    const tasks = Array.from({ length: 120 }, (_, i) => ({ function_id: functionId, args: [i, i] }));
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks });
    expect(sub.status).toBe(202);
    expect(new Set(sub.body.task_ids).size).toBe(120);
    // 120 tasks over at most 50 messages: 3 per message, 40 messages, 4 SendMessageBatch calls.
    expect(await worker.depth()).toBe(40);
    const bundle = await worker.receive(10);
    expect(bundle).toHaveLength(30);
    expect(new Set(bundle.map((b) => b.receipt)).size).toBe(10);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await alice('GET', `/v1/task-groups/${sub.body.task_group_id}?limit=50${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      seen.push(...page.body.tasks.map((t: { task_id: string }) => t.task_id));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(new Set(seen)).toEqual(new Set(sub.body.task_ids));
    const batch = await alice('POST', '/v1/tasks/batch', {
      task_ids: [...sub.body.task_ids.slice(0, 3), '00000000-0000-4000-8000-000000000000'],
    });
    expect(batch.body.tasks).toHaveLength(3);
    expect(batch.body.unknown).toEqual(['00000000-0000-4000-8000-000000000000']);
    worker.close();
  });

  it('creates no duplicate tasks when a request is retried with the same Idempotency-Key', async () => {
    const { functionId, endpointId, worker } = await setup();
    const body = {
      tasks: [
        { function_id: functionId, args: [1, 2] },
        { function_id: functionId, args: [3, 4] },
      ],
    };
    const first = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'retry-me-1' });
    const second = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'retry-me-1' });
    expect(second.status).toBe(202);
    expect(second.body).toEqual(first.body);
    expect(await worker.depth()).toBe(2);
    const reused = await alice(
      'POST',
      `/v1/endpoints/${endpointId}/submit`,
      { tasks: [{ function_id: functionId, args: [9] }] },
      { 'idempotency-key': 'retry-me-1' },
    );
    expect(reused.status).toBe(409);
    expect(reused.body.error.code).toBe('IdempotencyKeyReused');
    worker.close();
  });

  it('serves two requests racing with one Idempotency-Key as one submit', async () => {
    const { functionId, endpointId, worker } = await setup();
    const body = { tasks: Array.from({ length: 30 }, (_, i) => ({ function_id: functionId, args: [i, 1] })) };
    const [a, b] = await Promise.all([
      alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'race-1' }),
      alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'race-1' }),
    ]);
    const statuses = [a.status, b.status].sort();
    expect(statuses[0]).toBe(202);
    if (statuses[1] === 409) expect([a, b].find((r) => r.status === 409)!.body.error.code).toBe('RequestInProgress');
    else expect(b.body).toEqual(a.body);
    const group = await alice('GET', `/v1/task-groups/${(a.status === 202 ? a : b).body.task_group_id}?limit=1000`);
    expect(group.body.tasks).toHaveLength(30);
    const again = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'race-1' });
    expect(again.body).toEqual((a.status === 202 ? a : b).body);
    // 30 tasks go one to a message: 30 messages, none twice.
    expect(await worker.depth()).toBe(30);
    worker.close();
  });

  it('finishes the work of a request that died part-way, without redoing what had moved on', async () => {
    const { functionId, endpointId, worker } = await setup();
    const body = { tasks: [1, 2, 3].map((i) => ({ function_id: functionId, args: [i, i] })) };
    const first = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'crash-1' });
    const [done, ...rest] = first.body.task_ids as string[];
    // Drain the queue and finish one task, then put the key back as a request that died holding
    // it a while ago: a Lambda dying mid-request cannot be produced here, so its trace is written directly.
    for (const { receipt } of await worker.receive(10)) await worker.done(receipt);
    await worker.report({
      v: 1,
      kind: 'success',
      task_id: done!,
      endpoint_id: endpointId,
      worker_id: 'w',
      at: new Date().toISOString(),
      result: jsonEnvelope(2),
    });
    await waitFor(done!, 'success');
    await dynamo().send(
      new UpdateCommand({
        TableName: config().tables.tasks,
        Key: { task_id: `idempotency#alice#${createHash('sha256').update('crash-1').digest('hex')}` },
        UpdateExpression: 'SET #s = :p, started_at = :old',
        ExpressionAttributeNames: { '#s': 'state' },
        ExpressionAttributeValues: { ':p': 'pending', ':old': Date.now() - 120_000 },
      }),
    );
    const retry = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, { 'idempotency-key': 'crash-1' });
    expect(retry.status).toBe(202);
    expect(retry.body).toEqual(first.body);
    expect((await alice('GET', `/v1/tasks/${done}`)).body.status).toBe('success');
    const requeued = (await worker.receive(10)).map((r) => r.msg.task_id).sort();
    expect(requeued).toEqual([...rest].sort());
    worker.close();
  });

  it('takes large arguments by presigned upload and hands the worker a verified reference', async () => {
    const { functionId, endpointId, worker } = await setup();
    const bytes = Buffer.alloc(3 * 1024 * 1024, 3);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const up = await alice('POST', '/v1/payloads', { endpoint_id: endpointId, codec: 'node-v8', size: bytes.length, sha256 });
    expect(up.status).toBe(201);
    const put = await fetch(up.body.url, { method: 'PUT', body: bytes });
    expect(put.status).toBe(200);
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, {
      tasks: [{ function_id: functionId, payload: { codec: 'node-v8', ref: up.body.ref, size: bytes.length, sha256 } }],
    });
    expect(sub.status).toBe(202);
    const [{ msg }] = await worker.receive();
    expect(msg.args.ref).toBe(up.body.ref);
    expect((await readPayload(msg.args, worker.s3, worker.grant.bucket)).equals(bytes)).toBe(true);
    // A ref that was never uploaded, or someone else's, is refused.
    const missing = await alice('POST', `/v1/endpoints/${endpointId}/submit`, {
      tasks: [
        { function_id: functionId, payload: { codec: 'node-v8', ref: `payloads/${endpointId}/uploads/alice/nope`, size: 1, sha256 } },
      ],
    });
    expect(missing.status).toBe(400);
    worker.close();
  });

  it('stores inline arguments over the inline limit in S3 itself', async () => {
    const { functionId, endpointId, worker } = await setup();
    const big = 'x'.repeat(40 * 1024);
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [big, '!'] }] });
    expect(sub.status).toBe(202);
    const [{ msg }] = await worker.receive();
    expect(msg.args.ref).toBe(`payloads/${endpointId}/${msg.task_id}/args`);
    expect(JSON.parse((await readPayload(msg.args, worker.s3, worker.grant.bucket)).toString()).args[0]).toBe(big);
    worker.close();
  });
});

describe('cancel, lost workers and deletion', () => {
  it('cancels a queued task, and a later result does not revive it', async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 1] }] });
    const taskId = sub.body.task_ids[0];
    const c = await alice('POST', `/v1/tasks/${taskId}/cancel`);
    expect(c.status).toBe(200);
    expect(c.body.status).toBe('cancelled');
    await worker.report({
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: endpointId,
      worker_id: 'w',
      at: new Date().toISOString(),
      result: jsonEnvelope(2),
    });
    await new Promise((r) => setTimeout(r, 300));
    expect((await alice('GET', `/v1/tasks/${taskId}`)).body.status).toBe('cancelled');
    worker.close();
  });

  it('fails a task as worker lost once its deliveries run out', async () => {
    const { functionId, endpointId, worker } = await setup('fragile', { max_attempts: 2 });
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 1] }] });
    const taskId = sub.body.task_ids[0];
    for (let i = 0; i < 2; i++) {
      // A worker takes the task and dies: the message comes back when its visibility lapses.
      const got = await worker.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: worker.grant.queue_url, WaitTimeSeconds: 5, VisibilityTimeout: 1 }),
      );
      expect(got.Messages).toHaveLength(1);
    }
    // The third receive finds it over its maxReceiveCount: SQS moves it to the DLQ instead.
    await new Promise((r) => setTimeout(r, 1100));
    const third = await worker.sqs.send(new ReceiveMessageCommand({ QueueUrl: worker.grant.queue_url, WaitTimeSeconds: 1 }));
    expect(third.Messages ?? []).toHaveLength(0);
    const failed = await waitFor(taskId, 'failed');
    expect(failed.exception.type).toBe('WorkerLost');
    expect(failed.exception.message).toMatch(/worker lost/);
    worker.close();
  });

  it('deletes an endpoint: its queue goes and its queued tasks fail', async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 1] }] });
    expect((await bob('DELETE', `/v1/endpoints/${endpointId}`)).status).toBe(404);
    const del = await alice('DELETE', `/v1/endpoints/${endpointId}`);
    expect(del.status).toBe(200);
    expect(del.body.failed_tasks).toBe(1);
    const t = (await alice('GET', `/v1/tasks/${sub.body.task_ids[0]}`)).body;
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('EndpointDeleted');
    await expect(worker.depth()).rejects.toMatchObject({ name: 'QueueDoesNotExist' });
    expect((await alice('GET', `/v1/endpoints/${endpointId}`)).status).toBe(404);
    worker.close();
  });
});

describe('endpoint status and heartbeats', () => {
  it('is offline until an agent beats, then online with its counts', async () => {
    const { endpointId, secret, worker } = await setup();
    expect((await alice('GET', `/v1/endpoints/${endpointId}/status`)).body.status).toBe('offline');
    const ep = caller(stack.apiUrl, secret);
    const hb = { worker_id: 'agent-1', workers: 2, idle_workers: 1, running: 1, runtimes: ['node', 'python'], agent_version: '0.1.0' };
    expect((await ep('POST', `/v1/endpoints/${endpointId}/heartbeat`, hb)).status).toBe(200);
    const s = (await alice('GET', `/v1/endpoints/${endpointId}/status`)).body;
    expect(s).toMatchObject({ status: 'online', workers: 2, idle_workers: 1, running: 1, queued: 0 });
    // A user token cannot beat for an endpoint, and an endpoint secret cannot submit or beat for another.
    expect((await alice('POST', `/v1/endpoints/${endpointId}/heartbeat`, hb)).status).toBe(403);
    const other = await setup('other');
    expect((await ep('POST', `/v1/endpoints/${other.endpointId}/heartbeat`, hb)).status).toBe(403);
    expect((await ep('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [] })).status).toBe(403);
    await ep('POST', `/v1/endpoints/${endpointId}/heartbeat`, { ...hb, stopped: true });
    expect((await alice('GET', `/v1/endpoints/${endpointId}/status`)).body.status).toBe('offline');
    worker.close();
    other.worker.close();
  });

  it('refuses credentials to a wrong secret', async () => {
    const { endpointId } = await setup();
    const r = await caller(stack.apiUrl, 'fes_' + 'A'.repeat(43))('POST', `/v1/endpoints/${endpointId}/credentials`);
    expect(r.status).toBe(401);
  });
});

describe('isolation between users', () => {
  it("answers 404 to user B for user A's task, function, group and private endpoint", async () => {
    const { functionId, endpointId, worker } = await setup();
    const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, args: [1, 1] }] });
    const taskId = sub.body.task_ids[0];
    expect((await bob('GET', `/v1/tasks/${taskId}`)).status).toBe(404);
    expect((await bob('POST', `/v1/tasks/${taskId}/cancel`)).status).toBe(404);
    expect((await bob('POST', '/v1/tasks/batch', { task_ids: [taskId] })).body).toEqual({ tasks: [], unknown: [taskId], unread: [] });
    expect((await bob('GET', `/v1/task-groups/${sub.body.task_group_id}`)).status).toBe(404);
    expect((await bob('GET', `/v1/functions/${functionId}`)).status).toBe(404);
    expect((await bob('GET', `/v1/endpoints/${endpointId}`)).status).toBe(404);
    expect((await bob('GET', `/v1/endpoints/${endpointId}/status`)).status).toBe(404);
    const bobFn = await bob('POST', '/v1/functions', { name: 'b', runtime: 'node', source: '() => "bob"' });
    const intrude = await bob('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: bobFn.body.function_id }] });
    expect(intrude.status).toBe(404);
    // Bob cannot use Alice's function either, even on an endpoint shared with him.
    expect((await alice('POST', `/v1/endpoints/${endpointId}/share`, { shared_with: ['bob'] })).status).toBe(200);
    expect((await bob('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId }] })).status).toBe(404);
    const shared = await bob('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: bobFn.body.function_id }] });
    expect(shared.status).toBe(202);
    expect((await alice('GET', `/v1/tasks/${shared.body.task_ids[0]}`)).status).toBe(404);
    expect(await worker.depth()).toBe(2);
    worker.close();
  });
});

describe('bad input writes nothing', () => {
  it('answers each bad request with its status and a clear error', async () => {
    const { functionId, endpointId, worker } = await setup();
    const submit = (body: unknown, c = alice) => c('POST', `/v1/endpoints/${endpointId}/submit`, body);
    const cases: [Promise<Answer<{ error: { code: string; message: string } }>>, number, string][] = [
      [submit('{"tasks": [', alice), 400, 'MalformedJson'],
      [submit({ tasks: 'nope' }), 400, 'ValidationFailed'],
      [submit({ tasks: [] }), 400, 'ValidationFailed'],
      [submit({ tasks: [{ function_id: functionId, args: 'x' }] }), 400, 'ValidationFailed'],
      [submit({ tasks: [{ function_id: functionId }], extra: 1 }), 400, 'ValidationFailed'],
      [submit({ tasks: Array.from({ length: 501 }, () => ({ function_id: functionId })) }), 400, 'ValidationFailed'],
      [submit({ tasks: [{ function_id: functionId }, { function_id: '00000000-0000-4000-8000-000000000000' }] }), 404, 'NotFound'],
      [submit({ tasks: [{ function_id: functionId, args: ['y'.repeat(6 * 1024 * 1024)] }] }), 413, 'PayloadTooLarge'],
      [
        alice('POST', '/v1/endpoints/00000000-0000-4000-8000-000000000000/submit', { tasks: [{ function_id: functionId }] }),
        404,
        'NotFound',
      ],
      [submit({ tasks: [{ function_id: functionId, payload: { codec: 'python-pickle', data: 'gAR9lC4=' } }] }), 400, 'BadRequest'],
      [alice('GET', '/v1/tasks/not-a-uuid'), 404, 'NotFound'],
      [alice('GET', '/v1/tasks/00000000-0000-4000-8000-000000000000'), 404, 'NotFound'],
      [alice('POST', '/v1/functions', { name: 'p', runtime: 'python', source: 'def f(): pass' }), 400, 'ValidationFailed'],
      [alice('POST', '/v1/functions', { name: 'p', runtime: 'cobol', source: 'x' }), 400, 'ValidationFailed'],
      [alice('POST', '/v1/endpoints', { name: '' }), 400, 'ValidationFailed'],
      [alice('GET', `/v1/task-groups/00000000-0000-4000-8000-000000000000?cursor=%%%`), 400, 'BadRequest'],
      [anon('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId }] }), 401, 'Unauthorized'],
      [caller(stack.apiUrl, 'garbage')('GET', '/v1/endpoints'), 401, 'Unauthorized'],
    ];
    for (const [promise, status, code] of cases) {
      const r = await promise;
      expect({ status: r.status, code: r.body.error.code }).toEqual({ status, code });
      expect(typeof r.body.error.message).toBe('string');
    }
    expect(await worker.depth()).toBe(0);
    worker.close();
  });

  it('stops a revoked or expired token once the authorizer cache lapses', async () => {
    const token = await stack.createUser('carol');
    const carol = caller(stack.apiUrl, token);
    expect((await carol('GET', '/v1/endpoints')).status).toBe(200);
    await revokeToken(token);
    await new Promise((res) => setTimeout(res, 1100));
    const r = await carol('GET', '/v1/endpoints');
    expect(r.status).toBe(401);
    expect(r.body.error.message).toMatch(/revoked|expired/);
    const shortLived = caller(stack.apiUrl, await stack.createUser('dave', 1));
    await new Promise((res) => setTimeout(res, 1100));
    expect((await shortLived('GET', '/v1/endpoints')).status).toBe(401);
  });
});
