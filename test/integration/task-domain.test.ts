import { jsonEnvelope } from '../helpers/envelope';
import { createHash } from 'node:crypto';
import { DeleteQueueCommand, DeleteMessageBatchCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { DeleteCommand, GetCommand, ScanCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo, resetSdkCallCounts, sdkCallCounts, sqsClient } from '../../core/clients';
import { config } from '../../core/config';
import { registerEndpoint } from '../../core/endpoints';
import {
  FerryError,
  ForeignPayload,
  ForgedReport,
  Forbidden,
  FunctionNotAllowed,
  IdempotencyKeyReused,
  NotFound,
  PartialSubmitFailure,
  RequestInProgress,
} from '../../core/errors';
import type { ResultMessage, TaskMessage } from '../../core/messages';
import type { EndpointRecord } from '../../core/tables/endpoints';
import { registerFunction } from '../../core/tables/functions';
import { getTask, getTasks, shareOfTask } from '../../core/tables/task-records';
import { applyResults } from '../../core/tasks/results';
import { submitBatch, type SubmitInput } from '../../core/tasks/submit';
import { startLocalStack, type LocalStack } from '../../local/stack';

/**
 * The per-task hot path, driven in core against the local DynamoDB, SQS and S3 (no HTTP): a submit
 * (its shares, its messages, what it writes when refused or when SQS fails it), the results it
 * takes (one write a result, and never one a sender may not make), and an Idempotency-Key retry
 * that takes over an attempt that died part-way.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let functionId: string;
let ep: EndpointRecord;

beforeAll(async () => {
  // No background sweep: nothing but these tests moves a task.
  stack = await startLocalStack({ sweepIntervalMs: 3_600_000 });
  await stack.createUser('alice');
  functionId = (await registerFunction({ owner: 'alice', name: 'noop', runtime: 'node', source: '() => null' })).record.function_id;
  ep = (await registerEndpoint({ owner: 'alice', name: 'ep' })).endpoint;
});
afterAll(() => stack?.close());
// Each test reads the endpoint's queue as its own.
beforeEach(() => drain());

const table = () => config().tables.tasks;
const tasksOf = (n: number) => Array.from({ length: n }, (_, i) => ({ function_id: functionId, args: [i] }));
const submit = (n: number, more: Partial<SubmitInput> = {}) =>
  submitBatch({ userId: 'alice', endpointId: ep.endpoint_id, tasks: tasksOf(n), ...more });

/** Every task id in an endpoint's queue, each message taken and deleted. */
async function drain(queueUrl = ep.queue_url): Promise<string[]> {
  const ids: string[] = [];
  for (let empty = 0; empty < 2;) {
    const out = await sqsClient().send(new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: 10, VisibilityTimeout: 60 }));
    const msgs = out.Messages ?? [];
    if (!msgs.length) {
      empty++;
      continue;
    }
    empty = 0;
    for (const m of msgs) ids.push(...(JSON.parse(m.Body!) as TaskMessage).tasks.map((t) => t.task_id));
    await sqsClient().send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
      }),
    );
  }
  return ids;
}

const itemCount = async () => {
  let n = 0;
  let start: Record<string, unknown> | undefined;
  do {
    const out = await dynamo().send(new ScanCommand({ TableName: table(), ExclusiveStartKey: start, Select: 'COUNT' }));
    n += out.Count ?? 0;
    start = out.LastEvaluatedKey;
  } while (start);
  return n;
};
const raw = async (key: string) =>
  (await dynamo().send(new GetCommand({ TableName: table(), Key: { task_id: key }, ConsistentRead: true }))).Item;
const idempotencyItem = (key: string) => `idempotency#alice#${createHash('sha256').update(key).digest('hex')}`;
/** What a Lambda that died holding a claim leaves: the claim pending, started long ago. */
const diedHolding = (key: string) =>
  dynamo().send(
    new UpdateCommand({
      TableName: table(),
      Key: { task_id: idempotencyItem(key) },
      UpdateExpression: 'SET #s = :p, started_at = :old',
      ExpressionAttributeNames: { '#s': 'state' },
      ExpressionAttributeValues: { ':p': 'pending', ':old': Date.now() - 120_000 },
    }),
  );
/** A share as if its attempt died before writing it: the share and its marker gone. */
const unwriteShare = async (shareId: string) => {
  for (const key of [`share#${shareId}`, `open#${shareId}`])
    await dynamo().send(new DeleteCommand({ TableName: table(), Key: { task_id: key } }));
};
const sharesOf = (ids: readonly string[]) => [...new Set(ids.map((id) => shareOfTask(id)!.shareId))];
const orderPrefix = (submitOrder: string) => submitOrder.slice(0, submitOrder.lastIndexOf('#'));

const report = (taskId: string, kind: ResultMessage['kind'], extra: Record<string, unknown> = {}): ResultMessage =>
  ({
    v: 1,
    kind,
    task_id: taskId,
    endpoint_id: ep.endpoint_id,
    worker_id: 'w1',
    at: new Date().toISOString(),
    ...(kind === 'success' ? { result: jsonEnvelope(7) } : {}),
    ...(kind === 'failed' ? { exception: { type: 'ValueError', message: 'bad', traceback: 'tb' } } : {}),
    ...extra,
  }) as ResultMessage;

describe('submitBatch', () => {
  it('writes one share per 100 tasks and queues every task exactly once', async () => {
    const out = await submit(150);
    expect(out.task_ids).toHaveLength(150);
    expect(new Set(out.task_ids).size).toBe(150);
    const shares = sharesOf(out.task_ids);
    expect(shares.map((s) => out.task_ids.filter((id) => shareOfTask(id)!.shareId === s).length)).toEqual([100, 50]);
    const records = await getTasks(out.task_ids);
    expect(records.map((t) => t.task_id)).toEqual(out.task_ids);
    for (const t of records) expect(t).toMatchObject({ state: 'waiting-for-endpoint', owner: 'alice', task_group_id: out.task_group_id });
    expect((await drain()).sort()).toEqual([...out.task_ids].sort());
  });

  it("reads its endpoint and its functions in one BatchGetItem, and takes neither of another user's", async () => {
    resetSdkCallCounts();
    expect((await submit(3)).task_ids).toHaveLength(3);
    expect(['GetItem', 'BatchGetItem'].map((c) => sdkCallCounts.get(`DynamoDB.${c}`) ?? 0)).toEqual([0, 1]);
    await drain();
    const bobs = (await registerFunction({ owner: 'bob', name: 'g', runtime: 'node', source: '() => 2' })).record.function_id;
    await expect(submit(1, { tasks: [{ function_id: functionId }, { function_id: bobs }] })).rejects.toMatchObject({
      code: 'NotFound',
      details: { function_ids: [bobs] },
    });
    await expect(submit(1, { userId: 'bob', tasks: [{ function_id: bobs }] })).rejects.toMatchObject({
      code: 'NotFound',
      message: `endpoint ${ep.endpoint_id} not found`,
    });
    expect(await drain()).toEqual([]);
  });

  it('writes and queues nothing for a request it refuses, and leaves no claim on its Idempotency-Key', async () => {
    const strict = (await registerEndpoint({ owner: 'alice', name: 'strict', allowed_functions: ['00000000-0000-4000-8000-000000000001'] }))
      .endpoint;
    const otherGroup = (
      await submitBatch({
        userId: 'bob',
        endpointId: (await registerEndpoint({ owner: 'bob', name: 'b' })).endpoint.endpoint_id,
        tasks: [
          { function_id: (await registerFunction({ owner: 'bob', name: 'f', runtime: 'node', source: '() => 1' })).record.function_id },
        ],
      })
    ).task_group_id;
    const before = await itemCount();
    const unknownFn = '00000000-0000-4000-8000-000000000002';
    const refusal = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (err: FerryError) => ({ type: err.constructor, code: err.code, details: err.details }),
      );
    expect(await refusal(submit(1, { tasks: [{ function_id: unknownFn }], idempotencyKey: 'refused-1' }))).toEqual({
      type: NotFound,
      code: 'NotFound',
      details: { function_ids: [unknownFn] },
    });
    expect(await refusal(submit(1, { endpointId: strict.endpoint_id }))).toEqual({
      type: FunctionNotAllowed,
      code: 'FunctionNotAllowed',
      details: { function_ids: [functionId] },
    });
    expect(await refusal(submit(1, { taskGroupId: otherGroup }))).toMatchObject({ type: Forbidden });
    expect(await refusal(submit(1, { endpointId: '00000000-0000-4000-8000-000000000003' }))).toMatchObject({ type: NotFound });
    expect(await itemCount()).toBe(before);
    expect(await drain()).toEqual([]);
    expect(await drain(strict.queue_url)).toEqual([]);
    // The refused request's key holds no claim: another request may use it at once.
    const out = await submit(2, { idempotencyKey: 'refused-1' });
    expect(out.task_ids).toHaveLength(2);
    expect(await drain()).toHaveLength(2);
  });

  it('fails the tasks SQS would not take and names them, so none waits forever', async () => {
    const gone = (await registerEndpoint({ owner: 'alice', name: 'queue-gone' })).endpoint;
    await sqsClient().send(new DeleteQueueCommand({ QueueUrl: gone.queue_url }));
    const err = (await submit(3, { endpointId: gone.endpoint_id, idempotencyKey: 'not-queued-1' }).catch(
      (e: unknown) => e,
    )) as PartialSubmitFailure;
    expect(err).toBeInstanceOf(PartialSubmitFailure);
    const ids = err.details!.task_ids as string[];
    expect(err.details).toEqual({ task_group_id: expect.any(String), task_ids: ids, not_queued: ids });
    expect(err.message).toBe('3 of 3 tasks could not be queued');
    for (const t of await getTasks(ids)) expect(t).toMatchObject({ state: 'failed', exception: { type: 'NotQueued' } });
    // Its Idempotency-Key is given up, so a retry starts again at once.
    expect(await raw(idempotencyItem('not-queued-1'))).toBeUndefined();
  });
});

describe('applyResults', () => {
  it("folds a task's started report into its result's single write", async () => {
    const [id] = (await submit(1)).task_ids;
    await drain();
    const started = report(id!, 'started', { at: new Date(Date.now() - 50).toISOString() });
    resetSdkCallCounts();
    await applyResults([report(id!, 'success'), started], ep.endpoint_id);
    expect(sdkCallCounts.get('DynamoDB.UpdateItem')).toBe(1);
    const t = (await getTask(id!))!;
    expect(t).toMatchObject({ state: 'success', worker_id: 'w1', result: jsonEnvelope(7) });
    expect(t.transitions.map((x) => [x.state, x.by])).toEqual([
      ['received', 'api'],
      ['waiting-for-endpoint', 'api'],
      ['running', 'worker:w1'],
      ['success', 'worker:w1'],
    ]);
    expect(t.transitions[2]!.at).toBe(started.at);
  });

  it('keeps the first final report: a failure, a success or a start that comes after changes nothing', async () => {
    const [id] = (await submit(1)).task_ids;
    await applyResults([report(id!, 'failed')], ep.endpoint_id);
    const first = await raw(id!);
    await applyResults([report(id!, 'success')], ep.endpoint_id);
    await applyResults([report(id!, 'started', { worker_id: 'w2' })], ep.endpoint_id);
    await applyResults([report(id!, 'failed', { exception: { type: 'Other', message: 'x', traceback: '' } })], ep.endpoint_id);
    expect(await raw(id!)).toEqual(first);
    expect((await getTask(id!))!.exception).toEqual({ type: 'ValueError', message: 'bad', traceback: 'tb' });
  });

  it('refuses, writing nothing, a report its sender may not make', async () => {
    const [id] = (await submit(1)).task_ids;
    const other = (await registerEndpoint({ owner: 'alice', name: 'other' })).endpoint.endpoint_id;
    const refs = (ref: string) => ({ result: { ...jsonEnvelope(7), inline: undefined, ref } });
    // The body names another endpoint than the sender's credentials.
    await expect(applyResults([report(id!, 'success', { endpoint_id: other })], ep.endpoint_id)).rejects.toBeInstanceOf(ForgedReport);
    // Another endpoint reports on this one's task, naming itself.
    await expect(applyResults([report(id!, 'success', { endpoint_id: other })], other)).rejects.toBeInstanceOf(ForgedReport);
    // Payloads outside the sender's prefix, or climbing out of it.
    for (const ref of [`payloads/${other}/${id}/result`, `payloads/${ep.endpoint_id}/../${other}/${id}/result`]) {
      await expect(applyResults([report(id!, 'success', refs(ref))], ep.endpoint_id)).rejects.toBeInstanceOf(ForeignPayload);
    }
    await expect(
      applyResults(
        [report(id!, 'failed', { exception: { type: 'E', message: 'm', traceback: '', payload: refs(`payloads/${other}/x`).result } })],
        ep.endpoint_id,
      ),
    ).rejects.toBeInstanceOf(ForeignPayload);
    expect(await raw(id!)).toBeUndefined();
    expect((await getTask(id!))!.state).toBe('waiting-for-endpoint');
    // Its own prefix is accepted.
    await applyResults([report(id!, 'success', refs(`payloads/${ep.endpoint_id}/${id}/result`))], ep.endpoint_id);
    expect((await getTask(id!))!.state).toBe('success');
  });
});

describe('an Idempotency-Key retry takes over an attempt that died', () => {
  it('answers a finished request again without writing, one in flight with RequestInProgress, and another body with IdempotencyKeyReused', async () => {
    const first = await submit(2, { idempotencyKey: 'again-1' });
    expect(await drain()).toHaveLength(2);
    const before = await itemCount();
    expect(await submit(2, { idempotencyKey: 'again-1' })).toEqual(first);
    expect(await itemCount()).toBe(before);
    expect(await drain()).toEqual([]);
    await expect(submit(3, { idempotencyKey: 'again-1' })).rejects.toBeInstanceOf(IdempotencyKeyReused);
    await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { task_id: idempotencyItem('again-1') },
        UpdateExpression: 'SET #s = :p, started_at = :now',
        ExpressionAttributeNames: { '#s': 'state' },
        ExpressionAttributeValues: { ':p': 'pending', ':now': Date.now() },
      }),
    );
    await expect(submit(2, { idempotencyKey: 'again-1' })).rejects.toBeInstanceOf(RequestInProgress);
  });

  it('writes every share of an attempt that died before writing any, where that attempt would have sorted', async () => {
    const first = await submit(3, { idempotencyKey: 'died-early-1' });
    await drain();
    const [shareId] = sharesOf(first.task_ids);
    await unwriteShare(shareId!);
    await diedHolding('died-early-1');
    const claimed = (await raw(idempotencyItem('died-early-1')))!;
    expect(await submit(3, { idempotencyKey: 'died-early-1' })).toEqual(first);
    expect((await drain()).sort()).toEqual([...first.task_ids].sort());
    const share = (await raw(`share#${shareId}`))!;
    expect(orderPrefix(share.submit_order as string)).toBe(claimed.submit_prefix);
    expect(await raw(`open#${shareId}`)).toMatchObject({ open_on: ep.endpoint_id, count: 3 });
    expect((await raw(idempotencyItem('died-early-1')))!.state).toBe('complete');
  });

  it('fills in the shares an attempt did not write beside those it did, and queues again only tasks still waiting', async () => {
    const first = await submit(150, { idempotencyKey: 'died-late-1' });
    await drain();
    const [written, lost] = sharesOf(first.task_ids);
    const done = first.task_ids[0]!;
    await applyResults([report(done, 'success')], ep.endpoint_id);
    await unwriteShare(lost!);
    await diedHolding('died-late-1');
    const kept = (await raw(`share#${written}`))!;
    expect(await submit(150, { idempotencyKey: 'died-late-1' })).toEqual(first);
    expect((await drain()).sort()).toEqual(first.task_ids.filter((id) => id !== done).sort());
    expect((await getTask(done))!.state).toBe('success');
    expect(await raw(`share#${written}`)).toEqual(kept);
    const refilled = (await raw(`share#${lost}`))!;
    expect(orderPrefix(refilled.submit_order as string)).toBe(orderPrefix(kept.submit_order as string));
    const records = await getTasks(first.task_ids);
    expect(records.map((t) => t.submit_order)).toEqual([...records.map((t) => t.submit_order)].sort());
  });
});
