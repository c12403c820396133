import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * How a runtime process is kept from other users and from the agent (ARCHITECTURE.md, "Trust
 * between tenants"). Whatever the mode, a runtime process serves one user, gets a minimal
 * environment and a scratch directory of its own; the mode says what else stands between a
 * task and the agent's secrets and other users' files:
 *
 * - multi-user: the agent runs as root and each Ferry user maps to a POSIX account; that user's
 *   runtimes run with the account's uid, gid, groups and HOME (setpriv). Unmapped users run nothing.
 * - sandbox: every runtime runs inside bubblewrap: a private mount namespace with read-only system
 *   directories, the interpreter and the runner files, the user's scratch read-write, a private
 *   /tmp, /proc of a new pid namespace; never as root (setpriv to nobody when the agent is root).
 *   The owner's tasks too, unless `ownerUnsandboxed`.
 * - none: no OS isolation: only the endpoint owner's tasks run.
 * - auto: multi-user when root with a user map, else sandbox when bubblewrap works, else none.
 */

export type IsolationMode = 'auto' | 'multi-user' | 'sandbox' | 'none';
export const ISOLATION_MODES: IsolationMode[] = ['auto', 'multi-user', 'sandbox', 'none'];

export interface IsolationSettings {
  /** Default 'auto'. */
  isolation?: IsolationMode;
  /** multi-user: Ferry user id → local account name. */
  userMap?: Record<string, string>;
  /** Variables every task sees. */
  taskEnv?: Record<string, string>;
  /** Names of the agent's variables passed on to tasks as they are. */
  envPassthrough?: string[];
  /** sandbox: whether tasks reach the network; default true. */
  sandboxNetwork?: boolean;
  /** sandbox: run the endpoint owner's tasks outside the sandbox (still minimal env and scratch); default false. */
  ownerUnsandboxed?: boolean;
}

/** The configured isolation cannot work here: the agent refuses to start. */
export class IsolationConfigError extends Error {
  override name = 'IsolationConfigError';
}

export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** How one user's runtime processes are launched. */
export type Confinement =
  | { kind: 'plain' }
  | { kind: 'account'; account: Account }
  /** `uid` to drop to inside the sandbox (the agent is root), or undefined: stay the agent's uid. */
  | { kind: 'sandbox'; uid: number | undefined; gid: number | undefined; network: boolean };

export type Admission = { ok: true; confinement: Confinement } | { ok: false; type: string; message: string };

// Variables a task may see from the agent without being configured to.
const LOCALE = /^(LANG|LANGUAGE|LC_[A-Z_]+|TZ)$/;
// Never handed to task code, whatever the configuration says.
const FORBIDDEN = /^(FERRY_|AWS_|NODE_OPTIONS$|NODE_CHANNEL_FD$|LD_PRELOAD$|LD_LIBRARY_PATH$)/;
export const SANE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const NOBODY = 65534;
export const BWRAP_PACKAGE_HINT = 'install the Debian package `bubblewrap` (apt-get install bubblewrap)';

export class Isolation {
  constructor(
    readonly mode: Exclude<IsolationMode, 'auto'>,
    private readonly settings: IsolationSettings,
    private readonly accounts: Map<string, Account>,
    readonly agentIsRoot: boolean,
  ) {}

  /** Whether `user`'s tasks may run here, and how; `owner` is the endpoint's owner. */
  admit(user: string, owner: string | undefined): Admission {
    switch (this.mode) {
      case 'none':
        if (user === owner) return { ok: true, confinement: { kind: 'plain' } };
        return {
          ok: false,
          type: 'IsolationUnavailable',
          message:
            'this endpoint runs only its owner\'s tasks: its agent has no OS isolation (isolation "none") to keep other users\' tasks apart; ' +
            'the owner can run it as root with a user_map (multi-user) or install bubblewrap (sandbox)',
        };
      case 'multi-user': {
        const account = this.accounts.get(user);
        if (!account) {
          return {
            ok: false,
            type: 'UserNotMapped',
            message: `Ferry user ${JSON.stringify(user)} maps to no local account on this multi-user endpoint (user_map); nothing was run`,
          };
        }
        return { ok: true, confinement: { kind: 'account', account } };
      }
      case 'sandbox':
        if (user === owner && this.settings.ownerUnsandboxed) return { ok: true, confinement: { kind: 'plain' } };
        return {
          ok: true,
          confinement: {
            kind: 'sandbox',
            uid: this.agentIsRoot ? NOBODY : undefined,
            gid: this.agentIsRoot ? NOBODY : undefined,
            network: this.settings.sandboxNetwork ?? true,
          },
        };
    }
  }

  /** The variables a task sees: locale, a fixed PATH, HOME and TMPDIR, and what the endpoint adds. */
  environment(home: string, tmpdir: string, binDirs: string[], from: NodeJS.ProcessEnv = process.env): Record<string, string> {
    const env: Record<string, string> = { PATH: [...new Set(binDirs), SANE_PATH].join(':') };
    for (const [k, v] of Object.entries(from)) if (LOCALE.test(k) && v !== undefined) env[k] = v;
    for (const k of this.settings.envPassthrough ?? []) if (from[k] !== undefined) env[k] = from[k]!;
    Object.assign(env, this.settings.taskEnv ?? {});
    env.HOME = home;
    env.TMPDIR = tmpdir;
    return env;
  }

  describe(): string {
    if (this.mode === 'multi-user') return `multi-user (${this.accounts.size} mapped users)`;
    if (this.mode === 'sandbox') {
      const net = (this.settings.sandboxNetwork ?? true) ? 'network shared' : 'no network';
      return `sandbox (bubblewrap, ${net}${this.settings.ownerUnsandboxed ? ', owner unsandboxed' : ''})`;
    }
    return "none (only the owner's tasks run)";
  }
}

export interface ResolveOptions {
  isRoot?: boolean;
  /** Called with the one warning line when auto falls back to none. */
  warn?: (line: string) => void;
  /** The bubblewrap command; default bwrap on the fixed PATH. */
  bwrap?: string;
}

/** Picks and checks the isolation mode once, at agent start; throws IsolationConfigError if the configured mode cannot work. */
export function resolveIsolation(settings: IsolationSettings = {}, opts: ResolveOptions = {}): Isolation {
  const requested = settings.isolation ?? 'auto';
  if (!ISOLATION_MODES.includes(requested))
    throw new IsolationConfigError(`unknown isolation ${JSON.stringify(requested)}; expected one of ${ISOLATION_MODES.join(', ')}`);
  for (const name of [...Object.keys(settings.taskEnv ?? {}), ...(settings.envPassthrough ?? [])]) {
    if (FORBIDDEN.test(name))
      throw new IsolationConfigError(
        `task_env and env_passthrough may not hand ${name} to tasks: FERRY_* and AWS_* variables stay with the agent`,
      );
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
      throw new IsolationConfigError(`${JSON.stringify(name)} is not a valid environment variable name`);
  }
  for (const [k, v] of Object.entries(settings.taskEnv ?? {}))
    if (typeof v !== 'string') throw new IsolationConfigError(`task_env.${k} must be a string`);
  const isRoot = opts.isRoot ?? process.getuid?.() === 0;
  const userMap = settings.userMap ?? {};
  const hasMap = Object.keys(userMap).length > 0;

  const multiUser = (): Isolation => {
    if (!isRoot)
      throw new IsolationConfigError(
        'isolation "multi-user" needs the agent to run as root, to start each user\'s runtimes as their own account',
      );
    if (!hasMap) throw new IsolationConfigError('isolation "multi-user" needs a user_map from Ferry user ids to local account names');
    if (!commandExists('setpriv')) throw new IsolationConfigError('isolation "multi-user" needs setpriv (Debian package `util-linux`)');
    const accounts = new Map<string, Account>();
    for (const [user, name] of Object.entries(userMap)) {
      const account = lookupAccount(name);
      if (!account)
        throw new IsolationConfigError(`user_map maps ${JSON.stringify(user)} to ${JSON.stringify(name)}, which is no local account`);
      if (account.uid === 0)
        throw new IsolationConfigError(
          `user_map maps ${JSON.stringify(user)} to ${JSON.stringify(name)}, a root account; tasks never run as root`,
        );
      accounts.set(user, account);
    }
    return new Isolation('multi-user', settings, accounts, isRoot);
  };
  const sandbox = (): Isolation => new Isolation('sandbox', settings, new Map(), isRoot);

  switch (requested) {
    case 'multi-user':
      return multiUser();
    case 'sandbox': {
      const problem = probeSandbox(isRoot, opts.bwrap);
      if (problem) throw new IsolationConfigError(`isolation "sandbox" cannot work here: ${problem}`);
      return sandbox();
    }
    case 'none':
      return new Isolation('none', settings, new Map(), isRoot);
    case 'auto': {
      if (isRoot && hasMap) return multiUser();
      const problem = probeSandbox(isRoot, opts.bwrap);
      if (!problem) return sandbox();
      opts.warn?.(`ferry worker: no OS isolation available (${problem}); only the endpoint owner's tasks will run (isolation "none")`);
      return new Isolation('none', settings, new Map(), isRoot);
    }
  }
}

function commandExists(name: string): boolean {
  if (name.includes('/')) return existsSync(name);
  return SANE_PATH.split(':').some((dir) => existsSync(path.join(dir, name)));
}

function lookupAccount(name: string): Account | undefined {
  const out = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  if (out.status !== 0) return undefined;
  const [login, , uid, gid, , home] = out.stdout.trim().split(':');
  if (!login || uid === undefined || gid === undefined) return undefined;
  return { name: login, uid: Number(uid), gid: Number(gid), home: home || '/' };
}

/** Why bubblewrap cannot run a sandbox here, or undefined when a probe run worked. */
export function probeSandbox(isRoot: boolean, bwrap = 'bwrap'): string | undefined {
  if (!commandExists(bwrap)) return `bubblewrap (bwrap) is not installed; ${BWRAP_PACKAGE_HINT}`;
  if (isRoot && !commandExists('setpriv'))
    return 'setpriv is missing (Debian package `util-linux`), needed to run sandboxed tasks as nobody';
  const inner = isRoot ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', 'true'] : ['true'];
  const args = sandboxArgs({ isRoot, network: true, binds: [], scratch: undefined, env: { PATH: SANE_PATH }, cwd: '/' });
  const out = spawnSync(bwrap, [...args, '--', ...inner], { encoding: 'utf8', timeout: 10_000 });
  if (out.status === 0) return undefined;
  const why = (out.stderr || out.error?.message || `exit ${out.status}`).trim().split('\n')[0];
  return `a probe run of bubblewrap failed (${why}); unprivileged user namespaces may be disabled`;
}

// Top-level system directories a sandbox shows read-only; on merged-/usr systems most are symlinks.
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'];
export const SANDBOX_SCRATCH = '/scratch';

export interface SandboxLayout {
  isRoot: boolean;
  network: boolean;
  /** Host directories shown read-only at the same path (the interpreter's prefix, ...). */
  binds: string[];
  /** Read-only binds at another path: [host, inside]. */
  mappedBinds?: [string, string][];
  /** The user's scratch directory, shown read-write at `scratchInside`. */
  scratch: string | undefined;
  scratchInside?: string;
  /** A writable /dev/shm of the sandbox's own (MPI ranks on one node share memory through it). */
  shm?: boolean;
  env: Record<string, string>;
  cwd: string;
}

/** bwrap's arguments up to (not including) `--` and the command. */
export function sandboxArgs(layout: SandboxLayout): string[] {
  const args = [
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--die-with-parent',
    '--new-session',
    '--hostname',
    'ferry',
  ];
  // Unprivileged bwrap needs a user namespace; root's bwrap must not map the sandbox to uid 0 outside.
  if (!layout.isRoot) args.push('--unshare-user');
  if (!layout.network) args.push('--unshare-net');
  for (const dir of SYSTEM_DIRS) {
    let stat;
    try {
      stat = lstatSync(dir);
    } catch {
      continue;
    }
    if (stat.isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir);
    else if (stat.isDirectory()) args.push('--ro-bind', dir, dir);
  }
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
  // bwrap's /dev/shm is a directory of root's: a task dropped to nobody could not create a segment in it.
  if (layout.shm) args.push('--perms', '1777', '--tmpfs', '/dev/shm');
  const made = new Set<string>(['/', '/tmp', '/proc', '/dev', ...SYSTEM_DIRS]);
  const mkdirs = (inside: string) => {
    // bwrap makes missing parents 0700 (root's): the task, dropped to nobody, could not pass them.
    const parts = inside.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const dir = '/' + parts.slice(0, i).join('/');
      if (made.has(dir) || SYSTEM_DIRS.some((s) => dir.startsWith(s + '/'))) continue;
      made.add(dir);
      args.push('--perms', '0755', '--dir', dir);
    }
  };
  for (const dir of [...new Set(layout.binds)]) {
    if (SYSTEM_DIRS.some((s) => dir === s || dir.startsWith(s + '/'))) continue; // already shown
    mkdirs(dir);
    args.push('--ro-bind', dir, dir);
  }
  for (const [host, inside] of layout.mappedBinds ?? []) {
    mkdirs(inside);
    args.push('--ro-bind', host, inside);
  }
  if (layout.scratch) {
    const inside = layout.scratchInside ?? SANDBOX_SCRATCH;
    mkdirs(inside);
    args.push('--bind', layout.scratch, inside);
  }
  args.push('--chdir', layout.cwd, '--clearenv');
  for (const [k, v] of Object.entries(layout.env)) args.push('--setenv', k, v);
  return args;
}

/** The command that starts a runtime under `confinement`; `command` and `args` start the runner itself. */
export function confine(
  confinement: Confinement,
  run: { command: string; args: string[] },
  sandbox: Omit<SandboxLayout, 'isRoot' | 'network'> & { isRoot: boolean },
): { command: string; args: string[] } {
  switch (confinement.kind) {
    case 'plain':
      return run;
    case 'account': {
      const { uid, gid } = confinement.account;
      // node's spawn({uid, gid}) would keep root's supplementary groups; setpriv sets the account's own.
      return { command: 'setpriv', args: [`--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--', run.command, ...run.args] };
    }
    case 'sandbox': {
      const drop =
        confinement.uid !== undefined
          ? ['setpriv', `--reuid=${confinement.uid}`, `--regid=${confinement.gid}`, '--clear-groups', '--no-new-privs', '--']
          : [];
      const args = sandboxArgs({ ...sandbox, network: confinement.network });
      return { command: 'bwrap', args: [...args, '--', ...drop, run.command, ...run.args] };
    }
  }
}
