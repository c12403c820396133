import { randomUUID } from 'node:crypto';
import { availableParallelism, hostname } from 'node:os';
import { sdkCallCounts } from '../../core/clients';
import { DEFAULT_HEARTBEAT_MS, type TaskInMessage, type TaskMessage } from '../../core/messages';
import { TASK_VISIBILITY_SECONDS } from '../../core/queues/endpoint-queue';
import { isCommandRuntime, PROCESS_RUNTIMES, type ProcessRuntime } from '../../core/runtimes';
import { resolveIsolation, type Isolation } from '../runtime/isolation';
import { taskLimitSettingsFromEnv, type TaskLimitSettings } from '../runtime/limits';
import { describeMpiLauncher, resolveMpiLauncher, type MpiLauncher } from '../runtime/mpi';
import { RuntimePool, type RunOutcome } from '../runtime/pool';
import { ShellRunner } from '../runtime/shell';
import { Heartbeat } from './heartbeat';
import { HeldMessages, type AgentLog } from './held-messages';
import { ReceiveLoop } from './receive-loop';
import { ResultReporter } from './result-reporter';
import { TaskSlots } from './task-slots';
import { DirectTaskSource, type TaskSource } from './task-source';

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

/**
 * The worker agent: long-polls its endpoint's queue with vended, queue-scoped credentials,
 * runs each task in the runtime pool, keeps the message invisible while its tasks run, sends
 * results to the results queue and only then deletes the task message (at-least-once:
 * a crash anywhere before the delete lets another worker run the tasks again).
 *
 * Its parts, made at start: the receive loop (receive-loop.ts) holds messages (held-messages.ts)
 * and queues their tasks for the task slots (task-slots.ts), which run them here (pool or shell)
 * and hand the outcomes to the result reporter (result-reporter.ts); heartbeats (heartbeat.ts).
 */
export class WorkerAgent {
  readonly workerId: string;
  private readonly log: AgentLog;
  private readonly source: TaskSource;
  private readonly isolation: Isolation;
  private readonly mpi: MpiLauncher | undefined;
  private readonly slotCount: number;
  private pool?: RuntimePool;
  /** Shell and mpi tasks: run by the agent through the pool, with no runtime process. */
  private shell?: ShellRunner;
  private readonly held: HeldMessages;
  private readonly heartbeat: Heartbeat;
  private slots?: TaskSlots;
  private receiver?: ReceiveLoop;
  private reporter?: ResultReporter;
  private stopping = false;
  private fatal?: Error;
  private fatalHandler?: (err: Error) => void;

  constructor(private readonly opts: AgentOptions) {
    this.workerId = opts.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.log =
      opts.log ?? ((msg, extra) => console.error(JSON.stringify({ at: new Date().toISOString(), worker: this.workerId, msg, ...extra })));
    this.source = opts.source ?? new DirectTaskSource(opts.apiUrl, opts.endpointId, opts.endpointSecret, this.log);
    this.isolation = opts.isolation ?? resolveIsolation({}, { warn: (line) => console.error(line) });
    this.slotCount = Math.max(1, opts.slots ?? opts.poolSize ?? availableParallelism());
    this.mpi = opts.mpiLauncher === null ? undefined : (opts.mpiLauncher ?? resolveMpiLauncher('auto'));
    this.held = new HeldMessages(this.source, this.visibilitySeconds, this.log, opts.onHeld);
    this.heartbeat = new Heartbeat(
      this.source,
      opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      () => ({ worker_id: this.workerId, ...this.status(), runtimes: this.runtimes, agent_version: AGENT_VERSION }),
      () => this.die(new Error('the API refused the endpoint secret (revoked?)')),
    );
  }

  private get visibilitySeconds(): number {
    return this.opts.visibilitySeconds ?? TASK_VISIBILITY_SECONDS;
  }

  /** Called when the agent must stop for good (its secret was revoked). */
  onFatal(fn: (err: Error) => void): void {
    this.fatalHandler = fn;
  }

  /** Tasks whose result was sent. */
  get completed(): number {
    return this.reporter?.completed ?? 0;
  }

  async start(): Promise<void> {
    const info = await this.source.start((err) => this.die(err));
    // A stop while the grant was fetched (it retries): no runtime starts that nothing would close.
    if (this.stopping) return;
    const endpointId = info.endpointId;
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
      endpoint: endpointId,
      slots: this.slotCount,
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
    this.reporter = new ResultReporter(
      this.source,
      this.held,
      { endpointId, workerId: this.workerId },
      this.opts.startedReportDelayMs ?? STARTED_REPORT_DELAY_MS,
      this.log,
    );
    this.slots = new TaskSlots(this.slotCount, (msg, task) => this.run(msg, task), this.reporter);
    this.receiver = new ReceiveLoop(this.source, this.slots, this.held, {
      visibilitySeconds: this.visibilitySeconds,
      waitSeconds: this.opts.waitSeconds ?? 20,
      log: this.log,
      onFatal: (err) => this.die(err),
    });
    // A stop that came while the runtimes started: no beat may follow its goodbye, and nothing is received.
    if (this.stopping) return;
    await this.heartbeat.start();
    if (this.stopping) return;
    this.held.startExtending();
    this.slots.start();
    this.receiver.start();
  }

  /** Runs one task: shell and mpi through the shell runner, node and python in the runtime pool. */
  private async run(msg: TaskMessage, task: TaskInMessage): Promise<RunOutcome> {
    let args: Buffer;
    try {
      args = await this.source.readArgs(task.args);
    } catch (err) {
      return { ok: false, error: { type: 'ArgumentsUnavailable', message: String((err as Error).message ?? err), traceback: '' } };
    }
    const runtime = msg.function.runtime;
    if (isCommandRuntime(runtime)) {
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

  status() {
    return this.slots?.status() ?? { workers: this.slotCount, idle_workers: this.slotCount, running: 0 };
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
    this.slots?.stopTaking();
    await this.receiver?.stop();
    // Messages none of whose tasks has started go back at once; a started bundle is finished.
    this.slots?.dropUnstarted();
    await this.held.releaseUnstarted();
    const drained = (await this.slots?.drained(graceMs)) ?? true;
    if (!drained) {
      this.log('grace period over; unfinished tasks will be delivered again', { messages: this.held.size });
      await this.held.releaseAll();
    }
    await this.reporter?.settled();
    await this.held.stop();
    await this.heartbeat.stop(!this.fatal);
    await this.source.stop();
    await this.pool?.close();
    this.log('agent stopped', { completed: this.completed, aws_calls: Object.fromEntries(sdkCallCounts) });
  }
}
