import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveIsolation } from '../../workers/runtime/isolation';
import { RunOutcome, RunRequest, RuntimePool } from '../../workers/runtime/pool';

// Multi-user isolation with real POSIX accounts: the tests run as root (here and in CI), make
// two accounts, run each one's tasks as that account, and remove the accounts afterwards.

jest.setTimeout(60_000);

const ACCOUNTS = ['ferry-mu-alice', 'ferry-mu-bob'];
const GROUP = 'ferry-mu-shared';
// pyenv's interpreter lives under /root, which no account can enter: the system python serves them.
const SYSTEM_PYTHON = '/usr/bin/python3';

const json = (args: unknown[] = []): Buffer => Buffer.from(JSON.stringify({ args, kwargs: {} }));
let counter = 0;
const node = (user: string, source: string): RunRequest => ({ taskId: `mu-${++counter}`, user, runtime: 'node', source, args: json(), codec: 'json', walltimeMs: 10_000 });
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
function resultOf(outcome: RunOutcome): any {
  if (!outcome.ok) throw new Error(`task failed: ${outcome.error.type}: ${outcome.error.message}\n${outcome.error.traceback}`);
  return JSON.parse(outcome.result.toString('utf8'));
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
      groups: sh('id', ['-G', account]).split(' ').map(Number).sort((a, b) => a - b),
      home: sh('getent', ['passwd', account]).split(':')[5],
    };
    const pyWho = resultOf(await pool.run(py(user, PY_WHO, 'who', [secretFile])));
    expect(pyWho).toMatchObject(expected);
    expect(pyWho.secret).toMatch(/^ERR PermissionError/);
    expect(pyWho.env.filter((n: string) => /^(FERRY_|AWS_)/.test(n))).toEqual([]);
    const nodeWho = resultOf(
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
    const written = resultOf(await pool.run(node('alice', "() => { require('fs').writeFileSync('note.txt', 'alice only'); return process.cwd() + '/note.txt' }")));
    const scratch = path.dirname(written);
    expect(sh('stat', ['-c', '%U %a', scratch])).toBe(`${ACCOUNTS[0]} 700`);
    const bob = resultOf(await pool.run(node('bob', `() => { try { return require('fs').readFileSync(${JSON.stringify(written)}, 'utf8') } catch (e) { return 'ERR ' + e.code } }`)));
    expect(bob).toBe('ERR EACCES');
    expect(resultOf(await pool.run(node('bob', '() => process.cwd()')))).not.toBe(scratch);
  });

  it('fails an unmapped user\'s task with UserNotMapped and runs nothing', async () => {
    const marker = path.join(os.tmpdir(), `ferry-mu-ran-${process.pid}`);
    const outcome = await pool.run(node('mallory', `() => require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`));
    expect(outcome.ok).toBe(false);
    expect(!outcome.ok && outcome.error.type).toBe('UserNotMapped');
    expect(!outcome.ok && outcome.error.message).toMatch(/"mallory" maps to no local account/);
    expect(existsSync(marker)).toBe(false);
  });
});
