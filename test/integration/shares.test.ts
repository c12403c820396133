import { jsonEnvelope } from '../helpers/envelope';
import { createHash } from 'node:crypto';
import type { InitializeMiddleware, MetadataBearer } from '@smithy/types';
import { DeleteCommand, GetCommand, PutCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { DeleteMessageCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { dynamo, onClientCreated, resetClients, sqsClient } from '../../core/clients';
import { config } from '../../core/config';
import { ForgedReport } from '../../core/errors';
import { closeFinishedShares } from '../../core/lost-tasks';
import type { ResultMessage } from '../../core/messages';
import { waitForFinished } from '../../core/task-events';
import { ownTask } from '../../core/access';
import { applyResults } from '../../core/tasks/results';
import { getEndpoint } from '../../core/tables/endpoints';
import { getTask, shareOfTask, transitionTask } from '../../core/tables/task-records';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller } from '../helpers/api';

/**
 * A submit writes one share item (and one open marker) per 100 tasks; a task gets an item of its
 * own only when it moves. These tests look at the items themselves, and at what they cost.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let functionId: string;
let endpointId: string;

beforeAll(async () => {
  // No background sweep: the tests close markers themselves.
  stack = await startLocalStack({ sweepIntervalMs: 3_600_000 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  functionId = (await alice('POST', '/v1/functions', { name: 'noop', runtime: 'node', source: '() => null' })).body.function_id;
  endpointId = (await alice('POST', '/v1/endpoints', { name: 'ep' })).body.endpoint_id;
});
afterAll(() => stack?.close());

const table = () => config().tables.tasks;
const scan = async () => {
  const items: Record<string, unknown>[] = [];
  let start: Record<string, unknown> | undefined;
  do {
    const out = await dynamo().send(new ScanCommand({ TableName: table(), ExclusiveStartKey: start }));
    items.push(...(out.Items ?? []));
    start = out.LastEvaluatedKey;
  } while (start);
  return items;
};
const raw = async (key: string) =>
  (await dynamo().send(new GetCommand({ TableName: table(), Key: { task_id: key }, ConsistentRead: true }))).Item;

const submit = async (n: number, headers: Record<string, string> = {}) => {
  const r = await alice(
    'POST',
    `/v1/endpoints/${endpointId}/submit`,
    { tasks: Array.from({ length: n }, () => ({ function_id: functionId })) },
    headers,
  );
  expect(r.status).toBe(202);
  return r.body as { task_group_id: string; task_ids: string[] };
};

const success = (taskId: string, value: unknown, extra: Partial<ResultMessage> = {}): ResultMessage =>
  ({
    v: 1,
    kind: 'success',
    task_id: taskId,
    endpoint_id: endpointId,
    worker_id: 'w1',
    at: new Date().toISOString(),
    result: jsonEnvelope(value),
    ...extra,
  }) as ResultMessage;

it('writes one share and one marker per 100 tasks, and no item per task until a task moves', async () => {
  const before = new Set((await scan()).map((i) => i.task_id));
  const { task_ids } = await submit(250);
  const shares = [...new Set(task_ids.map((id) => shareOfTask(id)!.shareId))];
  expect(shares).toHaveLength(3);
  const added = (await scan()).filter((i) => !before.has(i.task_id)).map((i) => i.task_id as string);
  expect(added.sort()).toEqual([...shares.map((s) => `share#${s}`), ...shares.map((s) => `open#${s}`)].sort());
  // Every task reads as submitted, in order.
  const view = await alice('POST', '/v1/tasks/batch', { task_ids });
  expect(view.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(task_ids);
  expect(view.body.tasks.every((t: { status: string }) => t.status === 'waiting-for-endpoint')).toBe(true);
});

it('gives a task its own item at its result, holding only what changed, with the start it reports', async () => {
  const [id] = (await submit(3)).task_ids;
  const started = new Date(Date.now() - 5).toISOString();
  await applyResults([success(id!, 42, { started_at: started })], endpointId);
  const item = (await raw(id!))!;
  expect(item).toMatchObject({ state: 'success', worker_id: 'w1' });
  // Nothing that would put it in an index (and cost a write there), nor what the share holds.
  for (const a of ['task_group_id', 'submit_order', 'open_on', 'created_at', 'owner', 'args']) expect(item).not.toHaveProperty(a);
  const t = (await getTask(id!))!;
  expect(t.owner).toBe('alice');
  expect(t.transitions.map((x) => x.state)).toEqual(['received', 'waiting-for-endpoint', 'running', 'success']);
  expect(t.transitions[2]!.at).toBe(started);
  expect((await alice('GET', `/v1/tasks/${id}`)).body.result.value).toBe(42);
});

it('lets no duplicate or late report change a final task', async () => {
  const [id] = (await submit(1)).task_ids;
  await applyResults([success(id!, 1)], endpointId);
  const first = await raw(id!);
  await applyResults([success(id!, 2)], endpointId);
  await applyResults(
    [{ v: 1, kind: 'started', task_id: id!, endpoint_id: endpointId, worker_id: 'w2', at: new Date().toISOString() }],
    endpointId,
  );
  expect(await raw(id!)).toEqual(first);
  expect(await transitionTask(id!, 'cancelled', { by: 'user:alice' })).toBeUndefined();
});

it("refuses another endpoint's report, and writes nothing for it", async () => {
  const [id] = (await submit(1)).task_ids;
  const other = (await alice('POST', '/v1/endpoints', { name: 'other' })).body.endpoint_id as string;
  await expect(applyResults([{ ...success(id!, 1), endpoint_id: other }], other)).rejects.toBeInstanceOf(ForgedReport);
  await expect(applyResults([success(id!, 1)], other)).rejects.toBeInstanceOf(ForgedReport);
  expect(await raw(id!)).toBeUndefined();
  expect((await getTask(id!))!.state).toBe('waiting-for-endpoint');
});

it("deletes a share's marker once every task of it is final, and only then", async () => {
  const { task_ids } = await submit(150);
  const [a, b] = [shareOfTask(task_ids[0]!)!.shareId, shareOfTask(task_ids[149]!)!.shareId];
  const later = Date.now() + 120_000;
  await Promise.all(task_ids.slice(0, 100).map((id) => applyResults([success(id, null)], endpointId)));
  await Promise.all(task_ids.slice(100, 149).map((id) => applyResults([success(id, null)], endpointId)));
  expect(await closeFinishedShares(endpointId, later)).toBeGreaterThanOrEqual(1);
  expect((await raw(`open#${a}`))?.open_on).toBeUndefined();
  // One task of the second share is still open: its marker stays, and the sweeps still find it.
  expect((await raw(`open#${b}`))?.open_on).toBe(endpointId);
  await alice('POST', `/v1/tasks/${task_ids[149]}/cancel`);
  // A share found open is looked at again a minute later.
  await closeFinishedShares(endpointId, later + 30_000);
  expect((await raw(`open#${b}`))?.open_on).toBe(endpointId);
  await closeFinishedShares(endpointId, later + 61_000);
  expect((await raw(`open#${b}`))?.open_on).toBeUndefined();
  // The tasks keep their results after the marker is gone.
  expect((await getTask(task_ids[0]!))!.state).toBe('success');
});

it('still reads and moves a whole task item written before shares', async () => {
  const id = '0c8e7a52-6f0b-4c43-9d0e-2b7d5e4f1a27';
  const at = new Date().toISOString();
  await dynamo().send(
    new PutCommand({
      TableName: table(),
      Item: {
        task_id: id,
        owner: 'alice',
        endpoint_id: endpointId,
        function_id: functionId,
        task_group_id: '3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d',
        state: 'waiting-for-endpoint',
        args: jsonEnvelope({ args: [], kwargs: {} }),
        walltime_ms: 1000,
        submit_order: `${at}#00000000#0000`,
        created_at: at,
        updated_at: at,
        transitions: [{ state: 'received', at, by: 'api' }],
        open_on: endpointId,
      },
    }),
  );
  expect((await ownTask(id, 'alice')).state).toBe('waiting-for-endpoint');
  await applyResults([success(id, 7)], endpointId);
  const item = (await raw(id))!;
  expect(item).toMatchObject({ state: 'success', owner: 'alice' });
  expect(item).not.toHaveProperty('open_on');
  expect((await alice('GET', `/v1/tasks/${id}`)).body.result.value).toBe(7);
  await dynamo().send(new DeleteCommand({ TableName: table(), Key: { task_id: id } }));
});

/**
 * What a write costs in the two indexes: dynalite reports only the table's units. Both indexes
 * project keys (and owner) only, so an entry is one unit: an item put with an index's keys adds
 * one, a marker deleted removes one, an update that sets an index key moves one.
 */
function indexUnits(command: string, input: Record<string, unknown>): number {
  const entries = (item: Record<string, unknown>) =>
    Number(item.task_group_id !== undefined && item.submit_order !== undefined) +
    Number(item.open_on !== undefined && item.created_at !== undefined);
  const keyOf = (key: Record<string, unknown>) => {
    const id = key.task_id as string | { S?: string } | undefined;
    return String(typeof id === 'object' ? id.S : id);
  };
  if (command.startsWith('BatchWrite')) {
    const reqs = Object.values(
      input.RequestItems as Record<
        string,
        { PutRequest?: { Item: Record<string, unknown> }; DeleteRequest?: { Key: Record<string, unknown> } }[]
      >,
    ).flat();
    return reqs.reduce(
      (n, r) => n + (r.PutRequest ? entries(r.PutRequest.Item) : keyOf(r.DeleteRequest!.Key).startsWith('open#') ? 1 : 0),
      0,
    );
  }
  if (command.startsWith('Put')) return entries(input.Item as Record<string, unknown>);
  if (command.startsWith('Delete')) return keyOf(input.Key as Record<string, unknown>).startsWith('open#') ? 1 : 0;
  return /task_group_id|submit_order|open_on|created_at/.test(String(input.UpdateExpression)) ? 1 : 0;
}

it('costs fewer than 100 write units to submit 100 no-op tasks, and at most 2 a task to the end', async () => {
  let units = 0;
  const meter: InitializeMiddleware<object, MetadataBearer> = (next, context) => async (args) => {
    const command = String(context.commandName);
    if (!/^(Put|Update|Delete|BatchWrite)(Item)?Command$/.test(command)) return next(args);
    const input = args.input as Record<string, unknown>;
    input.ReturnConsumedCapacity = 'TOTAL';
    const extra = indexUnits(command, input);
    const out = await next(args);
    type Consumed = { CapacityUnits?: number };
    const consumed = (out.output as { ConsumedCapacity?: Consumed | Consumed[] } | undefined)?.ConsumedCapacity;
    for (const c of consumed === undefined ? [] : Array.isArray(consumed) ? consumed : [consumed]) units += c.CapacityUnits ?? 0;
    units += extra;
    return out;
  };
  // Added as the client is built: it resolves its middleware once per command type.
  onClientCreated((client) => (client.middlewareStack.add(meter, { step: 'initialize', name: 'sharesTestMeter' }), client));
  resetClients();
  try {
    // As the SDKs submit: with an Idempotency-Key (its claim and completion are two small writes).
    const { task_ids } = await submit(100, { 'idempotency-key': 'wru-100' });
    const submitUnits = units;
    expect(submitUnits).toBeLessThan(100);
    const at = new Date().toISOString();
    await Promise.all(task_ids.map((id) => applyResults([success(id, null, { started_at: at })], endpointId)));
    expect(await closeFinishedShares(endpointId, Date.now() + 120_000)).toBeGreaterThanOrEqual(1);
    const perTask = units / task_ids.length;
    console.log(`write units: submit ${submitUnits} for 100 tasks; end to end ${units} (${perTask.toFixed(2)} a task)`);
    expect(perTask).toBeLessThanOrEqual(2);
  } finally {
    onClientCreated(undefined);
    resetClients();
  }
});

it('announces every task that reaches a final state: result, cancel, endpoint deletion', async () => {
  const { task_ids } = await submit(3);
  const heard = waitForFinished([task_ids[0]!], 5_000);
  await applyResults([success(task_ids[0]!, 1)], endpointId);
  expect(await heard).toEqual([task_ids[0]]);
  const cancelled = waitForFinished([task_ids[1]!], 5_000);
  await alice('POST', `/v1/tasks/${task_ids[1]}/cancel`);
  expect(await cancelled).toEqual([task_ids[1]]);
  // A doomed endpoint: its open tasks fail, and its markers go with it.
  const ep = (await alice('POST', '/v1/endpoints', { name: 'doomed' })).body.endpoint_id as string;
  const doomed = await alice('POST', `/v1/endpoints/${ep}/submit`, {
    tasks: Array.from({ length: 120 }, () => ({ function_id: functionId })),
  });
  const ids = doomed.body.task_ids as string[];
  await applyResults([{ ...success(ids[0]!, 1), endpoint_id: ep }], ep);
  const failed = waitForFinished([ids[119]!], 5_000);
  const del = await alice('DELETE', `/v1/endpoints/${ep}`);
  expect(del.body.failed_tasks).toBe(119);
  expect(await failed).toEqual([ids[119]]);
  for (const s of new Set(ids.map((id) => shareOfTask(id)!.shareId))) expect((await raw(`open#${s}`))?.open_on).toBeUndefined();
  const views = (await alice('POST', '/v1/tasks/batch', { task_ids: ids })).body.tasks as {
    status: string;
    exception?: { type: string };
  }[];
  expect(views[0]!.status).toBe('success');
  expect(views.slice(1).every((v) => v.status === 'failed' && v.exception?.type === 'EndpointDeleted')).toBe(true);
});

it('finishes a submit whose request died after writing some of its shares, queueing each task once', async () => {
  const key = 'died-after-one-share';
  const ep = (await alice('POST', '/v1/endpoints', { name: 'retried' })).body.endpoint_id as string;
  const queueUrl = (await getEndpoint(ep))!.queue_url;
  /** Every task id in the endpoint's queue, taking the messages out. */
  const drain = async () => {
    const ids: string[] = [];
    for (;;) {
      const out = await sqsClient().send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 0 }));
      if (!out.Messages?.length) return ids;
      for (const m of out.Messages) {
        ids.push(...(JSON.parse(m.Body!) as { tasks: { task_id: string }[] }).tasks.map((t) => t.task_id));
        await sqsClient().send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle! }));
      }
    }
  };
  const submitTo = async () => {
    const r = await alice(
      'POST',
      `/v1/endpoints/${ep}/submit`,
      { tasks: Array.from({ length: 250 }, () => ({ function_id: functionId })) },
      { 'idempotency-key': key },
    );
    expect(r.status).toBe(202);
    return r.body as { task_group_id: string; task_ids: string[] };
  };
  const first = await submitTo();
  expect((await drain()).sort()).toEqual([...first.task_ids].sort());
  const [a, b, c] = [...new Set(first.task_ids.map((id) => shareOfTask(id)!.shareId))];
  // The first share's tasks were queued and one finished; the other two shares were never written.
  await applyResults([{ ...success(first.task_ids[0]!, 1), endpoint_id: ep }], ep);
  for (const s of [b, c]) {
    await dynamo().send(new DeleteCommand({ TableName: table(), Key: { task_id: `share#${s}` } }));
    await dynamo().send(new DeleteCommand({ TableName: table(), Key: { task_id: `open#${s}` } }));
  }
  await dynamo().send(
    new UpdateCommand({
      TableName: table(),
      Key: { task_id: `idempotency#alice#${createHash('sha256').update(key).digest('hex')}` },
      UpdateExpression: 'SET #s = :p, started_at = :old',
      ExpressionAttributeNames: { '#s': 'state' },
      ExpressionAttributeValues: { ':p': 'pending', ':old': Date.now() - 120_000 },
    }),
  );
  const retry = await submitTo();
  expect(retry).toEqual(first);
  // Each task not yet finished is queued once more; the finished one is not.
  expect((await drain()).sort()).toEqual(first.task_ids.slice(1).sort());
  for (const s of [a, b, c]) expect((await raw(`open#${s}`))?.open_on).toBe(ep);
  const views = (await alice('POST', '/v1/tasks/batch', { task_ids: first.task_ids })).body.tasks as { task_id: string; status: string }[];
  expect(views.map((v) => v.task_id)).toEqual(first.task_ids);
  expect(views[0]!.status).toBe('success');
  expect(views.slice(1).every((v) => v.status === 'waiting-for-endpoint')).toBe(true);
  // A third attempt, the request now complete, answers the same without writing anything.
  const before = await scan();
  expect(await submitTo()).toEqual(first);
  expect((await scan()).length).toBe(before.length);
  expect(await drain()).toEqual([]);
});

it('splits a submit of large inline arguments into shares that each fit in one DynamoDB item', async () => {
  const tasks = Array.from({ length: 30 }, (_, i) => ({
    function_id: functionId,
    kwargs: {
      blob: String(i)
        .repeat(50 * 1024)
        .slice(0, 50 * 1024),
    },
  }));
  const r = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks });
  expect(r.status).toBe(202);
  const shares = [...new Set((r.body.task_ids as string[]).map((id) => shareOfTask(id)!.shareId))];
  expect(shares.length).toBeGreaterThan(1);
  for (const s of shares) expect(Buffer.byteLength(JSON.stringify(await raw(`share#${s}`)))).toBeLessThan(400 * 1024);
  const t = (await getTask(r.body.task_ids[29]))!;
  expect(t.args.inline).toBeDefined();
});
