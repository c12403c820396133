import { createHash } from 'node:crypto';
import { DeleteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../../core/clients';
import { config } from '../../core/config';
import { shareOfTask } from '../../core/tables/task-records';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller } from '../helpers/api';

/**
 * GET /v1/task-groups/{id} lists a group's tasks in submit order, as Globus Compute's batch results
 * come back in the order the tasks were added: within one submit by position, across submits into
 * the same group by submit, on every page.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
let functionId: string;
let endpointId: string;

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 60_000 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
  functionId = (await alice('POST', '/v1/functions', { name: 'id', runtime: 'node', source: '(x) => x' })).body.function_id;
  endpointId = (await alice('POST', '/v1/endpoints', { name: 'ep' })).body.endpoint_id;
});
afterAll(() => stack?.close());

const tasks = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ function_id: functionId, args: [from + i] }));

async function submit(
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<{ task_group_id: string; task_ids: string[] }> {
  const r = await alice('POST', `/v1/endpoints/${endpointId}/submit`, body, headers);
  expect(r.status).toBe(202);
  return r.body;
}

/** Every task id of a group, page by page, each task as its own view shows it. */
async function listGroup(groupId: string, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const page = await alice('GET', `/v1/task-groups/${groupId}?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    expect(page.status).toBe(200);
    pages++;
    for (const t of page.body.tasks) {
      ids.push(t.task_id);
      expect(t).toMatchObject({ task_group_id: groupId, function_id: functionId, endpoint_id: endpointId, status: 'waiting-for-endpoint' });
    }
    cursor = page.body.next_cursor;
  } while (cursor);
  return { ids, pages };
}

it('lists the 500 tasks of one submit in their order, over pages', async () => {
  const sub = await submit({ tasks: tasks(500) });
  const listed = await listGroup(sub.task_group_id, 64);
  expect(listed.ids).toEqual(sub.task_ids);
  expect(listed.pages).toBe(8);
});

it('lists several submits into one group submit by submit, each in its order', async () => {
  const first = await submit({ tasks: tasks(37) });
  const groupId = first.task_group_id;
  const order = [...first.task_ids];
  // Sent back to back: several land in the same millisecond as the one before.
  for (const n of [1, 120, 2, 1, 60]) {
    const next = await submit({ task_group_id: groupId, tasks: tasks(n) });
    expect(next.task_group_id).toBe(groupId);
    order.push(...next.task_ids);
  }
  expect((await listGroup(groupId, 1000)).ids).toEqual(order);
  expect((await listGroup(groupId, 7)).ids).toEqual(order);
});

it('keeps each of several concurrent submits into one group whole and in its order', async () => {
  const groupId = (await submit({ tasks: tasks(3) })).task_group_id;
  const subs = await Promise.all([40, 40, 40, 40].map((n) => submit({ task_group_id: groupId, tasks: tasks(n) })));
  const { ids } = await listGroup(groupId, 1000);
  expect(ids).toHaveLength(163);
  const rest = ids.slice(3);
  // In some order of the submits (they raced), each one contiguous and in position order.
  const blocks = Array.from({ length: 4 }, (_, i) => rest.slice(i * 40, i * 40 + 40));
  const bySubmit = blocks.map((b) => subs.findIndex((s) => s.task_ids[0] === b[0]));
  expect(new Set(bySubmit).size).toBe(4);
  blocks.forEach((b, i) => expect(b).toEqual(subs[bySubmit[i]!]!.task_ids));
});

it('puts the tasks a retried submit finishes where the first attempt would have', async () => {
  const groupId = (await submit({ tasks: tasks(2) })).task_group_id;
  const body = { task_group_id: groupId, tasks: tasks(5, 100) };
  const key = 'retry-order-1';
  const first = await submit(body, { 'idempotency-key': key });
  // A later submit into the group, then the first one's request "dies" having written nothing:
  // its share (all 5 tasks) is removed and its key is put back as pending since long ago.
  const later = await submit({ task_group_id: groupId, tasks: tasks(2, 200) });
  const table = config().tables.tasks;
  await dynamo().send(new DeleteCommand({ TableName: table, Key: { task_id: `share#${shareOfTask(first.task_ids[0]!)!.shareId}` } }));
  await dynamo().send(
    new UpdateCommand({
      TableName: table,
      Key: { task_id: `idempotency#alice#${createHash('sha256').update(key).digest('hex')}` },
      UpdateExpression: 'SET #s = :p, started_at = :old',
      ExpressionAttributeNames: { '#s': 'state' },
      ExpressionAttributeValues: { ':p': 'pending', ':old': Date.now() - 120_000 },
    }),
  );
  const retry = await submit(body, { 'idempotency-key': key });
  expect(retry).toEqual(first);
  const { ids } = await listGroup(groupId, 1000);
  expect(ids.slice(2)).toEqual([...first.task_ids, ...later.task_ids]);
});

it("refuses another user's submit into a group, and answers 404 to his listing of it", async () => {
  const groupId = (await submit({ tasks: tasks(1) })).task_group_id;
  const bobFn = (await bob('POST', '/v1/functions', { name: 'b', runtime: 'node', source: '() => 0' })).body.function_id;
  const bobEp = (await bob('POST', '/v1/endpoints', { name: 'b' })).body.endpoint_id;
  const r = await bob('POST', `/v1/endpoints/${bobEp}/submit`, { task_group_id: groupId, tasks: [{ function_id: bobFn }] });
  expect([r.status, r.body.error.code]).toEqual([403, 'Forbidden']);
  expect((await bob('GET', `/v1/task-groups/${groupId}`)).status).toBe(404);
  expect((await listGroup(groupId, 10)).ids).toHaveLength(1);
});
