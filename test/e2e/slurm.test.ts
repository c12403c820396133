import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLocalStack, type LocalStack } from '../../local/stack';
import { caller, eventually } from '../helpers/api';
import { startManager as startSharedManager, type ManagerProcess } from '../helpers/manager';
import { processEnvironments } from '../helpers/proc';
import { slurmAvailable, startSlurm, type SlurmCluster } from '../helpers/slurm';

/**
 * The endpoint manager against a real Slurm cluster the test starts (two slurmd on this host):
 * blocks are sbatch jobs whose agents run the tasks, scaled on the queue.
 */
jest.setTimeout(180_000);

let stack: LocalStack;
let slurm: SlurmCluster;
let api: ReturnType<typeof caller>;

type Manager = ManagerProcess;

async function endpoint(name: string) {
  const ep = await api('POST', '/v1/endpoints', { name });
  expect(ep.status).toBe(201);
  return { id: ep.body.endpoint_id as string, secret: ep.body.endpoint_secret as string };
}

/** `ferry endpoint start` in its own process, with the provider section given. */
function startManager(ep: { id: string; secret: string }, engine: string, extraEnv: Record<string, string> = {}): Manager {
  return startSharedManager({
    apiUrl: stack.apiUrl,
    endpoint: ep,
    config: `engine:\n${engine.replace(/^/gm, '  ')}`,
    // A task a killed block held comes back after 4 s rather than 60.
    env: { ...stack.workerEnv, ...slurm.env, FERRY_VISIBILITY_SECONDS: '4', FERRY_GRACE_MS: '20000', ...extraEnv },
    pollSeconds: 1,
  });
}

const finished = (taskId: string, timeoutMs = 60_000) =>
  eventually(
    async () => {
      const r = await api('GET', `/v1/tasks/${taskId}`);
      return ['success', 'failed', 'cancelled'].includes(r.body.status) && r.body;
    },
    timeoutMs,
    `task ${taskId} to finish`,
    200,
  );

const live = (m: Manager) => (m.status()?.blocks ?? []).filter((b) => b.state !== 'ended');
const jobState = (jobId: string) =>
  slurm
    .squeue()
    .split('\n')
    .find((l) => l.startsWith(`${jobId} `))
    ?.split(' ')[2];

// The task says where it ran: the Slurm job and node its agent is in.
const WHERE =
  'async (ms) => { await new Promise((r) => setTimeout(r, ms ?? 0)); return { job: process.env.SLURM_JOB_ID, node: process.env.SLURMD_NODENAME }; }';

async function submitWhere(endpointId: string, ms: number): Promise<string> {
  const fn = await api('POST', '/v1/functions', { name: 'where', runtime: 'node', source: WHERE });
  const sub = await api('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: fn.body.function_id, args: [ms] }] });
  expect(sub.status).toBe(202);
  return sub.body.task_ids[0];
}

describe('an HPC endpoint on a real Slurm cluster', () => {
  const managers: Manager[] = [];
  beforeAll(async () => {
    // Fails, never skips: CI installs Slurm (.ci/run), and so must any machine that runs npm test.
    if (!slurmAvailable()) throw new Error("these tests need root and Debian's slurm-wlm and munge: apt-get install slurm-wlm munge");
    slurm = await startSlurm({ nodes: 2, cpus: 2 });
    stack = await startLocalStack({ sweepIntervalMs: 250 });
    api = caller(stack.apiUrl, await stack.createUser('hpc'));
  });
  afterAll(async () => {
    if (process.env.FERRY_DEBUG_SLURM)
      for (const m of managers)
        console.log(
          m.output(),
          slurm.squeue(),
          spawnSync('sh', ['-c', `tail -n 30 ${join(m.statusFile, '..', 'state')}/*.out`], { encoding: 'utf8' }).stdout,
        );
    for (const m of managers) if (m.child.exitCode === null) m.child.kill('SIGKILL');
    await slurm?.stop();
    await stack?.close();
  });

  describe('one-node blocks, from zero', () => {
    let ep: { id: string; secret: string };
    let m: Manager;
    beforeAll(async () => {
      ep = await endpoint('slurm-1');
      m = startManager(
        ep,
        [
          'max_workers_per_node: 2',
          'max_idletime: 4',
          'provider:',
          '  type: SlurmProvider',
          '  partition: debug',
          '  exclusive: false',
          '  nodes_per_block: 1',
          '  init_blocks: 0',
          '  min_blocks: 0',
          '  max_blocks: 2',
          '  walltime: "00:10:00"',
          '  worker_init: "export FERRY_TEST_INIT=ran"',
          '  scheduler_options: "#SBATCH --comment=ferry-test"',
        ].join('\n'),
      );
      managers.push(m);
      await eventually(async () => m.status(), 30_000, 'the manager to start');
    });

    it('starts no block while nothing waits, then scales out on demand; tasks run inside the Slurm job', async () => {
      // Two more polls of the empty queue (one a second, each rewriting the status file): it has looked, and started nothing.
      const looked = Date.parse(m.status()!.at);
      await eventually(async () => Date.parse(m.status()!.at) >= looked + 2_000, 15_000, 'two more polls');
      expect(live(m)).toEqual([]);
      // The manager's own heartbeat: online with no block and no worker, as Globus Compute shows it.
      const status = async () => (await api('GET', `/v1/endpoints/${ep.id}/status`)).body;
      await eventually(async () => (await status()).managers === 1, 15_000, 'the manager to beat');
      expect(await status()).toMatchObject({ status: 'online', workers: 0, blocks: [] });
      const id = await submitWhere(ep.id, 0);
      const t = await finished(id);
      expect(t.status).toBe('success');
      const where = t.result.value as { job: string; node: string };
      expect(where.job).toMatch(/^\d+$/);
      expect(slurm.nodes).toContain(where.node);
      const block = m.status()!.blocks.find((b) => b.job_id === where.job)!;
      expect(block).toBeDefined();
      // ... and the API shows that block, with its Slurm job id, next to the workers.
      const shown = await eventually(
        async () => (await status()).blocks.find((b: { job_id: string }) => b.job_id === where.job),
        20_000,
        'the block in the status',
      );
      expect(shown).toMatchObject({ provider: 'slurm', block_id: block.block_id });
      // worker_init and scheduler_options went into the job script verbatim.
      const script = readFileSync(join(m.statusFile, '..', 'state', `${block.block_id}.sbatch`), 'utf8');
      expect(script).toContain('export FERRY_TEST_INIT=ran');
      expect(script).toContain('#SBATCH --comment=ferry-test');
    });

    it('releases an idle block after max_idletime and cancels nothing that holds a task', async () => {
      await eventually(async () => live(m).length === 0, 40_000, 'the idle block to be released', 250);
      const ended = m.status()!.blocks.filter((b) => b.state === 'ended');
      expect(ended.length).toBeGreaterThan(0);
      expect(ended.at(-1)!.drain_reason).toMatch(/^idle/);
      // It drained: the job completed on its own after its agents stopped, it was not killed.
      await eventually(async () => jobState(ended.at(-1)!.job_id) === 'COMPLETED', 20_000, 'the job to complete');
    });

    it('notices a block cancelled with scancel mid-task; the task runs again in another block', async () => {
      const id = await submitWhere(ep.id, 6_000);
      const running = await eventually(async () => live(m).find((b) => b.running > 0), 40_000, 'a block running the task', 250);
      expect((await api('GET', `/v1/tasks/${id}`)).body.status).toBe('running');
      expect(spawnSync('scancel', [running.job_id], { env: { ...process.env, ...slurm.env } }).status).toBe(0);
      const t = await finished(id, 90_000);
      expect(t.status).toBe('success');
      expect(t.result.value.job).not.toBe(running.job_id);
      expect(m.output()).toContain(`ended without being asked: CANCELLED`);
    });

    it('on SIGTERM drains its blocks, cancels its jobs and exits 0', async () => {
      await submitWhere(ep.id, 0);
      const block = await eventually(async () => live(m).find((b) => b.state !== 'pending'), 40_000, 'a block to start', 250);
      m.child.kill('SIGTERM');
      expect(await m.exited).toBe(0);
      expect(live(m)).toEqual([]);
      expect(['COMPLETED', 'CANCELLED']).toContain(jobState(block.job_id));
      expect(slurm.squeue()).not.toMatch(/PENDING|RUNNING|COMPLETING/);
    });
  });

  describe('two-node blocks with a short walltime', () => {
    let ep: { id: string; secret: string };
    let m: Manager;
    beforeAll(async () => {
      ep = await endpoint('slurm-2');
      // Walltime 1 minute, drained 45 s before: a block takes tasks for its first 15 s only.
      m = startManager(
        ep,
        [
          'max_workers_per_node: 1',
          'max_idletime: 120',
          'drain_before_walltime: 45',
          'provider:',
          '  type: SlurmProvider',
          '  partition: debug',
          '  nodes_per_block: 2',
          '  init_blocks: 1',
          '  max_blocks: 1',
          '  walltime: "00:01:00"',
        ].join('\n'),
      );
      managers.push(m);
    });
    afterAll(async () => {
      m.child.kill('SIGTERM');
      await m.exited;
    });

    it('runs one agent on each node of the job', async () => {
      const block = await eventually(async () => live(m).find((b) => b.agents === 2), 40_000, 'a block with two agents', 250);
      expect(block.workers).toBe(2);
      // An agent with one worker holds at most two tasks (one running, one fetched ahead), so of
      // four tasks submitted together each node's agent runs some, whichever receives first.
      const ids = await Promise.all(Array.from({ length: 4 }, () => submitWhere(ep.id, 1_500)));
      const where = await Promise.all(ids.map(async (id) => (await finished(id)).result.value as { job: string; node: string }));
      expect(where.map((w) => w.job)).toEqual(ids.map(() => block.job_id));
      expect(new Set(where.map((w) => w.node))).toEqual(new Set(slurm.nodes));
    });

    it('drains a block before its walltime, lets its running task finish there, and replaces it for new work', async () => {
      const first = live(m)[0]!;
      const endsAt = Date.parse(first.ends_at!);
      // A task that starts just before the drain and runs through it finishes in the old block.
      await new Promise((r) => setTimeout(r, Math.max(0, endsAt - 45_000 - 3_000 - Date.now())));
      const spanning = await submitWhere(ep.id, 6_000);
      await eventually(
        async () => live(m).find((b) => b.block_id === first.block_id)?.state === 'draining',
        30_000,
        'the walltime drain',
        250,
      );
      expect(live(m).find((b) => b.block_id === first.block_id)!.drain_reason).toBe('walltime');
      const late = await submitWhere(ep.id, 0);
      const t1 = await finished(spanning);
      expect(t1.status).toBe('success');
      expect(t1.result.value.job).toBe(first.job_id);
      const t2 = await finished(late, 90_000);
      expect(t2.status).toBe('success');
      expect(t2.result.value.job).not.toBe(first.job_id);
      // The old job ended on its own, before the scheduler's limit killed it.
      expect(jobState(first.job_id)).toBe('COMPLETED');
    });
  });
  describe('MPI tasks in a block', () => {
    let ep: { id: string; secret: string };
    let m: Manager;
    beforeAll(async () => {
      ep = await endpoint('slurm-mpi');
      // srun starts ranks through slurmd as the job's user, outside any sandbox: the agent runs
      // its owner's tasks unconfined (owner_unsandboxed), which is what lets them use srun.
      m = startManager(
        ep,
        [
          'max_workers_per_node: 2',
          'max_idletime: 60',
          'provider:',
          '  type: SlurmProvider',
          '  partition: debug',
          '  exclusive: false',
          '  max_blocks: 1',
          '  walltime: "00:10:00"',
        ].join('\n'),
        { FERRY_OWNER_UNSANDBOXED: 'true' },
      );
      managers.push(m);
      await eventually(async () => m.status(), 30_000, 'the manager to start');
    });
    afterAll(async () => {
      m.child.kill('SIGTERM');
      await m.exited;
    });

    it("launches an MPIFunction's 2 ranks with srun inside the block's job", async () => {
      const fn = await api('POST', '/v1/functions', {
        name: 'ranks',
        runtime: 'mpi',
        source: `sh -c 'echo "rank $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME in job $SLURM_JOB_ID"'; echo "$PARSL_MPI_PREFIX" >&2`,
      });
      expect(fn.status).toBe(201);
      const sub = await api('POST', `/v1/endpoints/${ep.id}/submit`, {
        tasks: [{ function_id: fn.body.function_id, resource_specification: { num_ranks: 2 } }],
      });
      expect(sub.status).toBe(202);
      const t = await finished(sub.body.task_ids[0], 90_000);
      expect(t.status).toBe('success');
      const r = t.result.value;
      expect(r).toMatchObject({ returncode: 0, exception_name: null });
      const job = live(m)[0]!.job_id;
      expect(r.stderr.trim()).toMatch(
        new RegExp(`srun --jobid=${job} --overlap --nodes=1 --ntasks=2 --ntasks-per-node=2 --nodelist=fn\\d$`),
      );
      const lines = r.stdout.trim().split('\n').sort();
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(new RegExp(`^rank 0 of 2 on fn\\d in job ${job}$`));
      expect(lines[1]).toMatch(new RegExp(`^rank 1 of 2 on fn\\d in job ${job}$`));
      // The agents in the block say they run mpi.
      const status = (await api('GET', `/v1/endpoints/${ep.id}/status`)).body;
      expect(status.runtimes).toEqual(expect.arrayContaining(['shell', 'mpi']));
    });
  });

  describe('relay mode: agents reach only the manager', () => {
    let ep: { id: string; secret: string };
    let m: Manager;
    beforeAll(async () => {
      ep = await endpoint('slurm-relay');
      // The manager reaches AWS and the API; its agents get no AWS_* variables, no API address (a
      // closed port here, were it passed on) and no secret, so any direct call of theirs would fail.
      m = startManager(
        ep,
        [
          'relay: true',
          'address: 127.0.0.1',
          'max_workers_per_node: 2',
          'max_idletime: 60',
          'provider:',
          '  type: SlurmProvider',
          '  partition: debug',
          '  exclusive: false',
          '  max_blocks: 2',
          '  walltime: "00:10:00"',
        ].join('\n'),
        { FERRY_API_URL: 'http://127.0.0.1:9' },
      );
      managers.push(m);
      await eventually(async () => m.status(), 30_000, 'the manager to start');
    });
    afterAll(async () => {
      m.child.kill('SIGTERM');
      await m.exited;
    });

    const stateDir = () => join(m.statusFile, '..', 'state');

    it('runs tasks in a Slurm job through the manager, with arguments and results over the inline limit', async () => {
      const fn = await api('POST', '/v1/functions', {
        name: 'big',
        runtime: 'node',
        source: '(s) => ({ got: s.length, job: process.env.SLURM_JOB_ID, big: "r".repeat(100 * 1024) })',
      });
      const sub = await api('POST', `/v1/endpoints/${ep.id}/submit`, {
        tasks: [{ function_id: fn.body.function_id, args: ['a'.repeat(100 * 1024)] }],
      });
      expect(sub.status).toBe(202);
      const t = await finished(sub.body.task_ids[0]);
      expect(t.status).toBe('success');
      expect(t.result.url).toBeDefined();
      const value = t.result.value ?? JSON.parse(Buffer.from(await (await fetch(t.result.url)).arrayBuffer()).toString('utf8'));
      expect(value.got).toBe(100 * 1024);
      expect(value.big.length).toBe(100 * 1024);
      expect(value.job).toMatch(/^\d+$/);
      // The agents in the job: no way to AWS or the API in their environment.
      const agentEnvs = processEnvironments().filter(
        (e) =>
          e.includes('FERRY_RELAY=1') &&
          e.includes(`FERRY_MANAGER_FILE=${join(stateDir(), 'manager.json')}`) &&
          e.some((v) => v.startsWith('SLURM_JOB_ID=')),
      );
      expect(agentEnvs.length).toBeGreaterThan(0);
      for (const e of agentEnvs) expect(e.filter((v) => /^(AWS_|FERRY_API_URL=|FERRY_ENDPOINT_SECRET=)/.test(v))).toEqual([]);
      // The relay refuses calls without the token.
      const contact = JSON.parse(readFileSync(join(stateDir(), 'manager.json'), 'utf8')) as { url: string };
      expect((await fetch(`${contact.url}/v1/relay/tasks?max=1&wait=0`)).status).toBe(401);
      expect((await fetch(`${contact.url}/v1/relay/hello`, { headers: { authorization: 'Bearer nope' } })).status).toBe(401);
      // The endpoint shows the relay agents' workers (the manager beats for them).
      await eventually(
        async () => (await api('GET', `/v1/endpoints/${ep.id}/status`)).body.workers >= 2,
        20_000,
        'the relay workers in the status',
        250,
      );
    });

    it('a block cancelled mid-task: the manager hands its task back and it runs again, once, to success', async () => {
      const id = await submitWhere(ep.id, 6_000);
      const running = await eventually(async () => live(m).find((b) => b.running > 0), 40_000, 'a block running the task', 250);
      expect((await api('GET', `/v1/tasks/${id}`)).body.status).toBe('running');
      expect(spawnSync('scancel', [running.job_id], { env: { ...process.env, ...slurm.env } }).status).toBe(0);
      const t = await finished(id, 90_000);
      expect(t.status).toBe('success');
      expect(t.result.value.job).not.toBe(running.job_id);
      expect(m.output()).toContain(`block ${running.block_id} ended holding 1 task message(s); handing them back`);
      // One final state: it stays a success.
      await new Promise((r) => setTimeout(r, 2_000));
      expect((await api('GET', `/v1/tasks/${id}`)).body).toMatchObject({ status: 'success' });
    });
  });
});
