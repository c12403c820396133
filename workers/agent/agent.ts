import { randomUUID } from 'node:crypto';
import { availableParallelism, hostname } from 'node:os';
import { DeleteMessageCommand, ReceiveMessageCommand, type Message, type SQSClient } from '@aws-sdk/client-sqs';
import type { S3Client } from '@aws-sdk/client-s3';
import { exceptionKey, readPayload, resultKey, storePayload } from '../core/bucket';
import { makeS3Client, makeSqsClient, sdkCallCounts } from '../core/clients';
import type { WorkerGrant } from '../core/credentials';
import { parseBody, taskMessageSchema, type ResultMessage, type TaskInMessage, type TaskMessage } from '../core/messages';
import { sendBatches } from '../core/queues/batch-send';
import type { Envelope } from '../core/payload';
import { changeVisibility, deleteMessages, TASK_VISIBILITY_SECONDS } from '../core/queues/endpoint-queue';
import { backoffSleep, GrantKeeper } from './grant';
import { resolveIsolation, type Isolation } from './runtime/isolation';
import { taskLimitSettingsFromEnv, type TaskLimitSettings } from './runtime/limits';
import { describeMpiLauncher, resolveMpiLauncher, type MpiLauncher } from './runtime/mpi';
import { fitOutput } from './runtime/output';
import { RuntimePool, type RunOutcome } from './runtime/pool';
import { PROCESS_RUNTIMES, type Codec, type ProcessRuntime } from '../core/runtimes';
import { ShellRunner } from './runtime/shell';

export const AGENT_VERSION = '0.1.0';

export interface AgentOptions {
  apiUrl: string;
  endpointId: string;
  endpointSecret: string;
  /**
   * Where tasks come from and results go; default the direct one (SQS, S3 and the Ferry API with
   * vended credentials). An endpoint manager's relay mode passes its relay client.
   */
  source?: TaskSource;
  /** Processes per runtime; default one per core. */
  poolSize?: number;
  runtimes?: ProcessRuntime[];
  /** Tasks run at once; default the pool size. */
  slots?: number;
  workerId?: string;
  heartbeatMs?: number;
  /** How long SIGTERM waits for running tasks before it gives up on them. */
  graceMs?: number;
  waitSeconds?: number;
  /** Seconds a received task stays invisible between the agent's extensions; default 60. */
  visibilitySeconds?: number;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
  /** How users' tasks are kept apart; default: resolved from isolation "auto". */
  isolation?: Isolation;
  /** Runtime processes of all users at most; default 2 × pool size × runtimes. */
  maxProcesses?: number;
  /** A non-owner user's runtime process idle this long is stopped; default 60 s. */
  idleMs?: number;
  /** The python command; default python3. */
  pythonCommand?: string;
  /** Memory, pids and output caps of tasks, and how they are enforced; default: from FERRY_TASK_* (runtime/limits.ts). */
  taskLimits?: TaskLimitSettings;
  /** How mpi tasks' ranks start; null: none (mpi tasks fail with MPIUnavailable); default: resolved from mpi_launcher "auto". */
  mpiLauncher?: MpiLauncher | null;
  /** Told how many task messages the agent holds whenever that changes (ECS scale-in protection: workers/ecs-protection.ts). */
  onHeld?: (count: number) => void;
  /**
   * A task still running this long after it started gets a separate "started" report; one that
   * finishes sooner sends only its result, carrying `started_at`. Default 30 ms; 0: always report
   * "started" at once (as agents before this setting did).
   */
  startedReportDelayMs?: number;
}

/** See AgentOptions.startedReportDelayMs: short tasks then cost one report (and one table write) instead of two. */
export const STARTED_REPORT_DELAY_MS = 30;

// SQS: a result message is at most 256 KiB; tracebacks beyond this are cut.
const MAX_TRACEBACK = 64 * 1024;
const MAX_MESSAGE = 16 * 1024;
// SQS: 256 KiB per message; a report's task output is cut until the whole report fits in this.
const REPORT_BUDGET = 250 * 1024;
// SQS: at most 10 messages per ReceiveMessage.
const MAX_RECEIVE = 10;

/** A result message less what the agent adds to every one. */
type ReportBody = ResultMessage extends infer M
  ? M extends ResultMessage
    ? Omit<M, 'v' | 'endpoint_id' | 'worker_id' | 'at'>
    : never
  : never;

/** A received message: one function's bundle of tasks, deleted once every task is reported. */
interface Bundle {
  msg: TaskMessage;
  receipt: string;
  remaining: number;
  started: number;
  /** A report could not be sent: the message must come back, so it is not deleted. */
  broken: boolean;
}

interface QueuedTask {
  bundle: Bundle;
  task: TaskInMessage;
}

/** A received task message: its body (JSON of a TaskMessage) and the handle that deletes it. */
export interface ReceivedMessage {
  id?: string;
  receipt: string;
  body: string | undefined;
}

/** What a source knows once it has started. */
export interface SourceInfo {
  endpointId: string;
  /** The endpoint's owner: their runtimes start at once. */
  ownerId: string;
}

/**
 * The agent's queue and result transport. The agent owns lanes, the backlog and the rule of
 * at-least-once (a message is finished only after every result of it was sent); a source moves
 * messages, reports and payloads.
 * - direct: SQS, S3 and the Ferry API with vended credentials (`DirectTaskSource`);
 * - relay: the endpoint manager over the cluster network (workers/manager/relay-client.ts).
 */
export interface TaskSource {
  start(onFatal: (err: Error) => void): Promise<SourceInfo>;
  /** Up to `max` (≤ 10) messages, invisible to others for `visibilitySeconds`; waits up to `waitSeconds` for one. */
  receive(max: number, visibilitySeconds: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedMessage[]>;
  /** Keep these messages invisible another `seconds`. */
  extend(receipts: string[], seconds: number): Promise<void>;
  /** Hand these messages back at once (visibility 0). */
  release(receipts: string[]): Promise<void>;
  /** Delete a message whose every result was sent; rejects if it could not. */
  finish(receipt: string): Promise<void>;
  /** Delete a message nothing can run (malformed), best effort. */
  drop(receipt: string): Promise<void>;
  /** Send one report to the results queue; resolves only once it is there. */
  send(report: string): Promise<void>;
  /** A task's argument bytes, verified against their envelope. */
  readArgs(env: Envelope): Promise<Buffer>;
  /** An envelope for a result's or exception's bytes: inline when small, else stored first. */
  storePayload(bytes: Uint8Array, codec: Codec, kind: 'result' | 'exception', taskId: string): Promise<Envelope>;
  /** Tell the API this agent is alive; 'revoked' when the secret was refused. */
  heartbeat(body: Record<string, unknown>): Promise<'ok' | 'revoked'>;
  /**
   * The endpoint queue is gone: ask the API for a fresh grant, which makes the queue again while the
   * endpoint exists (rejects when the endpoint or its secret is gone). Absent: the agent stops.
   */
  recoverQueue?(): Promise<void>;
  stop(): Promise<void>;
}

/** The direct source: the agent itself long-polls SQS, reads and writes S3 and beats to the API. */
export class DirectTaskSource implements TaskSource {
  private keeper?: GrantKeeper;
  private sqs!: SQSClient;
  private s3!: S3Client;
  private grant!: WorkerGrant;
  /** Reports to the results queue (SendMessageBatch). */
  private outbox!: Batcher<string>;
  /** Finished task messages (DeleteMessageBatch). */
  private finished!: Batcher<string>;

  constructor(
    private readonly apiUrl: string,
    private readonly endpointId: string,
    private readonly secret: string,
    private readonly log: (msg: string, extra?: Record<string, unknown>) => void,
  ) {}

  async recoverQueue(): Promise<void> {
    await this.keeper!.renew();
  }

  async start(onFatal: (err: Error) => void): Promise<SourceInfo> {
    this.keeper = new GrantKeeper(this.apiUrl, this.endpointId, this.secret, onFatal, this.log);
    this.grant = await this.keeper.start();
    const client = { region: this.grant.region, credentials: this.keeper.provider };
    this.sqs = makeSqsClient(client);
    this.s3 = makeS3Client(client);
    this.outbox = new Batcher(async (bodies) => {
      const failed = await sendBatches(
        this.sqs,
        this.grant.results_queue_url,
        bodies.map((body, i) => ({ id: String(i), body })),
      );
      return new Set(failed.map(Number));
    });
    this.finished = new Batcher((receipts) => deleteMessages(this.sqs, this.grant.queue_url, receipts));
    return { endpointId: this.endpointId, ownerId: this.grant.owner_id };
  }

  async receive(max: number, visibilitySeconds: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedMessage[]> {
    const out = await this.sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: this.grant.queue_url,
        MaxNumberOfMessages: max,
        VisibilityTimeout: visibilitySeconds,
        WaitTimeSeconds: waitSeconds,
      }),
      { abortSignal: signal },
    );
    return (out.Messages ?? []).map((m: Message) => ({ id: m.MessageId, receipt: m.ReceiptHandle!, body: m.Body }));
  }

  async extend(receipts: string[], seconds: number): Promise<void> {
    await changeVisibility(this.sqs, this.grant.queue_url, receipts, seconds, (err) =>
      this.log('could not extend visibility', { error: String(err) }),
    );
  }

  async release(receipts: string[]): Promise<void> {
    await changeVisibility(this.sqs, this.grant.queue_url, receipts, 0, (err) =>
      this.log('could not hand messages back', { error: String(err) }),
    );
  }

  finish(receipt: string): Promise<void> {
    return this.finished.add(receipt);
  }

  async drop(receipt: string): Promise<void> {
    await this.sqs.send(new DeleteMessageCommand({ QueueUrl: this.grant.queue_url, ReceiptHandle: receipt })).catch(() => undefined);
  }

  send(report: string): Promise<void> {
    return this.outbox.add(report);
  }

  readArgs(env: Envelope): Promise<Buffer> {
    return readPayload(env, this.s3, this.grant.bucket);
  }

  storePayload(bytes: Uint8Array, codec: Codec, kind: 'result' | 'exception', taskId: string): Promise<Envelope> {
    const key = kind === 'result' ? resultKey(this.endpointId, taskId) : exceptionKey(this.endpointId, taskId);
    return storePayload(bytes, codec, key, { s3: this.s3, bucket: this.grant.bucket, inlineLimit: this.grant.inline_limit });
  }

  async heartbeat(body: Record<string, unknown>): Promise<'ok' | 'revoked'> {
    try {
      const res = await fetch(`${this.apiUrl}/v1/endpoints/${this.endpointId}/heartbeat`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.secret}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
      if (res.status === 401) return 'revoked';
      if (!res.ok) this.log('heartbeat refused', { status: res.status });
    } catch (err) {
      this.log('heartbeat failed', { error: String(err) });
    }
    return 'ok';
  }

  async stop(): Promise<void> {
    this.keeper?.stop();
    this.sqs?.destroy();
    this.s3?.destroy();
  }
}

/**
 * The worker agent: long-polls its endpoint's queue with vended, queue-scoped credentials,
 * runs each task in the runtime pool, keeps the message invisible while its tasks run, sends
 * results to the results queue and only then deletes the task message (at-least-once:
 * a crash anywhere before the delete lets another worker run the tasks again).
 */
export class WorkerAgent {
  readonly workerId: string;
  private readonly log: NonNullable<AgentOptions['log']>;
  private readonly source: TaskSource;
  private endpointId: string;
  private pool?: RuntimePool;
  /** Shell and mpi tasks: run by the agent through the pool, with no runtime process. */
  private shell?: ShellRunner;
  private readonly mpi: MpiLauncher | undefined;
  private readonly isolation: Isolation;
  private readonly slots: number;
  private readonly bundles = new Set<Bundle>();
  private backlog: QueuedTask[] = [];
  private active = 0;
  private tasksPerMessage = 1;
  private readonly lanes: Promise<void>[] = [];
  private readonly deleting = new Set<Promise<void>>();
  private readonly reporting = new Set<Promise<void>>();
  private stopping = false;
  private readonly receiveAbort = new AbortController();
  private loopDone?: Promise<void>;
  private heartbeatTimer?: NodeJS.Timeout;
  private beating: Promise<void> = Promise.resolve();
  private visibilityTimer?: NodeJS.Timeout;
  /** Wakes the receive loop when a lane frees. */
  private wake?: () => void;
  /** Lanes waiting for the backlog to fill. */
  private readonly laneWaiters: (() => void)[] = [];
  private fatal?: Error;
  private fatalHandler?: (err: Error) => void;
  /** When the agent last had its endpoint queue made again (recoverQueue). */
  private queueRecoveredAt = 0;
  completed = 0;

  constructor(private readonly opts: AgentOptions) {
    this.workerId = opts.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.log =
      opts.log ?? ((msg, extra) => console.error(JSON.stringify({ at: new Date().toISOString(), worker: this.workerId, msg, ...extra })));
    this.source = opts.source ?? new DirectTaskSource(opts.apiUrl, opts.endpointId, opts.endpointSecret, this.log);
    this.endpointId = opts.endpointId;
    this.isolation = opts.isolation ?? resolveIsolation({}, { warn: (line) => console.error(line) });
    this.slots = Math.max(1, opts.slots ?? opts.poolSize ?? availableParallelism());
    this.mpi = opts.mpiLauncher === null ? undefined : (opts.mpiLauncher ?? resolveMpiLauncher('auto'));
  }

  /** Called when the agent must stop for good (its secret was revoked). */
  onFatal(fn: (err: Error) => void): void {
    this.fatalHandler = fn;
  }

  async start(): Promise<void> {
    const info = await this.source.start((err) => this.die(err));
    this.endpointId = info.endpointId;
    // The owner is known from the grant: their runtimes start now, so their first task pays no start.
    this.pool = new RuntimePool({
      size: this.opts.poolSize,
      runtimes: this.opts.runtimes,
      owner: info.ownerId,
      isolation: this.isolation,
      maxProcesses: this.opts.maxProcesses,
      idleMs: this.opts.idleMs,
      pythonCommand: this.opts.pythonCommand,
      ...this.taskLimits(),
    });
    await this.pool.start();
    this.shell = new ShellRunner(this.pool, this.mpi);
    const limits = this.pool.limitsInfo();
    this.log('agent started', {
      endpoint: this.endpointId,
      slots: this.slots,
      runtimes: this.runtimes,
      mpi_launcher: describeMpiLauncher(this.mpi),
      isolation: this.isolation.describe(),
      max_processes: this.pool.stats().maxProcesses,
      task_limits: limits && {
        enforced_by: limits.describe,
        memory_mb: limits.memoryMb,
        pids_max: limits.pidsMax,
        output_bytes: limits.outputBytes,
      },
    });
    await this.beat();
    this.heartbeatTimer = setInterval(() => void this.beat(), this.heartbeatMs);
    // Extend every held message's invisibility at half its timeout, well before it lapses.
    this.visibilityTimer = setInterval(() => void this.extendVisibility(), (this.visibility * 1000) / 2);
    for (let i = 0; i < this.slots; i++) this.lanes.push(this.lane());
    this.loopDone = this.loop();
  }

  /** Receives while lanes have fewer than one task each waiting; never hoards the queue. */
  private async loop(): Promise<void> {
    let errors = 0;
    while (!this.stopping) {
      // Prefetch: keep up to one task per lane waiting, so a lane that frees finds work at once.
      const idle = 2 * this.slots - this.active - this.backlog.length;
      if (idle <= 0) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      let messages: ReceivedMessage[];
      try {
        const max = Math.min(MAX_RECEIVE, Math.max(1, Math.floor(idle / this.tasksPerMessage)));
        messages = await this.source.receive(max, this.visibility, this.opts.waitSeconds ?? 20, this.receiveAbort.signal);
        errors = 0;
      } catch (err) {
        if (this.stopping) break;
        if ((err as { name?: string }).name === 'QueueDoesNotExist') {
          // Deleted outside Ferry (or by a stack teardown): the credentials call makes it again, once a
          // minute at most; an endpoint that is gone refuses the secret, and the agent stops.
          const recovered = Date.now() - this.queueRecoveredAt > 60_000 && (await this.recoverQueue());
          if (!recovered) return this.die(new Error('the endpoint queue no longer exists (endpoint deleted?)'));
          continue;
        }
        this.log('receive failed; backing off', { error: String(err) });
        await backoffSleep(errors++);
        continue;
      }
      if (this.stopping) {
        await this.release(messages.map((m) => m.receipt));
        break;
      }
      for (const m of messages) await this.accept(m);
      this.wakeLanes();
    }
  }

  private async accept(m: ReceivedMessage): Promise<void> {
    const parsed = taskMessageSchema.safeParse(parseBody(m.body));
    if (!parsed.success) {
      // Nothing can run it and no task id can be trusted: drop it rather than let it cycle to the DLQ.
      this.log('dropping malformed task message', { messageId: m.id });
      await this.source.drop(m.receipt);
      return;
    }
    const bundle: Bundle = { msg: parsed.data, receipt: m.receipt, remaining: parsed.data.tasks.length, started: 0, broken: false };
    this.tasksPerMessage = (this.tasksPerMessage + bundle.remaining) / 2;
    this.bundles.add(bundle);
    this.opts.onHeld?.(this.bundles.size);
    for (const task of parsed.data.tasks) this.backlog.push({ bundle, task });
  }

  private wakeLanes(): void {
    for (const w of this.laneWaiters.splice(0)) w();
  }

  /** One of `slots` loops that take tasks from the backlog and run them one at a time. */
  private async lane(): Promise<void> {
    for (;;) {
      const next = this.backlog.shift();
      if (!next) {
        if (this.stopping) return;
        await new Promise<void>((r) => this.laneWaiters.push(r));
        continue;
      }
      this.active++;
      let reported: Promise<void>;
      try {
        ({ reported } = await this.runTask(next));
      } finally {
        this.active--;
        this.wake?.();
      }
      // The lane takes its next task while this one's result travels.
      this.reporting.add(reported);
      void reported.finally(() => this.reporting.delete(reported));
    }
  }

  /** Runs a task; resolves once it has run, holding the promise of its reports being sent. */
  private async runTask(q: QueuedTask): Promise<{ reported: Promise<void> }> {
    q.bundle.started++;
    const startedAt = new Date().toISOString();
    // A task still running after the delay gets its own "started" report, sent while it runs (the
    // results handler orders the two); a quicker one folds its start into its result (started_at).
    let started: Promise<void> | undefined;
    const sendStarted = () => {
      started = this.source.send(this.report({ kind: 'started', task_id: q.task.task_id }, startedAt));
      started.catch(() => undefined);
    };
    const delay = this.opts.startedReportDelayMs ?? STARTED_REPORT_DELAY_MS;
    let timer: NodeJS.Timeout | undefined;
    if (delay <= 0) sendStarted();
    else timer = setTimeout(sendStarted, delay).unref();
    let outcome: RunOutcome;
    try {
      outcome = await this.run(q.bundle.msg, q.task);
    } finally {
      // Cleared before any result is sent: a "started" never follows its task's result.
      clearTimeout(timer);
    }
    return { reported: this.reportTask(q, started, startedAt, outcome) };
  }

  private async reportTask(
    { bundle, task }: QueuedTask,
    started: Promise<void> | undefined,
    startedAt: string,
    outcome: RunOutcome,
  ): Promise<void> {
    try {
      // A result goes only after its task's "started" is on the queue, if one was sent.
      if (started) await started;
      const body = await this.resultOf(task, outcome, started ? undefined : startedAt);
      await this.source.send(this.report(body));
      this.completed++;
    } catch (err) {
      bundle.broken = true;
      this.log('task not reported; it will be delivered again', { task: task.task_id, error: String(err) });
    }
    if (--bundle.remaining > 0) return;
    this.bundles.delete(bundle);
    this.opts.onHeld?.(this.bundles.size);
    // Only once every result is safely on the results queue may the task message go.
    if (!bundle.broken) {
      // The lane moves on; stop() waits for deletes still in flight.
      const deleted = this.source
        .finish(bundle.receipt)
        .catch((err) => this.log('could not delete a finished message; its tasks will run again', { error: String(err) }));
      this.deleting.add(deleted);
      void deleted.finally(() => this.deleting.delete(deleted));
    }
  }

  private async run(msg: TaskMessage, task: TaskInMessage): Promise<RunOutcome> {
    let args: Buffer;
    try {
      args = await this.source.readArgs(task.args);
    } catch (err) {
      return { ok: false, error: { type: 'ArgumentsUnavailable', message: String((err as Error).message ?? err), traceback: '' } };
    }
    const runtime = msg.function.runtime;
    if (runtime === 'shell' || runtime === 'mpi') {
      return this.shell!.run({
        taskId: task.task_id,
        user: msg.user_id,
        runtime,
        source: msg.function.source,
        shell: msg.function.shell,
        args,
        codec: task.args.codec,
        walltimeMs: task.walltime_ms,
        memoryMb: task.memory_mb,
        resourceSpecification: task.resource_specification,
      });
    }
    return this.pool!.run({
      taskId: task.task_id,
      user: msg.user_id,
      runtime,
      source: msg.function.source,
      entrypoint: msg.function.entrypoint,
      args,
      codec: task.args.codec,
      walltimeMs: task.walltime_ms,
      memoryMb: task.memory_mb,
    });
  }

  /** What this agent runs: its runtime processes' languages, shell commands, and mpi when it has a launcher. */
  get runtimes(): string[] {
    return [...(this.opts.runtimes ?? PROCESS_RUNTIMES), 'shell', ...(this.mpi ? ['mpi'] : [])];
  }

  private taskLimits(): TaskLimitSettings {
    const t = this.opts.taskLimits ?? taskLimitSettingsFromEnv();
    return { taskMemoryMb: t.taskMemoryMb, taskPidsMax: t.taskPidsMax, taskOutputBytes: t.taskOutputBytes, limits: t.limits };
  }

  /** The report with the task's output, cut further if need be so the message fits SQS. */
  private async resultOf(msg: TaskInMessage, outcome: RunOutcome, startedAt?: string): Promise<ReportBody> {
    const body = await this.outcomeReport(msg, outcome);
    if (startedAt && body.kind !== 'started') body.started_at = startedAt;
    if (!outcome.output) return body;
    type WithOutput = ReportBody & { output?: RunOutcome['output'] };
    return fitOutput<WithOutput>({ ...body, output: outcome.output }, REPORT_BUDGET, (r) => Buffer.byteLength(this.report(r)));
  }

  private async outcomeReport(msg: TaskInMessage, outcome: RunOutcome): Promise<ReportBody> {
    if (outcome.ok) {
      const result = await this.source.storePayload(outcome.result, outcome.codec, 'result', msg.task_id);
      return { kind: 'success', task_id: msg.task_id, result };
    }
    let payload: Envelope | undefined;
    if (outcome.payload) payload = await this.source.storePayload(outcome.payload.data, outcome.payload.codec, 'exception', msg.task_id);
    const e = outcome.error;
    return {
      kind: 'failed',
      task_id: msg.task_id,
      exception: {
        type: e.type.slice(0, 1024),
        message: clip(e.message, MAX_MESSAGE),
        traceback: clip(e.traceback, MAX_TRACEBACK),
        payload,
      },
    };
  }

  /** `at`: when it happened; a delayed "started" report carries the task's real start. */
  private report(body: ReportBody, at = new Date().toISOString()): string {
    return JSON.stringify({ v: 1, endpoint_id: this.endpointId, worker_id: this.workerId, at, ...body });
  }

  private async extendVisibility(): Promise<void> {
    const receipts = [...this.bundles].map((b) => b.receipt);
    if (receipts.length)
      await this.source.extend(receipts, this.visibility).catch((err) => this.log('could not extend visibility', { error: String(err) }));
  }

  /** Hand messages back at once (visibility 0), so another worker can take them. */
  private async release(receipts: string[]): Promise<void> {
    if (receipts.length)
      await this.source.release(receipts).catch((err) => this.log('could not hand messages back', { error: String(err) }));
  }

  private get visibility(): number {
    return this.opts.visibilitySeconds ?? TASK_VISIBILITY_SECONDS;
  }

  status() {
    return { workers: this.slots, idle_workers: Math.max(0, this.slots - this.active), running: this.active };
  }

  private get heartbeatMs(): number {
    return this.opts.heartbeatMs ?? 30_000;
  }

  /** One heartbeat at a time: a periodic one still in flight must not land after the last one and bring the agent back. */
  private beat(stopped = false): Promise<void> {
    this.beating = this.beating.then(() => this.sendBeat(stopped));
    return this.beating;
  }

  private async sendBeat(stopped: boolean): Promise<void> {
    // heartbeat_ms: the API reads this agent as gone once two beats are missed.
    const body = {
      worker_id: this.workerId,
      ...this.status(),
      runtimes: this.runtimes,
      agent_version: AGENT_VERSION,
      heartbeat_ms: this.heartbeatMs,
      stopped,
    };
    if ((await this.source.heartbeat(body)) === 'revoked') this.die(new Error('the API refused the endpoint secret (revoked?)'));
  }

  /** The queue is gone: true once the API has made it again (source.recoverQueue). */
  private async recoverQueue(): Promise<boolean> {
    if (!this.source.recoverQueue) return false;
    this.queueRecoveredAt = Date.now();
    try {
      await this.source.recoverQueue();
      this.log('the endpoint queue was gone; the API made it again', {});
      return true;
    } catch (err) {
      this.log('the endpoint queue is gone and could not be made again', { error: String(err) });
      return false;
    }
  }

  private die(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.log('fatal', { error: err.message });
    this.fatalHandler?.(err);
  }

  /**
   * Graceful stop: receive no more, let running tasks finish within the grace period, hand back
   * anything unstarted, say goodbye in a last heartbeat, stop the runtimes.
   */
  async stop(graceMs = this.opts.graceMs ?? 30_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.receiveAbort.abort();
    this.wake?.();
    await this.loopDone;
    // Messages none of whose tasks has started go back at once; a started bundle is finished.
    const unstarted = [...this.bundles].filter((b) => b.started === 0);
    this.backlog = this.backlog.filter((q) => q.bundle.started > 0);
    for (const b of unstarted) this.bundles.delete(b);
    this.opts.onHeld?.(this.bundles.size);
    await this.release(unstarted.map((b) => b.receipt));
    this.wakeLanes();
    const drained = await Promise.race([
      Promise.allSettled(this.lanes).then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), graceMs).unref()),
    ]);
    if (!drained) {
      this.log('grace period over; unfinished tasks will be delivered again', { messages: this.bundles.size });
      await this.release([...this.bundles].map((b) => b.receipt));
    }
    await Promise.allSettled([...this.reporting]);
    await Promise.allSettled([...this.deleting]);
    clearInterval(this.heartbeatTimer);
    clearInterval(this.visibilityTimer);
    if (!this.fatal) await this.beat(true);
    await this.source.stop();
    await this.pool?.close();
    this.log('agent stopped', { completed: this.completed, aws_calls: Object.fromEntries(sdkCallCounts) });
  }
}

/**
 * Collects what the lanes produce and sends it in as few calls as it can (SQS batch calls take up
 * to 10 entries): a lone item leaves on the next turn of the event loop; while two sends are under
 * way what arrives waits for one of them to finish and then leaves together. A busy agent so pays
 * about one call per ten tasks without adding a delay to a quiet one, and one slow send does not
 * hold the rest.
 */
export class Batcher<T> {
  private pending: { item: T; done: (err?: Error) => void }[] = [];
  private scheduled = false;
  private sending = 0;
  private static readonly MAX_SENDING = 2;

  /** `flush` sends the items and returns the indexes of those that failed. */
  constructor(private readonly flushItems: (items: T[]) => Promise<Set<number>>) {}

  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ item, done: (err) => (err ? reject(err) : resolve()) });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.sending >= Batcher.MAX_SENDING || !this.pending.length) return;
    this.scheduled = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    this.sending++;
    const batch = this.pending.splice(0);
    try {
      const failed = await this.flushItems(batch.map((p) => p.item)).catch(() => new Set(batch.map((_, i) => i)));
      batch.forEach((p, i) => p.done(failed.has(i) ? new Error('SQS did not take it') : undefined));
    } finally {
      this.sending--;
      this.schedule();
    }
  }
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}\n… (${s.length - n} more characters cut)` : s);
