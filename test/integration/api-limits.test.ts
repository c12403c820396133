import { jsonEnvelope } from '../helpers/envelope';
import { DeleteMessageBatchCommand, ReceiveMessageCommand, SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { taskMessageSchema, type ResultMessage } from '../../core/messages';
import { MAX_RESPONSE_BYTES, observeApiResponses, startApiServer, type ApiResponseRecord, type ApiServer } from '../../local/api-server';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually, vendedCredentials } from '../helpers/api';
import type { TaskView } from '../../core/tasks/views';

/**
 * The limits AWS puts on the API, as the local stand-in enforces them (10 MB request, 6 MB Lambda
 * response, 30 s integration timeout), and the task routes that keep every answer inside them:
 * a batch read or a task-group page answers what fits and names the rest.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let token: string;
let alice: ReturnType<typeof caller>;
const seen: ApiResponseRecord[] = [];
let stopWatching: () => void;

// Results of 100 KB travel inline here (the default inline limit is 64 KiB): the worst case a view can be.
const INLINE_LIMIT = 128 * 1024;
const RESULT_CHARS = 100 * 1024;

beforeAll(async () => {
  stopWatching = observeApiResponses((r) => seen.push(r));
  stack = await startLocalStack({ sweepIntervalMs: 60_000, settings: { FERRY_INLINE_LIMIT: String(INLINE_LIMIT) } });
  token = await stack.createUser('alice');
  alice = caller(stack.apiUrl, token);
});
afterAll(async () => {
  stopWatching?.();
  await stack?.close();
});

/**
 * `n` tasks that finished with ~100 KB JSON results each, played through the real path: submitted
 * by the API, taken from the endpoint queue and reported on the results queue with the endpoint's
 * vended credentials, applied by the results consumer.
 */
async function finishedTasks(n: number): Promise<{ groupId: string; ids: string[] }> {
  const fn = await alice('POST', '/v1/functions', { name: 'big', runtime: 'node', source: '(i) => i' });
  const ep = await alice('POST', '/v1/endpoints', { name: `big-${n}` });
  const endpointId = ep.body.endpoint_id as string;
  const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, {
    tasks: Array.from({ length: n }, (_, i) => ({ function_id: fn.body.function_id, args: [i] })),
  });
  expect(sub.status).toBe(202);
  const { grant, credentials } = await vendedCredentials(stack.apiUrl, endpointId, ep.body.endpoint_secret);
  const sqs = new SQSClient({ region: grant.region, credentials });
  try {
    let reported = 0;
    while (reported < n) {
      const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: grant.queue_url, MaxNumberOfMessages: 10, WaitTimeSeconds: 2 }));
      for (const m of out.Messages ?? []) {
        const bundle = taskMessageSchema.parse(JSON.parse(m.Body!));
        const at = new Date().toISOString();
        const reports: ResultMessage[] = bundle.tasks.map((t) => ({
          v: 1,
          kind: 'success',
          task_id: t.task_id,
          endpoint_id: endpointId,
          worker_id: 'w1',
          at,
          // Quotes in the value: each is escaped again inside the Lambda result's body string.
          result: jsonEnvelope({ task: t.task_id, text: '"'.repeat(64) + 'x'.repeat(RESULT_CHARS) }),
        }));
        // One report a message: each is ~135 KB, and SQS takes 256 KiB a batch.
        for (const r of reports)
          await sqs.send(
            new SendMessageBatchCommand({ QueueUrl: grant.results_queue_url, Entries: [{ Id: '0', MessageBody: JSON.stringify(r) }] }),
          );
        await sqs.send(
          new DeleteMessageBatchCommand({ QueueUrl: grant.queue_url, Entries: [{ Id: '0', ReceiptHandle: m.ReceiptHandle! }] }),
        );
        reported += reports.length;
      }
    }
  } finally {
    sqs.destroy();
  }
  const ids = sub.body.task_ids as string[];
  // Done when the last one is: the consumer applies them in the order they were sent.
  await eventually(
    async () => (await alice('GET', `/v1/tasks/${ids[ids.length - 1]}`)).body.status === 'success',
    60_000,
    'results applied',
  );
  await eventually(
    async () => {
      const all = await readAll(ids);
      return all.every((v) => v.status === 'success');
    },
    60_000,
    'every result applied',
  );
  return { groupId: sub.body.task_group_id, ids };
}

/** Every view, asking again for what each answer names unread; the number of requests it took. */
async function readAll(ids: string[]): Promise<TaskView[]> {
  const views: TaskView[] = [];
  let ask = ids;
  while (ask.length) {
    const r = await alice<{ tasks: TaskView[]; unread: string[] }>('POST', '/v1/tasks/batch', { task_ids: ask });
    expect(r.status).toBe(200);
    expect(r.body.tasks.length).toBeGreaterThan(0);
    views.push(...r.body.tasks);
    ask = r.body.unread;
  }
  return views;
}

describe('the stand-in enforces what API Gateway and Lambda enforce', () => {
  let api: ApiServer;
  const aLittle = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const answer = (body: string) => ({ statusCode: 200, headers: { 'content-type': 'application/json' }, body });

  beforeAll(async () => {
    // A second stand-in over the same tables, with routes that exist only in this test.
    api = await startApiServer({
      integrationTimeoutMs: 200,
      extraRoutes: {
        'GET /v1/test/bytes/{n}': async (event) => answer(JSON.stringify({ pad: 'x'.repeat(Number(event.pathParameters!.n)) })),
        'GET /v1/test/slow': async () => (await aLittle(1500), answer('{}')),
        'GET /v1/test/throws': async () => {
          throw new Error('boom');
        },
      },
    });
  });
  afterAll(() => api?.close());

  it('answers 413 to a request body over 10 MB, before any handler runs', async () => {
    const r = await alice('POST', '/v1/tasks/batch', JSON.stringify({ task_ids: ['x'.repeat(11 * 1024 * 1024)] }));
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('PayloadTooLarge');
  });

  it('answers 500 {"message":"Internal Server Error"} when a handler answers more than Lambda returns, and says so loudly', async () => {
    const errors = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const r = await caller(api.url, token)('GET', `/v1/test/bytes/${7 * 1024 * 1024}`);
      expect(r.status).toBe(500);
      expect(r.body).toEqual({ message: 'Internal Server Error' });
      expect(errors.mock.calls.map((c) => String(c[0])).join('\n')).toMatch(
        /RESPONSE TOO LARGE: GET \/v1\/test\/bytes\/\{n\} answered \d+ bytes/,
      );
    } finally {
      errors.mockRestore();
    }
    // Just under the limit passes whole.
    const fits = await caller(api.url, token)('GET', `/v1/test/bytes/${MAX_RESPONSE_BYTES - 1024}`);
    expect(fits.status).toBe(200);
    expect(fits.body.pad.length).toBe(MAX_RESPONSE_BYTES - 1024);
  });

  it('answers 503 {"message":"Service Unavailable"} past the integration timeout, and 500 when the handler throws', async () => {
    const errors = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const slow = await caller(api.url, token)('GET', '/v1/test/slow');
      expect(slow.status).toBe(503);
      expect(slow.body).toEqual({ message: 'Service Unavailable' });
      const thrown = await caller(api.url, token)('GET', '/v1/test/throws');
      expect(thrown.status).toBe(500);
      expect(thrown.body).toEqual({ message: 'Internal Server Error' });
    } finally {
      errors.mockRestore();
    }
  });
});

describe('task reads answer what fits and name the rest', () => {
  let tasks: { groupId: string; ids: string[] };
  beforeAll(async () => {
    tasks = await finishedTasks(80);
  });

  it('POST /v1/tasks/batch answers the views that fit, in order, and lists the rest as unread', async () => {
    seen.length = 0;
    const first = await alice('POST', '/v1/tasks/batch', { task_ids: tasks.ids });
    expect(first.status).toBe(200);
    const n = first.body.tasks.length;
    expect(n).toBeGreaterThan(0);
    expect(n).toBeLessThan(80);
    expect(first.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(tasks.ids.slice(0, n));
    expect(first.body.unread).toEqual(tasks.ids.slice(n));
    expect(first.body.unknown).toEqual([]);

    const all = await readAll(tasks.ids);
    expect(all.map((v) => v.task_id)).toEqual(tasks.ids);
    // Each JSON result once, as its value: no base64 copy beside it.
    for (const v of all) {
      expect((v.result!.value as { task: string }).task).toBe(v.task_id);
      expect(v.result!.data).toBeUndefined();
    }
    expect(Math.max(...seen.map((r) => r.payloadBytes))).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
  });

  it('a batch read of unread ids and unknown ones lists the unknown apart', async () => {
    const stranger = '00000000-0000-4000-8000-000000000000';
    const r = await alice('POST', '/v1/tasks/batch', { task_ids: [stranger, tasks.ids[0]] });
    expect(r.status).toBe(200);
    expect(r.body.unknown).toEqual([stranger]);
    expect(r.body.unread).toEqual([]);
  });

  it('GET /v1/task-groups/{id} ends a page where the budget runs out, and its cursor continues after it', async () => {
    seen.length = 0;
    const ids: string[] = [];
    let pages = 0;
    let cursor: string | undefined;
    do {
      const r = await alice('GET', `/v1/task-groups/${tasks.groupId}?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.status).toBe(200);
      ids.push(...r.body.tasks.map((t: { task_id: string }) => t.task_id));
      cursor = r.body.next_cursor;
      pages++;
    } while (cursor);
    expect(ids).toEqual(tasks.ids);
    expect(pages).toBeGreaterThan(1);
    expect(Math.max(...seen.map((r) => r.payloadBytes))).toBeLessThanOrEqual(MAX_RESPONSE_BYTES);
  });
});
