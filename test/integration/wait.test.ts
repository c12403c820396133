import { randomUUID } from 'node:crypto';
import { resetSdkCallCounts, sdkCallCounts } from '../../core/clients';
import { resetConfig } from '../../core/config';
import { getTask, transitionTask } from '../../core/tables/task-records';
import { announceFinished } from '../../core/task-events';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { caller, eventually, type Answer } from '../helpers/api';

/**
 * POST /v1/tasks/wait: results without polling. It answers at once for finished (or unknown)
 * tasks, wakes when a task finishes, and answers `tasks: []` when `wait_ms` passes first. No
 * assertion here is about speed: a wait of 20 s that must end within a test's shorter timeout
 * shows that it woke, however soon.
 */
jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
let sleeper: string;
let served: string;
let idle: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack();
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
  sleeper = (
    await alice('POST', '/v1/functions', {
      name: 'sleep',
      runtime: 'node',
      source: '(ms) => new Promise((r) => setTimeout(() => r(ms), ms))',
    })
  ).body.function_id;
  const ep = (await alice('POST', '/v1/endpoints', { name: 'served' })).body;
  served = ep.endpoint_id;
  // An endpoint with no worker: its tasks stay queued.
  idle = (await alice('POST', '/v1/endpoints', { name: 'idle' })).body.endpoint_id;
  const agent = spawnAgent(stack, served, ep.endpoint_secret);
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

async function submit(endpointId: string, ...sleeps: number[]): Promise<string[]> {
  const r = await alice('POST', `/v1/endpoints/${endpointId}/submit`, {
    tasks: sleeps.map((ms) => ({ function_id: sleeper, args: [ms] })),
  });
  expect(r.status).toBe(202);
  return r.body.task_ids;
}

const wait = (who: ReturnType<typeof caller>, body: unknown) => who('POST', '/v1/tasks/wait', body);

const expectError = (r: Answer, status: number, code: string) =>
  expect({ status: r.status, code: r.body?.error?.code, message: typeof r.body?.error?.message }).toEqual({
    status,
    code,
    message: 'string',
  });

it('answers at once with the finished tasks among those asked, in the order asked, and counts the open ones', async () => {
  const [done] = await submit(served, 0);
  await eventually(async () => (await alice('GET', `/v1/tasks/${done}`)).body.status === 'success');
  const [open] = await submit(idle, 0);
  // A 20 s wait that must end inside this test's 10 s: a finished task is answered without waiting.
  const r = await wait(alice, { task_ids: [open, done], wait_ms: 20_000 });
  expect(r.status).toBe(200);
  expect(r.body).toEqual({
    tasks: [expect.objectContaining({ task_id: done, status: 'success', result: expect.objectContaining({ value: 0 }) })],
    unknown: [],
    unread: [],
    pending: 1,
  });
}, 10_000);

it('wakes when a task it waits for finishes on a worker', async () => {
  const [slow, slower] = await submit(served, 1500, 60_000);
  const r = await wait(alice, { task_ids: [slower, slow], wait_ms: 20_000 });
  expect(r.status).toBe(200);
  expect(r.body.tasks).toEqual([
    expect.objectContaining({ task_id: slow, status: 'success', result: expect.objectContaining({ value: 1500 }) }),
  ]);
  expect(r.body.pending).toBe(1);
  await alice('POST', `/v1/tasks/${slower}/cancel`);
}, 15_000);

it('wakes when a task it waits for is cancelled', async () => {
  const [queued] = await submit(idle, 0);
  const waiting = wait(alice, { task_ids: [queued], wait_ms: 20_000 });
  await new Promise((r) => setTimeout(r, 300));
  expect((await alice('POST', `/v1/tasks/${queued}/cancel`)).status).toBe(200);
  const r = await waiting;
  expect(r.status).toBe(200);
  expect(r.body).toMatchObject({ tasks: [{ task_id: queued, status: 'cancelled' }], unknown: [], pending: 0 });
}, 10_000);

it('sees a task finished between two waits at once, though the first wait read it open just before', async () => {
  const [queued] = await submit(idle, 0);
  expect((await wait(alice, { task_ids: [queued], wait_ms: 0 })).body.pending).toBe(1);
  expect((await alice('POST', `/v1/tasks/${queued}/cancel`)).status).toBe(200);
  const r = await wait(alice, { task_ids: [queued], wait_ms: 20_000 });
  expect(r.body).toMatchObject({ tasks: [{ task_id: queued, status: 'cancelled' }], pending: 0 });
}, 10_000);

it("answers from the final record that came with an announcement, and reads for itself when it is another user's", async () => {
  const [queued, other] = await submit(idle, 0, 0);
  const record = (await getTask(queued))!;
  // The stack runs in this process: an announcement made here is what a final write in core/tasks/ makes.
  const waiting = wait(alice, { task_ids: [queued], wait_ms: 20_000 });
  await new Promise((r) => setTimeout(r, 300));
  announceFinished([queued], [{ ...record, state: 'cancelled' }]);
  // The table still says queued: the answer came from the record announced.
  expect((await waiting).body).toMatchObject({ tasks: [{ task_id: queued, status: 'cancelled' }], pending: 0 });
  const forged = wait(alice, { task_ids: [other], wait_ms: 1000 });
  await new Promise((r) => setTimeout(r, 300));
  announceFinished([other], [{ ...(await getTask(other))!, owner: 'bob', state: 'cancelled' }]);
  expect((await forged).body).toEqual({ tasks: [], unknown: [], unread: [], pending: 1 });
}, 10_000);

it('sees a task finished where nothing is announced (AWS: another Lambda wrote it) by reading again', async () => {
  const [queued] = await submit(idle, 0);
  const waiting = wait(alice, { task_ids: [queued], wait_ms: 20_000 });
  await new Promise((r) => setTimeout(r, 300));
  // The table's own write, which announces nothing (core/tasks/ announces after it).
  expect(await transitionTask(queued, 'cancelled', { by: 'test' })).toBeDefined();
  expect((await waiting).body).toMatchObject({ tasks: [{ task_id: queued, status: 'cancelled' }], pending: 0 });
}, 10_000);

it('reads no record for tasks this process has just queued, and still finds them unknown to another user', async () => {
  const ids = await submit(idle, 0, 0);
  // The stack runs in this process: its handlers' DynamoDB reads are counted here.
  const reads = () => ['GetItem', 'BatchGetItem', 'Query'].reduce((n, c) => n + (sdkCallCounts.get(`DynamoDB.${c}`) ?? 0), 0);
  resetSdkCallCounts();
  expect((await wait(alice, { task_ids: ids, wait_ms: 0 })).body).toEqual({ tasks: [], unknown: [], unread: [], pending: 2 });
  expect(reads()).toBe(0);
  expect((await wait(bob, { task_ids: ids, wait_ms: 0 })).body).toEqual({ tasks: [], unknown: ids, unread: [], pending: 0 });
  expect(reads()).toBeGreaterThan(0);
});

describe('with many asked tasks open, where finishes are announced (the local stack)', () => {
  // A linger longer than these tests' timeouts: an answer that comes shows why it ended.
  beforeAll(() => {
    process.env.FERRY_WAIT_LINGER_MS = '20000';
    resetConfig();
  });
  afterAll(() => {
    delete process.env.FERRY_WAIT_LINGER_MS;
    resetConfig();
  });
  const cancel = async (id: string) => expect((await alice('POST', `/v1/tasks/${id}/cancel`)).status).toBe(200);
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('lingers after the first finish for the next ones, and answers once fewer than 8 are open', async () => {
    const ids = await submit(idle, ...Array<number>(10).fill(0));
    const waiting = wait(alice, { task_ids: ids, wait_ms: 20_000 });
    await pause(300);
    // Finishes one at a time; the third leaves 7 open.
    for (const id of ids.slice(0, 3)) {
      await cancel(id);
      await pause(200);
    }
    const r = await waiting;
    expect(r.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(ids.slice(0, 3));
    expect(r.body.pending).toBe(7);
    for (const id of ids.slice(3)) await cancel(id);
  }, 10_000);

  it('answers a wait on a few open tasks at once', async () => {
    const ids = await submit(idle, 0, 0, 0);
    const waiting = wait(alice, { task_ids: ids, wait_ms: 20_000 });
    await pause(300);
    await cancel(ids[0]!);
    expect((await waiting).body).toMatchObject({ tasks: [{ task_id: ids[0], status: 'cancelled' }], pending: 2 });
    for (const id of ids.slice(1)) await cancel(id);
  }, 10_000);
});

it('answers tasks: [] when wait_ms passes with nothing finished', async () => {
  const ids = await submit(idle, 0, 0);
  const r = await wait(alice, { task_ids: ids, wait_ms: 300 });
  expect(r.status).toBe(200);
  expect(r.body).toEqual({ tasks: [], unknown: [], unread: [], pending: 2 });
  // wait_ms 0: one read, no wait.
  expect((await wait(alice, { task_ids: ids, wait_ms: 0 })).body).toEqual({ tasks: [], unknown: [], unread: [], pending: 2 });
});

it("names another user's tasks and ids never seen as unknown, at once", async () => {
  const [mine] = await submit(idle, 0);
  const never = randomUUID();
  const r = await wait(bob, { task_ids: [mine, never], wait_ms: 20_000 });
  expect(r.status).toBe(200);
  expect(r.body).toEqual({ tasks: [], unknown: [mine, never], unread: [], pending: 0 });
  // Alice's own wait still sees hers as open, and the unknown id makes it answer at once.
  expect((await wait(alice, { task_ids: [mine, never], wait_ms: 20_000 })).body).toEqual({
    tasks: [],
    unknown: [never],
    unread: [],
    pending: 1,
  });
}, 10_000);

it('refuses bad bodies with 400 in the documented error shape', async () => {
  const id = randomUUID();
  for (const body of [
    {},
    { task_ids: [] },
    { task_ids: ['not-a-uuid'] },
    { task_ids: [id], wait_ms: -1 },
    { task_ids: [id], wait_ms: 20_001 },
    { task_ids: [id], wait_ms: 1.5 },
    { task_ids: [id], wait_ms: '100' },
    { task_ids: [id], extra: true },
    { task_ids: Array.from({ length: 1001 }, () => randomUUID()) },
  ]) {
    expectError(await wait(alice, body), 400, 'ValidationFailed');
  }
  expectError(await wait(alice, '{not json'), 400, 'MalformedJson');
  expect((await caller(stack.apiUrl)('POST', '/v1/tasks/wait', { task_ids: [id] })).status).toBe(401);
});

it('takes 1,000 ids at once', async () => {
  const ids = Array.from({ length: 1000 }, () => randomUUID());
  const r = await wait(alice, { task_ids: ids, wait_ms: 0 });
  expect(r.status).toBe(200);
  expect(r.body.unknown).toHaveLength(1000);
});
