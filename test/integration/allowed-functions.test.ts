import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, type Answer } from '../helpers/api';

/**
 * Globus Compute's allowed_functions: an endpoint restricted to a list of functions refuses a
 * submit naming any other (403 FunctionNotAllowed, nothing queued), whoever submits, its owner too.
 */
jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
let carol: ReturnType<typeof caller>;

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 60_000 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
  carol = caller(stack.apiUrl, await stack.createUser('carol'));
});
afterAll(() => stack?.close());

function expectError(r: Answer, status: number, code: string, message?: RegExp): void {
  expect({ status: r.status, code: r.body?.error?.code }).toEqual({ status, code });
  expect(r.body.error.message).toEqual(expect.any(String));
  if (message) expect(r.body.error.message).toMatch(message);
}

const fn = async (c: ReturnType<typeof caller>, name: string): Promise<string> => {
  const r = await c('POST', '/v1/functions', { name, runtime: 'node', source: `() => ${JSON.stringify(name)}` });
  expect(r.status).toBe(201);
  return r.body.function_id;
};

/** Tasks waiting on the endpoint's queue, as its status shows them. */
const queued = async (endpointId: string): Promise<number> => (await alice('GET', `/v1/endpoints/${endpointId}/status`)).body.queued;

describe('an endpoint registered with allowed_functions', () => {
  it('shows its list, runs those functions and refuses any other, queueing nothing', async () => {
    const [f1, f2, f3] = [await fn(alice, 'f1'), await fn(alice, 'f2'), await fn(alice, 'f3')];
    const ep = await alice('POST', '/v1/endpoints', { name: 'restricted', allowed_functions: [f2, f1, f2] });
    expect(ep.status).toBe(201);
    const id = ep.body.endpoint_id;
    const allowed = [f1, f2].sort();
    expect(ep.body.allowed_functions).toEqual(allowed);
    expect((await alice('GET', `/v1/endpoints/${id}`)).body.allowed_functions).toEqual(allowed);
    expect(await alice('GET', `/v1/endpoints/${id}/allowed_functions`)).toEqual({
      status: 200,
      body: { endpoint_id: id, restricted: true, functions: allowed },
    });

    const ok = await alice('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: f1 }, { function_id: f2 }] });
    expect(ok.status).toBe(202);
    expect(await queued(id)).toBe(2);

    const refused = await alice('POST', `/v1/endpoints/${id}/submit`, {
      task_group_id: ok.body.task_group_id,
      tasks: [{ function_id: f1 }, { function_id: f3 }, { function_id: f3 }],
    });
    expectError(refused, 403, 'FunctionNotAllowed', new RegExp(`endpoint ${id} does not allow function ${f3}`));
    expect(refused.body.error.function_ids).toEqual([f3]);
    expect(await queued(id)).toBe(2);
    const group = await alice('GET', `/v1/task-groups/${ok.body.task_group_id}`);
    expect(group.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(ok.body.task_ids);
  });

  it('holds a shared user to the list too, and shows it to him but to no one the endpoint is hidden from', async () => {
    const own = await fn(alice, 'own');
    const bobs = await fn(bob, 'bobs');
    const ep = await alice('POST', '/v1/endpoints', { name: 'shared', allowed_functions: [own] });
    const id = ep.body.endpoint_id;
    expect((await alice('POST', `/v1/endpoints/${id}/share`, { shared_with: ['bob'] })).body.allowed_functions).toEqual([own]);
    expect((await bob('GET', `/v1/endpoints/${id}/allowed_functions`)).body).toEqual({
      endpoint_id: id,
      restricted: true,
      functions: [own],
    });
    expectError(await carol('GET', `/v1/endpoints/${id}/allowed_functions`), 404, 'NotFound');
    const refused = await bob('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: bobs }] });
    expectError(refused, 403, 'FunctionNotAllowed');
    expect(refused.body.error.function_ids).toEqual([bobs]);
    expect(await queued(id)).toBe(0);

    // The owner adds Bob's function (any function id, her own or not).
    const shared = await alice('POST', `/v1/endpoints/${id}/share`, { allowed_functions: [own, bobs] });
    expect(shared.status).toBe(200);
    expect(shared.body).toMatchObject({ shared_with: ['bob'], allowed_functions: [own, bobs].sort() });
    expect((await bob('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: bobs }] })).status).toBe(202);
    expect(await queued(id)).toBe(1);
    // Only the owner changes the list.
    expectError(await bob('POST', `/v1/endpoints/${id}/share`, { allowed_functions: [] }), 404, 'NotFound');
    expect((await bob('GET', `/v1/endpoints/${id}/allowed_functions`)).body.restricted).toBe(true);
  });

  it('runs any function again once the owner lifts the list with null or an empty list', async () => {
    const [f1, f2] = [await fn(alice, 'lift1'), await fn(alice, 'lift2')];
    for (const lift of [null, []]) {
      const ep = await alice('POST', '/v1/endpoints', { name: 'lift', allowed_functions: [f1] });
      const id = ep.body.endpoint_id;
      expectError(await alice('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: f2 }] }), 403, 'FunctionNotAllowed');
      const lifted = await alice('POST', `/v1/endpoints/${id}/share`, { allowed_functions: lift });
      expect([lifted.status, lifted.body.allowed_functions]).toEqual([200, []]);
      expect((await alice('GET', `/v1/endpoints/${id}/allowed_functions`)).body).toEqual({
        endpoint_id: id,
        restricted: false,
        functions: [],
      });
      expect((await alice('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: f2 }] })).status).toBe(202);
      // A share that does not name the list leaves it as it is.
      await alice('POST', `/v1/endpoints/${id}/share`, { allowed_functions: [f1] });
      expect((await alice('POST', `/v1/endpoints/${id}/share`, { public: true })).body.allowed_functions).toEqual([f1]);
    }
  });
});

describe('an endpoint without allowed_functions', () => {
  it('is unrestricted, with an empty list, whether registered with none or with []', async () => {
    const f = await fn(alice, 'any');
    for (const extra of [{}, { allowed_functions: [] }]) {
      const ep = await alice('POST', '/v1/endpoints', { name: 'open', ...extra });
      expect(ep.body.allowed_functions).toEqual([]);
      expect((await alice('GET', `/v1/endpoints/${ep.body.endpoint_id}/allowed_functions`)).body).toEqual({
        endpoint_id: ep.body.endpoint_id,
        restricted: false,
        functions: [],
      });
      expect((await alice('POST', `/v1/endpoints/${ep.body.endpoint_id}/submit`, { tasks: [{ function_id: f }] })).status).toBe(202);
    }
  });
});

describe('bad allowed_functions', () => {
  it('are refused with a 400 naming the field, and change nothing', async () => {
    const f = await fn(alice, 'bad');
    const ep = await alice('POST', '/v1/endpoints', { name: 'bad', allowed_functions: [f] });
    const id = ep.body.endpoint_id;
    const many = Array.from({ length: 1001 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`);
    for (const bad of ['not-a-uuid', [f.toUpperCase()], ['x'], f, [1], many, { f: true }]) {
      expectError(
        await alice('POST', '/v1/endpoints', { name: 'bad', allowed_functions: bad }),
        400,
        'ValidationFailed',
        /allowed_functions/,
      );
      expectError(
        await alice('POST', `/v1/endpoints/${id}/share`, { allowed_functions: bad }),
        400,
        'ValidationFailed',
        /allowed_functions/,
      );
    }
    expect((await alice('GET', `/v1/endpoints/${id}/allowed_functions`)).body.functions).toEqual([f]);
    // 1,000 is the most a list holds.
    expect(
      (await alice('POST', `/v1/endpoints/${id}/share`, { allowed_functions: many.slice(0, 1000) })).body.allowed_functions,
    ).toHaveLength(1000);
  });

  it('answers 404 to the listing of an unknown endpoint or a non-UUID', async () => {
    expectError(await alice('GET', '/v1/endpoints/00000000-0000-4000-8000-000000000000/allowed_functions'), 404, 'NotFound');
    expectError(await alice('GET', '/v1/endpoints/nope/allowed_functions'), 404, 'NotFound');
    expect((await caller(stack.apiUrl)('GET', '/v1/endpoints/00000000-0000-4000-8000-000000000000/allowed_functions')).status).toBe(401);
  });
});
