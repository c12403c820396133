import type { ManagerBlock } from '../../core/tables/endpoints';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { join } from 'node:path';
import { GetQueueAttributesCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { makeS3Client, makeSqsClient } from '../../core/clients';
import { fromBundle } from '../../core/install';
import { TASK_VISIBILITY_SECONDS } from '../../core/queues/endpoint-queue';
import { AGENT_VERSION } from '../agent/agent';
import { GrantKeeper } from '../grant';
import type { WorkerConfig } from '../main';
import type { BlockReport } from './block-agent';
import { drainSeconds, walltimeSeconds, type EndpointConfig } from './config';
import type { JobStatus, Provider } from './provider';
import { Relay } from './relay';
import { backoffMs, sleep } from '../../core/retry';
import { parseProcessRuntimes, PROCESS_RUNTIMES } from '../../core/runtimes';

export type BlockState = ManagerBlock['state'];

/** A block as the manager sees it; `blockView` is what the status file (and later the status API) shows. */
export interface Block {
  blockId: string;
  jobId: string;
  state: BlockState;
  submittedAt: number;
  startedAt?: number;
  /** The scheduler's word for the job (PENDING, RUNNING, CANCELLED, TIMEOUT, ...). */
  detail: string;
  reason?: string;
  nodes?: string;
  /** The latest report of each of its agents. */
  agents: Map<string, BlockReport & { at: number }>;
  idleSince?: number;
  drainSentAt?: number;
  /** The manager asks its agents to drain (in its answer to their next report). */
  drainRequested?: boolean;
  drainReason?: string;
  endedAt?: number;
}

/** A block as the manager shows it (status file, its heartbeat, the status API): one shape for all three. */
export type BlockView = ManagerBlock;

export interface ManagerStatus {
  endpoint_id: string;
  provider: string;
  queued: number;
  in_flight: number;
  blocks: BlockView[];
  at: string;
}

export interface ManagerOptions {
  config: EndpointConfig;
  worker: WorkerConfig;
  /** The credentials file the agents read (FERRY_WORKER_CONFIG). */
  credentialsFile: string;
  provider: Provider;
  /** Job scripts, agent output, the manager contact file. */
  stateDir: string;
  /** The agent's command line (absolute paths); default: defaultAgentCommand(). */
  agentCommand?: string[];
  /** Environment every agent gets on top of the job's. */
  agentEnv?: Record<string, string>;
  pollMs?: number;
  /** How often the manager tells the API it is alive and what blocks it holds; default 10 s. */
  heartbeatMs?: number;
  /** How often agents report; default the poll interval, at most 5 s. */
  reportMs?: number;
  /** How long a block asked to drain may take before it is cancelled outright. */
  drainTimeoutMs?: number;
  statusFile?: string;
  /** Seconds a message handed to a relay agent stays invisible between extensions; default 60. */
  visibilitySeconds?: number;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
}

/** Variables a task may read in a block, so it knows its job (the agent's env_passthrough). */
const SCHEDULER_ENV = [
  'SLURM_JOB_ID',
  'SLURM_JOB_NAME',
  'SLURM_JOB_NODELIST',
  'SLURM_NODEID',
  'SLURM_PROCID',
  'SLURM_CLUSTER_NAME',
  'SLURM_JOB_PARTITION',
  'SLURMD_NODENAME',
];

/**
 * The endpoint manager: holds the endpoint's credentials, and scales blocks from its provider on
 * the endpoint queue's depth — tasks waiting or held (SQS visible + in flight) against the slots
 * of pending and running blocks, so pending jobs count as capacity on the way. An idle block
 * (every agent reports no task running) is drained after max_idletime down to min_blocks; a
 * block near its walltime drains itself and no longer counts as capacity, so it is replaced while
 * work remains. A job that ended without being asked to (scancel, node failure, walltime) is
 * noticed on the next poll; its tasks come back through the queue after their visibility timeout.
 */
export class EndpointManager {
  private readonly blocks = new Map<string, Block>();
  private readonly ended: Block[] = [];
  private readonly token = randomBytes(32).toString('hex');
  private readonly log: NonNullable<ManagerOptions['log']>;
  private readonly keeper: GrantKeeper;
  private sqs?: SQSClient;
  private s3?: S3Client;
  /** Relay mode: the agents' tasks, results and payloads go through this manager. */
  private relay?: Relay;
  private queueUrl = '';
  private server?: Server;
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private nextBlock = 1;
  private stopping = false;
  private depth = { queued: 0, inFlight: 0 };
  /** Slots per node as agents report them; until then max_workers_per_node or this host's cores. */
  private slotsPerNode: number;
  private readonly drain: number;
  private readonly walltime: number;
  private fatal?: Error;
  /** Blocks in a row that ended before any agent of theirs reported: submissions back off. */
  private failedStarts = 0;
  private holdSubmitsUntil = 0;
  /** The runtimes its blocks' agents serve (FERRY_RUNTIMES, as the agents read it), for their heartbeats. */
  private readonly runtimes: readonly string[] = parseProcessRuntimes(process.env.FERRY_RUNTIMES) ?? PROCESS_RUNTIMES;

  constructor(private readonly opts: ManagerOptions) {
    this.log =
      opts.log ??
      ((msg, extra) => console.error(JSON.stringify({ at: new Date().toISOString(), manager: opts.worker.endpoint_id, msg, ...extra })));
    this.keeper = new GrantKeeper(
      opts.worker.api_url.replace(/\/+$/, ''),
      opts.worker.endpoint_id,
      opts.worker.endpoint_secret,
      (err) => (this.fatal = err),
      this.log,
    );
    this.slotsPerNode = opts.config.engine.max_workers_per_node ?? availableParallelism();
    this.drain = drainSeconds(opts.config.engine);
    const wt = opts.config.engine.provider.walltime;
    this.walltime = wt ? walltimeSeconds(wt) : Infinity;
  }

  private get reportMs(): number {
    return this.opts.reportMs ?? Math.min(5_000, this.opts.pollMs ?? 5_000);
  }

  private get provider() {
    return this.opts.config.engine.provider;
  }

  /** Trade the secret for credentials, open the report listener, start init_blocks, and poll. */
  async start(): Promise<void> {
    mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
    const grant = await this.keeper.start();
    this.queueUrl = grant.queue_url;
    this.sqs = makeSqsClient({ region: grant.region, credentials: this.keeper.provider });
    if (this.opts.config.engine.relay) {
      this.s3 = makeS3Client({ region: grant.region, credentials: this.keeper.provider });
      this.relay = new Relay({
        endpointId: this.opts.worker.endpoint_id,
        sqs: this.sqs,
        s3: this.s3,
        keeper: this.keeper,
        visibilitySeconds: this.opts.visibilitySeconds ?? TASK_VISIBILITY_SECONDS,
        log: this.log,
      });
      this.relay.start();
      this.writeAgentSettings();
    }
    await this.listen();
    const n = Math.max(this.provider.init_blocks, this.provider.min_blocks);
    for (let i = 0; i < n; i++) await this.submitBlock('init_blocks');
    this.log('endpoint manager started', {
      provider: this.opts.provider.kind,
      init_blocks: this.provider.init_blocks,
      min_blocks: this.provider.min_blocks,
      max_blocks: this.provider.max_blocks,
      nodes_per_block: this.provider.nodes_per_block,
      max_idletime: this.opts.config.engine.max_idletime,
      mode: this.relay ? 'relay' : 'direct',
      walltime_seconds: this.walltime,
      drain_before_walltime: this.drain,
    });
    const loop = () => {
      this.ticking = this.tick()
        .catch((err) => this.log('poll failed', { error: String(err) }))
        .finally(() => {
          if (!this.stopping) this.timer = setTimeout(loop, this.opts.pollMs ?? 5_000);
        });
    };
    loop();
  }

  /** Where agents report: a listener on the engine's address, authenticated by a per-manager token. */
  private async listen(): Promise<void> {
    const address = this.opts.config.engine.address ?? hostname();
    const expected = Buffer.from(`Bearer ${this.token}`);
    this.server = createServer((req, res) => {
      const auth = Buffer.from(req.headers.authorization ?? '');
      const ok = auth.length === expected.length && timingSafeEqual(auth, expected);
      if (!ok) return void res.writeHead(401).end();
      if (this.relay && req.url?.startsWith('/v1/relay/')) return void this.relay.handle(req, res, new URL(req.url, 'http://relay'));
      if (req.method !== 'POST' || req.url !== '/v1/block-reports') return void res.writeHead(404).end();
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => {
        body += c;
        if (body.length > 64 * 1024) req.destroy();
      });
      req.on('end', () => {
        try {
          const drain = this.receive(JSON.parse(body) as BlockReport);
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ drain }));
        } catch {
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(0, address, () => resolve());
    });
    const port = (this.server.address() as { port: number }).port;
    const host = address.includes(':') ? `[${address}]` : address;
    const file = join(this.opts.stateDir, 'manager.json');
    writeFileSync(file, JSON.stringify({ url: `http://${host}:${port}`, token: this.token }), { mode: 0o600 });
  }

  /** An agent's report; the answer says whether its block must drain. */
  private receive(r: BlockReport): boolean {
    const block = this.blocks.get(r.block_id);
    // A block this manager does not know (a previous run's job): it has no business serving.
    if (!block || typeof r.worker_id !== 'string') return true;
    block.agents.set(r.worker_id, { ...r, at: Date.now() });
    if (r.stopped) void this.relay?.agentStopped(r.worker_id);
    if (r.workers > 0) this.slotsPerNode = r.workers;
    this.failedStarts = 0;
    if (block.state === 'pending') this.markRunning(block);
    if (r.draining && block.state !== 'draining')
      this.setDraining(block, r.end_at && Date.now() / 1000 >= r.end_at - this.drain - 1 ? 'walltime' : 'agent draining');
    return block.drainRequested === true;
  }

  private markRunning(block: Block): void {
    block.startedAt ??= Date.now();
    this.setState(block, 'running');
  }

  private setState(block: Block, state: BlockState): void {
    if (block.state === state) return;
    block.state = state;
    this.log(`block ${block.blockId} ${state}`, {
      job: block.jobId,
      scheduler: block.detail,
      reason: block.reason ?? block.drainReason,
      nodes: block.nodes,
    });
  }

  private setDraining(block: Block, reason: string): void {
    block.drainReason = reason;
    block.drainSentAt ??= Date.now();
    this.setState(block, 'draining');
  }

  private slotsPerBlock(): number {
    return this.provider.nodes_per_block * this.slotsPerNode;
  }

  private live(): Block[] {
    return [...this.blocks.values()];
  }

  /** Blocks that count as capacity: pending or running, not on their way out. */
  private serving(): Block[] {
    return this.live().filter((b) => b.state !== 'draining');
  }

  private async submitBlock(why: string): Promise<Block | undefined> {
    const blockId = `b${this.nextBlock++}`;
    const dir = this.opts.stateDir;
    const env: Record<string, string> = {
      ...this.opts.agentEnv,
      FERRY_WORKER_CONFIG: this.opts.credentialsFile,
      FERRY_MANAGER_FILE: join(dir, 'manager.json'),
      FERRY_BLOCK_ID: blockId,
      FERRY_BLOCK_DRAIN_SECONDS: String(this.drain),
      FERRY_BLOCK_REPORT_MS: String(this.reportMs),
      FERRY_ENV_PASSTHROUGH: this.passthrough(),
    };
    // engine.mpi_launcher (GlobusMPIEngine's name); the agents' own setting otherwise.
    if (this.opts.config.engine.mpi_launcher) env.FERRY_MPI_LAUNCHER = this.opts.config.engine.mpi_launcher;
    let unsetEnv: string[] | undefined;
    if (this.relay) {
      // Relay mode: the agents get the manager's address, no secret, and nothing of AWS or the API.
      env.FERRY_RELAY = '1';
      env.FERRY_WORKER_CONFIG = this.agentSettingsFile;
      unsetEnv = [...new Set([...Object.keys(process.env).filter((k) => k.startsWith('AWS_')), 'FERRY_API_URL', 'FERRY_ENDPOINT_SECRET'])];
    }
    if (this.opts.config.engine.max_workers_per_node) env.FERRY_POOL_SIZE = String(this.opts.config.engine.max_workers_per_node);
    let jobId: string;
    try {
      jobId = await this.opts.provider.submit({
        blockId,
        jobName: `ferry-${this.opts.worker.endpoint_id.slice(0, 8)}-${blockId}`,
        nodes: this.provider.nodes_per_block,
        walltimeSeconds: this.walltime,
        env,
        unsetEnv,
        command: this.opts.agentCommand ?? defaultAgentCommand(),
        dir,
      });
    } catch (err) {
      this.log('could not submit a block', { block: blockId, error: String(err) });
      return undefined;
    }
    const block: Block = { blockId, jobId, state: 'pending', submittedAt: Date.now(), detail: 'PENDING', agents: new Map() };
    this.blocks.set(blockId, block);
    this.log(`block ${blockId} submitted`, { job: jobId, why, nodes: this.provider.nodes_per_block });
    return block;
  }

  /** The agents' env_passthrough (from the credentials file or FERRY_ENV_PASSTHROUGH) plus the job's variables. */
  private passthrough(): string {
    let own: string[] | string | undefined = process.env.FERRY_ENV_PASSTHROUGH;
    if (own === undefined) {
      try {
        own = (JSON.parse(readFileSync(this.opts.credentialsFile, 'utf8')) as { env_passthrough?: string[] | string }).env_passthrough;
      } catch {
        own = undefined;
      }
    }
    const list = typeof own === 'string' ? own.split(',') : (own ?? []);
    return [...new Set([...list.map((s) => s.trim()).filter(Boolean), ...SCHEDULER_ENV])].join(',');
  }

  private get agentSettingsFile(): string {
    return join(this.opts.stateDir, 'agent.json');
  }

  /** Relay mode: the agents' settings (isolation, env_passthrough, ...) without the secret or the API's address. */
  private writeAgentSettings(): void {
    let settings: Record<string, unknown>;
    try {
      settings = JSON.parse(readFileSync(this.opts.credentialsFile, 'utf8')) as Record<string, unknown>;
    } catch {
      settings = {};
    }
    const { api_url: _a, endpoint_secret: _s, ...rest } = settings;
    writeFileSync(this.agentSettingsFile, JSON.stringify({ ...rest, endpoint_id: this.opts.worker.endpoint_id }), { mode: 0o600 });
  }

  private async readDepth(): Promise<void> {
    const out = await this.sqs!.send(
      new GetQueueAttributesCommand({
        QueueUrl: this.queueUrl,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
      }),
    );
    this.depth = {
      queued: Number(out.Attributes?.ApproximateNumberOfMessages ?? 0),
      inFlight: Number(out.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0),
    };
  }

  /** One poll: job states, idleness, queue depth, then scale in or out. */
  async tick(): Promise<void> {
    if (this.fatal) throw this.fatal;
    const now = Date.now();
    const blocks = this.live();
    const statuses = await this.opts.provider.status(blocks.map((b) => b.jobId));
    for (const b of blocks) this.applyJobStatus(b, statuses.get(b.jobId), now);
    await this.readDepth();
    if (this.stopping) return this.writeStatus();

    const idleFor = this.opts.config.engine.max_idletime * 1000;
    for (const b of this.live()) {
      if (b.state === 'draining') {
        // Asked to drain and still there after the grace: end it (its unfinished tasks come back through the queue).
        // (A walltime drain needs no help: the scheduler ends the job at its limit.)
        if (b.drainRequested && b.drainSentAt && now - b.drainSentAt > (this.opts.drainTimeoutMs ?? 90_000)) {
          this.log(`block ${b.blockId} did not drain in time; cancelling job ${b.jobId}`);
          await this.opts.provider.cancel(b.jobId).catch((err) => this.log('scancel failed', { error: String(err) }));
          b.drainSentAt = now;
        }
        continue;
      }
      if (b.state === 'pending') continue;
      const reports = [...b.agents.values()].filter((r) => !r.stopped);
      const running = reports.reduce((n, r) => n + r.running, 0);
      // Idle only on fresh word from its agents: a late report may be hiding a task.
      const stale = reports.some((r) => now - r.at > 3 * this.reportMs + 2_000);
      const busy = reports.length === 0 || running > 0 || stale;
      if (busy) {
        b.idleSince = undefined;
        this.setState(b, 'running');
      } else {
        b.idleSince ??= now;
        this.setState(b, 'idle');
      }
      // A block whose job nears its walltime drains itself; the manager stops counting it even if its report is late.
      const endAt = reports.find((r) => r.end_at)?.end_at;
      if (endAt && now / 1000 >= endAt - this.drain) this.setDraining(b, 'walltime');
    }

    // Scale in: blocks idle max_idletime, none holding a task, while nothing waits, down to min_blocks.
    if (this.depth.queued === 0) {
      const idle = this.live()
        .filter((b) => b.state === 'idle' && b.idleSince !== undefined && now - b.idleSince >= idleFor)
        .sort((a, b) => a.idleSince! - b.idleSince!);
      for (const b of idle) {
        if (this.serving().length <= this.provider.min_blocks) break;
        this.setDraining(b, `idle ${Math.round((now - b.idleSince!) / 1000)} s`);
        b.drainRequested = true;
      }
    }

    // Scale out: tasks waiting or held, less what draining blocks are finishing, against the slots on the way.
    const drainingRunning = this.live()
      .filter((b) => b.state === 'draining')
      .reduce((n, b) => n + [...b.agents.values()].reduce((m, r) => m + r.running, 0), 0);
    const demand = Math.max(0, this.depth.queued + this.depth.inFlight - drainingRunning);
    const serving = this.serving();
    const capacity = serving.length * this.slotsPerBlock();
    let want = demand > capacity ? Math.ceil((demand - capacity) / this.slotsPerBlock()) : 0;
    want = Math.max(want, this.provider.min_blocks - serving.length);
    want = Math.min(want, this.provider.max_blocks - serving.length);
    if (want > 0 && now < this.holdSubmitsUntil) want = 0;
    for (let i = 0; i < want; i++) await this.submitBlock(`${demand} tasks waiting or running, ${capacity} slots`);
    this.writeStatus();
  }

  private applyJobStatus(b: Block, s: JobStatus | undefined, now: number): void {
    if (!s) return;
    b.detail = s.detail;
    b.reason = s.reason;
    b.nodes = s.nodes ?? b.nodes;
    if (s.state === 'running' && b.state === 'pending') this.markRunning(b);
    if (s.state !== 'ended') return;
    const expected = b.drainSentAt !== undefined || this.stopping;
    b.endedAt = now;
    this.blocks.delete(b.blockId);
    this.ended.push(b);
    if (this.ended.length > 50) this.ended.shift();
    const holding = [...b.agents.values()].reduce((n, r) => n + (r.stopped ? 0 : r.running), 0);
    this.setState(b, 'ended');
    // Relay mode: what its agents held runs again at once rather than after its visibility lapses.
    void this.relay?.blockEnded(b.blockId);
    if (!expected && b.agents.size === 0) {
      // Its agents never started (bad worker_init, a missing module, a node problem): do not resubmit in a tight loop.
      this.failedStarts++;
      const waitMs = backoffMs(this.failedStarts, { baseMs: this.opts.pollMs ?? 5_000, capMs: 300_000, jitter: 'none' });
      this.holdSubmitsUntil = now + waitMs;
      this.log(
        `block ${b.blockId} (job ${b.jobId}) ended before its agents started: ${s.detail}${s.reason ? ` (${s.reason})` : ''}; see its output in ${this.opts.stateDir}`,
        {
          failed_in_a_row: this.failedStarts,
          next_submit_in_seconds: Math.round(waitMs / 1000),
        },
      );
    } else if (!expected) {
      this.log(`block ${b.blockId} (job ${b.jobId}) ended without being asked: ${s.detail}${s.reason ? ` (${s.reason})` : ''}`, {
        tasks_lost_in_it: holding,
        note: holding ? 'its tasks come back through the queue once their visibility timeout lapses' : undefined,
      });
    }
  }

  status(): ManagerStatus {
    const now = Date.now();
    const view = (b: Block): BlockView => {
      const reports = [...b.agents.values()].filter((r) => !r.stopped);
      const endAt = reports.find((r) => r.end_at)?.end_at;
      return {
        block_id: b.blockId,
        job_id: b.jobId,
        state: b.state,
        scheduler_state: b.detail,
        reason: b.reason,
        nodes: b.nodes,
        agents: reports.length,
        workers: reports.reduce((n, r) => n + r.workers, 0),
        running: reports.reduce((n, r) => n + r.running, 0),
        idle_seconds: b.idleSince === undefined ? undefined : Math.round((now - b.idleSince) / 1000),
        drain_reason: b.drainReason,
        submitted_at: new Date(b.submittedAt).toISOString(),
        ends_at: endAt ? new Date(endAt * 1000).toISOString() : undefined,
      };
    };
    return {
      endpoint_id: this.opts.worker.endpoint_id,
      provider: this.opts.provider.kind,
      queued: this.depth.queued,
      in_flight: this.depth.inFlight,
      blocks: [...this.live(), ...this.ended.slice(-10)].map(view),
      at: new Date(now).toISOString(),
    };
  }

  private lastBeat = 0;
  private beating: Promise<void> = Promise.resolve();

  /**
   * The manager's own heartbeat: no workers, but its blocks, so `ferry endpoint status` shows them
   * and an endpoint scaled to zero still reads online. The last one (`stopped`) says it has gone.
   */
  private beat(stopped = false): Promise<void> {
    const every = this.opts.heartbeatMs ?? 10_000;
    if (!stopped && Date.now() - this.lastBeat < every) return this.beating;
    this.lastBeat = Date.now();
    const s = this.status();
    const body = {
      ...workerlessBeat(`manager-${hostname()}-${process.pid}`, every, stopped),
      // The API keeps a heartbeat small: live blocks and the last few that ended.
      manager: { provider: s.provider, blocks: s.blocks.slice(-200) },
    };
    const agentBeats = this.relay ? this.agentBeats(stopped, every) : [];
    // One at a time, so a periodic beat can never land after the goodbye.
    this.beating = this.beating.then(async () => {
      for (const b of [body, ...agentBeats]) await this.sendBeat(b);
    });
    return this.beating;
  }

  /** Agents the manager has beaten for (relay mode), so each gets its goodbye once. */
  private readonly beatenAgents = new Set<string>();

  /**
   * Relay mode: the agents cannot reach the API, so the manager beats for each of them with its
   * latest report (workers, idle, running), and says goodbye for agents that stopped or whose
   * block ended.
   */
  private agentBeats(stopped: boolean, every: number): Record<string, unknown>[] {
    const beats: Record<string, unknown>[] = [];
    const alive = new Set<string>();
    const runtimes = this.runtimes;
    for (const b of this.live()) {
      for (const r of b.agents.values()) {
        if (r.stopped || stopped) continue;
        alive.add(r.worker_id);
        this.beatenAgents.add(r.worker_id);
        beats.push({
          worker_id: r.worker_id.slice(0, 128),
          workers: r.workers,
          idle_workers: r.idle_workers,
          running: r.running,
          runtimes: r.runtimes ?? runtimes,
          agent_version: AGENT_VERSION,
          heartbeat_ms: every,
          stopped: false,
        });
      }
    }
    for (const id of [...this.beatenAgents]) {
      if (alive.has(id)) continue;
      this.beatenAgents.delete(id);
      beats.push(workerlessBeat(id, every, true));
    }
    return beats;
  }

  private async sendBeat(body: Record<string, unknown>): Promise<void> {
    const w = this.opts.worker;
    try {
      const res = await fetch(`${w.api_url.replace(/\/+$/, '')}/v1/endpoints/${w.endpoint_id}/heartbeat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${w.endpoint_secret}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      if (!res.ok) this.log('heartbeat refused', { status: res.status, worker: body.worker_id });
    } catch (err) {
      this.log('heartbeat failed', { error: String(err) });
    }
  }

  private writeStatus(): void {
    void this.beat();
    if (!this.opts.statusFile) return;
    const tmp = `${this.opts.statusFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.status(), null, 2) + '\n');
    renameSync(tmp, this.opts.statusFile);
  }

  /**
   * SIGTERM: no more scaling; pending jobs are cancelled, running blocks drain (their agents finish
   * what they hold, hand back what they have not started, and exit, which ends the job) and their
   * jobs are cancelled if they are still there after `graceMs`.
   */
  async stop(graceMs = this.opts.drainTimeoutMs ?? 90_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearTimeout(this.timer);
    await this.ticking;
    for (const b of this.live()) {
      const pending = b.state === 'pending';
      this.setDraining(b, 'manager stopping');
      b.drainRequested = true;
      // A job that has not started holds no task: it goes at once.
      if (pending) await this.opts.provider.cancel(b.jobId).catch((err) => this.log('scancel failed', { error: String(err) }));
    }
    const deadline = Date.now() + graceMs;
    while (this.blocks.size && Date.now() < deadline) {
      await sleep(1_000);
      const statuses = await this.opts.provider.status(this.live().map((b) => b.jobId)).catch(() => new Map<string, JobStatus>());
      for (const b of this.live()) this.applyJobStatus(b, statuses.get(b.jobId), Date.now());
      this.writeStatus();
    }
    for (const b of this.live()) {
      this.log(`block ${b.blockId} still there after ${graceMs} ms; cancelling job ${b.jobId}`);
      await this.opts.provider.cancel(b.jobId).catch(() => undefined);
    }
    this.writeStatus();
    await this.beat(true);
    await this.opts.provider.close?.();
    await this.relay?.stop();
    this.keeper.stop();
    this.sqs?.destroy();
    this.s3?.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.log('endpoint manager stopped');
  }
}

/**
 * This node running block-agent: its bundle beside this one in an installed CLI, else the source
 * through tsx's require hook. Absolute paths, readable on a shared filesystem.
 */
export function defaultAgentCommand(): string[] {
  if (fromBundle) return [process.execPath, join(__dirname, 'block-agent.js')];
  return [process.execPath, '--require', require.resolve('tsx/cjs'), join(__dirname, 'block-agent.ts')];
}

/** A heartbeat that reports no workers: the manager's own, or the goodbye of an agent that is gone. */
const workerlessBeat = (workerId: string, heartbeatMs: number, stopped: boolean) => ({
  worker_id: workerId.slice(0, 128),
  workers: 0,
  idle_workers: 0,
  running: 0,
  runtimes: [] as string[],
  agent_version: AGENT_VERSION,
  heartbeat_ms: heartbeatMs,
  stopped,
});
