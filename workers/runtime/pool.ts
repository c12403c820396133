import { ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { PROCESS_RUNTIMES, RUNTIME_CODECS, type Codec, type ProcessRuntime } from '../../core/runtimes';
import { encodeFrame, Frame, FrameDecoder } from './frames';
import { confine, Isolation, resolveIsolation, SANDBOX_SCRATCH, type Confinement } from './isolation';
import {
  DEFAULT_TASK_MEMORY_MB,
  DEFAULT_TASK_OUTPUT_BYTES,
  DEFAULT_TASK_PIDS_MAX,
  MIN_TASK_MEMORY_MB,
  TaskLimits,
  type LimitMode,
  type ProcessLimits,
} from './limits';
import { CappedStream, taskOutput, type TaskOutput } from './output';
import { confinedOwner, runCommand, type CommandOutcome, type CommandRequest } from './command';
import { backoffMs } from '../../core/retry';

/**
 * The isolated runtimes the worker agent runs user functions in: long-lived node and python
 * processes, one task at a time each, so a task pays no process start. A task that crashes or
 * overruns its walltime takes only its own process down; the pool replaces it.
 *
 * Each process runs inside limits the kernel enforces (limits.ts): a memory cap set before each
 * task (the task's own, at most the endpoint's), a pids cap, and a cgroup (or a /proc walk) that
 * finds every process a task started, so whatever a task leaves running, in a new session or
 * not, is killed when it ends, and a walltime kill takes the whole tree. What a task prints is
 * kept per task, capped head and tail, and returned with its outcome.
 *
 * A process serves one user only (ARCHITECTURE.md, "Trust between tenants"): processes are kept
 * per (runtime, submitting user), run with a minimal environment in that user's scratch
 * directory, confined as the isolation mode says. The endpoint owner's processes start with the
 * pool and stay warm; other users' start on their first task and are reaped when idle, or evicted
 * (least recently used first) when the agent's process cap is reached and another user waits.
 */

export interface RunRequest {
  taskId: string;
  /** The Ferry user who submitted the task: it runs only in that user's processes. */
  user: string;
  runtime: ProcessRuntime;
  /** node: a function expression as fn.toString() gives it; python: module source defining the entrypoint. */
  source: string;
  /** python: the function to call (required); node: ignored. */
  entrypoint?: string;
  /** json: UTF-8 {"args": [...], "kwargs": {...}}; node-v8: v8.serialize({args, kwargs}); python-pickle: pickle.dumps((args, kwargs)). */
  args: Buffer;
  codec: Codec;
  walltimeMs: number;
  /** The task's memory cap in MB; default, and at most, the pool's taskMemoryMb. */
  memoryMb?: number;
}

export interface TaskError {
  type: string;
  message: string;
  traceback: string;
}

export type RunOutcome = (
  { ok: true; result: Buffer; codec: Codec } | { ok: false; error: TaskError; payload?: { data: Buffer; codec: Codec } }
) & {
  /** What the task printed, capped; absent when it printed nothing. */
  output?: TaskOutput;
};

export interface ProcessOutput {
  runtime: ProcessRuntime;
  user: string;
  pid: number | undefined;
  stream: 'stdout' | 'stderr';
  /** The task the process was running when it printed; output after a task ends may be attributed to none. */
  taskId: string | undefined;
}

export interface RuntimePoolOptions {
  /** Processes per runtime and user at most (the owner's are started up front); default os.availableParallelism(). */
  size?: number;
  /** The endpoint owner: their processes start with the pool and are never reaped for idleness. */
  owner?: string;
  /** How tasks are kept apart; default isolation "none" (only the owner's tasks run). */
  isolation?: Isolation;
  /** Processes of all users and runtimes at most; default 2 × size × runtimes. */
  maxProcesses?: number;
  /** A user's process idle this long is stopped (not the owner's); default 60 s. */
  idleMs?: number;
  /** Where scratch directories are made; default the OS temp directory. */
  scratchParent?: string;
  runtimes?: ProcessRuntime[];
  /** Default 'python3'. */
  pythonCommand?: string;
  /** Heap cap of each node process (--max-old-space-size); default taskMemoryMb, so the kernel's cap binds first. */
  nodeMaxOldSpaceMb?: number;
  /** A task's memory cap (its process tree, interpreter included) when it asks for none, and the most it may ask for; MB, default 2048. */
  taskMemoryMb?: number;
  /** Processes and threads of one runtime process's tree at most; default 4096. */
  taskPidsMax?: number;
  /** Bytes of a task's stdout, and of its stderr, returned with its outcome (head and tail); default 64 KiB. */
  taskOutputBytes?: number;
  /** How limits are enforced: a mode resolved at start, or limits already resolved; default auto. */
  limits?: LimitMode | TaskLimits;
  /** Also sees every chunk the user's code prints (it is captured per task regardless); default: nothing. */
  onOutput?: (chunk: Buffer, from: ProcessOutput) => void;
  /** How long a fresh process may take to say it is ready; default 30 s. */
  startTimeoutMs?: number;
  /** Where node_runner.js and python_runner.py live; default this module's folder (set it when bundling). */
  runnerDir?: string;
}

export type RuntimeStats = { processes: number; busy: number; queued: number };

// A reply written just before the process died may still be in the pipe when 'exit' fires.
const EXIT_DRAIN_MS = 100;
// Consecutive failed starts after which a runtime counts as unavailable and queued tasks fail.
const MAX_START_FAILURES = 3;
// setTimeout holds at most a signed 32-bit delay.
const MAX_TIMER_MS = 0x7fffffff;
// How long a reply waits for the end marks of its task's output (a task may have closed fd 1 or 2).
const OUTPUT_END_WAIT_MS = 2000;
// Where the runner files sit inside a sandbox.
const SANDBOX_RUNNERS = '/opt/ferry-runtime';

const failed = (type: string, message: string, traceback = `${type}: ${message}`): { ok: false; error: TaskError } => ({
  ok: false,
  error: { type, message, traceback },
});

interface Job {
  req: RunRequest;
  resolve: (outcome: RunOutcome) => void;
  queuedAt: number;
  /** Sent back to the queue once because its process could not be brought under the task's memory cap. */
  requeued?: boolean;
}

type ProcessState = 'starting' | 'idle' | 'busy' | 'gone';

class RuntimeProcess {
  state: ProcessState = 'starting';
  job: Job | undefined;
  jobId = 0;
  timer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  idleSince = 0;
  /** The current task's reply, received but not yet handed out. */
  replied: RunOutcome | undefined;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  stderrTail = '';
  /** The current task's output. */
  stdout: CappedStream;
  stderr: CappedStream;
  /** The mark the runner writes to stdout and stderr after the current task's output, and what is still awaited. */
  endMark = Buffer.alloc(0);
  outputOpen = { stdout: false, stderr: false };
  /** The end of a chunk that may hold the start of a split mark. */
  carry = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
  /** Called once both streams reached their mark. */
  onOutputEnd: (() => void) | undefined;
  /** The memory cap of the current task (MB) and the OOM kills counted before it started. */
  memoryMb = 0;
  oomBefore = 0;
  readonly ready: Promise<void>;
  private settleReady!: { resolve: () => void; reject: (err: Error) => void };

  constructor(
    readonly group: UserRuntime,
    readonly child: ChildProcess,
    /** Inside a sandbox, whose exit status reports a signal as 128 + its number. */
    readonly sandboxed: boolean,
    readonly limits: ProcessLimits,
    readonly outputBytes: number,
  ) {
    this.stdout = new CappedStream(outputBytes);
    this.stderr = new CappedStream(outputBytes);
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => undefined); // observed by whoever awaits it; never an unhandled rejection
  }

  get runtime(): ProcessRuntime {
    return this.group.runtime;
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

  /**
   * SIGKILL the process and everything the task started: its cgroup (or its /proc tree) reaches
   * what left the process group too. A sandbox's bwrap leads the group; its --die-with-parent and
   * the pid namespace take everything inside along.
   */
  kill(): void {
    clearTimeout(this.idleTimer);
    const pid = this.child.pid;
    if (pid === undefined) return;
    this.limits.killAll();
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

/** One user's processes of one runtime, and that user's tasks waiting for them. */
class UserRuntime {
  processes = new Set<RuntimeProcess>();
  queue: Job[] = [];
  startFailures = 0;
  unavailable: string | undefined;
  /** After a failed start, no new process before this time. */
  retryAt = 0;

  constructor(
    readonly runtime: ProcessRuntime,
    readonly user: string,
    readonly confinement: Confinement,
  ) {}

  get starting(): number {
    let n = 0;
    for (const p of this.processes) if (p.state === 'starting') n++;
    return n;
  }
}

/** The interpreter a runtime is started with, and the directories a sandbox must show for it. */
interface Interpreter {
  command: string;
  /** Install prefixes (read-only in a sandbox). */
  prefixes: string[];
  binDir: string | undefined;
}

export class RuntimePool {
  private readonly size: number;
  private readonly maxProcesses: number;
  private readonly idleMs: number;
  private readonly owner: string | undefined;
  private readonly isolation: Isolation;
  private readonly runtimes: ProcessRuntime[];
  private readonly pythonCommand: string;
  // The interpreter itself, resolved once: respawning through it skips launcher shims (pyenv's
  // costs over a second per start), and a sandbox shows just its prefix.
  private python: Interpreter | undefined;
  private readonly node: Interpreter;
  private readonly nodeMaxOldSpaceMb: number;
  private readonly taskMemoryMb: number;
  private readonly taskPidsMax: number;
  private readonly taskOutputBytes: number;
  private readonly limitsOption: LimitMode | TaskLimits;
  private limits: TaskLimits | undefined;
  private readonly onOutput: (chunk: Buffer, from: ProcessOutput) => void;
  private readonly startTimeoutMs: number;
  private readonly runnerSource: string;
  private readonly scratchParent: string;
  /** Made at start: the runner files (world-readable copies) and one scratch directory per user. */
  private scratchRoot: string | undefined;
  private runnerDir: string | undefined;
  private readonly groups = new Map<string, UserRuntime>();
  /** Commands (shell and mpi tasks) running per user: their scratch stays while any runs. */
  private readonly commands = new Map<string, number>();
  /** Ends every running command when the pool closes (or the agent exits). */
  private readonly commandsAbort = new AbortController();
  private starting: Promise<void> | undefined;
  private started = false;
  private closed = false;
  private nextJobId = 1;
  // Kills the children even when the agent exits without calling close().
  private readonly killAllOnExit = (): void => {
    for (const group of this.groups.values()) for (const proc of group.processes) proc.kill();
    this.commandsAbort.abort();
    this.limits?.close();
    if (this.scratchRoot) rmSync(this.scratchRoot, { recursive: true, force: true });
  };

  constructor(opts: RuntimePoolOptions = {}) {
    this.size = Math.max(1, Math.floor(opts.size ?? os.availableParallelism()));
    this.runtimes = [...new Set(opts.runtimes ?? PROCESS_RUNTIMES)];
    for (const runtime of this.runtimes) {
      if (!PROCESS_RUNTIMES.includes(runtime))
        throw new Error(`unknown runtime ${JSON.stringify(runtime)}; expected one of ${PROCESS_RUNTIMES.join(', ')}`);
    }
    this.maxProcesses = Math.max(1, Math.floor(opts.maxProcesses ?? 2 * this.size * Math.max(1, this.runtimes.length)));
    this.idleMs = opts.idleMs ?? 60_000;
    this.owner = opts.owner;
    this.isolation = opts.isolation ?? resolveIsolation({ isolation: 'none' });
    this.pythonCommand = opts.pythonCommand ?? 'python3';
    const nodePath = realpathSync(process.execPath);
    this.node = { command: nodePath, prefixes: [path.dirname(path.dirname(nodePath))], binDir: path.dirname(nodePath) };
    this.taskMemoryMb = Math.max(MIN_TASK_MEMORY_MB, Math.floor(opts.taskMemoryMb ?? DEFAULT_TASK_MEMORY_MB));
    this.taskPidsMax = Math.max(16, Math.floor(opts.taskPidsMax ?? DEFAULT_TASK_PIDS_MAX));
    this.taskOutputBytes = Math.max(0, Math.floor(opts.taskOutputBytes ?? DEFAULT_TASK_OUTPUT_BYTES));
    this.limitsOption = opts.limits ?? 'auto';
    this.nodeMaxOldSpaceMb = opts.nodeMaxOldSpaceMb ?? this.taskMemoryMb;
    // Task output goes back with the task, never into the agent's own log.
    this.onOutput = opts.onOutput ?? (() => undefined);
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.runnerSource = opts.runnerDir ?? __dirname;
    this.scratchParent = opts.scratchParent ?? os.tmpdir();
    // One listener per running command, as many as the agent has slots.
    setMaxListeners(0, this.commandsAbort.signal);
  }

  /** Prepares scratch space and starts the owner's processes; rejects (and kills what started) if a runtime cannot start. */
  start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('RuntimePool is closed'));
    this.starting ??= this.startAll();
    return this.starting;
  }

  /** How task limits are enforced here (known once started). */
  limitsInfo(): { mechanism: string; describe: string; memoryMb: number; pidsMax: number; outputBytes: number } | undefined {
    if (!this.limits) return undefined;
    return {
      mechanism: this.limits.mechanism,
      describe: this.limits.describe(),
      memoryMb: this.taskMemoryMb,
      pidsMax: this.taskPidsMax,
      outputBytes: this.taskOutputBytes,
    };
  }

  private async startAll(): Promise<void> {
    process.on('exit', this.killAllOnExit);
    this.limits = typeof this.limitsOption === 'string' ? TaskLimits.resolve(this.limitsOption, this.taskPidsMax) : this.limitsOption;
    // Root's tmpdir may be private; 0711: users' runtimes pass through to their own scratch, list nothing.
    this.scratchRoot = mkdtempSync(path.join(this.scratchParent, 'ferry-'));
    chmodSync(this.scratchRoot, 0o711);
    // Copies readable by every account a runtime may run as, wherever the agent's own files are.
    this.runnerDir = path.join(this.scratchRoot, 'runtime');
    mkdirSync(this.runnerDir, { mode: 0o755 });
    chmodSync(this.runnerDir, 0o755);
    for (const file of ['node_runner.js', 'python_runner.py']) {
      copyFileSync(path.join(this.runnerSource, file), path.join(this.runnerDir, file));
      chmodSync(path.join(this.runnerDir, file), 0o644);
    }
    // Without cgroups the node runtime is started through python, which makes it a child subreaper.
    if (this.runtimes.includes('python') || this.limits.mechanism === 'rlimit') this.python = await resolvePython(this.pythonCommand);
    const procs: RuntimeProcess[] = [];
    const admission = this.owner === undefined ? undefined : this.isolation.admit(this.owner, this.owner);
    if (this.owner !== undefined && admission?.ok) {
      for (const runtime of this.runtimes) {
        const group = this.groupFor(runtime, this.owner, admission.confinement);
        for (let i = 0; i < this.size && this.liveCount() < this.maxProcesses; i++) procs.push(this.spawn(group));
      }
    }
    try {
      await Promise.all(procs.map((p) => p.ready));
      this.started = true;
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** Runs one task in its user's processes; it waits in a FIFO queue while they are busy. Never rejects. */
  run(req: RunRequest): Promise<RunOutcome> {
    const invalid = this.check(req);
    if (invalid) return Promise.resolve(invalid);
    // Once started, the task joins the queue before run() returns, so call order is queue order.
    if (this.started) return this.enqueue(req);
    return this.start().then(
      () => this.check(req) ?? this.enqueue(req),
      (err: Error) => failed('RuntimeUnavailable', `the runtime pool could not start: ${err.message}`),
    );
  }

  private check(req: RunRequest): RunOutcome | undefined {
    if (this.closed) return failed('PoolClosed', 'the runtime pool is closed');
    if (!this.runtimes.includes(req.runtime)) {
      return failed(
        'UnsupportedRuntime',
        `this worker runs ${this.runtimes.join(', ') || 'no'} runtimes, not ${JSON.stringify(req.runtime)}`,
      );
    }
    if (!RUNTIME_CODECS[req.runtime].includes(req.codec)) {
      return failed(
        'UnsupportedCodec',
        `the ${req.runtime} runtime reads ${RUNTIME_CODECS[req.runtime].join(' or ')}, not ${JSON.stringify(req.codec)}`,
      );
    }
    if (req.runtime === 'python' && !req.entrypoint) {
      return failed('InvalidTask', 'a python task needs an entrypoint: the name of the function to call');
    }
    if (typeof req.user !== 'string' || !req.user) return failed('InvalidTask', 'a task must name the user who submitted it');
    const admission = this.isolation.admit(req.user, this.owner);
    if (!admission.ok) return failed(admission.type, admission.message);
    const group = this.groups.get(groupKey(req.runtime, req.user));
    if (group?.unavailable) return failed('RuntimeUnavailable', group.unavailable);
    return undefined;
  }

  private enqueue(req: RunRequest): Promise<RunOutcome> {
    const admission = this.isolation.admit(req.user, this.owner);
    if (!admission.ok) return Promise.resolve(failed(admission.type, admission.message));
    const group = this.groupFor(req.runtime, req.user, admission.confinement);
    return new Promise<RunOutcome>((resolve) => {
      group.queue.push({ req, resolve, queuedAt: Date.now() });
      this.dispatch(group);
    });
  }

  /**
   * Runs one command for a user (a shell or mpi task) with no runtime process, under what the
   * user's runtime processes get: admission and confinement, their scratch, a cgroup (or rlimit)
   * of its own with the task's memory cap, the output caps. Never rejects.
   */
  async runCommand(req: CommandRequest): Promise<CommandOutcome> {
    if (!this.started) {
      try {
        await this.start();
      } catch (err) {
        return failed('RuntimeUnavailable', `the runtime pool could not start: ${(err as Error).message}`);
      }
    }
    if (this.closed) return failed('PoolClosed', 'the runtime pool is closed');
    if (typeof req.user !== 'string' || !req.user) return failed('InvalidTask', 'a task must name the user who submitted it');
    const admission = this.isolation.admit(req.user, this.owner);
    if (!admission.ok) return failed(admission.type, admission.message);
    if (req.unconfinedOnly && admission.confinement.kind !== 'plain') return failed('MPIUnavailable', req.unconfinedOnly);
    const memoryMb = Math.max(MIN_TASK_MEMORY_MB, Math.min(this.taskMemoryMb, Math.floor(req.memoryMb ?? this.taskMemoryMb)));
    let limits: ProcessLimits;
    try {
      // Under rlimit the command starts at the task's cap (its hard RLIMIT_DATA); with cgroups the cap is set before it joins.
      limits = this.limits!.forProcess(memoryMb);
    } catch (err) {
      return failed('RuntimeUnavailable', `could not set up task limits: ${(err as Error).message}`);
    }
    if (this.limits!.mechanism !== 'rlimit' && !limits.setMemory(memoryMb)) {
      limits.release();
      return failed('RuntimeUnavailable', `could not set the task's memory limit of ${memoryMb} MB`);
    }
    const user = req.user;
    this.commands.set(user, (this.commands.get(user) ?? 0) + 1);
    try {
      const scratch = this.scratchDir(user, admission.confinement);
      const python = this.python ?? { command: this.pythonCommand, prefixes: [], binDir: undefined };
      return await runCommand(
        {
          isolation: this.isolation,
          confinement: admission.confinement,
          scratch,
          scratchInside: path.posix.join(SANDBOX_SCRATCH, path.basename(scratch)),
          binds: [...this.node.prefixes, ...python.prefixes],
          bins: [this.node.binDir, python.binDir].filter((d): d is string => !!d),
          limits,
          memoryMb,
          // Without cgroups, a reaper adopts what the command leaves running (command.ts).
          reaperPython: this.limits!.mechanism === 'rlimit' && this.python?.binDir ? this.python.command : undefined,
          outputBytes: this.taskOutputBytes,
        },
        { ...req, signal: this.commandsAbort.signal },
      );
    } catch (err) {
      return failed('RuntimeUnavailable', `could not run the command: ${(err as Error).message}`);
    } finally {
      const left = (this.commands.get(user) ?? 1) - 1;
      if (left > 0) this.commands.set(user, left);
      else this.commands.delete(user);
      this.dropScratchIfUnused(user);
    }
  }

  private groupFor(runtime: ProcessRuntime, user: string, confinement: Confinement): UserRuntime {
    const key = groupKey(runtime, user);
    let group = this.groups.get(key);
    if (!group) this.groups.set(key, (group = new UserRuntime(runtime, user, confinement)));
    return group;
  }

  stats(): { runtimes: Record<ProcessRuntime, RuntimeStats>; users: number; maxProcesses: number } {
    const runtimes = { node: { processes: 0, busy: 0, queued: 0 }, python: { processes: 0, busy: 0, queued: 0 } };
    const users = new Set<string>();
    for (const group of this.groups.values()) {
      const s = runtimes[group.runtime];
      s.queued += group.queue.length;
      for (const p of group.processes) {
        if (p.state === 'gone') continue;
        users.add(group.user);
        s.processes++;
        if (p.state === 'busy') s.busy++;
      }
    }
    return { runtimes, users: users.size, maxProcesses: this.maxProcesses };
  }

  /** Kills every child (and what they started); tasks still queued or running fail with PoolClosed. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    process.removeListener('exit', this.killAllOnExit);
    this.commandsAbort.abort();
    const exits: Promise<void>[] = [];
    for (const group of this.groups.values()) {
      for (const job of group.queue.splice(0)) job.resolve(failed('PoolClosed', 'the runtime pool closed before the task started'));
      for (const proc of group.processes) {
        if (proc.job) this.settle(proc, failed('PoolClosed', 'the runtime pool closed while the task was running'));
        proc.markFailedToStart(new Error('the runtime pool closed'));
        if (proc.child.exitCode === null && proc.child.signalCode === null && proc.child.pid !== undefined) {
          exits.push(new Promise<void>((resolve) => proc.child.once('exit', () => resolve())));
        }
        proc.state = 'gone';
        proc.kill();
      }
      group.processes.clear();
    }
    await Promise.all(exits);
    this.limits?.close();
    if (this.scratchRoot) rmSync(this.scratchRoot, { recursive: true, force: true });
  }

  // --- processes -------------------------------------------------------------------------------

  private liveCount(): number {
    let n = 0;
    for (const group of this.groups.values()) n += group.processes.size;
    return n;
  }

  /** The user's scratch directory (0700, owned by whoever their runtimes run as), made on first use. */
  private scratchFor(group: UserRuntime): string {
    return this.scratchDir(group.user, group.confinement);
  }

  private scratchDir(user: string, confinement: Confinement): string {
    const dir = path.join(this.scratchRoot!, 'u-' + createHash('sha256').update(user).digest('hex').slice(0, 20));
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const owner = confinedOwner(confinement);
    if (owner) chownSync(dir, owner.uid, owner.gid);
    return dir;
  }

  /** Removes a user's scratch once none of their processes is left. */
  private dropScratchIfUnused(user: string): void {
    if (!this.scratchRoot) return;
    for (const group of this.groups.values()) if (group.user === user && (group.processes.size || group.queue.length)) return;
    if (this.commands.get(user)) return;
    rmSync(path.join(this.scratchRoot, 'u-' + createHash('sha256').update(user).digest('hex').slice(0, 20)), {
      recursive: true,
      force: true,
    });
  }

  private command(group: UserRuntime, scratch: string): { command: string; args: string[]; env: Record<string, string>; cwd: string } {
    const c = group.confinement;
    const sandboxed = c.kind === 'sandbox';
    const runners = sandboxed ? SANDBOX_RUNNERS : this.runnerDir!;
    const python = this.python ?? { command: this.pythonCommand, prefixes: [], binDir: undefined };
    const interp = group.runtime === 'node' ? this.node : python;
    const run =
      group.runtime === 'node'
        ? {
            command: interp.command,
            args: [`--max-old-space-size=${this.nodeMaxOldSpaceMb}`, path.join(runners, 'node_runner.js'), '--own-group'],
          }
        : {
            command: interp.command,
            // Without cgroups, the runner adopts its orphaned grandchildren (a child subreaper), so the /proc walk finds them.
            args: [
              '-u',
              path.join(runners, 'python_runner.py'),
              '--own-group',
              ...(this.limits?.mechanism === 'rlimit' ? ['--subreaper'] : []),
            ],
          };
    // Per user inside a sandbox too, so a path one user's task reports names nothing in another's.
    const cwd = sandboxed ? path.posix.join(SANDBOX_SCRATCH, path.basename(scratch)) : scratch;
    const home = c.kind === 'account' ? c.account.home : cwd;
    const bins = [this.node.binDir, python.binDir].filter((d): d is string => !!d);
    const env = this.isolation.environment(home, cwd, bins);
    if (c.kind === 'account') Object.assign(env, { USER: c.account.name, LOGNAME: c.account.name });
    const confined = confine(c, run, {
      isRoot: this.isolation.agentIsRoot,
      binds: [...this.node.prefixes, ...python.prefixes],
      mappedBinds: [[this.runnerDir!, SANDBOX_RUNNERS]],
      scratch,
      scratchInside: cwd,
      env,
      cwd,
    });
    return { ...confined, env, cwd: sandboxed ? scratch : cwd };
  }

  private spawn(group: UserRuntime): RuntimeProcess {
    const { runtime } = group;
    const scratch = this.scratchFor(group);
    const confined = this.command(group, scratch);
    const { env, cwd } = confined;
    let limits: ProcessLimits;
    try {
      // Its memory cap never goes above the endpoint's (without cgroups: the hard RLIMIT_DATA it starts with).
      limits = this.limits!.forProcess(this.taskMemoryMb);
    } catch (err) {
      // The cgroup could not be made: a spawn that fails at once reports it as a start failure.
      limits = failedLimits(err as Error);
    }
    // Without cgroups, a node runtime adopts its orphaned grandchildren (a child subreaper, kept
    // across exec), so the /proc walk finds a double-forked daemon; python's runner does it itself.
    const launched =
      this.limits!.mechanism === 'rlimit' && runtime === 'node' && this.python?.binDir
        ? asSubreaper(this.python.command, confined)
        : confined;
    // The process joins its cgroup before it execs the runtime, so all it starts is inside.
    const { command, args } = limits.wrap(launched);
    // detached: each runtime process (or its sandbox) leads its own process group, so a kill
    // reaches the task's subprocesses too; the runners watch for our death themselves (EOF on
    // their request pipe), since signals from a terminal no longer reach them.
    const child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'] });
    const proc = new RuntimeProcess(group, child, group.confinement.kind === 'sandbox', limits, this.taskOutputBytes);
    group.processes.add(proc);
    const user = group.user;

    const decoder = new FrameDecoder();
    proc.replies.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        // A garbled channel cannot be trusted for the next task either.
        this.retire(proc, failed('WorkerProtocolError', `the ${runtime} runtime sent an unreadable reply: ${(err as Error).message}`));
        return;
      }
      for (const frame of frames) this.onFrame(proc, frame);
    });
    proc.replies.on('error', () => undefined);
    proc.requests.on('error', () => undefined); // EPIPE when the child died; 'exit' reports it

    for (const stream of ['stdout', 'stderr'] as const) {
      child[stream]?.on('data', (chunk: Buffer) => {
        if (stream === 'stderr') proc.stderrTail = (proc.stderrTail + chunk.toString('utf8')).slice(-4096);
        this.captureOutput(proc, stream, chunk);
        this.onOutput(chunk, { runtime, user, pid: child.pid, stream, taskId: proc.job?.req.taskId });
      });
    }

    const startTimer = setTimeout(() => {
      if (proc.state !== 'starting') return;
      this.onStartFailure(proc, new Error(`the ${runtime} runtime did not start within ${this.startTimeoutMs} ms`));
      proc.kill();
    }, this.startTimeoutMs);
    startTimer.unref();
    proc.ready.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    );

    child.on('error', (err) => {
      // Spawning failed (e.g. ENOENT for the python command), or a kill failed; no 'exit' may follow.
      if (proc.state === 'starting') this.onStartFailure(proc, new Error(`the ${runtime} runtime could not start: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      proc.exit = { code, signal };
      if (!group.processes.has(proc)) return proc.limits.release(); // retired, reaped or closed: nothing waits on it
      // Let a reply already in the pipe arrive before the in-flight task is declared lost.
      const timer = setTimeout(() => this.onExit(proc), EXIT_DRAIN_MS);
      proc.replies.once('close', () => {
        clearTimeout(timer);
        this.onExit(proc);
      });
    });
    return proc;
  }

  /** A process now free: it takes its user's next task, or waits, to be reaped when idle too long. */
  private becameIdle(proc: RuntimeProcess): void {
    proc.state = 'idle';
    proc.idleSince = Date.now();
    clearTimeout(proc.idleTimer);
    if (proc.group.user !== this.owner && this.idleMs >= 0 && this.idleMs <= MAX_TIMER_MS) {
      proc.idleTimer = setTimeout(() => {
        if (proc.state === 'idle') this.reap(proc);
      }, this.idleMs);
      proc.idleTimer.unref();
    }
    this.dispatch(proc.group);
  }

  /** Stops an idle process that is no longer wanted (idle too long, or evicted for another user). */
  private reap(proc: RuntimeProcess): void {
    const group = proc.group;
    proc.state = 'gone';
    proc.kill();
    group.processes.delete(proc);
    if (!group.processes.size && !group.queue.length) this.groups.delete(groupKey(group.runtime, group.user));
    this.dropScratchIfUnused(group.user);
    // A process slot freed: a user waiting for one may start.
    this.grow();
  }

  private onFrame(proc: RuntimeProcess, { header, body }: Frame): void {
    const group = proc.group;
    if (header.op === 'ready') {
      if (proc.state !== 'starting') return;
      group.startFailures = 0;
      group.unavailable = undefined;
      // The runtime's own processes (bwrap and its init in a sandbox): all else later is a task's.
      proc.limits.settle(proc.child.pid);
      proc.markReady();
      this.becameIdle(proc);
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
    // The task's output may still be in the pipes: it ends at the marks the runner wrote after it.
    const finish = () => {
      clearTimeout(wait);
      proc.onOutputEnd = undefined;
      if (proc.job !== job) return;
      // Whatever the task left running (a daemon, a setsid child) ends with it.
      const strays = proc.limits.killStrays();
      this.settle(proc, this.underLimits(proc, outcome));
      if (proc.state !== 'busy') return;
      // Killed strays may linger as zombies of the runtime, and a process that hit its memory cap
      // is not trusted with the next task: either way a fresh one takes over.
      if (strays > 0 || this.hitMemoryCap(proc, outcome)) this.recycle(proc);
      else this.becameIdle(proc);
    };
    const wait = setTimeout(finish, OUTPUT_END_WAIT_MS);
    if (!proc.outputOpen.stdout && !proc.outputOpen.stderr) setImmediate(finish);
    else proc.onOutputEnd = finish;
  }

  /** Keeps output for the task that printed it, up to the runner's end mark; output between tasks belongs to none. */
  private captureOutput(proc: RuntimeProcess, stream: 'stdout' | 'stderr', chunk: Buffer): void {
    if (!proc.outputOpen[stream]) return;
    const data = proc.carry[stream].length ? Buffer.concat([proc.carry[stream], chunk]) : chunk;
    const at = data.indexOf(proc.endMark);
    if (at >= 0) {
      proc[stream].write(data.subarray(0, at));
      proc.carry[stream] = Buffer.alloc(0);
      proc.outputOpen[stream] = false;
      if (!proc.outputOpen.stdout && !proc.outputOpen.stderr) proc.onOutputEnd?.();
      return;
    }
    // Hold back what could be the start of a mark split across chunks.
    const hold = Math.min(data.length, proc.endMark.length - 1);
    proc[stream].write(data.subarray(0, data.length - hold));
    proc.carry[stream] = Buffer.from(data.subarray(data.length - hold));
  }

  /** Without cgroups, a task over its rlimit sees an allocation fail: reported as the limit it is. */
  private underLimits(proc: RuntimeProcess, outcome: RunOutcome): RunOutcome {
    if (outcome.ok || this.limits?.mechanism !== 'rlimit') return outcome;
    const { type, message } = outcome.error;
    const isAllocation =
      type === 'MemoryError' || (type === 'RangeError' && /allocation failed|Invalid array buffer length/i.test(message));
    if (!isAllocation) return outcome;
    return {
      ...memoryExceeded(proc.runtime, proc.memoryMb, proc.job?.req.memoryMb, `the task's allocation failed (${type}: ${message})`),
      output: outcome.output,
    };
  }

  private hitMemoryCap(proc: RuntimeProcess, outcome: RunOutcome): boolean {
    return (!outcome.ok && outcome.error.type === 'MemoryLimitExceeded') || proc.limits.oomKills() > proc.oomBefore;
  }

  /** Stops a process after its task was settled and starts a fresh one in its place. */
  private recycle(proc: RuntimeProcess): void {
    proc.state = 'gone';
    proc.kill();
    proc.group.processes.delete(proc);
    this.replace(proc.group);
  }

  private dispatch(group: UserRuntime): void {
    if (this.closed) return;
    for (const proc of group.processes) {
      if (!group.queue.length) break;
      if (proc.state !== 'idle') continue;
      this.assign(proc, group.queue.shift()!);
    }
    this.grow();
  }

  /**
   * Starts processes for users whose tasks wait with none starting for them, oldest task first,
   * up to `size` per user and runtime; at the agent's cap, an idle process of another user is
   * stopped first (least recently used, the owner's last). With nothing idle, tasks wait.
   */
  private grow(): void {
    if (this.closed || !this.started) return;
    const now = Date.now();
    const waiting = [...this.groups.values()]
      .filter((g) => g.queue.length > g.starting && g.processes.size < this.size && !g.unavailable && g.retryAt <= now)
      .sort((a, b) => a.queue[0]!.queuedAt - b.queue[0]!.queuedAt);
    for (const group of waiting) {
      while (group.queue.length > group.starting && group.processes.size < this.size) {
        if (this.liveCount() >= this.maxProcesses) {
          const victim = this.evictable(group);
          if (!victim) return;
          this.reap(victim);
          if (this.liveCount() >= this.maxProcesses) return; // reap() already grew into the slot
          continue;
        }
        const proc = this.spawn(group);
        proc.ready.catch(() => undefined);
      }
    }
  }

  private evictable(forGroup: UserRuntime): RuntimeProcess | undefined {
    let best: RuntimeProcess | undefined;
    const rank = (p: RuntimeProcess) => [p.group.user === this.owner ? 1 : 0, p.idleSince];
    for (const group of this.groups.values()) {
      if (group === forGroup || group.queue.length) continue;
      for (const p of group.processes) {
        if (p.state !== 'idle') continue;
        if (!best) best = p;
        else {
          const [ao, at] = rank(p);
          const [bo, bt] = rank(best);
          if (ao! < bo! || (ao === bo && at! < bt!)) best = p;
        }
      }
    }
    return best;
  }

  private assign(proc: RuntimeProcess, job: Job): void {
    const { req } = job;
    clearTimeout(proc.idleTimer);
    proc.state = 'busy';
    proc.job = job;
    proc.stderrTail = ''; // what an earlier task printed says nothing about how this one ends
    proc.stdout = new CappedStream(this.taskOutputBytes);
    proc.stderr = new CappedStream(this.taskOutputBytes);
    proc.jobId = this.nextJobId++;
    // Unguessable, so nothing a task prints by chance ends its output early.
    proc.endMark = Buffer.from(`\0ferry-output-end:${randomBytes(12).toString('hex')}\0`);
    proc.outputOpen = { stdout: true, stderr: true };
    proc.carry = { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
    // The task's own cap, never above the endpoint's; set before the task's first instruction.
    proc.memoryMb = Math.max(MIN_TASK_MEMORY_MB, Math.min(this.taskMemoryMb, Math.floor(req.memoryMb ?? this.taskMemoryMb)));
    proc.oomBefore = proc.limits.oomKills();
    if (!proc.limits.setMemory(proc.memoryMb)) {
      // The process already holds more than this task may (an earlier task's garbage): a fresh
      // process takes the task; if even a fresh one is too big, the cap is below the runtime's needs.
      proc.job = undefined;
      if (job.requeued) {
        job.resolve(memoryExceeded(req.runtime, proc.memoryMb, req.memoryMb, `the ${req.runtime} runtime itself needs more than that`));
      } else {
        job.requeued = true;
        proc.group.queue.unshift(job);
      }
      this.recycle(proc);
      return;
    }
    // Without cgroups the runner lowers its own RLIMIT_DATA to the cap before the task runs.
    const dataLimit = proc.limits.runnerDataLimit();
    const header = {
      op: 'run',
      id: proc.jobId,
      taskId: req.taskId,
      source: req.source,
      entrypoint: req.entrypoint,
      codec: req.codec,
      endMark: proc.endMark.toString('latin1'),
      dataLimit,
    };
    let frame: Buffer;
    try {
      frame = encodeFrame(header, req.args);
    } catch (err) {
      this.settle(proc, failed('InvalidTask', (err as Error).message));
      this.becameIdle(proc);
      return;
    }
    proc.requests.write(frame);
    const walltime = req.walltimeMs;
    if (Number.isFinite(walltime) && walltime > 0 && walltime <= MAX_TIMER_MS) {
      proc.timer = setTimeout(() => {
        if (proc.job !== job) return;
        this.retire(proc, failed('TaskTimeout', `task exceeded its walltime of ${walltime} ms`));
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
    proc.onOutputEnd = undefined;
    // What is held back for a split mark is the task's own output when no mark comes.
    for (const stream of ['stdout', 'stderr'] as const) {
      if (proc.outputOpen[stream]) proc[stream].write(proc.carry[stream]);
      proc.outputOpen[stream] = false;
      proc.carry[stream] = Buffer.alloc(0);
    }
    const output = taskOutput(proc.stdout, proc.stderr);
    job.resolve(output ? { ...outcome, output } : outcome);
  }

  /** Kills a process that can no longer be trusted, fails its task with `outcome`, and replaces it. */
  private retire(proc: RuntimeProcess, outcome: RunOutcome): void {
    this.settle(proc, outcome);
    proc.state = 'gone';
    proc.kill();
    proc.group.processes.delete(proc);
    this.replace(proc.group);
  }

  private onExit(proc: RuntimeProcess): void {
    if (!proc.group.processes.has(proc)) return; // already retired, reaped or closed
    try {
      this.onLostProcess(proc);
    } finally {
      proc.limits.release();
    }
  }

  private onLostProcess(proc: RuntimeProcess): void {
    const group = proc.group;
    // Take the task's subprocesses down with it; the group is empty (ESRCH) if there are none.
    proc.kill();
    if (proc.state === 'starting') {
      this.onStartFailure(
        proc,
        new Error(`the ${proc.runtime} runtime exited while starting (${this.describeExit(proc)})${this.stderrHint(proc)}`),
      );
      return;
    }
    const how = this.describeExit(proc);
    const asked = proc.job?.req.memoryMb;
    let outcome: RunOutcome;
    if (proc.limits.oomKills() > proc.oomBefore) {
      outcome = memoryExceeded(proc.runtime, proc.memoryMb, asked, `the kernel killed it (${how})`);
    } else if (proc.runtime === 'node' && /JavaScript heap out of memory/.test(proc.stderrTail)) {
      outcome = failed(
        'MemoryLimitExceeded',
        `the task ran out of memory: the node heap limit is ${this.nodeMaxOldSpaceMb} MB, and the process died (${how})`,
      );
    } else if (
      this.limits?.mechanism === 'rlimit' &&
      (proc.exit?.signal === 'SIGABRT' || proc.exit?.signal === 'SIGTRAP' || proc.exit?.signal === 'SIGSEGV') &&
      /out of memory|allocation failed/i.test(proc.stderrTail)
    ) {
      outcome = memoryExceeded(proc.runtime, proc.memoryMb, asked, `an allocation failed and the process died (${how})`);
    } else {
      outcome = failed('WorkerProcessDied', `the ${proc.runtime} process running the task died (${how})`);
    }
    this.settle(proc, proc.replied ?? outcome);
    proc.state = 'gone';
    group.processes.delete(proc);
    this.replace(group);
  }

  private onStartFailure(proc: RuntimeProcess, err: Error): void {
    const group = proc.group;
    if (!group.processes.has(proc)) return;
    proc.state = 'gone';
    group.processes.delete(proc);
    proc.markFailedToStart(err);
    group.startFailures++;
    const hasReady = [...group.processes].some((p) => p.state === 'idle' || p.state === 'busy');
    if (group.startFailures >= MAX_START_FAILURES && !hasReady) {
      group.unavailable = `the ${group.runtime} runtime failed to start ${group.startFailures} times in a row: ${err.message}`;
      for (const job of group.queue.splice(0)) job.resolve(failed('RuntimeUnavailable', group.unavailable));
    }
    // During start() a failure rejects it instead (and close() follows). Back off so a runtime
    // that cannot start does not spin: 0.2 s, 0.4 s, ... up to 10 s.
    const delay = backoffMs(group.startFailures, { baseMs: 100, capMs: 10_000, jitter: 'none' });
    group.retryAt = Date.now() + delay;
    if (this.started) setTimeout(() => this.replace(group), delay).unref();
  }

  /** After a process is lost: the owner's are kept at `size`; anyone's waiting tasks get a new one. */
  private replace(group: UserRuntime): void {
    if (this.closed) return;
    if (group.user === this.owner && !group.unavailable && group.retryAt <= Date.now()) {
      while (group.processes.size < this.size && this.liveCount() < this.maxProcesses) this.spawn(group).ready.catch(() => undefined);
    }
    if (!group.processes.size && !group.queue.length && group.user !== this.owner) this.groups.delete(groupKey(group.runtime, group.user));
    this.dropScratchIfUnused(group.user);
    this.dispatch(group);
  }

  private describeExit(proc: RuntimeProcess): string {
    const exit = proc.exit;
    if (!exit) return 'no exit status';
    if (exit.signal) return `killed by signal ${exit.signal}`;
    // bwrap reports its command's death by signal N as exit status 128 + N.
    if (proc.sandboxed && exit.code !== null && exit.code > 128) {
      const name = Object.entries(os.constants.signals).find(([, n]) => n === exit.code! - 128)?.[0];
      if (name) return `killed by signal ${name}`;
    }
    return `exit code ${exit.code}`;
  }

  private stderrHint(proc: RuntimeProcess): string {
    const tail = proc.stderrTail.trim().split('\n').slice(-3).join(' | ');
    return tail ? `: ${tail}` : '';
  }
}

const groupKey = (runtime: ProcessRuntime, user: string) => `${runtime}\0${user}`;

/** A task over its memory cap: the type clients see, naming the cap (and what was asked, where the endpoint allowed less). */
function memoryExceeded(runtime: ProcessRuntime, capMb: number, askedMb: number | undefined, how: string): RunOutcome {
  const capped =
    askedMb !== undefined && askedMb > capMb ? ` (the task asked for ${askedMb} MB; this endpoint allows at most ${capMb} MB)` : '';
  return failed(
    'MemoryLimitExceeded',
    `the task exceeded its memory limit of ${capMb} MB${capped}: ${how}; its ${runtime} process was replaced`,
  );
}

const SUBREAPER_EXEC =
  'import ctypes, os, sys\nctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)\nos.execvp(sys.argv[1], sys.argv[1:])';

/** `run` started by python as a child subreaper (prctl PR_SET_CHILD_SUBREAPER, which exec keeps). */
function asSubreaper(python: string, run: { command: string; args: string[] }): { command: string; args: string[] } {
  return { command: python, args: ['-c', SUBREAPER_EXEC, run.command, ...run.args] };
}

/** Limits that could not be made: the spawn fails at once and says why, as a start failure. */
function failedLimits(err: Error): ProcessLimits {
  return {
    wrap: () => ({
      command: '/bin/sh',
      args: ['-c', 'echo "$1" >&2; exit 125', 'ferry-limits', `could not set up task limits: ${err.message}`],
    }),
    settle: () => undefined,
    setMemory: () => false,
    runnerDataLimit: () => undefined,
    killStrays: () => 0,
    killAll: () => undefined,
    oomKills: () => 0,
    release: () => undefined,
  };
}

/** The real interpreter behind `command` (a pyenv shim, say) and its install prefixes, asked once. */
function resolvePython(command: string): Promise<Interpreter> {
  const script = 'import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)';
  return new Promise((resolve) => {
    execFile(command, ['-c', script], { timeout: 30_000 }, (err, stdout) => {
      const [executable, prefix, basePrefix] = String(stdout ?? '')
        .trim()
        .split('\n');
      // Unresolvable: spawn the command as given; its start failure then says why.
      if (err || !executable || !prefix) return resolve({ command, prefixes: [], binDir: undefined });
      let real = executable;
      try {
        real = realpathSync(executable);
      } catch {
        /* keep it as printed */
      }
      const prefixes = [prefix, basePrefix ?? prefix].map((p) => {
        try {
          return realpathSync(p);
        } catch {
          return p;
        }
      });
      // A venv's interpreter is a symlink into its base; run it by its venv path so sys.prefix stays the venv.
      resolve({
        command: executable,
        prefixes: [...new Set([...prefixes, path.dirname(path.dirname(real))])],
        binDir: path.dirname(executable),
      });
    });
  });
}
