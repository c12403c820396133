import { types } from 'node:util';
import { Client, ComputeFuture, Executor, FerryApiError, MPIFunction, RemoteError, ShellFunction, ShellResult } from '../../sdk';
import { remoteErrorOf } from '../../sdk/client';
import { checkResourceSpecification } from '../../sdk/shell';
import type { TaskView } from '../../sdk/types';

const PY_TRACEBACK = 'Traceback (most recent call last):\n  File "<ferry function>", line 2, in f\n';

describe('RemoteError', () => {
  it.each(['TypeError', 'RangeError', 'SyntaxError', 'ReferenceError', 'EvalError', 'URIError'] as const)(
    'rebuilds a remote %s as that built-in and as a RemoteError',
    (type) => {
      const output = { stdout: 'printed\n', stderr: '', stdout_bytes: 8, stderr_bytes: 0 };
      const err = RemoteError.of('task-1', type, 'it broke', `${type}: it broke\n    at f (<ferry function>:1:7)`, output);
      expect(err).toBeInstanceOf(globalThis[type]);
      expect(err).toBeInstanceOf(RemoteError);
      expect(err).toBeInstanceOf(Error);
      expect(types.isNativeError(err)).toBe(true);
      expect(err.name).toBe(type);
      expect(err.message).toBe('it broke');
      expect(err.stack!.split('\n')[0]).toBe(`${type}: it broke`);
      // The stack starts where the SDK made the error, not inside the factory.
      expect(err.stack).not.toMatch(/RemoteError\.of|Function\.of/);
      expect(err.stack).toContain('sdk.test.ts');
      expect(String(err)).toBe(`${type}: it broke`);
      expect(err).toMatchObject({
        taskId: 'task-1',
        remoteType: type,
        remoteTraceback: expect.stringContaining('<ferry function>'),
        output,
      });
    },
  );

  it('keeps a type with no JavaScript counterpart a plain RemoteError, saying its remote type', () => {
    for (const [type, traceback] of [
      ['ValueError', PY_TRACEBACK],
      ['ZeroDivisionError', PY_TRACEBACK],
      ['KeyError', 'KeyError: msg'],
      ['TaskTimeout', ''],
      ['ValidationError', 'ValidationError: no\n    at f'],
      ['Error', 'Error: plain'],
      // Its `errors` do not travel, and an AggregateError without them would lie.
      ['AggregateError', 'AggregateError: several'],
      // Not a Python traceback: a JavaScript class that happens to be called NameError.
      ['NameError', 'NameError: mine\n    at f'],
      ['toString', 'x'],
      ['__proto__', 'x'],
    ]) {
      const err = RemoteError.of('t', type!, 'bad value', traceback!);
      expect(err).toBeInstanceOf(RemoteError);
      expect(Object.getPrototypeOf(err)).toBe(RemoteError.prototype);
      expect(err).not.toBeInstanceOf(TypeError);
      expect(err.name).toBe('RemoteError');
      expect(err.remoteType).toBe(type);
      expect(String(err)).toBe(`RemoteError: ${type}: bad value`);
      expect(err.stack!.split('\n')[0]).toBe(`RemoteError: ${type}: bad value`);
    }
  });

  it('maps Python types to a built-in only where they mean the same', () => {
    const py = (type: string) => RemoteError.of('t', type, 'm', PY_TRACEBACK);
    expect(py('TypeError')).toBeInstanceOf(TypeError);
    expect(py('SyntaxError')).toBeInstanceOf(SyntaxError);
    expect(py('NameError')).toBeInstanceOf(ReferenceError);
    expect(py('UnboundLocalError')).toBeInstanceOf(ReferenceError);
    expect(py('RecursionError')).toBeInstanceOf(RangeError);
    expect(py('NameError').name).toBe('NameError');
    expect(py('NameError').remoteType).toBe('NameError');
    for (const t of ['ValueError', 'IndexError', 'OverflowError', 'ZeroDivisionError', 'RangeError']) {
      expect(py(t)).not.toBeInstanceOf(RangeError);
      expect(Object.getPrototypeOf(py(t))).toBe(RemoteError.prototype);
    }
  });

  it('is not fooled by local errors, and subclasses keep ordinary instanceof', () => {
    expect(new TypeError('local')).not.toBeInstanceOf(RemoteError);
    expect(null).not.toBeInstanceOf(RemoteError);
    class Special extends RemoteError {}
    const special = new Special('t', 'X', 'm', '');
    expect(special).toBeInstanceOf(Special);
    expect(special).toBeInstanceOf(RemoteError);
    expect(RemoteError.of('t', 'TypeError', 'm', '')).not.toBeInstanceOf(Special);
    // Constructed directly, it is the plain class, as before.
    expect(new RemoteError('t', 'TypeError', 'm', '')).not.toBeInstanceOf(TypeError);
  });

  it('is what a failed task view turns into', () => {
    const view = {
      task_id: 't9',
      status: 'failed',
      exception: { type: 'RangeError', message: 'division by zero', traceback: 'RangeError: division by zero\n    at divide' },
    } as TaskView;
    const err = remoteErrorOf(view);
    expect(err).toBeInstanceOf(RangeError);
    expect(err).toMatchObject({ taskId: 't9', remoteType: 'RangeError', message: 'division by zero' });
  });
});

describe('ShellFunction and MPIFunction', () => {
  it('registers the command with the options that were given, in the API shape', () => {
    const sf = new ShellFunction('echo {msg}', { walltime: 1.5, snippetLines: 20, stdout: 'out.txt', stderr: 'err.txt' });
    expect(sf.toFunctionSpec()).toEqual({
      name: 'ShellFunction: echo {msg}',
      runtime: 'shell',
      source: 'echo {msg}',
      description: undefined,
      shell: { walltime_ms: 1500, snippet_lines: 20, stdout: 'out.txt', stderr: 'err.txt' },
    });
    expect(new ShellFunction('true').shellOptions).toEqual({});
    const mpi = new MPIFunction('hostname', { name: 'ranks', description: 'where each rank runs' });
    expect(mpi).toBeInstanceOf(ShellFunction);
    expect(mpi.toFunctionSpec()).toMatchObject({
      name: 'ranks',
      runtime: 'mpi',
      source: 'hostname',
      description: 'where each rank runs',
      shell: {},
    });
    expect(new MPIFunction('x'.repeat(300)).name).toHaveLength(128);
  });

  it('refuses what the API would refuse', () => {
    expect(() => new ShellFunction('  ')).toThrow(TypeError);
    expect(() => new ShellFunction('true', { walltime: 0 })).toThrow(/walltime/);
    expect(() => new ShellFunction('true', { snippetLines: 1.5 })).toThrow(/snippetLines/);
    expect(checkResourceSpecification({ num_ranks: 2 })).toEqual({ num_ranks: 2 });
    expect(() => checkResourceSpecification({ num_ranks: 0 })).toThrow(/num_ranks/);
    expect(() => checkResourceSpecification({ num_nodes: 1, ranks_per_node: 1, num_ranks: 3 })).toThrow(/does not fit/);
    expect(() => checkResourceSpecification({ ranks: 2 } as never)).toThrow(/unknown key ranks/);
  });

  it('reads a ShellResult from the JSON the worker answers', () => {
    const r = ShellResult.fromJSON({
      cmd: 'exit 3',
      returncode: 3,
      stdout: 'a\nb\n',
      stderr: 'oops\n',
      exception_name: 'subprocess.CalledProcessError',
    });
    expect(r).toEqual(new ShellResult('exit 3', 'a\nb\n', 'oops\n', 3, 'subprocess.CalledProcessError'));
    expect(String(r)).toBe('subprocess.CalledProcessError\nexit code: 3\n   stdout:\na\nb\n\n   stderr:\noops');
  });
});

const FINAL_STATUSES = ['success', 'failed', 'cancelled'];

/**
 * A client whose requests are answered in memory, in the API's shapes: enough to drive an Executor.
 * `noWaitRoute`: the API of an older deployment, which answers 404 for POST /v1/tasks/wait.
 */
/** The request bodies the fake reads: one shape with every route's fields. */
interface FakeBody {
  runtime: string;
  source: string;
  name: string;
  tasks: { function_id: string; resource_specification?: unknown }[];
  task_group_id?: string;
  task_ids: string[];
  wait_ms: number;
}

function fakeClient(opts: { noWaitRoute?: boolean; fullWaits?: boolean } = {}) {
  const client = new Client({ apiUrl: 'http://fake.invalid', token: 'fry_fake' });
  const functions = new Map<string, { function_id: string; runtime: string; source: string }>();
  const tasks = new Map<string, TaskView & { spec: Record<string, unknown> }>();
  const groups = new Map<string, string[]>();
  const requests: { method: string; path: string; body: FakeBody }[] = [];
  let n = 0;
  // The fake answers every route with its own shape: typed as the generic request it stands in for.
  jest.spyOn(client.http, 'request').mockImplementation((async (method: string, path: string, untyped?: unknown): Promise<unknown> => {
    const body = untyped as FakeBody;
    requests.push({ method, path, body });
    if (method === 'POST' && path === '/v1/functions') {
      const id = `fn-${body.runtime}-${functions.size}`;
      functions.set(id, { function_id: id, runtime: body.runtime, source: body.source });
      return { function_id: id, name: body.name, runtime: body.runtime };
    }
    const fn = /^\/v1\/functions\/(.+)$/.exec(path);
    if (method === 'GET' && fn) return functions.get(fn[1]!) ?? Promise.reject(new Error('404'));
    if (method === 'POST' && path.endsWith('/submit')) {
      if (body.tasks.some((t) => functions.get(t.function_id)?.runtime === 'mpi' && !t.resource_specification))
        throw new Error('400: the whole batch is refused');
      const group = body.task_group_id ?? 'group';
      const ids = body.tasks.map((t) => {
        const id = `task-${++n}`;
        tasks.set(id, { task_id: id, status: 'waiting-for-endpoint', function_id: t.function_id, task_group_id: group, spec: t } as never);
        groups.set(group, [...(groups.get(group) ?? []), id]);
        return id;
      });
      return { task_group_id: group, task_ids: ids };
    }
    if (method === 'POST' && path === '/v1/tasks/batch') return { tasks: body.task_ids.map((id: string) => tasks.get(id)), unknown: [] };
    if (method === 'POST' && path === '/v1/tasks/wait') {
      if (opts.noWaitRoute) throw new FerryApiError(404, 'HttpError', 'Not Found');
      // Answers once a task is finished, or after wait_ms (unless `fullWaits`, at most 50 ms here, so a test ends soon).
      for (let waited = 0; ; waited += 2) {
        const known = (body.task_ids as string[]).filter((id) => tasks.has(id)).map((id) => tasks.get(id)!);
        const done = known.filter((t) => FINAL_STATUSES.includes(t.status));
        if (done.length || waited >= (opts.fullWaits ? body.wait_ms : Math.min(body.wait_ms, 50))) {
          return {
            tasks: done,
            unknown: (body.task_ids as string[]).filter((id) => !tasks.has(id)),
            unread: [],
            pending: known.length - done.length,
          };
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    const task = /^\/v1\/tasks\/([^/]+)$/.exec(path);
    if (method === 'GET' && task) return tasks.get(task[1]!);
    const group = /^\/v1\/task-groups\/([^?]+)/.exec(path);
    if (method === 'GET' && group) return { tasks: (groups.get(group[1]!) ?? []).map((id) => tasks.get(id)) };
    throw new Error(`unexpected ${method} ${path}`);
  }) as Client['http']['request']);
  /** The worker: finish a task with a JSON result. */
  const finish = (id: string, value: unknown) =>
    Object.assign(tasks.get(id)!, { status: 'success', result: { codec: 'json', size: 0, sha256: '', value } });
  return { client, functions, tasks, requests, finish };
}

/** A second client (knowing nothing yet) of the same fake server. */
function sameServer(of: Client): Client {
  const client = new Client({ apiUrl: 'http://fake.invalid', token: 'fry_fake' });
  jest.spyOn(client.http, 'request').mockImplementation((...args: Parameters<Client['http']['request']>) => of.http.request(...args));
  return client;
}

const until = async (check: () => boolean) => {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  if (!check()) throw new Error('timed out');
};

describe('Executor with shell and mpi functions', () => {
  it('submits a ShellFunction with JSON kwargs and resolves its future to a ShellResult', async () => {
    const api = fakeClient();
    const gce = new Executor({ endpointId: 'ep', client: api.client, pollMinMs: 1 });
    const sf = new ShellFunction('echo {msg}');
    const f = gce.submit(sf, { msg: 'hi' });
    const again = gce.submit(sf, { msg: 'again' });
    await until(() => f.taskId !== undefined && again.taskId !== undefined);
    expect(gce.stats.registrations).toBe(1);
    expect(api.tasks.get(f.taskId!)!.spec).toEqual({ function_id: 'fn-shell-0', args: [], kwargs: { msg: 'hi' } });
    api.finish(f.taskId!, { cmd: 'echo hi', returncode: 0, stdout: 'hi\n', stderr: '', exception_name: null });
    api.finish(again.taskId!, { cmd: 'echo again', returncode: 0, stdout: 'again\n', stderr: '', exception_name: null });
    const r = await f;
    expect(r).toBeInstanceOf(ShellResult);
    expect(r).toMatchObject({ cmd: 'echo hi', returncode: 0, stdout: 'hi\n', exceptionName: null });
    // The same shape from a node function stays a plain object.
    const node = gce.submit(() => ({ cmd: 'x', returncode: 0, stdout: '', stderr: '' }));
    await until(() => node.taskId !== undefined);
    api.finish(node.taskId!, { cmd: 'x', returncode: 0, stdout: '', stderr: '' });
    expect(await node).not.toBeInstanceOf(ShellResult);
    expect(() => gce.submit(sf, ['positional'] as never)).toThrow(/keyword arguments only/);
    await gce.shutdown();
  });

  it("sends the executor's resource specification with MPI tasks only, and fails an MPI task without one alone", async () => {
    const api = fakeClient();
    const gce = new Executor({ endpointId: 'ep', client: api.client, pollMinMs: 1 });
    const mpi = new MPIFunction('hostname');
    const bare = gce.submit(mpi);
    const node = gce.submit((x: number) => x, 1);
    await expect(bare).rejects.toThrow(/resource specification/);
    await until(() => node.taskId !== undefined);
    gce.resourceSpecification = { num_ranks: 2 };
    const ranked = gce.submit(mpi);
    // Taken at submit time, as Globus Compute does.
    gce.resourceSpecification = { num_nodes: 3 };
    const node2 = gce.submit((x: number) => x, 2);
    await until(() => ranked.taskId !== undefined && node2.taskId !== undefined);
    expect(api.tasks.get(ranked.taskId!)!.spec.resource_specification).toEqual({ num_ranks: 2 });
    expect(api.tasks.get(node2.taskId!)!.spec.resource_specification).toBeUndefined();
    gce.resourceSpecification = { num_ranks: -1 };
    expect(() => gce.submit(mpi)).toThrow(/num_ranks/);
    for (const f of [node, ranked, node2]) api.finish(f.taskId!, null);
    await gce.shutdown();
  });

  it('reloads a task group in submit order, finished or not, with results read by runtime', async () => {
    const api = fakeClient();
    const first = new Executor({ endpointId: 'ep', client: api.client, taskGroupId: 'g1', pollMinMs: 1 });
    const shellF = first.submit(new ShellFunction('date'));
    const nodeF = first.submit((a: number) => a * 2, 21);
    await until(() => shellF.taskId !== undefined && nodeF.taskId !== undefined);
    await first.shutdown({ wait: false });
    api.finish(shellF.taskId!, { cmd: 'date', returncode: 1, stdout: '', stderr: 'no', exception_name: 'subprocess.CalledProcessError' });

    // A new client knows none of the functions: it reads their runtimes.
    const other = sameServer(api.client);
    const later = new Executor({ endpointId: 'ep', client: other, taskGroupId: 'g1', pollMinMs: 1 });
    const futures = await later.reloadTasks();
    expect(futures.map((f) => f.taskId)).toEqual([shellF.taskId, nodeF.taskId]);
    expect(futures.every((f) => f instanceof ComputeFuture)).toBe(true);
    expect(futures[0]!.done()).toBe(true);
    expect(await futures[0]).toMatchObject({ returncode: 1, exceptionName: 'subprocess.CalledProcessError' });
    expect(await futures[0]).toBeInstanceOf(ShellResult);
    expect(futures[1]!.done()).toBe(false);
    // Asked again while one is still tracked, the same future comes back.
    const again = await later.reloadTasks();
    expect(again[1]).toBe(futures[1]);
    expect(again[0]).not.toBe(futures[0]);
    api.finish(nodeF.taskId!, 42);
    expect(await futures[1]!.result({ timeoutMs: 5000 })).toBe(42);
    expect(
      api.requests
        .filter((r) => r.method === 'GET' && r.path.startsWith('/v1/functions/'))
        .map((r) => r.path)
        .sort(),
    ).toEqual(['/v1/functions/fn-node-1', '/v1/functions/fn-shell-0']);
    expect(await new Executor({ endpointId: 'ep', client: other, taskGroupId: 'none' }).reloadTasks()).toEqual([]);
    await later.shutdown();
  });

  it('reads a shell result through Client.getResult by looking up the runtime once', async () => {
    const api = fakeClient();
    const id = await api.client.registerFunction(new ShellFunction('echo {x}'));
    expect(id).toBe('fn-shell-0');
    const taskId = await api.client.run(id, 'ep', [], { x: 1 });
    api.finish(taskId, { cmd: 'echo 1', returncode: 0, stdout: '1\n', stderr: '', exception_name: null });
    expect(await api.client.getResult(taskId)).toBeInstanceOf(ShellResult);
    // Registered here: the runtime is known without a GET.
    expect(api.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/functions/'))).toHaveLength(0);
    const fresh = sameServer(api.client);
    expect(await fresh.getResult(taskId)).toBeInstanceOf(ShellResult);
    expect((await fresh.getBatchResult([taskId]))[taskId]!.result).toBeInstanceOf(ShellResult);
    expect(api.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/functions/'))).toHaveLength(1);
  });

  it('waits for results by long poll, each wait naming at most 1,000 of the oldest outstanding tasks', async () => {
    const api = fakeClient();
    const gce = new Executor({ endpointId: 'ep', client: api.client, batchSize: 500 });
    const futures = Array.from({ length: 1200 }, (_, i) => gce.submit((x: number) => x, i));
    await until(() => futures.every((f) => f.taskId !== undefined));
    await until(() => api.requests.some((r) => r.path === '/v1/tasks/wait'));
    const waits = () => api.requests.filter((r) => r.path === '/v1/tasks/wait');
    // The oldest tasks come first.
    expect(waits()[0]!.body.task_ids[0]).toBe(futures[0]!.taskId);
    futures.forEach((f, i) => api.finish(f.taskId!, i));
    expect(await Promise.all(futures)).toEqual(futures.map((_, i) => i));
    expect(waits().every((r) => r.body.task_ids.length <= 1000 && r.body.wait_ms === 10_000)).toBe(true);
    // Every task was named by some wait, and no batch read was needed.
    expect(new Set(waits().flatMap((r) => r.body.task_ids)).size).toBe(1200);
    expect(api.requests.filter((r) => r.path === '/v1/tasks/batch')).toHaveLength(0);
    await gce.shutdown();
  });

  it('gives a task more waits when the waits under way name only long tasks', async () => {
    const api = fakeClient({ fullWaits: true });
    const gce = new Executor({ endpointId: 'ep', client: api.client, waitMs: 3000, pollMaxMs: 20 });
    // Five submits one after another: each task is tracked alone, and four waits name the first four.
    const long = [];
    for (let i = 0; i < 4; i++) {
      const f = gce.submit(() => 'long');
      await until(() => f.taskId !== undefined && api.requests.filter((r) => r.path === '/v1/tasks/wait').length === i + 1);
      long.push(f);
    }
    const short = gce.submit(() => 'short');
    await until(() => short.taskId !== undefined);
    api.finish(short.taskId!, 'short');
    // Within until()'s 2.5 s, less than any of the 3 s waits under way: a wait of its own answered it.
    await until(() => short.done());
    expect(await short).toBe('short');
    // The long ones finish too, so their waits answer and nothing is left polling after the test.
    for (const f of long) api.finish(f.taskId!, 'long');
    await gce.shutdown();
    expect(await Promise.all(long)).toEqual(['long', 'long', 'long', 'long']);
  });

  it('keeps future.status() truthful by an occasional batch read while the waits hear only finished tasks', async () => {
    const api = fakeClient();
    const gce = new Executor({ endpointId: 'ep', client: api.client, statusIntervalMs: 20 });
    const f = gce.submit(() => 1);
    await until(() => f.taskId !== undefined);
    expect(f.status()).toBe('waiting-for-endpoint');
    api.tasks.get(f.taskId!)!.status = 'running';
    await until(() => f.status() === 'running');
    api.finish(f.taskId!, 1);
    expect(await f).toBe(1);
    await gce.shutdown();
  });

  it('polls POST /v1/tasks/batch where the API has no wait route (an older deployment answers 404)', async () => {
    const api = fakeClient({ noWaitRoute: true });
    const gce = new Executor({ endpointId: 'ep', client: api.client, pollMinMs: 1 });
    const f = gce.submit((x: number) => x, 7);
    await until(() => f.taskId !== undefined);
    await until(() => api.requests.some((r) => r.path === '/v1/tasks/batch'));
    api.finish(f.taskId!, 7);
    expect(await f).toBe(7);
    // The route is asked once; later tasks are polled at once.
    const g = gce.submit((x: number) => x, 8);
    await until(() => g.taskId !== undefined);
    api.finish(g.taskId!, 8);
    expect(await g).toBe(8);
    expect(api.requests.filter((r) => r.path === '/v1/tasks/wait')).toHaveLength(1);
    await gce.shutdown();
  });

  it('fails the futures with ResultsUnavailable after pollFailureLimit failed waits in a row', async () => {
    const api = fakeClient();
    const gce = new Executor({ endpointId: 'ep', client: api.client, pollFailureLimit: 3, pollMinMs: 1 });
    const spy = jest.spyOn(api.client.http, 'request');
    const answer = spy.getMockImplementation()!;
    spy.mockImplementation(async (method: string, path: string, body?: unknown) => {
      if (path === '/v1/tasks/wait') throw new FerryApiError(503, 'HttpError', 'Service Unavailable');
      return answer(method, path, body);
    });
    const f = gce.submit(() => 1);
    const err = await f.result().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'ResultsUnavailable', polls: 3 });
    await gce.shutdown();
  });
});
