import { getEndpoint } from '../../core/tables/endpoints';
import { getFunction } from '../../core/tables/functions';
import { getTask } from '../../core/tables/task-records';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, type Answer } from '../helpers/api';

/**
 * Bad input over real HTTP: every answer is a 4xx in the documented shape
 * `{"error": {"code", "message"}}`, never a 500, and writes nothing.
 */
jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
let anon: ReturnType<typeof caller>;

const UNKNOWN = '00000000-0000-4000-8000-000000000000';
const LIMIT_RANGE = 'must be an integer from 1 to 1000';
const hb = { worker_id: 'agent-1', workers: 1, idle_workers: 1, running: 0, runtimes: ['node'], agent_version: '0.1.0' };

beforeAll(async () => {
  // The default authorizer cache (30 s, as infra sets it): a deleted endpoint's secret is still admitted.
  stack = await startLocalStack({ sweepIntervalMs: 60_000 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
  anon = caller(stack.apiUrl);
});
afterAll(() => stack?.close());

function expectError(r: Answer, status: number, code: string, what = ''): void {
  expect({ what, status: r.status, code: r.body?.error?.code, message: typeof r.body?.error?.message }).toEqual({
    what,
    status,
    code,
    message: 'string',
  });
}

async function register(c: ReturnType<typeof caller>, name: string) {
  const fn = await c('POST', '/v1/functions', { name, runtime: 'node', source: `() => ${JSON.stringify(name)}` });
  const ep = await c('POST', '/v1/endpoints', { name });
  expect([fn.status, ep.status]).toEqual([201, 201]);
  return {
    functionId: fn.body.function_id as string,
    endpointId: ep.body.endpoint_id as string,
    secret: ep.body.endpoint_secret as string,
  };
}

async function submit(
  c: ReturnType<typeof caller>,
  endpointId: string,
  functionId: string,
  n: number,
): Promise<{ task_group_id: string; task_ids: string[] }> {
  const r = await c('POST', `/v1/endpoints/${endpointId}/submit`, {
    tasks: Array.from({ length: n }, () => ({ function_id: functionId })),
  });
  expect(r.status).toBe(202);
  return r.body;
}

describe('{id} routes', () => {
  it('answer 400 to a malformed percent-encoding, 404 to a non-UUID and to an unknown id, and write nothing', async () => {
    const own = await register(alice, 'ids');
    const sub = await submit(alice, own.endpointId, own.functionId, 1);
    const ep = caller(stack.apiUrl, own.secret);
    type Call = (id: string) => Promise<Answer>;
    const userRoutes: [string, Call][] = [
      ['GET /v1/functions/{id}', (id) => alice('GET', `/v1/functions/${id}`)],
      ['DELETE /v1/functions/{id}', (id) => alice('DELETE', `/v1/functions/${id}`)],
      ['GET /v1/endpoints/{id}', (id) => alice('GET', `/v1/endpoints/${id}`)],
      ['GET /v1/endpoints/{id}/status', (id) => alice('GET', `/v1/endpoints/${id}/status`)],
      ['GET /v1/endpoints/{id}/allowed_functions', (id) => alice('GET', `/v1/endpoints/${id}/allowed_functions`)],
      ['POST /v1/endpoints/{id}/share', (id) => alice('POST', `/v1/endpoints/${id}/share`, { public: true })],
      ['DELETE /v1/endpoints/{id}', (id) => alice('DELETE', `/v1/endpoints/${id}`)],
      ['POST /v1/endpoints/{id}/submit', (id) => alice('POST', `/v1/endpoints/${id}/submit`, { tasks: [{ function_id: own.functionId }] })],
      ['GET /v1/tasks/{id}', (id) => alice('GET', `/v1/tasks/${id}`)],
      ['POST /v1/tasks/{id}/cancel', (id) => alice('POST', `/v1/tasks/${id}/cancel`)],
      ['GET /v1/task-groups/{id}', (id) => alice('GET', `/v1/task-groups/${id}`)],
    ];
    const endpointRoutes: [string, Call][] = [
      ['POST /v1/endpoints/{id}/heartbeat', (id) => ep('POST', `/v1/endpoints/${id}/heartbeat`, hb)],
      ['POST /v1/endpoints/{id}/credentials', (id) => ep('POST', `/v1/endpoints/${id}/credentials`)],
    ];
    for (const [name, call] of [...userRoutes, ...endpointRoutes]) {
      expectError(await call('%ZZ'), 400, 'BadRequest', `${name} %ZZ`);
      expectError(await call('%E0%A4%A'), 400, 'BadRequest', `${name} truncated UTF-8`);
      expectError(await call('not-a-uuid'), 404, 'NotFound', `${name} not-a-uuid`);
      expectError(await call(own.endpointId.toUpperCase()), 404, 'NotFound', `${name} upper-case UUID`);
    }
    for (const [name, call] of userRoutes) expectError(await call(UNKNOWN), 404, 'NotFound', `${name} unknown`);
    // An endpoint secret names its own endpoint; any other id is not its to act on.
    for (const [name, call] of endpointRoutes) expectError(await call(UNKNOWN), 403, 'Forbidden', `${name} unknown`);

    expect(await getEndpoint(UNKNOWN)).toBeUndefined();
    expect(await getFunction(UNKNOWN)).toBeUndefined();
    expect(await getTask(UNKNOWN)).toBeUndefined();
    const status = await alice('GET', `/v1/endpoints/${own.endpointId}/status`);
    expect(status.body).toMatchObject({ status: 'offline', queued: 1 });
    expect((await getEndpoint(own.endpointId))!.public).toBe(false);
    expect((await alice('GET', `/v1/tasks/${sub.task_ids[0]}`)).body.status).toBe('waiting-for-endpoint');
  });
});

describe('limit', () => {
  it('is an integer from 1 to 1000 on every listing, else 400 saying so', async () => {
    const own = await register(alice, 'limits');
    const { task_group_id } = await submit(alice, own.endpointId, own.functionId, 2);
    const listings = ['/v1/functions', '/v1/endpoints', `/v1/task-groups/${task_group_id}`];
    for (const path of listings) {
      for (const bad of ['-1', '0', '1.5', 'abc', '100000', '1001', '', '1e3', '%ZZ']) {
        const r = await alice('GET', `${path}?limit=${bad}`);
        expectError(r, 400, 'ValidationFailed', `${path}?limit=${bad}`);
        expect(r.body.error.message).toContain(LIMIT_RANGE);
      }
      for (const good of ['1', '1000'])
        expect({ path, good, status: (await alice('GET', `${path}?limit=${good}`)).status }).toEqual({ path, good, status: 200 });
    }
    const one = await alice('GET', `/v1/task-groups/${task_group_id}?limit=1`);
    expect(one.body.tasks).toHaveLength(1);
  });
});

describe('cursors', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64url');
  const forged = (key: unknown) => b64(JSON.stringify(key));

  it('page through a listing and back to its end', async () => {
    const own = await register(alice, 'pages');
    await alice('POST', '/v1/functions', { name: 'p2', runtime: 'node', source: '() => "p2"' });
    const seen = new Set<string>();
    let cursor: string | undefined;
    do {
      const page = await alice('GET', `/v1/functions?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      page.body.functions.forEach((f: { function_id: string }) => seen.add(f.function_id));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen.has(own.functionId)).toBe(true);
    expect(seen.size).toBeGreaterThanOrEqual(2);
  });

  it('answer 400 to a forged cursor, or to one from another listing, user or group', async () => {
    const a = await register(alice, 'cursor-a');
    await register(alice, 'cursor-a2');
    const b = await register(bob, 'cursor-b');
    await register(bob, 'cursor-b2');
    const groupA = await submit(alice, a.endpointId, a.functionId, 3);
    const groupA2 = await submit(alice, a.endpointId, a.functionId, 2);
    const groupB = await submit(bob, b.endpointId, b.functionId, 2);

    const next = async (c: ReturnType<typeof caller>, path: string) => {
      const r = await c('GET', `${path}?limit=1`);
      expect(r.status).toBe(200);
      expect(typeof r.body.next_cursor).toBe('string');
      return r.body.next_cursor as string;
    };
    const aliceFunctions = await next(alice, '/v1/functions');
    const aliceEndpoints = await next(alice, '/v1/endpoints');
    const aliceGroup = await next(alice, `/v1/task-groups/${groupA.task_group_id}`);
    const bobFunctions = await next(bob, '/v1/functions');
    const bobEndpoints = await next(bob, '/v1/endpoints');
    const bobGroup = await next(bob, `/v1/task-groups/${groupB.task_group_id}`);
    const aliceGroupKey = JSON.parse(Buffer.from(aliceGroup, 'base64url').toString());
    const aliceFunctionKey = JSON.parse(Buffer.from(aliceFunctions, 'base64url').toString());

    const garbage = [
      'garbage!',
      '%%%',
      'A'.repeat(5000),
      b64('not json at all'),
      b64('[1,2]'),
      b64('"a string"'),
      b64('null'),
      forged({ x: 1 }),
      forged({}),
    ];
    const listings = ['/v1/functions', '/v1/endpoints', `/v1/task-groups/${groupA.task_group_id}`];
    for (const path of listings) {
      for (const cursor of garbage)
        expectError(
          await alice('GET', `${path}?cursor=${encodeURIComponent(cursor)}`),
          400,
          'BadRequest',
          `${path} ${cursor.slice(0, 20)}`,
        );
    }

    const cases: [string, ReturnType<typeof caller>, string, string][] = [
      // Another user's listing.
      ["bob's functions cursor", alice, '/v1/functions', bobFunctions],
      ["bob's endpoints cursor", alice, '/v1/endpoints', bobEndpoints],
      ["alice's functions cursor", bob, '/v1/functions', aliceFunctions],
      // Another listing of the same user: the key attributes differ.
      ['endpoints cursor on functions', alice, '/v1/functions', aliceEndpoints],
      ['functions cursor on endpoints', alice, '/v1/endpoints', aliceFunctions],
      ['group cursor on functions', alice, '/v1/functions', aliceGroup],
      ['functions cursor on a group', alice, `/v1/task-groups/${groupA.task_group_id}`, aliceFunctions],
      // Another group, of the same user or of another.
      ["another group's cursor", alice, `/v1/task-groups/${groupA2.task_group_id}`, aliceGroup],
      ["bob's group cursor on alice's group", alice, `/v1/task-groups/${groupA.task_group_id}`, bobGroup],
      ["alice's group cursor on bob's group", bob, `/v1/task-groups/${groupB.task_group_id}`, aliceGroup],
      // Alice's own cursor, used by bob on alice's group: the group is not his.
      ["alice's group cursor, by bob", bob, `/v1/task-groups/${groupA.task_group_id}`, aliceGroup],
      // Keys of the right attributes with values the query does not fix.
      ['extra attribute', alice, '/v1/functions', forged({ ...aliceFunctionKey, endpoint_id: a.endpointId })],
      ['owner swapped', alice, '/v1/functions', forged({ ...aliceFunctionKey, owner: 'bob' })],
      ['id not a UUID', alice, '/v1/functions', forged({ ...aliceFunctionKey, function_id: 'x' })],
      ['number for a string', alice, '/v1/functions', forged({ ...aliceFunctionKey, function_id: 7 })],
      ['DynamoDB JSON', alice, '/v1/functions', forged({ function_id: { S: aliceFunctionKey.function_id }, owner: { S: 'alice' } })],
      ['group key of bob', alice, `/v1/task-groups/${groupA.task_group_id}`, forged({ ...aliceGroupKey, task_id: groupB.task_ids[0] })],
      ['group key, unknown task', alice, `/v1/task-groups/${groupA.task_group_id}`, forged({ ...aliceGroupKey, task_id: UNKNOWN })],
      [
        'group key, wrong time',
        alice,
        `/v1/task-groups/${groupA.task_group_id}`,
        forged({ ...aliceGroupKey, created_at: '2999-01-01T00:00:00.000Z' }),
      ],
      ['group key, not a time', alice, `/v1/task-groups/${groupA.task_group_id}`, forged({ ...aliceGroupKey, created_at: 'zzz' })],
    ];
    for (const [what, c, path, cursor] of cases) {
      const r = await c('GET', `${path}?cursor=${cursor}`);
      expectError(r, 400, 'BadRequest', what);
      expect(r.body.error.message).toBe('invalid pagination cursor');
    }

    // The genuine cursors still work for their owner and listing.
    expect((await alice('GET', `/v1/functions?cursor=${aliceFunctions}`)).status).toBe(200);
    expect((await alice('GET', `/v1/endpoints?cursor=${aliceEndpoints}`)).status).toBe(200);
    const rest = await alice('GET', `/v1/task-groups/${groupA.task_group_id}?cursor=${aliceGroup}`);
    expect(rest.status).toBe(200);
    expect(rest.body.tasks).toHaveLength(2);
  });
});

describe('an endpoint deleted while its secret is still cached', () => {
  it('answers its heartbeats and credential requests 401 and stays deleted', async () => {
    const own = await register(alice, 'doomed');
    const ep = caller(stack.apiUrl, own.secret);
    // Both answers now sit in the authorizer cache for 30 s.
    expect((await ep('POST', `/v1/endpoints/${own.endpointId}/heartbeat`, hb)).status).toBe(200);
    expect((await ep('POST', `/v1/endpoints/${own.endpointId}/credentials`)).status).toBe(200);
    expect((await alice('DELETE', `/v1/endpoints/${own.endpointId}`)).status).toBe(200);

    expectError(await ep('POST', `/v1/endpoints/${own.endpointId}/heartbeat`, hb), 401, 'Unauthorized', 'heartbeat');
    expectError(
      await ep('POST', `/v1/endpoints/${own.endpointId}/heartbeat`, { ...hb, stopped: true }),
      401,
      'Unauthorized',
      'last heartbeat',
    );
    expectError(await ep('POST', `/v1/endpoints/${own.endpointId}/credentials`), 401, 'Unauthorized', 'credentials');

    expect(await getEndpoint(own.endpointId)).toBeUndefined();
    expectError(await alice('GET', `/v1/endpoints/${own.endpointId}`), 404, 'NotFound', 'get');
    expectError(await alice('POST', `/v1/endpoints/${own.endpointId}/share`, { public: true }), 404, 'NotFound', 'share');
    expectError(await alice('DELETE', `/v1/endpoints/${own.endpointId}`), 404, 'NotFound', 'delete again');
    const list = await alice('GET', '/v1/endpoints?limit=1000');
    expect(list.body.endpoints.map((e: { endpoint_id: string }) => e.endpoint_id)).not.toContain(own.endpointId);
    expect(await getEndpoint(own.endpointId)).toBeUndefined();
  });
});

describe("the API Gateway stand-in's own answers", () => {
  it('are in the documented error shape, with a message beside it as API Gateway sends', async () => {
    const before = (await alice('GET', '/v1/functions?limit=1000')).body.functions.length;
    const cases: [string, Promise<Answer>, number, string][] = [
      ['no Authorization header', anon('GET', '/v1/endpoints'), 401, 'Unauthorized'],
      [
        'no Authorization header, with a body',
        anon('POST', '/v1/functions', { name: 'x', runtime: 'node', source: '() => 0' }),
        401,
        'Unauthorized',
      ],
      [
        '11 MB body',
        alice('POST', '/v1/functions', { name: 'big', runtime: 'node', source: 'x'.repeat(11 * 1024 * 1024) }),
        413,
        'PayloadTooLarge',
      ],
      ['unknown route', alice('GET', '/v1/nothing-here'), 404, 'NotFound'],
      ['unknown route, no header', anon('GET', '/'), 404, 'NotFound'],
      ['wrong method', alice('PUT', '/v1/functions', { name: 'x' }), 404, 'NotFound'],
      ['wrong method on an {id} route', alice('PATCH', `/v1/tasks/${UNKNOWN}`), 404, 'NotFound'],
    ];
    for (const [what, promise, status, code] of cases) {
      const r = await promise;
      expectError(r, status, code, what);
      expect(typeof r.body.message).toBe('string');
    }
    expect((await alice('GET', '/v1/functions?limit=1000')).body.functions.length).toBe(before);
  });
});
