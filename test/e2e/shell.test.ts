import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually } from '../helpers/api';
import { spawnAgent, stopAgents, type AgentProcess } from '../helpers/agents';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * Globus Compute's ShellFunction and MPIFunction through the API and a real agent, which runs the
 * commands itself (bash, no runtime process) in its sandbox; MPI ranks under MPICH's real mpiexec.
 */
jest.setTimeout(120_000);

let stack: LocalStack;
let api: ReturnType<typeof caller>;
let bob: ReturnType<typeof caller>;
const agents: AgentProcess[] = [];
let ep: string;

beforeAll(async () => {
  stack = await startLocalStack({ sweepIntervalMs: 250 });
  api = caller(stack.apiUrl, await stack.createUser('shell-owner'));
  bob = caller(stack.apiUrl, await stack.createUser('shell-bob'));
  const created = await api('POST', '/v1/endpoints', { name: 'shell-ep' });
  expect(created.status).toBe(201);
  ep = created.body.endpoint_id;
  expect((await api('POST', `/v1/endpoints/${ep}/share`, { shared_with: ['shell-bob'] })).status).toBe(200);
  // The default launcher: no Slurm job here, so MPICH's mpiexec from PATH.
  const agent = spawnAgent(stack, ep, created.body.endpoint_secret);
  agents.push(agent);
  await agent.ready;
});
afterAll(async () => {
  await stopAgents(agents);
  await stack?.close();
});

interface Fn {
  runtime?: 'shell' | 'mpi';
  shell?: Record<string, unknown>;
}

async function register(source: string, fn: Fn = {}, as = api): Promise<string> {
  const r = await as('POST', '/v1/functions', { name: 'cmd', runtime: fn.runtime ?? 'shell', source, shell: fn.shell });
  expect(r.status).toBeLessThan(300);
  return r.body.function_id;
}

async function submit(endpointId: string, functionId: string, task: Record<string, unknown> = {}, as = api): Promise<string> {
  const sub = await as('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: functionId, ...task }] });
  expect(sub.status).toBe(202);
  return sub.body.task_ids[0];
}

const finished = (taskId: string, as = api) =>
  eventually(
    async () => {
      const r = await as('GET', `/v1/tasks/${taskId}`);
      return ['success', 'failed', 'cancelled'].includes(r.body.status) && r.body;
    },
    30_000,
    `task ${taskId} to finish`,
    100,
  );

async function run(source: string, task: Record<string, unknown> = {}, fn: Fn = {}, as = api) {
  return finished(await submit(ep, await register(source, fn, as), task, as), as);
}

describe('ShellFunction', () => {
  it('returns a ShellResult: the command filled from kwargs, its return code, stdout and stderr; the task sees its own directory', async () => {
    const t = await run('echo {greeting}, {name}! {{literal}}; echo "$GC_TASK_UUID|$GC_TASK_SANDBOX_DIR|$PWD|$(id -u)"; echo warn >&2', {
      kwargs: { greeting: 'Hello', name: 'World' },
    });
    expect(t.status).toBe('success');
    expect(t.result.codec).toBe('json');
    const r = t.result.value;
    expect(Object.keys(r).sort()).toEqual(['cmd', 'exception_name', 'returncode', 'stderr', 'stdout']);
    expect(r.cmd).toBe('echo Hello, World! {literal}; echo "$GC_TASK_UUID|$GC_TASK_SANDBOX_DIR|$PWD|$(id -u)"; echo warn >&2');
    expect(r.returncode).toBe(0);
    expect(r.exception_name).toBeNull();
    expect(r.stderr).toBe('warn\n');
    const [first, second] = r.stdout.split('\n');
    expect(first).toBe('Hello, World! {literal}');
    const [uuid, dir, pwd, uid] = second.split('|');
    expect(uuid).toBe(t.task_id);
    // A fresh directory of the task's, inside its user's scratch in the sandbox, as nobody (the agent is root).
    expect(dir).toBe(pwd);
    expect(dir).toMatch(/^\/scratch\/u-[0-9a-f]+\/task-/);
    expect(uid).toBe('65534');
    // The task's output, as for any task.
    expect(t.output).toMatchObject({ stderr: 'warn\n', stdout_bytes: r.stdout.length });
  });

  it('a non-zero exit is a successful task with its returncode and CalledProcessError', async () => {
    const t = await run('echo failing; exit {code}', { kwargs: { code: 3 } });
    expect(t.status).toBe('success');
    expect(t.result.value).toMatchObject({
      cmd: 'echo failing; exit 3',
      returncode: 3,
      stdout: 'failing\n',
      exception_name: 'subprocess.CalledProcessError',
    });
  });

  it("the function's walltime ends the command with 124; the task's walltime fails the task", async () => {
    const started = Date.now();
    const short = await run('echo started; sleep 30', {}, { shell: { walltime_ms: 500 } });
    expect(short.status).toBe('success');
    expect(short.result.value).toMatchObject({ returncode: 124, stdout: 'started\n', exception_name: 'subprocess.TimeoutExpired' });
    const long = await run('sleep 30', { walltime_ms: 500 });
    expect(long.status).toBe('failed');
    expect(long.exception.type).toBe('TaskTimeout');
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('caps what it keeps of a chatty command; snippet_lines keeps the last lines in the result', async () => {
    // 30,000 lines, 168,894 bytes: over the agent's 64 KiB per stream.
    const t = await run('seq 1 30000', {}, { shell: { snippet_lines: 2 } });
    expect(t.status).toBe('success');
    expect(t.result.value.stdout).toBe('29999\n30000\n');
    expect(t.output.stdout_bytes).toBe(168_894);
    expect(t.output.truncated).toBe(true);
    expect(t.output.stdout).toMatch(/^1\n2\n3\n/);
    expect(t.output.stdout).toMatch(/\[ferry: \d+ bytes of output cut\]/);
    expect(t.output.stdout.length).toBeLessThan(70 * 1024);
  });

  it('ends whatever the command left running with it, and holds it to the task memory cap', async () => {
    const marker = `${Date.now() % 100000}.25`;
    const t = await run(`setsid sleep ${marker} > /dev/null 2>&1 & (sleep ${marker} &) ; echo left`);
    expect(t.result.value.stdout).toBe('left\n');
    const sleepers = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(marker);
        } catch {
          return false;
        }
      });
    expect(sleepers).toEqual([]);
    const big = await run('python3 -c "x = bytearray(400 * 1024 * 1024); print(len(x))"', { memory_mb: 64 });
    // The kernel stops it: a cgroup's OOM kill fails the task; under rlimit the allocation fails and python exits 1.
    if (big.status === 'failed') expect(big.exception.type).toBe('MemoryLimitExceeded');
    else expect(big.result.value).toMatchObject({ exception_name: 'subprocess.CalledProcessError', stdout: '' });
  });

  it('writes the streams to the files the function names, in the task directory', async () => {
    const t = await run(
      'echo out; echo err >&2; for i in $(seq 50); do [ -s logs/out.txt ] && [ -s err.txt ] && break; sleep 0.1; done; kept=$(cat logs/out.txt err.txt); echo "$kept"',
      {},
      { shell: { stdout: 'logs/out.txt', stderr: 'err.txt' } },
    );
    expect(t.status).toBe('success');
    // The command read its own files back while it ran: what reached them by then.
    expect(t.result.value.stdout).toBe('out\nout\nerr\n');
    // The last lines, printed as the command ends, reach both the file and the ShellResult (the tees drain first).
    const many = await run('seq 1 300000; seq 1 3 >&2', {}, { shell: { stdout: 'seq.txt', stderr: 'seq.err', snippet_lines: 2 } });
    expect(many.result.value).toMatchObject({ stdout: '299999\n300000\n', stderr: '2\n3\n', returncode: 0 });
    const counted = await run(`wc -l < ../task-${many.task_id}/seq.txt; cat ../task-${many.task_id}/seq.err`);
    expect(counted.result.value.stdout).toBe('300000\n1\n2\n3\n');
    const bad = await run('true', {}, { shell: { stdout: '../elsewhere.txt' } });
    expect(bad.status).toBe('failed');
    expect(bad.exception.type).toBe('ValueError');
  });

  it('fails a task with a missing template key (KeyError) or positional arguments (TypeError); nothing runs', async () => {
    const missing = await run('echo {name} {missing}', { kwargs: { name: 'x' } });
    expect(missing.status).toBe('failed');
    expect(missing.exception).toMatchObject({ type: 'KeyError', message: "'missing'" });
    const positional = await run('echo {name}', { args: ['x'], kwargs: { name: 'x' } });
    expect(positional.status).toBe('failed');
    expect(positional.exception.type).toBe('TypeError');
  });

  it("runs another user's command in her own sandbox: the owner's scratch is out of reach", async () => {
    // The owner leaves a file in her scratch (beside her task's directory, which goes with the task).
    const owner = await run('echo owner-only > ../private.txt; readlink -f ../private.txt');
    expect(owner.status).toBe('success');
    const ownerPath = owner.result.value.stdout.trim();
    const t = await run(
      `id -u; cat ${ownerPath} || echo unreadable; ls /scratch; cat /proc/1/environ | tr '\\0' '\\n' | grep -c FERRY_ || true`,
      {},
      {},
      bob,
    );
    expect(t.status).toBe('success');
    const [uid, read, scratches, ferryVars] = t.result.value.stdout.trim().split('\n');
    expect(uid).toBe('65534');
    expect(read).toBe('unreadable');
    // Her sandbox shows her own scratch only.
    expect(scratches).toMatch(/^u-[0-9a-f]+$/);
    expect(ownerPath.startsWith(`/scratch/${scratches}/`)).toBe(false);
    expect(ferryVars).toBe('0');
  });

  it('reports shell and mpi among the endpoint’s runtimes', async () => {
    const status = (await api('GET', `/v1/endpoints/${ep}/status`)).body;
    expect(status.runtimes).toEqual(expect.arrayContaining(['node', 'python', 'shell', 'mpi']));
  });
});

describe('MPIFunction', () => {
  it('launches the ranks with mpiexec: each rank runs the command, with the PARSL_* variables', async () => {
    const t = await run(
      `sh -c 'echo "rank $PMI_RANK of $PMI_SIZE {label}"'; echo "$PARSL_MPI_PREFIX|$PARSL_NUM_RANKS|$PARSL_NUM_NODES|$PARSL_RANKS_PER_NODE" >&2`,
      { kwargs: { label: 'hi' }, resource_specification: { num_ranks: 2 } },
      { runtime: 'mpi' },
    );
    expect(t.status).toBe('success');
    const r = t.result.value;
    expect(r.cmd).toMatch(/^\$PARSL_MPI_PREFIX sh -c /);
    expect(r.returncode).toBe(0);
    expect(r.stdout.trim().split('\n').sort()).toEqual(['rank 0 of 2 hi', 'rank 1 of 2 hi']);
    expect(r.stderr.trim()).toMatch(/^\S*mpiexec -n 2 -ppn 2\|2\|1\|2$/);
  });

  it('runs a real MPI program (MPI_Init, shared memory, an allreduce) inside the sandbox', async () => {
    // MPICH's own library through python's ctypes (no compiler needed); MPICH's handles are fixed constants.
    const program = [
      'import ctypes as c',
      'm = c.CDLL("libmpich.so.12")',
      'm.MPI_Init(None, None)',
      'r, s, t = c.c_int(), c.c_int(), c.c_int()',
      'WORLD, INT, SUM = 0x44000000, 0x4c000405, 0x58000003',
      'm.MPI_Comm_rank(WORLD, c.byref(r)); m.MPI_Comm_size(WORLD, c.byref(s))',
      'm.MPI_Allreduce(c.byref(r), c.byref(t), 1, INT, SUM, WORLD)',
      'print("rank", r.value, "of", s.value, "sum", t.value)',
      'm.MPI_Finalize()',
    ].join('\n');
    const t = await run(`python3 -c '${program}'`, { resource_specification: { num_nodes: 1, ranks_per_node: 2 } }, { runtime: 'mpi' });
    expect(t.status).toBe('success');
    expect(t.result.value).toMatchObject({ returncode: 0, stderr: '' });
    expect(t.result.value.stdout.trim().split('\n').sort()).toEqual(['rank 0 of 2 sum 1', 'rank 1 of 2 sum 1']);
  });

  it('fails mpi tasks with MPIUnavailable on an agent without a launcher; shell still runs there', async () => {
    const created = await api('POST', '/v1/endpoints', { name: 'no-mpi' });
    const agent = spawnAgent(stack, created.body.endpoint_id, created.body.endpoint_secret, {
      FERRY_MPI_LAUNCHER: 'none',
      FERRY_POOL_SIZE: '1',
      FERRY_RUNTIMES: 'node',
    });
    agents.push(agent);
    await agent.ready;
    const noMpi = created.body.endpoint_id as string;
    const t = await finished(
      await submit(noMpi, await register('hostname', { runtime: 'mpi' }), { resource_specification: { num_ranks: 1 } }),
    );
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('MPIUnavailable');
    expect(t.exception.message).toContain('mpich');
    const s = await finished(await submit(noMpi, await register('echo fine')));
    expect(s.result.value.stdout).toBe('fine\n');
    const status = (await api('GET', `/v1/endpoints/${noMpi}/status`)).body;
    expect(status.runtimes).toContain('shell');
    expect(status.runtimes).not.toContain('mpi');
  });

  it('refuses srun to a sandboxed task: slurmd would start its ranks outside the sandbox', async () => {
    const created = await api('POST', '/v1/endpoints', { name: 'srun-sandboxed' });
    // An agent that believes it is in a Slurm job; the task never gets as far as srun.
    const agent = spawnAgent(stack, created.body.endpoint_id, created.body.endpoint_secret, {
      FERRY_MPI_LAUNCHER: 'srun',
      SLURM_JOB_ID: '4242',
      FERRY_POOL_SIZE: '1',
      FERRY_RUNTIMES: 'node',
    });
    agents.push(agent);
    await agent.ready;
    const t = await finished(
      await submit(created.body.endpoint_id, await register('hostname', { runtime: 'mpi' }), { resource_specification: { num_ranks: 2 } }),
    );
    expect(t.status).toBe('failed');
    expect(t.exception.type).toBe('MPIUnavailable');
    expect(t.exception.message).toMatch(/outside this task's isolation.*owner_unsandboxed/);
  });
});
