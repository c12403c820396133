import { ChildProcess, fork, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { encodeFrame, Frame, FrameDecoder } from './frames';

/**
 * The isolated runtimes the worker agent runs user functions in: long-lived node and python
 * processes, one task at a time each, so a task pays no process start. A task that crashes or
 * overruns its walltime takes only its own process down; the pool replaces it.
 */

export type RuntimeName = 'node' | 'python';
export type Codec = 'json' | 'node-v8' | 'python-pickle';

export interface RunRequest {
  taskId: string;
  runtime: RuntimeName;
  /** node: a function expression as fn.toString() gives it; python: module source defining the entrypoint. */
  source: string;
  /** python: the function to call (required); node: ignored. */
  entrypoint?: string;
  /** json: UTF-8 {"args": [...], "kwargs": {...}}; node-v8: v8.serialize({args, kwargs}); python-pickle: pickle.dumps((args, kwargs)). */
  args: Buffer;
  codec: Codec;
  walltimeMs: number;
}

export interface TaskError {
  type: string;
  message: string;
  traceback: string;
}

export type RunOutcome =
  | { ok: true; result: Buffer; codec: Codec }
  | { ok: false; error: TaskError; payload?: { data: Buffer; codec: Codec } };

export interface ProcessOutput {
  runtime: RuntimeName;
  pid: number | undefined;
  stream: 'stdout' | 'stderr';
  /** The task the process was running when it printed; output after a task ends may be attributed to none. */
  taskId: string | undefined;
}

export interface RuntimePoolOptions {
  /** Processes per runtime; default os.availableParallelism(). */
  size?: number;
  runtimes?: RuntimeName[];
  /** Default 'python3'. */
  pythonCommand?: string;
  /** Heap cap of each node process (--max-old-space-size), so a runaway task crashes alone; default 1024. */
  nodeMaxOldSpaceMb?: number;
  /** Where the user's stdout and stderr go; default: the pool process's stderr. */
  onOutput?: (chunk: Buffer, from: ProcessOutput) => void;
  /** How long a fresh process may take to say it is ready; default 30 s. */
  startTimeoutMs?: number;
  /** Where node_runner.js and python_runner.py live; default this module's folder (set it when bundling). */
  runnerDir?: string;
}

export type RuntimeStats = { processes: number; busy: number; queued: number };

const RUNTIMES: RuntimeName[] = ['node', 'python'];
const RUNTIME_CODECS: Record<RuntimeName, Codec[]> = { node: ['json', 'node-v8'], python: ['python-pickle', 'json'] };
// A reply written just before the process died may still be in the pipe when 'exit' fires.
const EXIT_DRAIN_MS = 100;
// Consecutive failed starts after which a runtime counts as unavailable and queued tasks fail.
const MAX_START_FAILURES = 3;
// setTimeout holds at most a signed 32-bit delay.
const MAX_TIMER_MS = 0x7fffffff;

const failed = (type: string, message: string, traceback = `${type}: ${message}`): RunOutcome => ({
  ok: false,
  error: { type, message, traceback },
});

interface Job {
  req: RunRequest;
  resolve: (outcome: RunOutcome) => void;
}

type ProcessState = 'starting' | 'idle' | 'busy' | 'gone';

class RuntimeProcess {
  state: ProcessState = 'starting';
  job: Job | undefined;
  jobId = 0;
  timer: NodeJS.Timeout | undefined;
  /** The current task's reply, received but not yet handed out. */
  replied: RunOutcome | undefined;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  stderrTail = '';
  readonly ready: Promise<void>;
  private settleReady!: { resolve: () => void; reject: (err: Error) => void };

  constructor(
    readonly runtime: RuntimeName,
    readonly child: ChildProcess,
  ) {
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => undefined); // observed by whoever awaits it; never an unhandled rejection
  }

  get requests(): Writable {
    return this.child.stdio[3] as Writable;
  }

  get replies(): Readable {
    return this.child.stdio[4] as Readable;
  }

  markReady(): void {
    this.settleReady.resolve();
  }

  markFailedToStart(err: Error): void {
    this.settleReady.reject(err);
  }

  /** SIGKILL the process and, as it leads its own group, whatever the task started. */
  kill(): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      try {
        this.child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
}

class RuntimeLane {
  processes = new Set<RuntimeProcess>();
  queue: Job[] = [];
  startFailures = 0;
  unavailable: string | undefined;

  constructor(readonly runtime: RuntimeName) {}
}

export class RuntimePool {
  private readonly size: number;
  private readonly runtimes: RuntimeName[];
  private readonly pythonCommand: string;
  // The interpreter the first python process reported: respawning through it skips launcher
  // shims (pyenv's costs over a second per start).
  private pythonExecutable: string | undefined;
  private readonly nodeMaxOldSpaceMb: number;
  private readonly onOutput: (chunk: Buffer, from: ProcessOutput) => void;
  private readonly startTimeoutMs: number;
  private readonly runnerDir: string;
  private readonly lanes = new Map<RuntimeName, RuntimeLane>();
  private starting: Promise<void> | undefined;
  private started = false;
  private closed = false;
  private nextJobId = 1;
  // Kills the children even when the agent exits without calling close().
  private readonly killAllOnExit = (): void => {
    for (const lane of this.lanes.values()) for (const proc of lane.processes) proc.kill();
  };

  constructor(opts: RuntimePoolOptions = {}) {
    this.size = Math.max(1, Math.floor(opts.size ?? os.availableParallelism()));
    this.runtimes = [...new Set(opts.runtimes ?? RUNTIMES)];
    for (const runtime of this.runtimes) {
      if (!RUNTIMES.includes(runtime)) throw new Error(`unknown runtime ${JSON.stringify(runtime)}; expected one of ${RUNTIMES.join(', ')}`);
      this.lanes.set(runtime, new RuntimeLane(runtime));
    }
    this.pythonCommand = opts.pythonCommand ?? 'python3';
    this.nodeMaxOldSpaceMb = opts.nodeMaxOldSpaceMb ?? 1024;
    this.onOutput = opts.onOutput ?? ((chunk) => process.stderr.write(chunk));
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.runnerDir = opts.runnerDir ?? __dirname;
  }

  /** Spawns every process up front; rejects (and kills what started) if a runtime cannot start. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('RuntimePool is closed'));
    this.starting ??= this.startAll();
    return this.starting;
  }

  private async startAll(): Promise<void> {
    process.on('exit', this.killAllOnExit);
    const procs: RuntimeProcess[] = [];
    for (const lane of this.lanes.values()) for (let i = 0; i < this.size; i++) procs.push(this.spawn(lane));
    try {
      await Promise.all(procs.map((p) => p.ready));
      this.started = true;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Runs one task; it waits in a FIFO queue while every process of its runtime is busy. Never rejects. */
  run(req: RunRequest): Promise<RunOutcome> {
    const invalid = this.check(req);
    if (invalid) return Promise.resolve(invalid);
    const lane = this.lanes.get(req.runtime)!;
    // Once started, the task joins the queue before run() returns, so call order is queue order.
    if (this.started) return this.enqueue(lane, req);
    return this.start().then(
      () => this.check(req) ?? this.enqueue(lane, req),
      (err: Error) => failed('RuntimeUnavailable', `the runtime pool could not start: ${err.message}`),
    );
  }

  private check(req: RunRequest): RunOutcome | undefined {
    if (this.closed) return failed('PoolClosed', 'the runtime pool is closed');
    const lane = this.lanes.get(req.runtime);
    if (!lane) {
      return failed('UnsupportedRuntime', `this worker runs ${this.runtimes.join(', ') || 'no'} runtimes, not ${JSON.stringify(req.runtime)}`);
    }
    if (!RUNTIME_CODECS[req.runtime].includes(req.codec)) {
      return failed('UnsupportedCodec', `the ${req.runtime} runtime reads ${RUNTIME_CODECS[req.runtime].join(' or ')}, not ${JSON.stringify(req.codec)}`);
    }
    if (req.runtime === 'python' && !req.entrypoint) {
      return failed('InvalidTask', 'a python task needs an entrypoint: the name of the function to call');
    }
    if (lane.unavailable) return failed('RuntimeUnavailable', lane.unavailable);
    return undefined;
  }

  private enqueue(lane: RuntimeLane, req: RunRequest): Promise<RunOutcome> {
    return new Promise<RunOutcome>((resolve) => {
      lane.queue.push({ req, resolve });
      this.dispatch(lane);
    });
  }

  stats(): { runtimes: Record<RuntimeName, RuntimeStats> } {
    const of = (runtime: RuntimeName): RuntimeStats => {
      const lane = this.lanes.get(runtime);
      if (!lane) return { processes: 0, busy: 0, queued: 0 };
      const live = [...lane.processes].filter((p) => p.state !== 'gone');
      return { processes: live.length, busy: live.filter((p) => p.state === 'busy').length, queued: lane.queue.length };
    };
    return { runtimes: { node: of('node'), python: of('python') } };
  }

  /** Kills every child (and what they started); tasks still queued or running fail with PoolClosed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    process.removeListener('exit', this.killAllOnExit);
    const exits: Promise<void>[] = [];
    for (const lane of this.lanes.values()) {
      for (const job of lane.queue.splice(0)) job.resolve(failed('PoolClosed', 'the runtime pool closed before the task started'));
      for (const proc of lane.processes) {
        if (proc.job) this.settle(proc, failed('PoolClosed', 'the runtime pool closed while the task was running'));
        proc.markFailedToStart(new Error('the runtime pool closed'));
        if (proc.child.exitCode === null && proc.child.signalCode === null && proc.child.pid !== undefined) {
          exits.push(new Promise<void>((resolve) => proc.child.once('exit', () => resolve())));
        }
        proc.state = 'gone';
        proc.kill();
      }
      lane.processes.clear();
    }
    await Promise.all(exits);
  }

  // --- processes -------------------------------------------------------------------------------

  private spawn(lane: RuntimeLane): RuntimeProcess {
    const { runtime } = lane;
    // detached: each runtime process leads its own process group, so a kill reaches the task's
    // subprocesses too; the runners watch for our death themselves, since signals from a
    // terminal no longer reach them.
    const stdio: ('ignore' | 'pipe' | 'ipc')[] = ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'];
    const common = { cwd: process.cwd(), env: process.env, detached: true };
    const child =
      runtime === 'node'
        ? fork(path.join(this.runnerDir, 'node_runner.js'), ['--own-group'], {
            ...common,
            stdio: [...stdio, 'ipc'],
            // Not the parent's execArgv: under tsx or jest that would load their hooks into every child.
            execArgv: [`--max-old-space-size=${this.nodeMaxOldSpaceMb}`],
            serialization: 'json',
          })
        : spawn(this.pythonExecutable ?? this.pythonCommand, ['-u', path.join(this.runnerDir, 'python_runner.py'), '--own-group'], { ...common, stdio });
    const proc = new RuntimeProcess(runtime, child);
    lane.processes.add(proc);

    const decoder = new FrameDecoder();
    proc.replies.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        // A garbled channel cannot be trusted for the next task either.
        this.retire(proc, lane, failed('WorkerProtocolError', `the ${runtime} runtime sent an unreadable reply: ${(err as Error).message}`));
        return;
      }
      for (const frame of frames) this.onFrame(proc, lane, frame);
    });
    proc.replies.on('error', () => undefined);
    proc.requests.on('error', () => undefined); // EPIPE when the child died; 'exit' reports it

    for (const stream of ['stdout', 'stderr'] as const) {
      child[stream]?.on('data', (chunk: Buffer) => {
        if (stream === 'stderr') proc.stderrTail = (proc.stderrTail + chunk.toString('utf8')).slice(-4096);
        this.onOutput(chunk, { runtime, pid: child.pid, stream, taskId: proc.job?.req.taskId });
      });
    }

    const startTimer = setTimeout(() => {
      if (proc.state !== 'starting') return;
      this.onStartFailure(proc, lane, new Error(`the ${runtime} runtime did not start within ${this.startTimeoutMs} ms`));
      proc.kill();
    }, this.startTimeoutMs);
    startTimer.unref();
    proc.ready.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    );

    child.on('error', (err) => {
      // Spawning failed (e.g. ENOENT for the python command), or a kill failed; no 'exit' may follow.
      if (proc.state === 'starting') this.onStartFailure(proc, lane, new Error(`the ${runtime} runtime could not start: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      proc.exit = { code, signal };
      if (!lane.processes.has(proc)) return; // retired or closed: nothing waits on it
      // Let a reply already in the pipe arrive before the in-flight task is declared lost.
      const timer = setTimeout(() => this.onExit(proc, lane), EXIT_DRAIN_MS);
      proc.replies.once('close', () => {
        clearTimeout(timer);
        this.onExit(proc, lane);
      });
    });
    return proc;
  }

  private onFrame(proc: RuntimeProcess, lane: RuntimeLane, { header, body }: Frame): void {
    if (header.op === 'ready') {
      if (proc.state !== 'starting') return;
      proc.state = 'idle';
      if (proc.runtime === 'python' && typeof header.executable === 'string' && header.executable) this.pythonExecutable ??= header.executable;
      lane.startFailures = 0;
      lane.unavailable = undefined;
      proc.markReady();
      this.dispatch(lane);
      return;
    }
    if (header.op !== 'reply' || !proc.job || header.id !== proc.jobId) return;
    const codec = proc.job.req.codec;
    let outcome: RunOutcome;
    if (header.ok === true) {
      outcome = { ok: true, result: body, codec };
    } else {
      const error = header.error as Partial<TaskError> | undefined;
      const type = String(error?.type ?? 'Error');
      const message = String(error?.message ?? '');
      outcome = { ok: false, error: { type, message, traceback: String(error?.traceback ?? `${type}: ${message}`) } };
      if (typeof header.payloadCodec === 'string' && body.length) outcome.payload = { data: body, codec: header.payloadCodec as Codec };
    }
    // Output printed before the reply is already in the stdout/stderr pipes: let this poll round
    // read it, so it is attributed to this task, before the task ends and the next one starts.
    const job = proc.job;
    clearTimeout(proc.timer);
    proc.replied = outcome;
    setImmediate(() => {
      if (proc.job !== job) return;
      this.settle(proc, outcome);
      if (proc.state === 'busy') proc.state = 'idle';
      this.dispatch(lane);
    });
  }

  private dispatch(lane: RuntimeLane): void {
    if (this.closed) return;
    for (const proc of lane.processes) {
      if (!lane.queue.length) return;
      if (proc.state !== 'idle') continue;
      this.assign(proc, lane, lane.queue.shift()!);
    }
  }

  private assign(proc: RuntimeProcess, lane: RuntimeLane, job: Job): void {
    const { req } = job;
    proc.state = 'busy';
    proc.job = job;
    proc.stderrTail = ''; // what an earlier task printed says nothing about how this one ends
    proc.jobId = this.nextJobId++;
    const header = { op: 'run', id: proc.jobId, taskId: req.taskId, source: req.source, entrypoint: req.entrypoint, codec: req.codec };
    let frame: Buffer;
    try {
      frame = encodeFrame(header, req.args);
    } catch (err) {
      this.settle(proc, failed('InvalidTask', (err as Error).message));
      proc.state = 'idle';
      this.dispatch(lane);
      return;
    }
    proc.requests.write(frame);
    const walltime = req.walltimeMs;
    if (Number.isFinite(walltime) && walltime > 0 && walltime <= MAX_TIMER_MS) {
      proc.timer = setTimeout(() => {
        if (proc.job !== job) return;
        this.retire(proc, lane, failed('TaskTimeout', `task exceeded its walltime of ${walltime} ms`));
      }, walltime);
    }
  }

  /** Resolves the process's current task, once. */
  private settle(proc: RuntimeProcess, outcome: RunOutcome): void {
    const job = proc.job;
    if (!job) return;
    clearTimeout(proc.timer);
    proc.timer = undefined;
    proc.job = undefined;
    proc.replied = undefined;
    job.resolve(outcome);
  }

  /** Kills a process that can no longer be trusted, fails its task with `outcome`, and replaces it. */
  private retire(proc: RuntimeProcess, lane: RuntimeLane, outcome: RunOutcome): void {
    this.settle(proc, outcome);
    proc.state = 'gone';
    proc.kill();
    lane.processes.delete(proc);
    this.replace(lane);
  }

  private onExit(proc: RuntimeProcess, lane: RuntimeLane): void {
    if (!lane.processes.has(proc)) return; // already retired or closed
    // Take the task's subprocesses down with it; the group is empty (ESRCH) if there are none.
    proc.kill();
    if (proc.state === 'starting') {
      this.onStartFailure(proc, lane, new Error(`the ${proc.runtime} runtime exited while starting (${this.describeExit(proc)})${this.stderrHint(proc)}`));
      return;
    }
    const wasOutOfMemory = proc.runtime === 'node' && /JavaScript heap out of memory/.test(proc.stderrTail);
    const how = this.describeExit(proc);
    const message = wasOutOfMemory
      ? `the ${proc.runtime} process running the task ran out of memory (heap limit ${this.nodeMaxOldSpaceMb} MB) and died (${how})`
      : `the ${proc.runtime} process running the task died (${how})`;
    this.settle(proc, proc.replied ?? failed('WorkerProcessDied', message));
    proc.state = 'gone';
    lane.processes.delete(proc);
    this.replace(lane);
  }

  private onStartFailure(proc: RuntimeProcess, lane: RuntimeLane, err: Error): void {
    if (!lane.processes.has(proc)) return;
    proc.state = 'gone';
    lane.processes.delete(proc);
    proc.markFailedToStart(err);
    lane.startFailures++;
    const hasReady = [...lane.processes].some((p) => p.state === 'idle' || p.state === 'busy');
    if (lane.startFailures >= MAX_START_FAILURES && !hasReady) {
      lane.unavailable = `the ${lane.runtime} runtime failed to start ${lane.startFailures} times in a row: ${err.message}`;
      for (const job of lane.queue.splice(0)) job.resolve(failed('RuntimeUnavailable', lane.unavailable));
    }
    // During start() a failure rejects it instead (and close() follows). Back off so a runtime
    // that cannot start does not spin: 0.2 s, 0.4 s, ... up to 10 s.
    if (this.started) setTimeout(() => this.replace(lane), Math.min(10_000, 100 * 2 ** lane.startFailures)).unref();
  }

  private replace(lane: RuntimeLane): void {
    if (this.closed || lane.processes.size >= this.size) return;
    const proc = this.spawn(lane);
    proc.ready.then(
      () => this.dispatch(lane),
      () => undefined,
    );
  }

  private describeExit(proc: RuntimeProcess): string {
    const exit = proc.exit;
    if (!exit) return 'no exit status';
    return exit.signal ? `killed by signal ${exit.signal}` : `exit code ${exit.code}`;
  }

  private stderrHint(proc: RuntimeProcess): string {
    const tail = proc.stderrTail.trim().split('\n').slice(-3).join(' | ');
    return tail ? `: ${tail}` : '';
  }
}
