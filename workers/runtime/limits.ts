import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * What keeps a task inside its limits, enforced by the kernel rather than by the runner:
 *
 * - cgroup2: a child cgroup per runtime process under a Ferry cgroup made beside the agent's own
 *   (memory.max, memory.swap.max 0, memory.oom.group, pids.max); cgroup.kill ends the whole tree.
 * - cgroup1: the same with the v1 memory and pids controllers (memory.limit_in_bytes and
 *   memory.memsw.limit_in_bytes, pids.max); where the unified (v2) hierarchy is mounted beside them
 *   (a hybrid host) its cgroup.kill ends the tree, else every pid in cgroup.procs is killed until
 *   none is left.
 * - rlimit: no usable cgroups. RLIMIT_DATA caps each process's private writable memory. No
 *   capability is needed (the agent may lack CAP_SYS_RESOURCE, and a runtime may run under another
 *   uid or inside bwrap, where the agent could not prlimit it): each runtime process starts under
 *   `prlimit --data=<endpoint max>` (soft and hard, inherited through setpriv, bwrap and exec), and
 *   the runner lowers its own soft limit to each task's cap before the task runs (the cap rides in
 *   the task's request). A task can raise it again only up to the hard limit, the endpoint's
 *   maximum. The tree is found by walking /proc from the spawned process (the runner's host pid is
 *   a descendant of bwrap's; the runners are child subreapers, so orphaned grandchildren stay
 *   under them).
 *
 * A runtime process joins its cgroup before it execs anything (a launcher writes its own pid into
 * cgroup.procs), so nothing it starts, bwrap's pid-namespace init included, is ever outside.
 */

export type LimitMechanism = 'cgroup2' | 'cgroup1' | 'rlimit';
export type LimitMode = 'auto' | 'cgroup' | 'rlimit';
export const LIMIT_MODES: LimitMode[] = ['auto', 'cgroup', 'rlimit'];

export interface TaskLimitSettings {
  /** The most memory a task may use (its whole process tree, interpreter included), and the default; MB. Default 2048. */
  taskMemoryMb?: number;
  /** Processes and threads of one runtime process's tree at most: a fork-bomb guard. Default 4096. */
  taskPidsMax?: number;
  /** Bytes of stdout and of stderr kept per task (head and tail). Default 64 KiB. */
  taskOutputBytes?: number;
  /** Default auto: cgroups where this machine lets the agent make them, else rlimit. */
  limits?: LimitMode;
}

export const DEFAULT_TASK_MEMORY_MB = 2048;
export const DEFAULT_TASK_PIDS_MAX = 4096;
export const DEFAULT_TASK_OUTPUT_BYTES = 64 * 1024;
// Below this a runtime cannot even start (python ~10 MB, node ~40 MB resident).
export const MIN_TASK_MEMORY_MB = 16;

/** The limits configured a bad way: the agent refuses to start. */
export class LimitConfigError extends Error {
  override name = 'LimitConfigError';
}

/** Settings from FERRY_TASK_MEMORY_MB, FERRY_TASK_PIDS_MAX, FERRY_TASK_OUTPUT_KB, FERRY_TASK_LIMITS, or the same keys in lower case in FERRY_WORKER_CONFIG. */
export function taskLimitSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): TaskLimitSettings {
  let file: Record<string, unknown> = {};
  if (env.FERRY_WORKER_CONFIG) {
    try {
      file = JSON.parse(readFileSync(env.FERRY_WORKER_CONFIG, 'utf8')) as Record<string, unknown>;
    } catch {
      file = {};
    }
  }
  const num = (name: string, min: number): number | undefined => {
    const raw = env[name] ?? file[name.replace(/^FERRY_/, '').toLowerCase()];
    if (raw === undefined || raw === '') return undefined;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min)
      throw new LimitConfigError(
        `${name.replace(/^FERRY_/, '').toLowerCase()} must be a whole number of at least ${min}, not ${JSON.stringify(raw)}`,
      );
    return n;
  };
  const mode = (env.FERRY_TASK_LIMITS ?? file.task_limits) as string | undefined;
  if (mode !== undefined && !LIMIT_MODES.includes(mode as LimitMode))
    throw new LimitConfigError(`task_limits must be one of ${LIMIT_MODES.join(', ')}, not ${JSON.stringify(mode)}`);
  const outputKb = num('FERRY_TASK_OUTPUT_KB', 1);
  return {
    taskMemoryMb: num('FERRY_TASK_MEMORY_MB', MIN_TASK_MEMORY_MB),
    taskPidsMax: num('FERRY_TASK_PIDS_MAX', 16),
    taskOutputBytes: outputKb === undefined ? undefined : outputKb * 1024,
    limits: mode as LimitMode | undefined,
  };
}

/** The limits of one runtime process: its cgroup (or its rlimit), the tree it may leave behind. */
export interface ProcessLimits {
  /** The command that joins the cgroup (or takes the rlimit) and then execs `run`. */
  wrap(run: { command: string; args: string[] }): { command: string; args: string[] };
  /** Records the process's own pids once it is ready: anything else later is what a task started. */
  settle(mainPid: number | undefined): void;
  /** Sets the memory cap for the next task; false when the kernel refuses (usage already above it). */
  setMemory(mb: number): boolean;
  /** The RLIMIT_DATA soft limit (bytes) the runner must set on itself before the next task, or undefined (cgroups). */
  runnerDataLimit(): number | undefined;
  /** Kills what a task left behind, keeping the runtime's own processes; the number killed. */
  killStrays(): number;
  /** Kills the whole tree, wherever its processes moved (new sessions, new groups, daemons). */
  killAll(): void;
  /** How many times the kernel's OOM killer has struck in this cgroup (0 under rlimit). */
  oomKills(): number;
  /** Removes the cgroup once empty (retried for a moment while the kernel reaps). */
  release(): void;
}

export interface LimitsInfo {
  mechanism: LimitMechanism;
  /** One line for the agent's start log. */
  describe(): string;
}

const readText = (file: string): string | undefined => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

const pidsIn = (dir: string): number[] => (readText(path.join(dir, 'cgroup.procs')) ?? '').split('\n').filter(Boolean).map(Number);

const killPid = (pid: number): boolean => {
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
};

/** Kills every pid of `dirs` except `keep` until none is left (a forking task may race a few rounds). */
function killEvery(dirs: string[], keep: Set<number>): number {
  let killed = 0;
  for (let round = 0; round < 50; round++) {
    const pids = [...new Set(dirs.flatMap(pidsIn))].filter((p) => !keep.has(p));
    if (!pids.length) break;
    for (const pid of pids) if (killPid(pid)) killed++;
  }
  return killed;
}

/** rmdir, retried: a killed process leaves cgroup.procs only once the kernel has reaped it. */
function removeDirs(dirs: string[]): void {
  const left = dirs.filter((d) => existsSync(d));
  if (!left.length) return;
  const remaining: string[] = [];
  for (const dir of left) {
    try {
      rmdirSync(dir);
    } catch {
      remaining.push(dir);
    }
  }
  if (remaining.length) {
    let tries = 0;
    const retry = setInterval(() => {
      for (let i = remaining.length - 1; i >= 0; i--) {
        try {
          rmdirSync(remaining[i]!);
          remaining.splice(i, 1);
        } catch {
          /* still busy */
        }
      }
      if (!remaining.length || ++tries > 50) clearInterval(retry);
    }, 100);
    retry.unref();
  }
}

/** A shell that puts itself into `procsFiles` and then becomes `run`: nothing escapes the join. */
function joinThenExec(procsFiles: string[], run: { command: string; args: string[] }): { command: string; args: string[] } {
  const joins = procsFiles.map((_, i) => `echo $$ > "$${i + 1}" || exit 125`).join('; ');
  const script = `${joins}; shift ${procsFiles.length}; exec "$@"`;
  return { command: '/bin/sh', args: ['-c', script, 'ferry-join', ...procsFiles, run.command, ...run.args] };
}

// --- cgroup v2 ------------------------------------------------------------------------------

class CgroupV2Process implements ProcessLimits {
  private keep = new Set<number>();
  constructor(
    private readonly dir: string,
    pidsMax: number,
  ) {
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'memory.swap.max'), '0');
    // The OOM killer takes the whole tree at once: a task is never left half-killed.
    try {
      writeFileSync(path.join(dir, 'memory.oom.group'), '1');
    } catch {
      /* older kernels */
    }
    writeFileSync(path.join(dir, 'pids.max'), String(pidsMax));
  }
  wrap(run: { command: string; args: string[] }) {
    return joinThenExec([path.join(this.dir, 'cgroup.procs')], run);
  }
  settle(): void {
    this.keep = new Set(pidsIn(this.dir));
  }
  setMemory(mb: number): boolean {
    try {
      writeFileSync(path.join(this.dir, 'memory.max'), String(mb * 1024 * 1024));
      return true;
    } catch {
      return false;
    }
  }
  runnerDataLimit(): undefined {
    return undefined;
  }
  killStrays(): number {
    return killEvery([this.dir], this.keep);
  }
  killAll(): void {
    try {
      writeFileSync(path.join(this.dir, 'cgroup.kill'), '1');
    } catch {
      killEvery([this.dir], new Set());
    }
  }
  oomKills(): number {
    const m = /^oom_kill (\d+)$/m.exec(readText(path.join(this.dir, 'memory.events')) ?? '');
    return m ? Number(m[1]) : 0;
  }
  release(): void {
    removeDirs([this.dir]);
  }
}

// --- cgroup v1 (with the unified hierarchy for cgroup.kill where mounted) -------------------------

interface V1Roots {
  memory: string;
  pids: string;
  /** A directory of the unified hierarchy (no controllers needed) whose children have cgroup.kill. */
  unified: string | undefined;
}

class CgroupV1Process implements ProcessLimits {
  private keep = new Set<number>();
  private readonly memory: string;
  private readonly pids: string;
  private readonly unified: string | undefined;
  /** A new cgroup is unlimited. */
  private memoryBytes = Infinity;
  constructor(roots: V1Roots, name: string, pidsMax: number) {
    this.memory = path.join(roots.memory, name);
    this.pids = path.join(roots.pids, name);
    this.unified = roots.unified && path.join(roots.unified, name);
    mkdirSync(this.memory);
    mkdirSync(this.pids);
    if (this.unified) mkdirSync(this.unified);
    writeFileSync(path.join(this.pids, 'pids.max'), String(pidsMax));
    try {
      // No swap: a task over its limit is killed, not slowed to a crawl.
      writeFileSync(path.join(this.memory, 'memory.swappiness'), '0');
    } catch {
      /* not every kernel lets a child set it */
    }
  }
  private get dirs(): string[] {
    return [this.memory, this.pids, ...(this.unified ? [this.unified] : [])];
  }
  wrap(run: { command: string; args: string[] }) {
    return joinThenExec(
      this.dirs.map((d) => path.join(d, 'cgroup.procs')),
      run,
    );
  }
  settle(): void {
    this.keep = new Set(pidsIn(this.pids));
  }
  setMemory(mb: number): boolean {
    const bytes = mb * 1024 * 1024;
    if (bytes === this.memoryBytes) return true;
    const limit = path.join(this.memory, 'memory.limit_in_bytes');
    const memsw = path.join(this.memory, 'memory.memsw.limit_in_bytes');
    const files = existsSync(memsw) ? [limit, memsw] : [limit];
    // memsw (memory + swap) may never be below the memory limit: lower the limit first, raise it
    // last; after a refused write the state is unknown, so both orders are tried.
    const orders = Number.isNaN(this.memoryBytes)
      ? [files, [...files].reverse()]
      : [bytes < this.memoryBytes ? files : [...files].reverse()];
    for (const order of orders) {
      try {
        for (const file of order) writeFileSync(file, String(bytes));
        this.memoryBytes = bytes;
        return true;
      } catch {
        this.memoryBytes = NaN;
      }
    }
    return false;
  }
  runnerDataLimit(): undefined {
    return undefined;
  }
  killStrays(): number {
    return killEvery([this.pids], this.keep);
  }
  killAll(): void {
    if (this.unified) {
      try {
        writeFileSync(path.join(this.unified, 'cgroup.kill'), '1');
      } catch {
        /* fall through */
      }
    }
    killEvery([this.pids, this.memory], new Set());
  }
  oomKills(): number {
    const m = /^oom_kill (\d+)$/m.exec(readText(path.join(this.memory, 'memory.oom_control')) ?? '');
    return m ? Number(m[1]) : 0;
  }
  release(): void {
    removeDirs(this.dirs);
  }
}

// --- rlimit fallback ------------------------------------------------------------------------

/** Every descendant of `root` by its parent pids in /proc, deepest last. */
export function descendantsOf(root: number): number[] {
  const parent = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readText(`/proc/${entry}/stat`);
    if (!stat) continue;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const list = parent.get(ppid) ?? [];
    list.push(Number(entry));
    parent.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    for (const child of parent.get(pid) ?? []) {
      out.push(child);
      walk(child);
    }
  };
  walk(root);
  return out;
}

/** VmData of `pid` in bytes (what RLIMIT_DATA is checked against), or undefined when it cannot be read. */
export function dataBytesOf(pid: number): number | undefined {
  const m = /^VmData:\s+(\d+) kB$/m.exec(readText(`/proc/${pid}/status`) ?? '');
  return m ? Number(m[1]) * 1024 : undefined;
}

/** The command that runs `run` with RLIMIT_DATA at `bytes`, soft and hard: a process may always lower its own limits. */
export function withDataLimit(bytes: number, run: { command: string; args: string[] }): { command: string; args: string[] } {
  return { command: 'prlimit', args: [`--data=${bytes}:${bytes}`, '--', run.command, ...run.args] };
}

/** For a short synchronous pause between walks of /proc. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

class RlimitProcess implements ProcessLimits {
  private mainPid: number | undefined;
  /** The runner itself: the spawned process, or in a sandbox the deepest of bwrap's processes at ready. */
  private runnerPid: number | undefined;
  private keep = new Set<number>();
  private memoryMb = 0;
  constructor(private readonly maxMemoryMb: number) {}
  wrap(run: { command: string; args: string[] }) {
    // Set before exec, by the process on itself: no capability, whatever uid the runtime ends up as.
    return withDataLimit(this.maxMemoryMb * 1024 * 1024, run);
  }
  settle(mainPid: number | undefined): void {
    this.mainPid = mainPid;
    const tree = mainPid === undefined ? [] : [mainPid, ...descendantsOf(mainPid)];
    this.keep = new Set(tree);
    // A chain at ready (bwrap, its pid-namespace init, the runner; or just the runner): the last is the runner.
    this.runnerPid = tree[tree.length - 1];
  }
  setMemory(mb: number): boolean {
    if (this.runnerPid === undefined) return false;
    const cap = Math.min(mb, this.maxMemoryMb);
    // As the kernel would see it: a process already holding more than the cap could not allocate at all.
    const used = dataBytesOf(this.runnerPid);
    if (used === undefined || used > cap * 1024 * 1024) return false;
    this.memoryMb = cap;
    return true;
  }
  runnerDataLimit(): number | undefined {
    return this.memoryMb ? this.memoryMb * 1024 * 1024 : undefined;
  }
  private tree(): number[] {
    if (this.mainPid === undefined) return [];
    return descendantsOf(this.mainPid);
  }
  killStrays(): number {
    let killed = 0;
    // A walk of /proc can miss a process whose parent exits during it (a double fork: the child
    // was read under its old parent, which was then gone): only two clean walks in a row, 5 ms
    // apart, say nothing is left.
    for (let round = 0, clean = 0; round < 20 && clean < 2; round++) {
      const strays = this.tree().filter((p) => !this.keep.has(p));
      if (!strays.length) {
        clean++;
        Atomics.wait(PAUSE, 0, 0, 5);
        continue;
      }
      clean = 0;
      for (const pid of strays) if (killPid(pid)) killed++;
    }
    return killed;
  }
  killAll(): void {
    for (let round = 0; round < 20; round++) {
      const all = this.tree();
      if (!all.length) break;
      for (const pid of all) killPid(pid);
    }
  }
  oomKills(): number {
    return 0;
  }
  release(): void {}
}

// --- choosing ------------------------------------------------------------------------------

const CGROUP_ROOT = '/sys/fs/cgroup';
// Each TaskLimits gets its own Ferry cgroup. A random part, not a counter: a process that loads
// this module afresh (a test runner's module registry) must not meet a cgroup an earlier copy left.
const ferryCgroupName = () => `ferry-${process.pid}-${randomBytes(4).toString('hex')}`;

/** The agent's own cgroup paths from /proc/self/cgroup: v1 by controller, v2 under "". */
function ownCgroups(): Map<string, string> {
  const own = new Map<string, string>();
  for (const line of (readText('/proc/self/cgroup') ?? '').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of m[1]!.split(',')) own.set(c, m[2]!);
  }
  return own;
}

export class TaskLimits implements LimitsInfo {
  private next = 1;
  /** @internal use TaskLimits.resolve */
  constructor(
    readonly mechanism: LimitMechanism,
    private readonly base: string[],
    /** A process's limits, by its cgroup name; `maxMemoryMb` caps any task it runs (the rlimit's hard limit). */
    private readonly make: (name: string, maxMemoryMb: number) => ProcessLimits,
    private readonly detail: string,
  ) {}

  /** Picks the mechanism once, at agent start; `mode` cgroup throws LimitConfigError when there are none. */
  static resolve(mode: LimitMode = 'auto', pidsMax = DEFAULT_TASK_PIDS_MAX): TaskLimits {
    const why: string[] = [];
    if (mode !== 'rlimit') {
      const made = tryCgroupV2(pidsMax, why) ?? tryCgroupV1(pidsMax, why);
      if (made) return made;
      if (mode === 'cgroup') throw new LimitConfigError(`task_limits "cgroup" cannot work here: ${why.join('; ')}`);
    }
    return new TaskLimits(
      'rlimit',
      [],
      (_name, maxMemoryMb) => new RlimitProcess(maxMemoryMb),
      mode === 'rlimit' ? 'as configured' : `no usable cgroups: ${why.join('; ')}`,
    );
  }

  /** A fresh limits holder for one runtime process. */
  forProcess(maxMemoryMb = DEFAULT_TASK_MEMORY_MB): ProcessLimits {
    return this.make(`p${this.next++}`, maxMemoryMb);
  }

  describe(): string {
    if (this.mechanism === 'rlimit')
      return `rlimit (RLIMIT_DATA set by each runtime process on itself, process tree by /proc; ${this.detail})`;
    return `${this.mechanism} (${this.detail})`;
  }

  /** Removes the Ferry cgroup (its children first); kills whatever is still inside. */
  close(): void {
    for (const dir of this.base) {
      if (!existsSync(dir)) continue;
      for (const child of readdirSync(dir, { withFileTypes: true })) {
        if (!child.isDirectory()) continue;
        const sub = path.join(dir, child.name);
        for (const pid of pidsIn(sub)) killPid(pid);
      }
    }
    const subdirs = this.base.flatMap((dir) =>
      existsSync(dir)
        ? readdirSync(dir, { withFileTypes: true })
            .filter((d) => d.isDirectory())
            .map((d) => path.join(dir, d.name))
        : [],
    );
    for (const d of subdirs) {
      try {
        rmdirSync(d);
      } catch {
        /* still being reaped */
      }
    }
    for (const d of this.base) {
      try {
        rmdirSync(d);
      } catch {
        /* children still being reaped: the kernel keeps it until they go */
      }
    }
  }
}

function tryCgroupV2(pidsMax: number, why: string[]): TaskLimits | undefined {
  const controllers = readText(path.join(CGROUP_ROOT, 'cgroup.controllers'));
  if (controllers === undefined) {
    why.push('no cgroup v2 at /sys/fs/cgroup');
    return undefined;
  }
  const own = ownCgroups().get('');
  if (own === undefined) return undefined;
  // A cgroup that holds processes may not hand controllers to children ("no internal
  // processes"), so the Ferry cgroup is made beside the agent's own, under its parent (the root
  // is exempt from that rule).
  const ownDir = path.join(CGROUP_ROOT, own);
  const atRoot = own === '/';
  const parent = atRoot ? CGROUP_ROOT : path.dirname(ownDir);
  const base = path.join(parent, ferryCgroupName());
  try {
    if (atRoot) writeFileSync(path.join(CGROUP_ROOT, 'cgroup.subtree_control'), '+memory +pids');
    // What the parent hands its children is what a child of it (the agent's own cgroup) lists.
    const available = (readText(path.join(ownDir, 'cgroup.controllers')) ?? '').split(/\s+/);
    if (!atRoot && (!available.includes('memory') || !available.includes('pids'))) {
      why.push(`cgroup v2 ${parent} hands no memory and pids controllers to its children`);
      return undefined;
    }
    mkdirSync(base);
    writeFileSync(path.join(base, 'cgroup.subtree_control'), '+memory +pids');
  } catch (err) {
    why.push(`cannot make a cgroup v2 child with memory and pids (${(err as Error).message})`);
    try {
      rmdirSync(base);
    } catch {
      /* never made */
    }
    return undefined;
  }
  return new TaskLimits('cgroup2', [base], (name) => new CgroupV2Process(path.join(base, name), pidsMax), base);
}

function tryCgroupV1(pidsMax: number, why: string[]): TaskLimits | undefined {
  const own = ownCgroups();
  const memOwn = own.get('memory');
  const pidsOwn = own.get('pids');
  if (
    memOwn === undefined ||
    pidsOwn === undefined ||
    !existsSync(path.join(CGROUP_ROOT, 'memory')) ||
    !existsSync(path.join(CGROUP_ROOT, 'pids'))
  ) {
    why.push('no cgroup v1 memory and pids hierarchies');
    return undefined;
  }
  const name = ferryCgroupName();
  const roots: V1Roots = {
    memory: path.join(CGROUP_ROOT, 'memory', memOwn, name),
    pids: path.join(CGROUP_ROOT, 'pids', pidsOwn, name),
    unified: undefined,
  };
  const made: string[] = [];
  try {
    for (const dir of [roots.memory, roots.pids]) {
      mkdirSync(dir);
      made.push(dir);
    }
    // A probe child proves limits can be written here.
    const probe = new CgroupV1Process({ ...roots, unified: undefined }, 'probe', pidsMax);
    const ok = probe.setMemory(64);
    removeDirs([path.join(roots.memory, 'probe'), path.join(roots.pids, 'probe')]);
    if (!ok) throw new Error('memory.limit_in_bytes is not writable');
  } catch (err) {
    why.push(`cannot make a cgroup v1 child (${(err as Error).message})`);
    for (const dir of made.reverse()) {
      try {
        rmdirSync(dir);
      } catch {
        /* leave it */
      }
    }
    return undefined;
  }
  // A hybrid host: the unified hierarchy, controllers or not, gives cgroup.kill.
  const unifiedOwn = own.get('');
  const unifiedRoot = path.join(CGROUP_ROOT, 'unified');
  if (unifiedOwn !== undefined && existsSync(path.join(unifiedRoot, 'cgroup.procs'))) {
    const dir = path.join(unifiedRoot, unifiedOwn, name);
    try {
      mkdirSync(dir);
      if (existsSync(path.join(dir, 'cgroup.kill'))) {
        roots.unified = dir;
        made.push(dir);
      } else rmdirSync(dir);
    } catch {
      /* kill by cgroup.procs then */
    }
  }
  const hasMemsw = existsSync(path.join(roots.memory, 'memory.memsw.limit_in_bytes'));
  const detail = `memory${hasMemsw ? '+memsw' : ' (no swap accounting)'} and pids controllers under ${path.dirname(roots.memory)}${roots.unified ? ', cgroup.kill from the unified hierarchy' : ''}`;
  return new TaskLimits(
    'cgroup1',
    [roots.memory, roots.pids, ...(roots.unified ? [roots.unified] : [])],
    (n) => new CgroupV1Process(roots, n, pidsMax),
    detail,
  );
}
