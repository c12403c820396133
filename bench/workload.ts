/**
 * Issue 13's workload and how Ferry scales, against a local stack in its own process
 * (bench/stack-child.ts), as a user runs it: the client in this process, worker agents in
 * theirs (the bundle the container runs). The stack process counts its own AWS SDK calls,
 * DynamoDB write units and HTTP requests; each agent prints its AWS calls when it stops.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawnAgentProcess, type AgentProcess } from '../local/agent-process';
import { Client, Executor } from '../sdk';
import { timedRoundTrips, type WorkloadFigures } from './bullmq-baseline';
import type { StackChild, StackCounts } from './stack-child';
import { sleep } from '../core/retry';

const fmt = (n: number, d = 1) => n.toFixed(d);
export const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const FINAL = ['success', 'failed', 'cancelled'];

/** An agent for `ep` from the bundle the container runs, with `poolSize` runtime processes of each of `runtimes`. */
export function spawnBenchAgent(
  stack: Pick<StackChild, 'apiUrl' | 'workerEnv'>,
  ep: { endpoint_id: string; endpoint_secret: string },
  poolSize: number,
  profileDir?: string,
  runtimes = ['node'],
): AgentProcess {
  return spawnAgentProcess(
    {
      ...stack.workerEnv,
      FERRY_API_URL: stack.apiUrl,
      FERRY_ENDPOINT_ID: ep.endpoint_id,
      FERRY_ENDPOINT_SECRET: ep.endpoint_secret,
      FERRY_POOL_SIZE: String(poolSize),
      FERRY_RUNTIMES: runtimes.join(','),
      // Node writes the profile when the process exits (the agent's runtime processes are not profiled).
    },
    { bundle: true, nodeArgs: profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, `agent-${++agentsStarted}`)}`] : [] },
  );
}
let agentsStarted = 0;

/** Waits until the agents serve their endpoint; one that exited instead fails the bench with its output. */
export async function agentsReady(agents: AgentProcess[]): Promise<void> {
  await Promise.all(agents.map((a) => a.ready));
  const dead = agents.find((a) => a.child.exitCode !== null || a.child.signalCode !== null);
  if (dead) throw new Error(`a worker agent exited before serving its endpoint:\n${dead.output()}`);
}

/** The AWS calls an agent counted, from its last log line. */
export function agentCalls(agent: AgentProcess): Record<string, number> {
  const line = agent
    .output()
    .split('\n')
    .find((l) => l.includes('"agent stopped"'));
  return line ? (JSON.parse(line).aws_calls as Record<string, number>) : {};
}

export async function stopAgents(agents: AgentProcess[]): Promise<void> {
  for (const a of agents) a.child.kill('SIGTERM');
  await Promise.all(agents.map((a) => a.exited));
}

const sum = (counts: Record<string, number>, prefix: string) =>
  Object.entries(counts)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((n, [, v]) => n + v, 0);
/** Write units of whole writes (table plus indexes); "table/index" entries are their parts. */
const writeUnits = (c: StackCounts) =>
  Object.entries(c.writeUnits)
    .filter(([k]) => !k.includes('/') && k !== 'conditional-check-failed')
    .reduce((n, [, v]) => n + v, 0);
/**
 * Per task: requests the API served (the client's and the agents'), the stack's DynamoDB calls,
 * write units, and every SQS call: the handlers' (counted by their SDK client, as they reach the
 * queues in-process) and the agents' (requests the local SQS server served over HTTP). The local
 * results event source reads its queue in-process (as Lambda's pollers do inside AWS), so its
 * receives and deletes are not among them; on AWS they are billed too.
 */
const perTask = (c: StackCounts, tasks: number) => ({
  api: (c.requests.API ?? 0) / tasks,
  ddb: sum(c.calls, 'DynamoDB.') / tasks,
  wru: writeUnits(c) / tasks,
  sqs: ((c.requests.SQS ?? 0) + sum(c.calls, 'SQS.')) / tasks,
});

export async function ferryWorkload(
  stack: StackChild,
  opts: { rounds: number; burst: number; warmup: number; profileDir?: string },
): Promise<WorkloadFigures> {
  const client = new Client({ apiUrl: stack.apiUrl, token: await stack.createUser('bench-workload') });
  const ep = await client.registerEndpoint('bench-workload');
  const agent = spawnBenchAgent(stack, ep, 2, opts.profileDir);
  await agentsReady([agent]);
  const gce = new Executor({ endpointId: ep.endpoint_id, client });
  const noop = () => null;
  try {
    // Every task this agent runs, for its SQS calls per task over its life.
    let submitted = 0;
    const submit = () => (submitted++, gce.submit(noop));
    const roundTrips = (n: number) => timedRoundTrips(n, submit);
    await roundTrips(20);
    // Right after start the stack's code is still being compiled (V8 optimizes what runs often,
    // on its helper threads): these round trips are the cold figures. A burst then warms it up.
    const cold = await roundTrips(opts.rounds);
    await Promise.all(Array.from({ length: opts.warmup }, submit));
    await roundTrips(20);
    await stack.counts(true);
    const samples = await roundTrips(opts.rounds);
    const rounds = await stack.counts(true);
    const before = { ...gce.stats };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: opts.burst }, submit));
    const secs = (performance.now() - t0) / 1000;
    const burst = await stack.counts(true);
    const requests = { submits: gce.stats.submitRequests - before.submitRequests, polls: gce.stats.polls - before.polls };
    await gce.shutdown();
    await stopAgents([agent]);
    const agentSqs = sum(agentCalls(agent), 'SQS.') / submitted;
    const b = perTask(burst, opts.burst);
    const r = perTask(rounds, opts.rounds);
    const ops = (c: StackCounts, n: number) =>
      Object.entries(c.calls)
        .filter(([k]) => k.startsWith('DynamoDB.') || k.startsWith('SQS.'))
        .map(([k, v]) => `${k} ${fmt(v / n, 2)}`)
        .join(', ');
    const units = (c: StackCounts, n: number) =>
      Object.entries(c.writeUnits)
        .map(([k, v]) => `${k} ${fmt(v / n, 2)}`)
        .join(', ');
    return {
      samples,
      cold,
      tasks: opts.burst,
      secs,
      perTask: {
        api: fmt(b.api, 2),
        ddb: fmt(b.ddb, 2),
        wru: fmt(b.wru, 2),
        sqs: `${fmt(b.sqs, 2)} (the agent's: ${fmt(agentSqs, 2)})`,
      },
      notes: [
        `Ferry: per-task counts over the ${opts.burst.toLocaleString('en')} tasks, counted in the stack process: API requests served (client and agent), its DynamoDB calls and write units (table and GSIs), every SQS call of its handlers and every SQS request its SQS server served over HTTP (the agent's; the results event source reads its queue in-process, uncounted); the agent's own SQS calls are over its whole life (${submitted.toLocaleString('en')} tasks). For them the Executor made ${requests.submits} submit requests and ${requests.polls} polls.`,
        `Ferry, the ${opts.burst.toLocaleString('en')} tasks, per task: ${ops(burst, opts.burst)}; write units: ${units(burst, opts.burst)}.`,
        `Ferry, the ${opts.rounds} sequential round trips, per task (stack): API requests ${fmt(r.api, 2)}, DynamoDB calls ${fmt(r.ddb, 2)}, WRU ${fmt(r.wru, 2)}, SQS calls ${fmt(r.sqs, 2)}.`,
      ],
    };
  } finally {
    await gce.shutdown().catch(() => undefined);
    if (agent.child.exitCode === null) await stopAgents([agent]);
    await client.deleteEndpoint(ep.endpoint_id).catch(() => undefined);
  }
}

/** Prints the issue-13 table: Ferry's row, then the baseline's (or why it has none). */
export function printWorkloadTable(rows: { system: string; figures: WorkloadFigures }[], skipped: string[], warmup: number): void {
  console.log(
    `| system | round trip p50 | p99 | ${(rows[0]?.figures.tasks ?? 0).toLocaleString('en')} tasks (tasks/s) | API requests/task | DynamoDB calls/task | DynamoDB WRU/task | SQS calls/task |`,
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const { system, figures: f } of rows) {
    const p = f.perTask;
    const rest = p.redis ? `— | — | — | — (${p.redis})` : `${p.api} | ${p.ddb} | ${p.wru} | ${p.sqs}`;
    console.log(
      `| ${system} | ${fmt(percentile(f.samples, 50))} ms | ${fmt(percentile(f.samples, 99))} ms | ${fmt(f.tasks / f.secs, 0)} (${f.tasks.toLocaleString('en')} in ${fmt(f.secs, 2)} s) | ${rest} |`,
    );
  }
  console.log('');
  for (const line of skipped) console.log(line);
  const cold = rows.map(({ system, figures: f }) => `${system} ${fmt(percentile(f.cold, 50))} / ${fmt(percentile(f.cold, 99))} ms`);
  console.log(
    `- Round trips are measured after a warm-up burst of ${warmup.toLocaleString('en')} tasks. The same ${rows[0]?.figures.cold.length ?? 0} round trips right after start (p50 / p99), while V8 still compiles the hot code: ${cold.join('; ')}.`,
  );
  for (const { figures } of rows) for (const n of figures.notes) console.log(`- ${n}`);
}

/** Polls the tasks until all are final, looking at the last few first (the queue serves in order). */
async function waitDrained(client: Client, ids: string[]): Promise<void> {
  const tail = ids.slice(-10);
  for (;;) {
    const { tasks } = await client.getTasks(tail);
    if (tasks.every((t) => FINAL.includes(t.status))) break;
    await sleep(250);
  }
}

async function waitAll(client: Client, ids: string[]): Promise<void> {
  let pending = ids;
  while (pending.length) {
    const { tasks } = await client.getTasks(pending);
    pending = tasks.filter((t) => !FINAL.includes(t.status)).map((t) => t.task_id);
    if (pending.length) await sleep(250);
  }
}

/** DELETE /v1/endpoints/{id} once (the SDK would retry a 503), timed: figures, not a failure. */
async function timedDelete(apiUrl: string, token: string, endpointId: string, tasks: number): Promise<string> {
  const t0 = performance.now();
  const res = await fetch(`${apiUrl}/v1/endpoints/${endpointId}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  }).catch((err: Error) => err);
  const secs = fmt((performance.now() - t0) / 1000, 1);
  return `${tasks.toLocaleString('en')} tasks: ${res instanceof Error ? `failed after ${secs} s (${res.message})` : `HTTP ${res.status} in ${secs} s`}`;
}

/**
 * `--only=scaling`: no-op throughput with 1, 2 and 4 agents (2 runtime processes each) on one
 * endpoint; then the cost per task of a backlog: tasks queued with no agent running (submits of
 * 500), then one agent drains them.
 */
export async function benchScaling(stack: StackChild, opts: { quick: boolean; profileDir?: string }): Promise<void> {
  const token = await stack.createUser('bench-scaling');
  const client = new Client({ apiUrl: stack.apiUrl, token });
  const noop = () => null;
  const deletes: string[] = [];
  console.log('\n## Scaling: agents on one endpoint (each 2 runtime processes), no-op tasks through one Executor\n');
  const n = opts.quick ? 1000 : 5000;
  // As in the workload: the stack and each row's agents are warmed up by a burst before the one measured.
  const warmup = opts.quick ? 500 : 2000;
  console.log(
    `| agents | runtime processes | ${n.toLocaleString('en')} tasks (tasks/s), after a warm-up burst of ${warmup.toLocaleString('en')} | agent SQS calls/task |`,
  );
  console.log('| --- | --- | --- | --- |');
  for (const agents of [1, 2, 4]) {
    const ep = await client.registerEndpoint(`bench-scaling-${agents}`);
    const procs = Array.from({ length: agents }, () => spawnBenchAgent(stack, ep, 2, opts.profileDir));
    await agentsReady(procs);
    const gce = new Executor({ endpointId: ep.endpoint_id, client });
    for (let i = 0; i < 20; i++) await gce.submit(noop);
    await Promise.all(Array.from({ length: warmup }, () => gce.submit(noop)));
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, () => gce.submit(noop)));
    const secs = (performance.now() - t0) / 1000;
    await gce.shutdown();
    await stopAgents(procs);
    const sqs = procs.reduce((s, a) => s + sum(agentCalls(a), 'SQS.'), 0) / (20 + warmup + n);
    console.log(`| ${agents} | ${agents * 2} | ${fmt(n / secs, 0)} (${fmt(secs, 2)} s) | ${fmt(sqs, 2)} |`);
    await client.deleteEndpoint(ep.endpoint_id);
  }

  console.log('\n## Scaling: a backlog queued with no agent running (submits of 500), then one agent (2 runtime processes) drains it\n');
  console.log(
    "| tasks queued | submit (tasks/s) | drain (tasks/s) | submit: API requests, DynamoDB calls, WRU per task | drain: DynamoDB calls, WRU, SQS requests (all; the agent's) per task | WRU per task, total |",
  );
  console.log('| --- | --- | --- | --- | --- | --- |');
  const fn = await client.registerFunction(noop);
  for (const total of opts.quick ? [500, 2000, 5000] : [1000, 10_000, 100_000]) {
    const ep = await client.registerEndpoint(`bench-backlog-${total}`);
    await stack.counts(true);
    const ids: string[] = [];
    let t0 = performance.now();
    for (let i = 0; i < total; i += 500) {
      ids.push(
        ...(
          await client.batchRun(
            ep.endpoint_id,
            Array.from({ length: Math.min(500, total - i) }, () => ({ function_id: fn, args: [] })),
          )
        ).task_ids,
      );
    }
    const submitSecs = (performance.now() - t0) / 1000;
    const submit = perTask(await stack.counts(true), total);
    const agent = spawnBenchAgent(stack, ep, 2, opts.profileDir);
    await agentsReady([agent]);
    t0 = performance.now();
    await waitDrained(client, ids);
    const drainSecs = (performance.now() - t0) / 1000;
    const drain = perTask(await stack.counts(true), total);
    // The last tasks are done; make sure every one is (reads not counted above).
    await waitAll(client, ids);
    await stopAgents([agent]);
    const agentSqs = sum(agentCalls(agent), 'SQS.') / total;
    console.log(
      `| ${total.toLocaleString('en')} | ${fmt(total / submitSecs, 0)} (${fmt(submitSecs, 1)} s) | ${fmt(total / drainSecs, 0)} (${fmt(drainSecs, 1)} s) | ` +
        `${fmt(submit.api, 3)}, ${fmt(submit.ddb, 3)}, ${fmt(submit.wru, 2)} | ${fmt(drain.ddb, 3)}, ${fmt(drain.wru, 2)}, ${fmt(drain.sqs, 3)} (${fmt(agentSqs, 3)}) | ${fmt(submit.wru + drain.wru, 2)} |`,
    );
    deletes.push(await timedDelete(stack.apiUrl, token, ep.endpoint_id, total));
  }
  console.log(
    `\nDeleting each endpoint afterwards (all its tasks final; the bench's stack runs no sweep, so their shares' open markers are still there), one request, no retry: ${deletes.join('; ')}.`,
  );
  console.log(
    "\nDrain time runs from the agent saying it serves the endpoint to the last tasks being final; the drain counts include this bench's polls of the last 10 tasks every 250 ms (about one DynamoDB read call each).",
  );
}
