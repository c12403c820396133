import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { confine, SANE_PATH, type Confinement, type Isolation } from './isolation';
import type { ProcessLimits } from './limits';
import { CappedStream, taskOutput, type TaskOutput } from './output';

/**
 * One command run for a task without a runtime process (shell and mpi functions): `/bin/bash -c`
 * in a fresh directory of the task's inside its user's scratch, under the confinement, limits and
 * output caps the user's runtime processes get (the pool lends them: RuntimePool.runCommand).
 * Whatever the command leaves running ends with it; a walltime kill takes the whole tree.
 */

export interface CommandRequest {
  taskId: string;
  /** The Ferry user who submitted the task. */
  user: string;
  /** What bash runs (`bash -c`). */
  script: string;
  /** Variables on top of the user's minimal environment, given the task directory as the task sees it. */
  env?: (taskDir: string) => Record<string, string>;
  /** The task's walltime: past it the task fails with TaskTimeout. */
  walltimeMs: number;
  /** The command's own walltime (ShellFunction's): past it the command is killed and ends with returncode 124. */
  commandWalltimeMs?: number;
  /** The task's memory cap in MB; default, and at most, the pool's. */
  memoryMb?: number;
  /** Files, relative to the task directory, that also receive stdout and stderr; the directory is then kept. */
  files?: { stdout?: string; stderr?: string };
  /** More host directories a sandbox shows read-only (an MPI launcher outside the system directories). */
  binds?: string[];
  /** In a sandbox: a writable /dev/shm and a read-only /sys (MPI ranks share memory and read the topology). */
  mpi?: boolean;
  /** Aborted when the pool closes: the command's tree is killed and the task fails PoolClosed. */
  signal?: AbortSignal;
  /** When set, only a task that runs unconfined (the owner's, as the agent's user) may run; others fail MPIUnavailable with this message. */
  unconfinedOnly?: string;
}

export type CommandOutcome =
  | {
      ok: true;
      /** bash's exit status (a command killed by signal N: 128 + N); 124 past its own walltime. */
      returncode: number;
      timedOut: boolean;
      /** The captured streams as text, capped as task output is. */
      stdout: string;
      stderr: string;
      output?: TaskOutput;
    }
  | { ok: false; error: { type: string; message: string; traceback: string }; output?: TaskOutput };

/** What the pool lends a command: the user's confinement and scratch, fresh limits, the caps. */
export interface CommandContext {
  isolation: Isolation;
  confinement: Confinement;
  /** The user's scratch directory on the host, and where a sandboxed task sees it. */
  scratch: string;
  scratchInside: string;
  /** Read-only binds a sandbox shows (interpreter prefixes, so node and python work from a shell), and their bin directories, first on PATH. */
  binds: string[];
  bins: string[];
  limits: ProcessLimits;
  /** The task's memory cap the limits hold, MB. */
  memoryMb: number;
  /** rlimit: the python that runs the command under a reaper (REAPER), so what it leaves running is found without cgroups. */
  reaperPython?: string;
  outputBytes: number;
}

/**
 * Without cgroups, what a command leaves running (a double fork, a setsid daemon) would be
 * re-parented to init once bash exits, out of reach of the /proc walk. This reaper, a child
 * subreaper, adopts it instead: it runs the command, and when the command exits it kills what it
 * adopted (their children come to it in turn) before it exits with the command's status. It
 * ignores SIGTERM (the walltime's first signal is the command's); SIGKILL takes it with the tree.
 */
const REAPER = `import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvp(sys.argv[1], sys.argv[1:])
while True:
    p, status = os.waitpid(-1, 0)
    if p == pid:
        break
me = str(os.getpid())
def adopted():
    out = []
    for e in os.listdir('/proc'):
        try:
            with open('/proc/%s/stat' % e) as f:
                s = f.read()
        except (OSError, ValueError):
            continue
        if s[s.rindex(')') + 2:].split(' ')[1] == me:
            out.append(int(e))
    return out
for _ in range(50):
    kids = adopted()
    if not kids:
        break
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass
    try:
        while os.waitpid(-1, 0):
            pass
    except ChildProcessError:
        pass
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
`;

// SIGTERM first (srun passes it to its ranks), then SIGKILL for the whole tree.
const KILL_GRACE_MS = 1000;
// After the command exits, how long its pipes may stay open (a stray holding them is killed first).
const PIPE_CLOSE_WAIT_MS = 2000;
// setTimeout holds at most a signed 32-bit delay.
const MAX_TIMER_MS = 0x7fffffff;

const failure = (type: string, message: string, output?: TaskOutput): CommandOutcome => ({
  ok: false,
  error: { type, message, traceback: `${type}: ${message}` },
  output,
});

/** Whose uid owns the task's files: the account's, or nobody's in a root agent's sandbox; else the agent's. */
export function confinedOwner(c: Confinement): { uid: number; gid: number } | undefined {
  if (c.kind === 'account') return { uid: c.account.uid, gid: c.account.gid };
  if (c.kind === 'sandbox' && c.uid !== undefined) return { uid: c.uid, gid: c.gid! };
  return undefined;
}

/** A relative path that stays inside the task directory. */
const staysInside = (name: string): boolean =>
  !path.isAbsolute(name) && !path.posix.normalize(name).startsWith('..') && path.posix.normalize(name) !== '.';

/**
 * What the confined bash runs first, as the task's own user: the task directory (made afresh: an
 * earlier delivery's is removed) and the stream files. The user owns the scratch they sit in, so
 * the agent never creates, opens or removes anything there itself as root: a task could swap a
 * path for a symlink in between. $0 is the command, $1 the directory, $2 and $3 the files or ''.
 * Without files the directory is removed at the end the same way (a command killed before that
 * leaves it to removeTaskDir); bash reports a command killed by signal N as 128 + N.
 * With files, bash outlives the command until its tees have drained (up to 2 s, in case something
 * the command left running still holds the streams): in a sandbox, the pid namespace ends, and
 * kills every tee in it, the moment bash does.
 */
const SETUP = [
  'd=$1 out=$2 err=$3 tees=',
  'rm -rf -- "$d" && mkdir -m 700 -- "$d" && cd -- "$d" || exit 125',
  'if [ -n "$out" ]; then mkdir -p -- "$(dirname -- "$out")" && exec > >(exec tee -a -- "$out") || exit 125; tees="$tees $!"; fi',
  'if [ -n "$err" ]; then mkdir -p -- "$(dirname -- "$err")" && exec 2> >(exec tee -a -- "$err" >&2) || exit 125; tees="$tees $!"; fi',
  'if [ -n "$out$err" ]; then',
  '  /bin/bash -c "$0"; rc=$?',
  '  exec >&- 2>&-',
  '  for p in $tees; do i=0; while [ $i -lt 40 ] && kill -0 "$p" 2>/dev/null; do sleep 0.05; i=$((i+1)); done; done',
  '  exit $rc',
  'fi',
  '/bin/bash -c "$0"',
  'rc=$?',
  'cd .. && rm -rf -- "$d"',
  'exit $rc',
].join('\n');

export async function runCommand(ctx: CommandContext, req: CommandRequest): Promise<CommandOutcome> {
  for (const stream of ['stdout', 'stderr'] as const) {
    const name = req.files?.[stream];
    if (name !== undefined && !staysInside(name)) {
      ctx.limits.release();
      return failure('ValueError', `ShellFunction ${stream} must be a path relative to the task's directory, not ${JSON.stringify(name)}`);
    }
  }
  const c = ctx.confinement;
  const dirName = 'task-' + req.taskId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 100);
  const taskDir = path.join(ctx.scratch, dirName);
  const taskDirInside = c.kind === 'sandbox' ? path.posix.join(ctx.scratchInside, dirName) : taskDir;
  try {
    return await spawnCommand(ctx, req, taskDirInside);
  } finally {
    ctx.limits.release();
    // Kept when the function names files in it, as Globus Compute keeps its task sandboxes; gone with the user's scratch.
    if (!req.files?.stdout && !req.files?.stderr && existsSync(taskDir)) await removeTaskDir(ctx, taskDir, taskDirInside);
  }
}

/** rm -rf as the task's user, in its confinement (the agent's own uid, unconfined, needs no helper). */
function removeTaskDir(ctx: CommandContext, taskDir: string, taskDirInside: string): Promise<void> {
  const c = ctx.confinement;
  if (c.kind === 'plain') {
    rmSync(taskDir, { recursive: true, force: true });
    return Promise.resolve();
  }
  const env = { PATH: SANE_PATH };
  const cwd = c.kind === 'sandbox' ? ctx.scratchInside : ctx.scratch;
  const rm = confine(
    c,
    { command: 'rm', args: ['-rf', '--', taskDirInside] },
    { isRoot: ctx.isolation.agentIsRoot, binds: [], scratch: ctx.scratch, scratchInside: ctx.scratchInside, env, cwd },
  );
  return new Promise((resolve) => {
    const child = spawn(rm.command, rm.args, { cwd: ctx.scratch, env, stdio: 'ignore' });
    child.on('error', () => resolve());
    child.on('exit', () => resolve());
  });
}

function spawnCommand(ctx: CommandContext, req: CommandRequest, taskDirInside: string): Promise<CommandOutcome> {
  const c = ctx.confinement;
  const sandboxed = c.kind === 'sandbox';
  const home = c.kind === 'account' ? c.account.home : taskDirInside;
  const env = ctx.isolation.environment(home, taskDirInside, ctx.bins);
  if (c.kind === 'account') Object.assign(env, { USER: c.account.name, LOGNAME: c.account.name });
  Object.assign(env, req.env?.(taskDirInside) ?? {});
  const run = { command: '/bin/bash', args: ['-c', SETUP, req.script, taskDirInside, req.files?.stdout ?? '', req.files?.stderr ?? ''] };
  const scratchSeen = sandboxed ? ctx.scratchInside : ctx.scratch;
  const confined = confine(c, run, {
    isRoot: ctx.isolation.agentIsRoot,
    binds: [...ctx.binds, ...(req.binds ?? []), ...(req.mpi ? ['/sys'] : [])],
    scratch: ctx.scratch,
    scratchInside: ctx.scratchInside,
    shm: req.mpi,
    env,
    cwd: scratchSeen,
  });
  const launched = ctx.reaperPython
    ? { command: ctx.reaperPython, args: ['-I', '-S', '-c', REAPER, confined.command, ...confined.args] }
    : confined;
  // The command joins its cgroup (or takes its rlimit) before it execs anything.
  const { command, args } = ctx.limits.wrap(launched);
  const stdout = new CappedStream(ctx.outputBytes);
  const stderr = new CappedStream(ctx.outputBytes);
  // With stream files, tee writes them: it must drain before the tree is killed.
  const teeing = req.files?.stdout !== undefined || req.files?.stderr !== undefined;

  return new Promise<CommandOutcome>((resolve) => {
    // detached: the command leads its own process group, so a kill reaches what it started.
    const child = spawn(command, args, { cwd: ctx.scratch, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    ctx.limits.settle(child.pid);
    let timedOut: 'task' | 'command' | undefined;
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const killTree = () => {
      ctx.limits.killAll();
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    };
    const stop = (why: 'task' | 'command') => {
      if (timedOut || settled) return;
      timedOut = why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      timers.push(setTimeout(killTree, KILL_GRACE_MS));
    };
    const arm = (ms: number | undefined, why: 'task' | 'command') => {
      if (ms !== undefined && Number.isFinite(ms) && ms > 0 && ms <= MAX_TIMER_MS) timers.push(setTimeout(() => stop(why), ms));
    };
    arm(req.walltimeMs, 'task');
    arm(req.commandWalltimeMs, 'command');
    let closedByPool = false;
    const onAbort = () => {
      closedByPool = true;
      killTree();
    };
    if (req.signal?.aborted) onAbort();
    else req.signal?.addEventListener('abort', onAbort, { once: true });

    for (const stream of ['stdout', 'stderr'] as const) {
      const capped = stream === 'stdout' ? stdout : stderr;
      child[stream]!.on('data', (chunk: Buffer) => capped.write(chunk));
    }
    const closed = Promise.all([new Promise((r) => child.stdout!.once('close', r)), new Promise((r) => child.stderr!.once('close', r))]);

    const finish = (outcome: CommandOutcome) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      req.signal?.removeEventListener('abort', onAbort);
      const output = taskOutput(stdout, stderr);
      resolve(output ? { ...outcome, output } : outcome);
    };
    child.on('error', (err) => {
      killTree();
      finish(failure('RuntimeUnavailable', `could not start /bin/bash: ${err.message}`));
    });
    child.on('exit', async (code, signal) => {
      // Whatever the command left running (a daemon, a setsid child) ends with it; tee first finishes its files.
      if (!teeing) killTree();
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((r) => (waited = setTimeout(r, PIPE_CLOSE_WAIT_MS)))]);
      clearTimeout(waited);
      if (teeing) killTree();
      if (closedByPool) return finish(failure('PoolClosed', 'the runtime pool closed while the task was running'));
      if (timedOut === 'task') return finish(failure('TaskTimeout', `task exceeded its walltime of ${req.walltimeMs} ms`));
      if (ctx.limits.oomKills() > 0) {
        return finish(
          failure(
            'MemoryLimitExceeded',
            `the task exceeded its memory limit of ${ctx.memoryMb} MB: the kernel killed it (${signal ? `signal ${signal}` : `exit code ${code}`})`,
          ),
        );
      }
      // In a sandbox, bwrap reports its command's death by signal N as exit status 128 + N, as bash does.
      let returncode = code ?? (signal ? -(os.constants.signals[signal] ?? 0) : -1);
      if (timedOut === 'command') returncode = 124;
      finish({ ok: true, returncode, timedOut: timedOut === 'command', stdout: stdout.text(), stderr: stderr.text() });
    });
  });
}
