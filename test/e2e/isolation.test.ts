import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IsolationConfigError, resolveIsolation, type IsolationSettings } from '../../workers/runtime/isolation';
import { RunOutcome, RunRequest, RuntimePool, type RuntimePoolOptions } from '../../workers/runtime/pool';
import type { ProcessRuntime } from '../../core/runtimes';

// Real runtime processes in each isolation mode, no mocks. These run as root (as CI does):
// sandboxed tasks drop to nobody inside bubblewrap.

jest.setTimeout(60_000);

const OWNER = 'owner-1';
const json = (args: unknown[] = []): Buffer => Buffer.from(JSON.stringify({ args, kwargs: {} }));
let counter = 0;
const req = (user: string, runtime: ProcessRuntime, source: string, entrypoint?: string, extra: Partial<RunRequest> = {}): RunRequest => ({
  taskId: `iso-${++counter}`,
  user,
  runtime,
  source,
  entrypoint,
  args: json(),
  codec: 'json',
  walltimeMs: 10_000,
  ...extra,
});
const node = (user: string, source: string, extra: Partial<RunRequest> = {}) => req(user, 'node', source, undefined, extra);
const py = (user: string, source: string, entrypoint: string, extra: Partial<RunRequest> = {}) =>
  req(user, 'python', source, entrypoint, extra);

function resultOf<T = unknown>(outcome: RunOutcome): T {
  if (!outcome.ok) throw new Error(`task failed: ${outcome.error.type}: ${outcome.error.message}\n${outcome.error.traceback}`);
  return JSON.parse(outcome.result.toString('utf8')) as T;
}

/** What the look functions (nodeLook, PY_LOOK) report about the task's process. */
interface Look {
  env: Record<string, string>;
  cwd: string;
  uid: number;
  secretFile: string;
  agentEnviron: string;
  pids: number[];
}
function errorOf(outcome: RunOutcome) {
  if (outcome.ok) throw new Error(`task succeeded with ${outcome.result.toString()}, expected a failure`);
  return outcome.error;
}

// A secret the agent holds: in its environment and in a 0600 file in its working directory.
const SECRET = 'fes_agent-secret-' + Math.random().toString(36).slice(2);
let agentDir: string;
let secretFile: string;
// The pools' scratch space: apart from that of other agents the e2e suite runs at the same time.
let scratchParent: string;
const scratchDirs = () =>
  execFileSync('find', [scratchParent, '-mindepth', '2', '-maxdepth', '2', '-name', 'u-*']).toString().split('\n').filter(Boolean);
const savedEnv = { ...process.env };

beforeAll(() => {
  process.env.FERRY_ENDPOINT_SECRET = SECRET;
  process.env.AWS_SECRET_ACCESS_KEY = SECRET;
  process.env.PASSED_ON = 'passed-on';
  process.env.NOT_PASSED_ON = 'not-passed-on';
  agentDir = mkdtempSync(path.join(os.tmpdir(), 'ferry-agent-'));
  secretFile = path.join(agentDir, 'endpoint.json');
  writeFileSync(secretFile, JSON.stringify({ endpoint_secret: SECRET }), { mode: 0o600 });
  scratchParent = mkdtempSync(path.join(os.tmpdir(), 'ferry-iso-test-'));
});
afterAll(() => {
  process.env = savedEnv;
  rmSync(agentDir, { recursive: true, force: true });
  rmSync(scratchParent, { recursive: true, force: true });
});

const pools: RuntimePool[] = [];
async function poolWith(settings: IsolationSettings, opts: Partial<RuntimePoolOptions> = {}): Promise<RuntimePool> {
  const pool = new RuntimePool({
    size: 1,
    owner: OWNER,
    isolation: resolveIsolation(settings),
    onOutput: () => undefined,
    scratchParent,
    ...opts,
  });
  pools.push(pool);
  await pool.start();
  return pool;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

const NODE_LOOK = `() => {
  const fs = require('fs');
  const tryRead = (f) => { try { return fs.readFileSync(f, 'utf8'); } catch (e) { return 'ERR ' + e.code; } };
  return {
    uid: process.getuid(), cwd: process.cwd(), env: process.env,
    pids: fs.readdirSync('/proc').filter((x) => /^\\d+$/.test(x)).map(Number),
    secretFile: tryRead(SECRET_FILE),
  };
}`;
const nodeLook = (file: string) => NODE_LOOK.replace('SECRET_FILE', JSON.stringify(file));
const PY_LOOK = `import os
def look(secret_file, agent_pid):
    def read(f):
        try:
            with open(f) as fh:
                return fh.read()
        except OSError as e:
            return 'ERR ' + type(e).__name__
    return {'uid': os.getuid(), 'cwd': os.getcwd(), 'env': dict(os.environ),
            'secretFile': read(secret_file), 'agentEnviron': read('/proc/%d/environ' % agent_pid),
            'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}
`;

describe.each(['sandbox', 'none'] as const)('isolation %s', (mode) => {
  const users = mode === 'sandbox' ? ['alice', 'bob'] : [OWNER, OWNER];

  it('gives a task a minimal environment and its scratch directory as cwd, HOME and TMPDIR', async () => {
    const pool = await poolWith({ isolation: mode, taskEnv: { GREETING: 'hello' }, envPassthrough: ['PASSED_ON'] });
    for (const runtime of ['node', 'python'] as const) {
      const look =
        runtime === 'node'
          ? resultOf<Look>(await pool.run(node(users[0]!, nodeLook(secretFile))))
          : resultOf<Look>(await pool.run(py(users[0]!, PY_LOOK, 'look', { args: json([secretFile, process.pid]) })));
      const names = Object.keys(look.env);
      expect(names.filter((n) => /^(FERRY_|AWS_)/.test(n))).toEqual([]);
      expect(JSON.stringify(look.env)).not.toContain(SECRET);
      expect(look.env.GREETING).toBe('hello');
      expect(look.env.PASSED_ON).toBe('passed-on');
      expect(look.env.NOT_PASSED_ON).toBeUndefined();
      expect(look.env.HOME).toBe(look.cwd);
      expect(look.env.TMPDIR).toBe(look.cwd);
      expect(look.cwd).not.toBe(process.cwd());
      if (mode === 'none') {
        expect(look.cwd.startsWith(scratchParent)).toBe(true);
        expect(execFileSync('stat', ['-c', '%a', look.cwd]).toString().trim()).toBe('700');
      }
    }
  });

  it('keeps a global a task poisons away from the next user (node and python)', async () => {
    // Room for everyone's processes, so none is evicted between the tasks.
    const pool = await poolWith({ isolation: mode }, { maxProcesses: 10 });
    // A spy on JSON.stringify would see every later task's arguments and results.
    const nodePoison =
      '() => { const real = JSON.stringify; JSON.stringify = function (...a) { globalThis.__seen = (globalThis.__seen || 0) + 1; return real.apply(this, a) }; return (globalThis.__mark ??= Math.random()) }';
    const nodeProbe = "() => ({ native: String(JSON.stringify).includes('[native code]'), mark: globalThis.__mark ?? null })";
    const pyPoison =
      'import builtins, json, random\n_real = json.dumps\ndef poison():\n    json.dumps = lambda *a, **k: _real(*a, **k)\n    if not hasattr(builtins, "mark"):\n        builtins.mark = random.random()\n    return builtins.mark\n';
    const pyProbe = 'import builtins, json\ndef probe():\n    return [json.dumps.__module__, getattr(builtins, "mark", None)]\n';
    const markA = resultOf(await pool.run(node(users[0]!, nodePoison)));
    const pyMarkA = resultOf(await pool.run(py(users[0]!, pyPoison, 'poison')));
    if (mode === 'sandbox') {
      // Another user's task runs in a process of its own: no poisoned global, no mark.
      expect(resultOf(await pool.run(node(users[1]!, nodeProbe)))).toEqual({ native: true, mark: null });
      expect(resultOf(await pool.run(py(users[1]!, pyProbe, 'probe')))).toEqual(['json', null]);
    }
    // The same user's process is reused (that is the point of a warm process): it sees its own mark.
    expect(resultOf(await pool.run(node(users[0]!, nodeProbe)))).toEqual({ native: false, mark: markA });
    expect(resultOf<unknown[]>(await pool.run(py(users[0]!, pyProbe, 'probe')))[1]).toBe(pyMarkA);
  });
});

describe('isolation sandbox', () => {
  it('keeps the agent, its files and other users out of reach, and never runs a task as root', async () => {
    const pool = await poolWith({ isolation: 'sandbox' });
    const look = resultOf<Look>(await pool.run(py('alice', PY_LOOK, 'look', { args: json([secretFile, process.pid]) })));
    expect(look.uid).not.toBe(0);
    expect(look.secretFile).toMatch(/^ERR /);
    expect(look.agentEnviron).toMatch(/^ERR /);
    // A pid namespace of its own: the sandbox's init and the runner, nothing of the host.
    expect(look.pids).not.toContain(process.pid);
    expect(Math.max(...look.pids)).toBeLessThan(10);
    const nodeLooked = resultOf<Look>(await pool.run(node('alice', nodeLook(secretFile))));
    expect(nodeLooked.uid).not.toBe(0);
    expect(nodeLooked.secretFile).toMatch(/^ERR /);
    expect(nodeLooked.pids).not.toContain(process.pid);
    // Nothing of root's home but the interpreter's own prefix.
    const root = resultOf(
      await pool.run(
        node('alice', "() => { try { return require('fs').readFileSync('/root/.bashrc', 'utf8') } catch (e) { return 'ERR ' + e.code } }"),
      ),
    );
    expect(root).toMatch(/^ERR /);

    // Alice writes a file in her scratch; Bob cannot find it, nor read it by its host path.
    const written = resultOf(
      await pool.run(
        node(
          'alice',
          "() => { require('fs').writeFileSync('private.txt', 'alice only'); return require('fs').realpathSync('private.txt') }",
        ),
      ),
    );
    const hostPaths = execFileSync('find', [scratchParent, '-name', 'private.txt']).toString().trim().split('\n').filter(Boolean);
    expect(hostPaths.length).toBeGreaterThan(0);
    const bobReads = `() => { const fs = require('fs'); return [${JSON.stringify(written)}, ...${JSON.stringify(hostPaths)}].map((f) => { try { return fs.readFileSync(f, 'utf8') } catch (e) { return 'ERR ' + e.code } }) }`;
    for (const answer of resultOf<string[]>(await pool.run(node('bob', bobReads)))) expect(answer).toMatch(/^ERR /);
    expect(resultOf(await pool.run(node('alice', "() => require('fs').readFileSync('private.txt', 'utf8')")))).toBe('alice only');
  });

  it('cuts the network when configured off', async () => {
    const pool = await poolWith({ isolation: 'sandbox', sandboxNetwork: false });
    const ifaces = resultOf<string[]>(await pool.run(node('alice', "() => Object.keys(require('os').networkInterfaces())")));
    expect(ifaces.filter((n: string) => n !== 'lo')).toEqual([]);
  });

  it('runs the owner unsandboxed only when told to', async () => {
    const pool = await poolWith({ isolation: 'sandbox', ownerUnsandboxed: true });
    const owner = resultOf(await pool.run(node(OWNER, '() => process.getuid()')));
    const other = resultOf(await pool.run(node('alice', '() => process.getuid()')));
    expect(owner).toBe(process.getuid!());
    expect(other).not.toBe(0);
  });

  it.each([
    ['node', node('alice', "() => process.kill(process.pid, 'SIGSEGV')"), 'signal SIGSEGV'],
    ['python', py('alice', 'import os\ndef crash():\n    os._exit(3)\n', 'crash'), 'exit code 3'],
  ])('%s: a crash fails only its task; the walltime still kills (%#)', async (runtime, crash, how) => {
    const pool = await poolWith({ isolation: 'sandbox' });
    const error = errorOf(await pool.run(crash));
    expect(error.type).toBe('WorkerProcessDied');
    expect(error.message).toContain(how);
    const slow =
      runtime === 'node'
        ? node('alice', '() => { for (;;) {} }', { walltimeMs: 300 })
        : py('alice', 'import time\ndef slow():\n    time.sleep(30)\n', 'slow', { walltimeMs: 300 });
    expect(errorOf(await pool.run(slow)).type).toBe('TaskTimeout');
    const ok = runtime === 'node' ? node('alice', "() => 'still here'") : py('alice', "def ok():\n    return 'still here'\n", 'ok');
    expect(resultOf(await pool.run(ok))).toBe('still here');
  });
});

describe('isolation none', () => {
  it("refuses another user's task with a clear error and runs nothing", async () => {
    const pool = await poolWith({ isolation: 'none' });
    const marker = path.join(agentDir, 'ran-' + Math.random().toString(36).slice(2));
    for (const r of [
      node('mallory', `() => require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`),
      py('mallory', `def f():\n    open(${JSON.stringify(marker)}, 'w').write('x')\n`, 'f'),
    ]) {
      const error = errorOf(await pool.run(r));
      expect(error.type).toBe('IsolationUnavailable');
      expect(error.message).toMatch(/runs only its owner's tasks/);
    }
    expect(existsSync(marker)).toBe(false);
    expect(pool.stats().users).toBe(1);
  });
});

describe('per-user processes', () => {
  it('starts a user process on demand, reaps it when idle, and removes its scratch', async () => {
    const pool = await poolWith({ isolation: 'sandbox' }, { runtimes: ['node'], idleMs: 300 });
    expect(pool.stats().runtimes.node.processes).toBe(1); // the owner's, pre-warmed
    const scratch = resultOf(await pool.run(node('alice', "() => { require('fs').writeFileSync('f', 'x'); return 1 }")));
    expect(scratch).toBe(1);
    expect(pool.stats()).toMatchObject({ runtimes: { node: { processes: 2 } }, users: 2 });
    expect(scratchDirs()).toHaveLength(2); // the owner's and Alice's
    await new Promise((r) => setTimeout(r, 800));
    expect(pool.stats()).toMatchObject({ runtimes: { node: { processes: 1 } }, users: 1 }); // the owner's stays warm
    expect(scratchDirs()).toHaveLength(1);
  });

  it("at the cap, evicts another user's idle process (least recently used) before a task waits", async () => {
    const pool = await poolWith({ isolation: 'sandbox' }, { runtimes: ['node'], maxProcesses: 3, idleMs: 60_000 });
    const mark = '() => (globalThis.__mark ??= Math.random())';
    const a = resultOf(await pool.run(node('alice', mark)));
    const b = resultOf(await pool.run(node('bob', mark)));
    expect(pool.stats().runtimes.node.processes).toBe(3);
    // Carol needs a process: Alice's, used least recently, goes; the owner's and Bob's stay.
    resultOf(await pool.run(node('carol', mark)));
    expect(pool.stats().runtimes.node.processes).toBe(3);
    expect(resultOf(await pool.run(node('bob', mark)))).toBe(b);
    const a2 = resultOf(await pool.run(node('alice', mark)));
    expect(a2).not.toBe(a); // a fresh process for Alice
  });

  it('makes a task wait, not share, when every process at the cap is busy', async () => {
    const pool = await poolWith({ isolation: 'sandbox' }, { runtimes: ['node'], maxProcesses: 2 });
    const slow = 'async () => { await new Promise((r) => setTimeout(r, 1500)); return globalThis.__mark ??= Math.random() }';
    const alice = pool.run(node('alice', slow));
    const owner = pool.run(node(OWNER, slow));
    await new Promise((r) => setTimeout(r, 700)); // Alice's process has started and taken her task
    const bob = pool.run(node('bob', "() => globalThis.__mark ?? 'fresh'"));
    expect(pool.stats().runtimes.node).toMatchObject({ processes: 2, busy: 2, queued: 1 });
    const [ra, ro, rb] = await Promise.all([alice, owner, bob]);
    expect(resultOf(rb)).toBe('fresh');
    expect(resultOf(ra)).not.toBe(resultOf(ro));
  });
});

describe('choosing the isolation', () => {
  it('auto picks sandbox here (root, bubblewrap, no user map)', () => {
    expect(resolveIsolation({}).mode).toBe('sandbox');
  });

  it('fails closed: multi-user needs root and a user map; task_env cannot hand out FERRY_ or AWS_ variables', () => {
    expect(() => resolveIsolation({ isolation: 'multi-user', userMap: { u: 'nobody' } }, { isRoot: false })).toThrow(
      /needs the agent to run as root/,
    );
    expect(() => resolveIsolation({ isolation: 'multi-user' })).toThrow(/needs a user_map/);
    expect(() => resolveIsolation({ isolation: 'multi-user', userMap: { u: 'no-such-account-ferry' } })).toThrow(/no local account/);
    expect(() => resolveIsolation({ isolation: 'none', taskEnv: { AWS_REGION: 'x' } })).toThrow(IsolationConfigError);
    expect(() => resolveIsolation({ isolation: 'none', envPassthrough: ['FERRY_ENDPOINT_SECRET'] })).toThrow(/stay with the agent/);
  });

  it('refuses sandbox, naming the package to install, where bubblewrap is missing', () => {
    expect(() => resolveIsolation({ isolation: 'sandbox' }, { bwrap: '/nonexistent/bwrap' })).toThrow(/apt-get install bubblewrap/);
    // auto falls back to none with one warning line instead.
    const warnings: string[] = [];
    expect(resolveIsolation({}, { bwrap: '/nonexistent/bwrap', warn: (l) => warnings.push(l) }).mode).toBe('none');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/only the endpoint owner's tasks will run/);
  });
});
