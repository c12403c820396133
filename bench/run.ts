/**
 * `npm run bench`: figures for the design goals, printed, never asserted.
 *   1. Submit: tasks accepted per second through the local API at batch 1, 10, 100, 500, and
 *      AWS SDK calls per task by service (counted by the SDK middleware in core/clients.ts).
 *   2. Agent: no-op tasks per second through one agent with 1 and 2 runtime processes, and the
 *      agent's cost per task next to calling the function directly in-process.
 *   3. SDK: no-op round-trip latency p50/p99 (Executor → API → agent → results → future) and
 *      tasks per second for 5,000 no-op submits through one Executor.
 *   4. Users: what per-user runtime processes cost on a shared endpoint: the round trip of a
 *      user's first task (a process started for her, in the sandbox) next to her steady state
 *      and the owner's, for node and python.
 *   (5 sqs, 6 slurm, 7 workload, 8 scaling: see their functions.)
 * Everything runs on loopback. For sections 1-4 and 6 the API handlers run in this process, so
 * their SDK calls are counted here; for 7 and 8 the stack runs in its own process, as `npm start`
 * runs it, and reports its counts over IPC. Each agent counts its own. Agents run from the
 * bundle the container uses.
 * Flags: --only=<section> (submit, agent, sdk, users, sqs, slurm, workload, scaling), --quick
 * (smaller numbers; skips scaling unless asked for), --profile (the stack process, agents and
 * the BullMQ worker write CPU profiles; bench/profile-summary.ts reads one).
 */
import { execSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { resetSdkCallCounts, sdkCallCounts } from '../core/clients';
import type { AgentProcess } from '../local/agent-process';
import { percentile, spawnBenchAgent } from './workload';
import { startLocalStack, type LocalStack } from '../local/stack';
import { Client, Executor } from '../sdk';
import { RuntimePool } from '../workers/runtime/pool';
import { encodeArgs } from '../sdk/codec';
import { sleep } from '../core/retry';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const quick = process.argv.includes('--quick');

const fmt = (n: number, d = 1) => n.toFixed(d);

async function waitAll(client: Client, ids: string[]): Promise<void> {
  let pending = ids;
  while (pending.length) {
    const { tasks } = await client.getTasks(pending);
    pending = tasks.filter((t) => !['success', 'failed', 'cancelled'].includes(t.status)).map((t) => t.task_id);
    if (pending.length) await sleep(100);
  }
}

const agentFor = (
  stack: LocalStack,
  ep: { endpoint_id: string; endpoint_secret: string },
  poolSize: number,
  runtimes = ['node'],
): AgentProcess => spawnBenchAgent(stack, ep, poolSize, undefined, runtimes);

/** The AWS calls an agent counted, from its last log line. */
function agentCalls(agent: AgentProcess): Record<string, number> {
  const line = agent
    .output()
    .split('\n')
    .find((l) => l.includes('"agent stopped"'));
  return line ? (JSON.parse(line).aws_calls as Record<string, number>) : {};
}

async function stop(agents: AgentProcess[]) {
  for (const a of agents) a.child.kill('SIGTERM');
  await Promise.all(agents.map((a) => a.exited));
}

async function benchSubmit(stack: LocalStack, client: Client): Promise<void> {
  console.log('\n## Submit through the local API (no workers)\n');
  console.log('| batch | tasks | tasks/s | API calls/task | DynamoDB calls/task | SQS calls/task | S3 calls/task |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  const ep = await client.registerEndpoint('bench-submit');
  const fn = await client.registerFunction(() => null);
  for (const batch of [1, 10, 100, 500]) {
    const total = quick ? Math.max(batch, 100) : batch === 1 ? 300 : 1000;
    const requests = Math.ceil(total / batch);
    const body = { tasks: Array.from({ length: batch }, () => ({ function_id: fn, args: [] })) };
    resetSdkCallCounts();
    const t0 = performance.now();
    for (let i = 0; i < requests; i++) await client.http.request('POST', `/v1/endpoints/${ep.endpoint_id}/submit`, body);
    const secs = (performance.now() - t0) / 1000;
    const tasks = requests * batch;
    const by = (svc: string) => [...sdkCallCounts].filter(([k]) => k.startsWith(svc + '.')).reduce((n, [, v]) => n + v, 0) / tasks;
    console.log(
      `| ${batch} | ${tasks} | ${fmt(tasks / secs, 0)} | ${fmt(requests / tasks, 3)} | ${fmt(by('DynamoDB'), 3)} | ${fmt(by('SQS'), 3)} | ${fmt(by('S3'), 3)} |`,
    );
  }
  // Write units per task (with GSIs) are in the workload and scaling sections, whose stack process counts them.
  console.log(
    '\nDynamoDB calls by operation at the last batch size:',
    Object.fromEntries([...sdkCallCounts].filter(([k]) => k.startsWith('DynamoDB'))),
  );
  await client.deleteEndpoint(ep.endpoint_id);
}

async function benchAgent(stack: LocalStack, client: Client): Promise<void> {
  console.log('\n## One agent, no-op node tasks\n');
  const n = quick ? 200 : 600;
  const fn = await client.registerFunction(() => null);
  console.log(
    '| runtime processes | tasks | tasks/s | agent time per task, running→success (p50) | agent SQS calls/task | agent S3 calls/task |',
  );
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const size of [1, 2]) {
    const ep = await client.registerEndpoint(`bench-agent-${size}`);
    const agent = agentFor(stack, ep, size);
    await agent.ready;
    // Warm up: the first tasks pay for lazy loading in the runtime processes.
    await waitAll(
      client,
      (
        await client.batchRun(
          ep.endpoint_id,
          Array.from({ length: 10 }, () => ({ function_id: fn, args: [] })),
        )
      ).task_ids,
    );
    const t0 = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < n; i += 100)
      ids.push(
        ...(
          await client.batchRun(
            ep.endpoint_id,
            Array.from({ length: Math.min(100, n - i) }, () => ({ function_id: fn, args: [] })),
          )
        ).task_ids,
      );
    await waitAll(client, ids);
    const secs = (performance.now() - t0) / 1000;
    const { tasks } = await client.getTasks(ids);
    const spans = tasks.flatMap((t) => {
      const at = (s: string) => t.transitions.find((x) => x.state === s)?.at;
      const [start, end] = [at('running'), at('success')];
      return start && end ? [Date.parse(end) - Date.parse(start)] : [];
    });
    await stop([agent]);
    const calls = agentCalls(agent);
    const total = n + 10;
    const perTask = (svc: string) =>
      fmt(
        Object.entries(calls)
          .filter(([k]) => k.startsWith(svc))
          .reduce((a, [, v]) => a + v, 0) / total,
        3,
      );
    console.log(`| ${size} | ${n} | ${fmt(n / secs, 0)} | ${fmt(percentile(spans, 50), 1)} ms | ${perTask('SQS.')} | ${perTask('S3.')} |`);
    if (size === 2) console.log(`\nThe agent's AWS calls by operation (${total} tasks, 100 a submit):`, calls);
    await client.deleteEndpoint(ep.endpoint_id);
  }

  // The same no-op called directly, and through the runtime pool alone (no queues).
  const noop = () => null;
  const reps = 100_000;
  let t0 = performance.now();
  for (let i = 0; i < reps; i++) noop();
  const directUs = ((performance.now() - t0) * 1000) / reps;
  const pool = new RuntimePool({ size: 1, runtimes: ['node'], owner: 'bench' });
  await pool.start();
  const args = encodeArgs([]);
  for (let i = 0; i < 50; i++)
    await pool.run({ taskId: 'w', user: 'bench', runtime: 'node', source: noop.toString(), args, codec: 'node-v8', walltimeMs: 10_000 });
  const poolReps = quick ? 200 : 1000;
  t0 = performance.now();
  for (let i = 0; i < poolReps; i++)
    await pool.run({
      taskId: String(i),
      user: 'bench',
      runtime: 'node',
      source: noop.toString(),
      args,
      codec: 'node-v8',
      walltimeMs: 10_000,
    });
  const poolUs = ((performance.now() - t0) * 1000) / poolReps;
  await pool.close();
  console.log(
    `\nDirect in-process call: ${fmt(directUs, 3)} µs; through the runtime pool (process hop, codec): ${fmt(poolUs, 0)} µs per task.`,
  );
}

async function benchSdk(stack: LocalStack, client: Client): Promise<void> {
  console.log('\n## SDK round trip and throughput (Executor → API → agent → results → future)\n');
  const ep = await client.registerEndpoint('bench-sdk');
  const agents = [agentFor(stack, ep, 2), agentFor(stack, ep, 2)];
  await Promise.all(agents.map((a) => a.ready));
  const gce = new Executor({ endpointId: ep.endpoint_id, client });
  const noop = () => null;
  for (let i = 0; i < 20; i++) await gce.submit(noop);
  const samples: number[] = [];
  for (let i = 0; i < (quick ? 50 : 200); i++) {
    const t0 = performance.now();
    await gce.submit(noop);
    samples.push(performance.now() - t0);
  }
  console.log(
    `Sequential no-op round trip over ${samples.length} tasks: p50 ${fmt(percentile(samples, 50))} ms, p99 ${fmt(percentile(samples, 99))} ms`,
  );

  const n = quick ? 1000 : 5000;
  const t0 = performance.now();
  const futures = Array.from({ length: n }, () => gce.submit(noop));
  await Promise.all(
    futures.map(
      (f) =>
        new Promise<void>((r) => {
          const tick = () => (f.taskId ? r() : setTimeout(tick, 5));
          tick();
        }),
    ),
  );
  const accepted = (performance.now() - t0) / 1000;
  await Promise.all(futures);
  const all = (performance.now() - t0) / 1000;
  console.log(
    `${n} no-op submits through one Executor (2 agents × 2 runtime processes): accepted in ${fmt(accepted, 2)} s (${fmt(n / accepted, 0)} tasks/s), all results in ${fmt(all, 2)} s (${fmt(n / all, 0)} tasks/s); ${gce.stats.submitRequests} submit requests, ${gce.stats.polls} polls.`,
  );
  await gce.shutdown();
  await stop(agents);
}

async function benchUsers(stack: LocalStack, owner: Client): Promise<void> {
  console.log('\n## Per-user runtime processes on a shared endpoint (one agent, default isolation)\n');
  const users = quick ? 3 : 6;
  const ep = await owner.registerEndpoint('bench-users');
  const names = Array.from({ length: users }, (_, i) => `bench-user-${i}`);
  await owner.shareEndpoint(ep.endpoint_id, { shared_with: names });
  const agent = agentFor(stack, ep, 2, ['node', 'python']);
  await agent.ready;
  const clients = [
    owner,
    ...(await Promise.all(names.map(async (n) => new Client({ apiUrl: stack.apiUrl, token: await stack.createUser(n) })))),
  ];
  // JSON arguments, which both runtimes read; the result is polled every 2 ms, so the figure is the trip, not the poll.
  const roundTrip = async (c: Client, fn: string): Promise<number> => {
    const t0 = performance.now();
    const [id] = (await c.batchRun(ep.endpoint_id, [{ function_id: fn, args: [] }])).task_ids;
    while (!['success', 'failed'].includes((await c.getTask(id!)).status)) await sleep(2);
    return performance.now() - t0;
  };
  console.log("| runtime | owner, steady (p50) | a new user's first task (p50 over users) | that user's next tasks (p50) |");
  console.log('| --- | --- | --- | --- |');
  for (const runtime of ['node', 'python'] as const) {
    const spec =
      runtime === 'node'
        ? { name: 'noop', runtime, source: '() => null' }
        : { name: 'noop', runtime, source: 'def noop():\n    return None\n', entrypoint: 'noop' };
    const fns = await Promise.all(clients.map((c) => c.registerFunction(spec)));
    const ownerSteady: number[] = [];
    for (let i = 0; i < 20; i++) ownerSteady.push(await roundTrip(owner, fns[0]!));
    const first: number[] = [];
    const steady: number[] = [];
    for (let u = 1; u < clients.length; u++) {
      first.push(await roundTrip(clients[u]!, fns[u]!));
      for (let i = 0; i < 10; i++) steady.push(await roundTrip(clients[u]!, fns[u]!));
    }
    console.log(
      `| ${runtime} | ${fmt(percentile(ownerSteady, 50))} ms | ${fmt(percentile(first, 50))} ms | ${fmt(percentile(steady, 50))} ms |`,
    );
  }
  const beat = await owner.getEndpointStatus(ep.endpoint_id);
  console.log(
    `\n${users} users besides the owner; the agent's pool caps and reaps idle processes per user (workers reported: ${beat.workers}).`,
  );
  await stop([agent]);
  await owner.deleteEndpoint(ep.endpoint_id);
}

/**
 * 5. SQS server storage (`--only=sqs`): the local SQS server's cost per SendMessage and per
 *    ReceiveMessage+DeleteMessage with 1,000 and 100,000 messages held, on disk (a data file in a
 *    temporary directory), through the AWS SDK client. Each call is timed from the client, one
 *    at a time, so the figure includes everything the server does for that call on its event
 *    loop, background saves included.
 */
async function benchSqs(): Promise<void> {
  const { mkdtempSync, rmSync, readdirSync, statSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const sqsSdk = await import('@aws-sdk/client-sqs');
  const { startSqsServer } = await import('../local/sqs/server');
  console.log('\n## Local SQS server: cost per call by messages held (on disk)\n');
  console.log(
    '| storage | messages held | SendMessage: mean, p50, p99 | ReceiveMessage+DeleteMessage: mean, p50, p99 | fill (SendMessageBatch of 10) | bytes on disk after |',
  );
  console.log('| --- | --- | --- | --- | --- | --- |');
  const body = JSON.stringify({
    task_id: '00000000-0000-0000-0000-000000000000',
    function_id: 'f'.repeat(64),
    args: { v: 1, codec: 'json', inline: 'x'.repeat(300) },
  });
  const ops = quick ? 500 : 2000;
  // Before this log, the server saved its whole state as one JSON file 200 ms after a change:
  // 1,000 held: send 988 µs, receive+delete 1499 µs (means); 100,000 held: send 3317 µs,
  // receive+delete 15584 µs (p99 378 ms), 70 MB rewritten per save (node 20, 2 cores).
  const variants: { label: string; options: { fsync?: boolean } }[] = [
    { label: 'append-only log, fdatasync before answer (default)', options: { fsync: true } },
    { label: 'append-only log, write to the OS only', options: { fsync: false } },
  ];
  for (const variant of variants) {
    for (const held of quick ? [1000, 20_000] : [1000, 100_000]) {
      const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-sqs-'));
      const server = await startSqsServer({ dataFile: join(dir, 'sqs.json'), ...variant.options });
      const sqs = new sqsSdk.SQSClient({
        region: 'us-east-1',
        endpoint: server.url,
        credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
      });
      try {
        const { QueueUrl } = await sqs.send(
          new sqsSdk.CreateQueueCommand({ QueueName: 'bench', Attributes: { VisibilityTimeout: '300' } }),
        );
        const t0 = performance.now();
        let next = 0;
        const filler = async () => {
          while (next < held) {
            const n = Math.min(10, held - next);
            next += n;
            await sqs.send(
              new sqsSdk.SendMessageBatchCommand({
                QueueUrl,
                Entries: Array.from({ length: n }, (_, i) => ({ Id: String(i), MessageBody: body })),
              }),
            );
          }
        };
        await Promise.all(Array.from({ length: 8 }, filler));
        const fillSecs = (performance.now() - t0) / 1000;
        await sleep(500);
        const sends: number[] = [];
        for (let i = 0; i < ops; i++) {
          const s = performance.now();
          await sqs.send(new sqsSdk.SendMessageCommand({ QueueUrl, MessageBody: body }));
          sends.push(performance.now() - s);
        }
        const takes: number[] = [];
        for (let i = 0; i < ops; i++) {
          const s = performance.now();
          const { Messages } = await sqs.send(new sqsSdk.ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1 }));
          await sqs.send(new sqsSdk.DeleteMessageCommand({ QueueUrl, ReceiptHandle: Messages![0]!.ReceiptHandle }));
          takes.push(performance.now() - s);
        }
        const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
        const cell = (xs: number[]) =>
          `${fmt(mean(xs) * 1000, 0)} µs, ${fmt(percentile(xs, 50) * 1000, 0)} µs, ${fmt(percentile(xs, 99) * 1000, 0)} µs`;
        sqs.destroy();
        await server.close();
        const bytes = readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
        console.log(
          `| ${variant.label} | ${held.toLocaleString('en')} | ${cell(sends)} | ${cell(takes)} | ${fmt(held / fillSecs, 0)} msgs/s | ${(bytes / 1e6).toFixed(1)} MB |`,
        );
      } finally {
        sqs.destroy();
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
}

/**
 * 6. HPC endpoint (`--only=slurm`; root, Debian's slurm-wlm and munge): an endpoint manager with
 *    one-node Slurm blocks of 2 workers on a cluster this bench starts: the time from submit to
 *    first result on a cold endpoint (zero blocks: sbatch, schedule, agent start, task), and the
 *    no-op throughput of one warm block.
 */
async function benchSlurm(stack: LocalStack, client: Client): Promise<void> {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { startSlurm, slurmAvailable } = await import('../test/helpers/slurm');
  const { parseEndpointConfig } = await import('../workers/manager/config');
  const { EndpointManager } = await import('../workers/manager/manager');
  const { SlurmProvider } = await import('../workers/manager/slurm-provider');
  console.log('\n## HPC endpoint on Slurm: one-node blocks of 2 workers\n');
  if (!slurmAvailable()) return console.log('(skipped: needs root, slurm-wlm and munge)');
  const slurm = await startSlurm({ nodes: 1, cpus: 2 });
  process.env.SLURM_CONF = slurm.conf;
  const ep = await client.registerEndpoint('bench-slurm');
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-slurm-'));
  const credentialsFile = join(dir, 'ep.json');
  const worker = { api_url: stack.apiUrl, endpoint_id: ep.endpoint_id, endpoint_secret: ep.endpoint_secret };
  writeFileSync(credentialsFile, JSON.stringify(worker), { mode: 0o600 });
  const yaml = [
    'credentials: ep.json',
    'engine:',
    '  max_workers_per_node: 2',
    '  max_idletime: 2',
    '  provider:',
    '    type: SlurmProvider',
    '    nodes_per_block: 1',
    '    max_blocks: 1',
    '    walltime: "00:10:00"',
  ];
  const { config } = parseEndpointConfig(yaml.join('\n'), join(dir, 'endpoint.yaml'));
  const provider = new SlurmProvider(config.engine.provider as never, { maxWorkersPerNode: 2 });
  const manager = new EndpointManager({
    config,
    worker,
    credentialsFile,
    provider,
    stateDir: join(dir, 'state'),
    pollMs: 1_000,
    log: () => undefined,
  });
  const fn = await client.registerFunction(() => null);
  try {
    await manager.start();
    const colds: number[] = [];
    for (let i = 0; i < (quick ? 2 : 3); i++) {
      // Cold: wait until the idle block is gone, then one task.
      while (manager.status().blocks.some((b) => b.state !== 'ended')) await sleep(250);
      const t0 = performance.now();
      await waitAll(client, (await client.batchRun(ep.endpoint_id, [{ function_id: fn, args: [] }])).task_ids);
      colds.push(performance.now() - t0);
    }
    console.log(`Submit to first result, cold (zero blocks; poll 1 s): ${colds.map((ms) => `${fmt(ms / 1000, 2)} s`).join(', ')}`);
    const n = quick ? 200 : 1000;
    await waitAll(
      client,
      (
        await client.batchRun(
          ep.endpoint_id,
          Array.from({ length: 10 }, () => ({ function_id: fn, args: [] })),
        )
      ).task_ids,
    );
    const before = new Set(
      manager
        .status()
        .blocks.filter((b) => b.state === 'ended')
        .map((b) => b.job_id),
    );
    const t0 = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < n; i += 100)
      ids.push(
        ...(
          await client.batchRun(
            ep.endpoint_id,
            Array.from({ length: Math.min(100, n - i) }, () => ({ function_id: fn, args: [] })),
          )
        ).task_ids,
      );
    await waitAll(client, ids);
    const secs = (performance.now() - t0) / 1000;
    const jobs = new Set(
      manager
        .status()
        .blocks.filter((b) => !before.has(b.job_id))
        .map((b) => b.job_id),
    );
    console.log(
      `One warm block (1 node, 2 workers): ${n} no-op tasks in ${fmt(secs, 2)} s, ${fmt(n / secs, 0)} tasks/s (Slurm jobs serving the run: ${jobs.size}).`,
    );
  } finally {
    await manager.stop(30_000);
    await client.deleteEndpoint(ep.endpoint_id);
    await slurm.stop();
  }
}

/**
 * 7. Issue 13's workload (`--only=workload`): the local stack in its own process as `npm start`
 *    runs it, one Executor here, one agent with 2 runtime processes; 200 sequential no-op round
 *    trips right after start (cold), a warm-up burst of 3,000, 200 round trips again (the table's
 *    p50 and p99), then 5,000 at once; next to BullMQ on a private redis-server with the same
 *    workload where Debian's redis-server is installed.
 */
async function benchWorkload(profileDir?: string): Promise<void> {
  const { spawnStackChild } = await import('./stack-child');
  const { ferryWorkload, printWorkloadTable } = await import('./workload');
  const { bullmqWorkload, redisServerAvailable } = await import('./bullmq-baseline');
  console.log('\n## Issue 13 workload: one client, one agent with 2 runtime processes, no-op tasks (the stack in its own process)\n');
  const rounds = quick ? 50 : 200;
  const burst = quick ? 1000 : 5000;
  // Enough for V8 to have compiled the hot paths of every process (stack, agent, runtimes; BullMQ's worker).
  const warmup = quick ? 1000 : 3000;
  const stack = await spawnStackChild({ profileDir, label: 'workload' });
  const rows: { system: string; figures: Awaited<ReturnType<typeof ferryWorkload>> }[] = [];
  const skipped: string[] = [];
  try {
    rows.push({
      system: `Ferry (local stack, ${git('rev-parse --short HEAD')})`,
      figures: await ferryWorkload(stack, { rounds, burst, warmup, profileDir }),
    });
  } finally {
    await stack.close();
  }
  if (redisServerAvailable())
    rows.push({ system: 'BullMQ (redis-server)', figures: await bullmqWorkload({ rounds, burst, warmup, profileDir }) });
  else skipped.push('BullMQ baseline skipped: no redis-server on this machine (Debian: apt-get install redis-server).\n');
  printWorkloadTable(rows, skipped, warmup);
}

async function benchScalingSection(profileDir?: string): Promise<void> {
  const { spawnStackChild } = await import('./stack-child');
  const { benchScaling } = await import('./workload');
  const stack = await spawnStackChild({ profileDir, label: 'scaling' });
  try {
    await benchScaling(stack, { quick, profileDir });
  } finally {
    await stack.close();
  }
}

const git = (args: string) => {
  try {
    return execSync(`git ${args}`, { cwd: join(__dirname, '..'), stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return 'unknown commit';
  }
};

async function main() {
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
  const wants = (section: string, byDefault = true) => (only ? only === section : byDefault);
  // --profile: the stack process, the agents and the BullMQ worker write .cpuprofile files here.
  const profileDir = process.argv.includes('--profile') ? mkdtempSync(join(tmpdir(), 'ferry-bench-profile-')) : undefined;
  // Agents run as the container runs them: the esbuild bundle under plain node.
  execSync('npm run -s build:worker', { stdio: 'ignore' });
  console.log(
    `# Ferry bench (${quick ? 'quick' : 'full'}), ${new Date().toISOString()}, node ${process.version}, commit ${git('rev-parse --short HEAD')}${git('status --porcelain --untracked-files=no') ? ' (with uncommitted changes)' : ''}`,
  );
  const timings: string[] = [];
  const timed = async (name: string, run: () => Promise<void>) => {
    const t0 = performance.now();
    await run();
    timings.push(`${name} ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  };
  // The older sections run the stack in this process: their handlers' SDK calls are counted here.
  const inProcess = ['submit', 'agent', 'sdk', 'users', 'slurm'].some((s) => wants(s, s !== 'slurm'));
  if (wants('workload')) await timed('workload', () => benchWorkload(profileDir));
  if (wants('scaling', !quick)) await timed('scaling', () => benchScalingSection(profileDir));
  // The dead-letter sweep would add its own SQS calls to the counts; it has nothing to do here.
  const stack = inProcess ? await startLocalStack({ sweepIntervalMs: 3_600_000 }) : undefined;
  const client = stack ? new Client({ apiUrl: stack.apiUrl, token: await stack.createUser('bench') }) : undefined;
  try {
    if (stack && client) {
      if (wants('submit')) await timed('submit', () => benchSubmit(stack, client));
      if (wants('agent')) await timed('agent', () => benchAgent(stack, client));
      if (wants('sdk')) await timed('sdk', () => benchSdk(stack, client));
      if (wants('users')) await timed('users', () => benchUsers(stack, client));
      if (wants('slurm', false)) await timed('slurm', () => benchSlurm(stack, client));
    }
    if (wants('sqs')) await timed('sqs', () => benchSqs());
  } finally {
    await stack?.close();
  }
  console.log(`\nSection times: ${timings.join(', ')}.`);
  if (profileDir)
    console.log(
      `CPU profiles, a directory per process (stack-workload, stack-scaling, agent-<n>, bullmq-worker): ${profileDir}\n  summary (a process and its threads): npx tsx bench/profile-summary.ts ${profileDir}/stack-workload/*.cpuprofile`,
    );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
