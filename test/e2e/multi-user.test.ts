import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveIsolation } from '../../workers/runtime/isolation';
import { RunOutcome, RunRequest, RuntimePool } from '../../workers/runtime/pool';
import { eventually } from '../helpers/api';
import { isRunning } from '../helpers/proc';

// Multi-user isolation with real POSIX accounts: the tests run as root (here and in CI), make
// two accounts, run each one's tasks as that account, and remove the accounts afterwards.

jest.setTimeout(60_000);

const ACCOUNTS = ['ferry-mu-alice', 'ferry-mu-bob'];
const GROUP = 'ferry-mu-shared';
// pyenv's interpreter lives under /root, which no account can enter: the system python serves them.
const SYSTEM_PYTHON = '/usr/bin/python3';

const json = (args: unknown[] = []): Buffer => Buffer.from(JSON.stringify({ args, kwargs: {} }));
let counter = 0;
const node = (user: string, source: string): RunRequest => ({
  taskId: `mu-${++counter}`,
  user,
  runtime: 'node',
  source,
  args: json(),
  codec: 'json',
  walltimeMs: 10_000,
});
const py = (user: string, source: string, entrypoint: string, args: unknown[] = []): RunRequest => ({
  taskId: `mu-${++counter}`,
  user,
  runtime: 'python',
  source,
  entrypoint,
  args: json(args),
  codec: 'json',
  walltimeMs: 10_000,
});
function resultOf<T = unknown>(outcome: RunOutcome): T {
  if (!outcome.ok) throw new Error(`task failed: ${outcome.error.type}: ${outcome.error.message}\n${outcome.error.traceback}`);
  return JSON.parse(outcome.result.toString('utf8')) as T;
}

/** What a task reports about who it runs as and what it could read. */
interface Who {
  secret: string;
  agentEnviron?: string;
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args).toString().trim();
const exists = (db: string, name: string) => spawnSync('getent', [db, name]).status === 0;

let agentDir: string;
let secretFile: string;
let pool: RuntimePool;

beforeAll(async () => {
  expect(process.getuid!()).toBe(0); // multi-user endpoints run their agent as root
  if (!exists('group', GROUP)) sh('groupadd', [GROUP]);
  for (const name of ACCOUNTS) {
    if (!exists('passwd', name)) sh('useradd', ['--create-home', '--shell', '/bin/sh', name]);
  }
  sh('usermod', ['-aG', GROUP, ACCOUNTS[0]!]); // alice has a supplementary group; bob has none
  agentDir = mkdtempSync(path.join(os.tmpdir(), 'ferry-agent-'));
  secretFile = path.join(agentDir, 'endpoint.json');
  writeFileSync(secretFile, JSON.stringify({ endpoint_secret: 'fes_secret' }), { mode: 0o600 });
  const isolation = resolveIsolation({ isolation: 'multi-user', userMap: { alice: ACCOUNTS[0]!, bob: ACCOUNTS[1]! } });
  expect(isolation.mode).toBe('multi-user');
  pool = new RuntimePool({ size: 1, owner: 'alice', isolation, pythonCommand: SYSTEM_PYTHON, onOutput: () => undefined });
  await pool.start();
});

afterAll(async () => {
  await pool?.close();
  rmSync(agentDir, { recursive: true, force: true });
  for (const name of ACCOUNTS) if (exists('passwd', name)) spawnSync('userdel', ['--remove', name]);
  if (exists('group', GROUP)) spawnSync('groupdel', [GROUP]);
});

const PY_WHO = `import os, pwd
def who(secret_file):
    try:
        secret = open(secret_file).read()
    except OSError as e:
        secret = 'ERR ' + type(e).__name__
    return {'uid': os.getuid(), 'gid': os.getgid(), 'groups': sorted(os.getgroups()), 'home': os.environ['HOME'],
            'cwd': os.getcwd(), 'secret': secret, 'env': sorted(os.environ)}
`;

describe('multi-user isolation', () => {
  it.each([0, 1])("runs each user's tasks as their own account: uid, gid, groups, HOME (account %i)", async (i) => {
    const user = i === 0 ? 'alice' : 'bob';
    const account = ACCOUNTS[i]!;
    const expected = {
      uid: Number(sh('id', ['-u', account])),
      gid: Number(sh('id', ['-g', account])),
      groups: sh('id', ['-G', account])
        .split(' ')
        .map(Number)
        .sort((a, b) => a - b),
      home: sh('getent', ['passwd', account]).split(':')[5],
    };
    const pyWho = resultOf<Who & { env: string[] }>(await pool.run(py(user, PY_WHO, 'who', [secretFile])));
    expect(pyWho).toMatchObject(expected);
    expect(pyWho.secret).toMatch(/^ERR PermissionError/);
    expect(pyWho.env.filter((n: string) => /^(FERRY_|AWS_)/.test(n))).toEqual([]);
    const nodeWho = resultOf<Who>(
      await pool.run(
        node(
          user,
          `() => ({ uid: process.getuid(), gid: process.getgid(), groups: process.getgroups().sort((a, b) => a - b), home: process.env.HOME,
            secret: (() => { try { return require('fs').readFileSync(${JSON.stringify(secretFile)}, 'utf8') } catch (e) { return 'ERR ' + e.code } })(),
            agentEnviron: (() => { try { return require('fs').readFileSync('/proc/${process.pid}/environ', 'utf8') } catch (e) { return 'ERR ' + e.code } })() })`,
        ),
      ),
    );
    expect(nodeWho).toMatchObject(expected);
    expect(nodeWho.secret).toBe('ERR EACCES');
    expect(nodeWho.agentEnviron).toBe('ERR EACCES');
    if (i === 0) expect(expected.groups).toContain(Number(sh('getent', ['group', GROUP]).split(':')[2]));
  });

  it("keeps each user's scratch, owned by their account and mode 0700, from the other", async () => {
    const written = resultOf<string>(
      await pool.run(node('alice', "() => { require('fs').writeFileSync('note.txt', 'alice only'); return process.cwd() + '/note.txt' }")),
    );
    const scratch = path.dirname(written);
    expect(sh('stat', ['-c', '%U %a', scratch])).toBe(`${ACCOUNTS[0]} 700`);
    const bob = resultOf(
      await pool.run(
        node(
          'bob',
          `() => { try { return require('fs').readFileSync(${JSON.stringify(written)}, 'utf8') } catch (e) { return 'ERR ' + e.code } }`,
        ),
      ),
    );
    expect(bob).toBe('ERR EACCES');
    expect(resultOf(await pool.run(node('bob', '() => process.cwd()')))).not.toBe(scratch);
  });

  it("fails an unmapped user's task with UserNotMapped and runs nothing", async () => {
    const marker = path.join(os.tmpdir(), `ferry-mu-ran-${process.pid}`);
    const outcome = await pool.run(node('mallory', `() => require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`));
    expect(outcome.ok).toBe(false);
    expect(!outcome.ok && outcome.error.type).toBe('UserNotMapped');
    expect(!outcome.ok && outcome.error.message).toMatch(/"mallory" maps to no local account/);
    expect(existsSync(marker)).toBe(false);
  });
});

// Without cgroups the memory cap is RLIMIT_DATA, which the agent (root, but here without
// CAP_SYS_RESOURCE) cannot set on another account's process: each runtime sets it on itself.
describe('multi-user isolation with rlimit task limits', () => {
  let limited: RuntimePool;
  let shared: string;
  beforeAll(async () => {
    shared = mkdtempSync(path.join(os.tmpdir(), 'ferry-mu-shared-'));
    chmodSync(shared, 0o1777);
    const isolation = resolveIsolation({ isolation: 'multi-user', userMap: { alice: ACCOUNTS[0]!, bob: ACCOUNTS[1]! } });
    limited = new RuntimePool({
      size: 1,
      owner: 'alice',
      isolation,
      pythonCommand: SYSTEM_PYTHON,
      taskMemoryMb: 512,
      limits: 'rlimit',
      onOutput: () => undefined,
    });
    await limited.start();
    expect(limited.limitsInfo()!.mechanism).toBe('rlimit');
  });
  afterAll(async () => {
    await limited?.close();
    rmSync(shared, { recursive: true, force: true });
  });

  const NODE_HOG = '() => { const keep = []; for (let i = 0; i < 32; i++) keep.push(Buffer.alloc(64 << 20, 1)); return keep.length; }';
  const PY_HOG = 'def f():\n    keep = []\n    for _ in range(32):\n        keep.append(b"x" * (64 << 20))\n    return len(keep)\n';
  const run = (user: string, runtime: 'node' | 'python', source: string, memoryMb?: number) =>
    limited.run({ ...(runtime === 'node' ? node(user, source) : py(user, source, 'f')), memoryMb });

  describe.each(['alice', 'bob'])('%s', (user) => {
    it.each(['node', 'python'] as const)(
      '%s: a task runs as the account under its own cap; a task past its cap fails with MemoryLimitExceeded',
      async (runtime) => {
        const uid = Number(sh('id', ['-u', ACCOUNTS[user === 'alice' ? 0 : 1]!]));
        const who =
          runtime === 'node'
            ? "() => [process.getuid(), ...(/^Max data size\\s+(\\S+)\\s+(\\S+)/m.exec(require('fs').readFileSync('/proc/self/limits', 'utf8')).slice(1).map(Number))]"
            : 'import os, resource\ndef f():\n    return [os.getuid(), *resource.getrlimit(resource.RLIMIT_DATA)]\n';
        expect(resultOf(await run(user, runtime, who, 300))).toEqual([uid, 300 << 20, 512 << 20]);
        const out = await run(user, runtime, runtime === 'node' ? NODE_HOG : PY_HOG, 256);
        expect(out.ok).toBe(false);
        if (!out.ok) {
          expect(out.error.type).toBe('MemoryLimitExceeded');
          expect(out.error.message).toMatch(/256 MB/);
          expect(out.error.message).not.toMatch(/needs more than that/);
        }
        expect(resultOf(await run(user, runtime, runtime === 'node' ? '() => 40 + 2' : 'def f():\n    return 40 + 2\n'))).toBe(42);
      },
    );

    it.each(['node', 'python'] as const)('%s: a child in a new session is killed when the task ends', async (runtime) => {
      // In a shared directory: a user's scratch goes when their last process is replaced.
      const marker = path.join(shared, `daemon-${user}-${runtime}`);
      const pidFile = `${marker}.pid`;
      const src =
        runtime === 'node'
          ? `() => { require('child_process').spawn('setsid', ['sh', '-c', 'echo $$ > ${pidFile}; sleep 1; echo escaped > ${marker}'], { detached: true, stdio: 'ignore' }).unref(); const t = Date.now(); while (!require('fs').existsSync('${pidFile}') && Date.now() - t < 5000); return 'started'; }`
          : `import os, subprocess, time\ndef f():\n    subprocess.Popen(["setsid", "sh", "-c", "echo $$ > ${pidFile}; sleep 1; echo escaped > ${marker}"], start_new_session=True)\n    t = time.time()\n    while not os.path.exists("${pidFile}") and time.time() - t < 5:\n        time.sleep(0.01)\n    return "started"\n`;
      expect(resultOf(await run(user, runtime, src))).toBe('started');
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      await eventually(async () => !isRunning(pid), 2_000, 'the daemon to be killed');
      // The shell that would write the marker is gone, so it can never appear.
      expect(existsSync(marker)).toBe(false);
    });
  });
});
