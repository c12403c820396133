import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Executor, FerryApiError, MPIFunction, RemoteError, ShellFunction, ShellResult } from '../../sdk';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { runCommand } from '../helpers/proc';

/**
 * The TypeScript SDK's side of Globus Compute compatibility, against the local stack and a real
 * agent: ShellFunction and MPIFunction (MPICH's mpiexec), remote errors that are instances of
 * their built-in class, reloading a task group, deleting functions, endpoints restricted to some
 * functions, and `ferry function register --runtime shell`.
 */
jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');
let stack: LocalStack;
let token: string;
let client: Client;
let served: { endpoint_id: string; endpoint_secret: string };
const agents: AgentProcess[] = [];

beforeAll(async () => {
  stack = await startLocalStack();
  token = await stack.createUser('sdk-shell-user');
  client = new Client({ apiUrl: stack.apiUrl, token });
  served = await client.registerEndpoint('sdk-shell');
  // No Slurm job here: the agent's `auto` launcher is MPICH's mpiexec from PATH.
  const agent = spawnAgent(stack, served.endpoint_id, served.endpoint_secret, { FERRY_MPI_LAUNCHER: 'auto' });
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

const executor = (opts: Record<string, unknown> = {}) =>
  new Executor({ endpointId: served.endpoint_id, apiUrl: stack.apiUrl, token, ...opts });

const run = (cmd: string, args: string[], env: Record<string, string> = {}) => runCommand(cmd, args, { env });

describe('ShellFunction and MPIFunction', () => {
  it('runs examples/shell.ts: a command, a failing one, a walltime and two MPI ranks', async () => {
    const out = await run(process.execPath, ['--import', 'tsx', 'examples/shell.ts'], {
      FERRY_API_URL: stack.apiUrl,
      FERRY_TOKEN: token,
      FERRY_ENDPOINT_ID: served.endpoint_id,
    });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('Shell stdout: ["Hello, Ferry!","Linux"]\nShell return code: 0\n');
    expect(out.stdout).toContain('Failing return code: 7 subprocess.CalledProcessError\nFailing stderr: about to fail\n');
    expect(out.stdout).toContain('Walltime: 124 subprocess.TimeoutExpired\n');
    expect(out.stdout).toContain('MPI return code: 0\nMPI ranks: ["rank 0 of 2","rank 1 of 2"]\n');
    expect(out.stdout).toContain('exit code: 0\n   stdout:\n');
  });

  it('fills {name} from kwargs, keeps the last snippetLines lines, and writes the stdout file in the task directory', async () => {
    const gce = executor();
    const lines = 'for i in $(seq 1 {n}); do echo line $i; done; echo "{{literal}}"';
    const r = await gce.submit(new ShellFunction(lines, { snippetLines: 3 }), { n: 5 });
    expect(r).toBeInstanceOf(ShellResult);
    expect(r.cmd).toBe('for i in $(seq 1 5); do echo line $i; done; echo "{literal}"');
    expect(r.returncode).toBe(0);
    expect(r.exceptionName).toBeNull();
    expect(r.stdout.trim().split('\n')).toEqual(['line 4', 'line 5', '{literal}']);
    // The file gets every line, and the task directory that holds it is kept (next to the next task's).
    const f = gce.submit(new ShellFunction(lines, { stdout: 'logs/out.txt' }), { n: 5 });
    expect((await f).returncode).toBe(0);
    const file = await gce.submit(new ShellFunction('cat ../task-{id}/logs/out.txt'), { id: f.taskId });
    expect(file.stdout.trim().split('\n')).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5', '{literal}']);
    await gce.shutdown();
  });

  it('fails a missing placeholder as KeyError and positional arguments as TypeError (instanceof TypeError)', async () => {
    const gce = executor();
    const missing = await gce.submit(new ShellFunction('echo {absent}')).exception();
    expect(missing).toBeInstanceOf(RemoteError);
    expect(missing).toMatchObject({ remoteType: 'KeyError', name: 'RemoteError' });
    const id = await gce.registerFunction(new ShellFunction('echo {x}'));
    const positional = await gce.submitToRegisteredFunction(id, ['oops'], { x: 1 }).exception();
    expect(positional).toBeInstanceOf(RemoteError);
    expect(positional).toBeInstanceOf(TypeError);
    await gce.shutdown();
  });

  it('refuses an MPIFunction without a resource specification before it reaches the API, and runs it with one', async () => {
    const gce = executor();
    const ranks = new MPIFunction('echo "$PARSL_NUM_RANKS $PARSL_NUM_NODES $PARSL_RANKS_PER_NODE"');
    const bare = gce.submit(ranks);
    const alongside = gce.submit(new ShellFunction('echo fine'));
    await expect(bare).rejects.toThrow(/resource specification/);
    expect((await alongside).stdout).toBe('fine\n');
    gce.resourceSpecification = { num_ranks: 2 };
    const r = await gce.submit(ranks);
    expect(r.stdout.trim().split('\n')).toEqual(['2 1 2', '2 1 2']);
    const view = await client.getTask((await gce.reloadTasks()).at(-1)!.taskId!);
    expect(view.resource_specification).toEqual({ num_nodes: 1, ranks_per_node: 2, num_ranks: 2 });
    await gce.shutdown();
  });
});

describe('remote errors', () => {
  it('are instances of the built-in class and of RemoteError, from node and python functions; other types stay plain', async () => {
    const gce = executor();
    const nodeErr = await gce
      .submit(function bad() {
        return (null as unknown as { x: number }).x;
      })
      .exception();
    expect(nodeErr).toBeInstanceOf(TypeError);
    expect(nodeErr).toBeInstanceOf(RemoteError);
    expect(nodeErr).toMatchObject({ name: 'TypeError', remoteType: 'TypeError', remoteTraceback: expect.stringContaining('bad') });
    expect((nodeErr as Error).stack!.split('\n')[0]).toMatch(/^TypeError: Cannot read properties of null/);

    const py = async (body: string) => {
      const id = await client.registerFunction({ name: 'f', runtime: 'python', entrypoint: 'f', source: `def f():\n    ${body}\n` });
      return gce.submitToRegisteredFunction(id).exception();
    };
    const [pyType, pyName, pyValue] = await Promise.all([
      py("return 1 + 'a'"),
      py('return undefined_name'),
      py("raise ValueError('nope')"),
    ]);
    expect(pyType).toBeInstanceOf(TypeError);
    expect(pyType).toBeInstanceOf(RemoteError);
    expect(pyName).toBeInstanceOf(ReferenceError);
    expect(pyName).toMatchObject({ name: 'NameError', remoteType: 'NameError' });
    expect(pyValue).toBeInstanceOf(RemoteError);
    expect(pyValue).not.toBeInstanceOf(TypeError);
    expect(pyValue).toMatchObject({ name: 'RemoteError', remoteType: 'ValueError', message: 'nope' });
    expect(String(pyValue)).toBe('RemoteError: ValueError: nope');
    // The same through the Client.
    const failed = (await client.getBatchResult([(await gce.reloadTasks())[0]!.taskId!]))!;
    expect(Object.values(failed)[0]!.exception).toBeInstanceOf(TypeError);
    await gce.shutdown();
  });
});

describe('Executor.reloadTasks', () => {
  it('gives futures for every task of a group in submit order, across submits, finished or not', async () => {
    const first = executor({ batchSize: 2 });
    const futures = [
      first.submit((x: number) => x * 10, 1),
      first.submit(new ShellFunction('echo {w}'), { w: 'two' }),
      first.submit((x: number) => x * 10, 3),
    ];
    await Promise.all(futures);
    // A second submit into the same group, later; this one is still running when the group is reloaded.
    const slow = first.submit(new ShellFunction('sleep 2; echo late'));
    await new Promise<void>((resolve) => {
      const check = () => (slow.taskId ? resolve() : setTimeout(check, 20));
      check();
    });
    const later = executor({ taskGroupId: first.taskGroupId });
    const reloaded = await later.reloadTasks();
    expect(reloaded.map((f) => f.taskId)).toEqual([...futures, slow].map((f) => f.taskId));
    expect(reloaded.slice(0, 3).every((f) => f.done())).toBe(true);
    expect(reloaded[3]!.done()).toBe(false);
    expect(await reloaded[0]).toBe(10);
    expect(await reloaded[1]).toBeInstanceOf(ShellResult);
    expect(((await reloaded[1]) as ShellResult).stdout).toBe('two\n');
    expect(await reloaded[2]).toBe(30);
    expect(((await reloaded[3]) as ShellResult).stdout).toBe('late\n');
    await first.shutdown();
    await later.shutdown();
  });
});

describe('functions and endpoints', () => {
  it('deletes a function: reading or submitting it afterwards is 404', async () => {
    const id = await client.registerFunction(new ShellFunction('echo gone'));
    expect(await client.deleteFunction(id)).toEqual({ function_id: id, deleted: true });
    await expect(client.getFunction(id)).rejects.toMatchObject({ status: 404 });
    const gce = executor();
    const err = await gce.submitToRegisteredFunction(id).exception();
    expect(err).toBeInstanceOf(FerryApiError);
    expect(err).toMatchObject({ status: 404 });
    await gce.shutdown();
  });

  it('restricts an endpoint to some functions: getAllowedFunctions, and 403 FunctionNotAllowed for others', async () => {
    const allowed = await client.registerFunction(new ShellFunction('echo allowed'));
    const other = await client.registerFunction(new ShellFunction('echo other'));
    const ep = await client.registerEndpoint('restricted', { allowed_functions: [allowed] });
    expect(await client.getAllowedFunctions(ep.endpoint_id)).toEqual({
      endpoint_id: ep.endpoint_id,
      restricted: true,
      functions: [allowed],
    });
    expect(await client.getAllowedFunctions(served.endpoint_id)).toMatchObject({ restricted: false });
    const gce = new Executor({ endpointId: ep.endpoint_id, apiUrl: stack.apiUrl, token });
    const refused = await gce.submitToRegisteredFunction(other).exception();
    expect(refused).toMatchObject({ status: 403, code: 'FunctionNotAllowed' });
    const queued = gce.submitToRegisteredFunction(allowed);
    await new Promise<void>((resolve) => {
      const check = () => (queued.taskId || queued.done() ? resolve() : setTimeout(check, 20));
      check();
    });
    expect(queued.taskId).toBeDefined();
    await client.shareEndpoint(ep.endpoint_id, { allowed_functions: [allowed, other] });
    expect((await client.getAllowedFunctions(ep.endpoint_id)).functions.sort()).toEqual([allowed, other].sort());
    await gce.shutdown({ wait: false, cancelFutures: true });
  });
});

describe('ferry function register', () => {
  const ferry = (args: string[]) =>
    run(process.execPath, [join(ROOT, 'cli', 'bin.js'), ...args], { FERRY_API_URL: stack.apiUrl, FERRY_TOKEN: token });

  it('registers shell commands from --command or a file, and mpi ones, with their options', async () => {
    const reg = await ferry([
      '--json',
      'function',
      'register',
      '--runtime',
      'shell',
      '--command',
      'echo {who} from cli',
      '--walltime',
      '5',
      '--snippet-lines',
      '10',
      '--name',
      'cli-echo',
    ]);
    expect(reg.stderr).toBe('');
    expect(reg.code).toBe(0);
    const { function_id } = JSON.parse(reg.stdout);
    expect(await client.getFunction(function_id)).toMatchObject({
      name: 'cli-echo',
      runtime: 'shell',
      shell: { walltime_ms: 5000, snippet_lines: 10 },
    });
    const gce = executor();
    const r = await gce.submitToRegisteredFunction<ShellResult>(function_id, [], { who: 'Ferry' });
    expect(r).toBeInstanceOf(ShellResult);
    expect(r.stdout).toBe('Ferry from cli\n');
    await gce.shutdown();

    const dir = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
    writeFileSync(join(dir, 'ranks.sh'), 'hostname\n');
    const mpi = await ferry(['--json', 'function', 'register', join(dir, 'ranks.sh'), '--runtime', 'mpi']);
    expect(mpi.code).toBe(0);
    expect(await client.getFunction(JSON.parse(mpi.stdout).function_id)).toMatchObject({ runtime: 'mpi', source: 'hostname' });
    // The same command registered the same way gives the same id.
    expect(
      JSON.parse((await ferry(['--json', 'function', 'register', join(dir, 'ranks.sh'), '--runtime', 'mpi'])).stdout).function_id,
    ).toBe(JSON.parse(mpi.stdout).function_id);

    expect((await ferry(['function', 'register', '--command', 'echo hi'])).code).toBe(2);
    expect((await ferry(['function', 'register', join(dir, 'ranks.sh'), '--runtime', 'shell', '--command', 'echo hi'])).code).toBe(2);
    expect((await ferry(['function', 'register', '--runtime', 'shell'])).code).toBe(2);
    expect((await ferry(['function', 'register', '--runtime', 'shell', '--command', 'x', '--walltime', 'soon'])).code).toBe(2);
  });
});
