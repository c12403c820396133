import { DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { jsonEnvelope } from '../helpers/envelope';
import { taskMessageSchema, type TaskMessage } from '../../core/messages';
import { getTask } from '../../core/tables/task-records';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually, vendedCredentials, type Answer } from '../helpers/api';

/**
 * Functions of every runtime Globus Compute scripts use: node and python code, shell commands and
 * MPI commands (ShellFunction, MPIFunction), with a description and shell options; MPI tasks with
 * their resource specification, as a worker receives them from its queue.
 */
jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 60_000 });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  bob = caller(stack.apiUrl, await stack.createUser('bob'));
});
afterAll(() => stack?.close());

function expectError(r: Answer, status: number, code: string, message?: RegExp): void {
  expect({ status: r.status, code: r.body?.error?.code }).toEqual({ status, code });
  expect(r.body.error.message).toEqual(expect.any(String));
  if (message) expect(r.body.error.message).toMatch(message);
}

/** An endpoint of Alice's and a queue reader holding the credentials its worker would get. */
async function endpoint() {
  const ep = await alice('POST', '/v1/endpoints', { name: 'hpc' });
  expect(ep.status).toBe(201);
  const { grant, credentials } = await vendedCredentials(stack.apiUrl, ep.body.endpoint_id, ep.body.endpoint_secret);
  const sqs = new SQSClient({ region: grant.region, credentials });
  return {
    id: ep.body.endpoint_id as string,
    /** Every message waiting on the queue now (each bundle as the worker parses it). */
    async drain(): Promise<TaskMessage[]> {
      const all: TaskMessage[] = [];
      for (;;) {
        const out = await sqs.send(new ReceiveMessageCommand({ QueueUrl: grant.queue_url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
        if (!out.Messages?.length) return all;
        all.push(...out.Messages.map((m) => taskMessageSchema.parse(JSON.parse(m.Body!))));
        for (const m of out.Messages)
          await sqs.send(new DeleteMessageCommand({ QueueUrl: grant.queue_url, ReceiptHandle: m.ReceiptHandle! }));
      }
    },
    /** Report a task's JSON result as the worker would. */
    async succeed(taskId: string, value: unknown) {
      const result = jsonEnvelope(value);
      const at = new Date().toISOString();
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: grant.results_queue_url,
          MessageBody: JSON.stringify({
            v: 1,
            kind: 'success',
            task_id: taskId,
            endpoint_id: ep.body.endpoint_id,
            worker_id: 'w',
            at,
            result,
          }),
        }),
      );
    },
    close: () => sqs.destroy(),
  };
}

const register = async (body: Record<string, unknown>, c = alice): Promise<string> => {
  const r = await c('POST', '/v1/functions', body);
  expect(r.status).toBe(201);
  return r.body.function_id;
};

describe('registering', () => {
  it('keeps a shell function with its description and shell options, and shows them', async () => {
    const body = {
      name: 'echo',
      runtime: 'shell',
      source: 'echo {message}',
      description: 'says what it is told',
      shell: { walltime_ms: 5000, snippet_lines: 20, stdout: 'out.txt', stderr: 'err.txt' },
    };
    const r = await alice('POST', '/v1/functions', body);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ name: 'echo', runtime: 'shell', description: 'says what it is told', shell: body.shell });
    expect(r.body.entrypoint).toBeUndefined();
    const got = await alice('GET', `/v1/functions/${r.body.function_id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ ...body, function_id: r.body.function_id });
    const list = await alice('GET', '/v1/functions');
    expect(list.body.functions.find((f: { function_id: string }) => f.function_id === r.body.function_id)).toMatchObject({
      description: 'says what it is told',
      shell: body.shell,
    });
  });

  it('derives the id from everything stored: the same function again is 200 with its id, any change is a new function', async () => {
    const base = {
      name: 'hostname',
      runtime: 'shell',
      source: 'hostname',
      description: 'where',
      shell: { snippet_lines: 5, walltime_ms: 1000 },
    };
    const first = await alice('POST', '/v1/functions', base);
    // The same options in another key order are the same function.
    const again = await alice('POST', '/v1/functions', { ...base, shell: { walltime_ms: 1000, snippet_lines: 5 } });
    expect([first.status, again.status]).toEqual([201, 200]);
    expect(again.body.function_id).toBe(first.body.function_id);
    const variants = [
      { ...base, name: 'hostname2' },
      { ...base, description: 'where, again' },
      { ...base, description: undefined },
      { ...base, shell: { snippet_lines: 6, walltime_ms: 1000 } },
      { ...base, shell: undefined },
      { ...base, runtime: 'mpi' },
      { ...base, source: 'hostname -f' },
    ];
    const ids = new Set([first.body.function_id]);
    for (const v of variants) {
      const r = await alice('POST', '/v1/functions', v);
      expect({ v, status: r.status }).toEqual({ v, status: 201 });
      ids.add(r.body.function_id);
    }
    expect(ids.size).toBe(variants.length + 1);
    // Another user registering the very same function gets a function of her own.
    const bobs = await bob('POST', '/v1/functions', base);
    expect(bobs.status).toBe(201);
    expect(ids.has(bobs.body.function_id)).toBe(false);
  });

  it('shows description null and no shell options for a node function, and empty options for a shell function without any', async () => {
    const node = await alice('POST', '/v1/functions', { name: 'one', runtime: 'node', source: '() => 1' });
    expect(node.body.description).toBeNull();
    expect(node.body.shell).toBeUndefined();
    const sh = await alice('POST', '/v1/functions', { name: 'date', runtime: 'shell', source: 'date' });
    expect(sh.body).toMatchObject({ description: null, shell: {} });
    // No options and empty options are the same function.
    const empty = await alice('POST', '/v1/functions', { name: 'date', runtime: 'shell', source: 'date', shell: {}, description: '' });
    expect([empty.status, empty.body.function_id]).toEqual([200, sh.body.function_id]);
  });

  it('refuses what a runtime does not take, with a 400 naming the field', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ name: 's', runtime: 'shell', source: 'ls', entrypoint: 'main' }, /entrypoint: shell and mpi functions take no entrypoint/],
      [{ name: 'm', runtime: 'mpi', source: 'hostname', entrypoint: 'main' }, /entrypoint/],
      [
        { name: 'n', runtime: 'node', source: '() => 1', shell: { walltime_ms: 10 } },
        /shell: shell options apply to shell and mpi functions only/,
      ],
      [{ name: 'p', runtime: 'python', source: 'def f(): pass', entrypoint: 'f', shell: {} }, /shell/],
      [{ name: 'p', runtime: 'python', source: 'def f(): pass' }, /entrypoint: python functions need an entrypoint/],
      [{ name: 's', runtime: 'shell', source: 'ls', shell: { walltime_ms: 0 } }, /shell\.walltime_ms/],
      [{ name: 's', runtime: 'shell', source: 'ls', shell: { snippet_lines: -1 } }, /shell\.snippet_lines/],
      [{ name: 's', runtime: 'shell', source: 'ls', shell: { stdout: '' } }, /shell\.stdout/],
      [{ name: 's', runtime: 'shell', source: 'ls', shell: { cwd: '/tmp' } }, /shell/],
      [{ name: 's', runtime: 'shell', source: 'ls', shell: 'fast' }, /shell/],
      [{ name: 's', runtime: 'shell', source: 'ls', description: 'x'.repeat(1025) }, /description/],
      [{ name: 's', runtime: 'shell', source: 'ls', description: 7 }, /description/],
      [{ name: 's', runtime: 'bash', source: 'ls' }, /runtime/],
      [{ name: 's', runtime: 'shell', source: '' }, /source/],
    ];
    for (const [body, message] of cases) {
      const r = await alice('POST', '/v1/functions', body);
      expect({ body, status: r.status, code: r.body.error?.code }).toEqual({ body, status: 400, code: 'ValidationFailed' });
      expect(r.body.error.message).toMatch(message);
    }
    const names = (await alice('GET', '/v1/functions?limit=1000')).body.functions.map((f: { name: string }) => f.name);
    expect(names).not.toContain('s');
    expect(names).not.toContain('m');
  });
});

describe('submitting to shell and mpi functions', () => {
  it('queues a shell task with its command and shell options, and JSON kwargs', async () => {
    const ep = await endpoint();
    const shell = { walltime_ms: 2000, snippet_lines: 3 };
    const fid = await register({ name: 'greet', runtime: 'shell', source: 'echo {greeting} {{literal}}', shell });
    const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fid, kwargs: { greeting: 'hi' } }] });
    expect(sub.status).toBe(202);
    const [msg] = await ep.drain();
    expect(msg!.function).toEqual({ function_id: fid, runtime: 'shell', source: 'echo {greeting} {{literal}}', shell });
    expect(msg!.tasks[0]!.resource_specification).toBeUndefined();
    expect(JSON.parse(Buffer.from(msg!.tasks[0]!.args.inline!, 'base64').toString())).toEqual({ args: [], kwargs: { greeting: 'hi' } });
    const view = await alice('GET', `/v1/tasks/${sub.body.task_ids[0]}`);
    expect(view.body).toMatchObject({ status: 'waiting-for-endpoint', function_id: fid });
    expect(view.body.resource_specification).toBeUndefined();
    ep.close();
  });

  it("fills in an mpi task's resource specification and keeps it in the message, the record and the task view", async () => {
    const ep = await endpoint();
    const fid = await register({ name: 'ranks', runtime: 'mpi', source: 'hostname' });
    const asked = [
      {},
      { num_ranks: 4 },
      { num_nodes: 2 },
      { num_nodes: 2, num_ranks: 5 },
      { num_nodes: 2, ranks_per_node: 3 },
      { num_nodes: 2, ranks_per_node: 3, num_ranks: 4 },
      { ranks_per_node: 8 },
    ];
    const want = [
      { num_nodes: 1, ranks_per_node: 1, num_ranks: 1 },
      { num_nodes: 1, ranks_per_node: 4, num_ranks: 4 },
      { num_nodes: 2, ranks_per_node: 1, num_ranks: 2 },
      { num_nodes: 2, ranks_per_node: 3, num_ranks: 5 },
      { num_nodes: 2, ranks_per_node: 3, num_ranks: 6 },
      { num_nodes: 2, ranks_per_node: 3, num_ranks: 4 },
      { num_nodes: 1, ranks_per_node: 8, num_ranks: 8 },
    ];
    const sub = await alice('POST', `/v1/endpoints/${ep.id}/submit`, {
      tasks: asked.map((resource_specification) => ({ function_id: fid, resource_specification })),
    });
    expect(sub.status).toBe(202);
    const ids: string[] = sub.body.task_ids;
    const inMessages = new Map((await ep.drain()).flatMap((m) => m.tasks.map((t) => [t.task_id, t.resource_specification])));
    expect(ids.map((id) => inMessages.get(id))).toEqual(want);
    const views = await alice('POST', '/v1/tasks/batch', { task_ids: ids });
    expect(views.body.tasks.map((t: { resource_specification: unknown }) => t.resource_specification)).toEqual(want);
    expect((await getTask(ids[3]!))!.resource_specification).toEqual(want[3]);
    ep.close();
  });

  it('refuses, queueing nothing, an mpi task without a resource specification or with one that does not fit', async () => {
    const ep = await endpoint();
    const mpi = await register({ name: 'mpi-bad', runtime: 'mpi', source: 'hostname' });
    const node = await register({ name: 'node-fn', runtime: 'node', source: '() => 1' });
    const sh = await register({ name: 'sh-fn', runtime: 'shell', source: 'true' });
    const submit = (...tasks: unknown[]) => alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks });
    const ok = { function_id: mpi, resource_specification: { num_ranks: 2 } };
    expectError(
      await submit(ok, { function_id: mpi }),
      400,
      'BadRequest',
      /tasks\.1\.resource_specification: an mpi function needs a resource_specification/,
    );
    expectError(
      await submit({ function_id: mpi, resource_specification: { num_nodes: 2, ranks_per_node: 2, num_ranks: 5 } }),
      400,
      'BadRequest',
      /num_ranks 5 does not fit 2 node\(s\) × 2/,
    );
    expectError(
      await submit({ function_id: mpi, resource_specification: { num_nodes: 100_000, ranks_per_node: 100_000 } }),
      400,
      'BadRequest',
      /num_ranks/,
    );
    expectError(
      await submit({ function_id: node, resource_specification: { num_ranks: 2 } }),
      400,
      'BadRequest',
      /resource_specification applies to mpi functions, not node/,
    );
    expectError(
      await submit(ok, { function_id: sh, resource_specification: {} }),
      400,
      'BadRequest',
      /tasks\.1\.resource_specification: resource_specification applies to mpi functions, not shell/,
    );
    for (const spec of [{ num_ranks: 0 }, { num_nodes: -1 }, { num_ranks: 1.5 }, { num_ranks: '2' }, { ranks: 2 }, [2], 'big']) {
      expectError(await submit({ function_id: mpi, resource_specification: spec }), 400, 'ValidationFailed', /resource_specification/);
    }
    expect(await ep.drain()).toEqual([]);
    ep.close();
  });

  it('takes only JSON arguments for shell and mpi functions', async () => {
    const ep = await endpoint();
    const sh = await register({ name: 'sh-codec', runtime: 'shell', source: 'true' });
    const mpi = await register({ name: 'mpi-codec', runtime: 'mpi', source: 'true' });
    for (const [fid, runtime] of [
      [sh, 'shell'],
      [mpi, 'mpi'],
    ] as const) {
      for (const codec of ['python-pickle', 'node-v8']) {
        const r = await alice('POST', `/v1/endpoints/${ep.id}/submit`, {
          tasks: [{ function_id: fid, payload: { codec, data: 'gAR9lC4=' }, ...(runtime === 'mpi' ? { resource_specification: {} } : {}) }],
        });
        expectError(r, 400, 'BadRequest', new RegExp(`a ${runtime} function reads json arguments, not ${codec}`));
      }
    }
    const data = Buffer.from(JSON.stringify({ args: [], kwargs: { x: 1 } })).toString('base64');
    const r = await alice('POST', `/v1/endpoints/${ep.id}/submit`, {
      tasks: [
        { function_id: sh, payload: { codec: 'json', data } },
        { function_id: mpi, payload: { codec: 'json', data }, resource_specification: { num_ranks: 2 } },
      ],
    });
    expect(r.status).toBe(202);
    expect((await ep.drain()).map((m) => m.function.runtime).sort()).toEqual(['mpi', 'shell']);
    ep.close();
  });
});

describe('deleting a function', () => {
  it("is the owner's alone; afterwards it is unknown and cannot be submitted, while its queued tasks still run", async () => {
    const ep = await endpoint();
    const body = { name: 'doomed', runtime: 'shell', source: 'echo {x}', description: 'short-lived' };
    const fid = await register(body);
    const before = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fid, kwargs: { x: 1 } }] });
    expect(before.status).toBe(202);

    // Another user's delete is a 404 and changes nothing.
    expectError(await bob('DELETE', `/v1/functions/${fid}`), 404, 'NotFound');
    expect((await alice('GET', `/v1/functions/${fid}`)).status).toBe(200);

    const del = await alice('DELETE', `/v1/functions/${fid}`);
    expect(del).toEqual({ status: 200, body: { function_id: fid, deleted: true } });
    expectError(await alice('GET', `/v1/functions/${fid}`), 404, 'NotFound');
    expectError(await alice('DELETE', `/v1/functions/${fid}`), 404, 'NotFound');
    const list = await alice('GET', '/v1/functions?limit=1000');
    expect(list.body.functions.map((f: { function_id: string }) => f.function_id)).not.toContain(fid);
    const after = await alice('POST', `/v1/endpoints/${ep.id}/submit`, { tasks: [{ function_id: fid, kwargs: { x: 2 } }] });
    expectError(after, 404, 'NotFound', new RegExp(`function not found: ${fid}`));
    expect(after.body.error.function_ids).toEqual([fid]);

    // The task queued before the delete still carries its command, and its result is taken.
    const queued = await ep.drain();
    expect(queued.map((m) => [m.function.source, m.tasks.map((t) => t.task_id)])).toEqual([['echo {x}', before.body.task_ids]]);
    await ep.succeed(before.body.task_ids[0], { cmd: 'echo 1', returncode: 0, stdout: '1\n', stderr: '', exception_name: null });
    const done = await eventually(
      async () => {
        const t = await alice('GET', `/v1/tasks/${before.body.task_ids[0]}`);
        return t.body.status === 'success' && t.body;
      },
      10_000,
      'the queued task to succeed',
    );
    expect(done.result.value).toMatchObject({ returncode: 0, stdout: '1\n' });

    // Registering the same function again brings it back under the same id.
    const again = await alice('POST', '/v1/functions', body);
    expect([again.status, again.body.function_id]).toEqual([201, fid]);
    ep.close();
  });

  it('answers 404 to an id that is not a UUID or is unknown', async () => {
    expectError(await alice('DELETE', '/v1/functions/not-a-uuid'), 404, 'NotFound');
    expectError(await alice('DELETE', '/v1/functions/00000000-0000-4000-8000-000000000000'), 404, 'NotFound');
    expect((await caller(stack.apiUrl)('DELETE', '/v1/functions/00000000-0000-4000-8000-000000000000')).status).toBe(401);
  });
});
