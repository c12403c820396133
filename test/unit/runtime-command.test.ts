import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { resolveIsolation } from '../../workers/runtime/isolation';
import { RuntimePool } from '../../workers/runtime/pool';
import type { CommandOutcome } from '../../workers/runtime/command';
import { eventually } from '../helpers/api';

// Commands (shell and mpi tasks) through a real pool, real bash, in each limit mechanism: no mocks.

jest.setTimeout(30_000);

const OWNER = 'owner';
const pools: RuntimePool[] = [];
async function pool(limits: 'auto' | 'rlimit'): Promise<RuntimePool> {
  const p = new RuntimePool({ size: 1, owner: OWNER, runtimes: ['node'], isolation: resolveIsolation({ isolation: 'none' }), limits });
  pools.push(p);
  await p.start();
  return p;
}
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

let n = 0;
const run = (p: RuntimePool, script: string, extra: { walltimeMs?: number; commandWalltimeMs?: number } = {}) =>
  p.runCommand({
    taskId: `c-${++n}`,
    user: OWNER,
    script,
    walltimeMs: extra.walltimeMs ?? 10_000,
    commandWalltimeMs: extra.commandWalltimeMs,
  });

const withMarker = (marker: string) =>
  readdirSync('/proc').filter((pid) => {
    try {
      return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker);
    } catch {
      return false;
    }
  });

const ok = (o: CommandOutcome) => {
  if (!o.ok) throw new Error(`${o.error.type}: ${o.error.message}`);
  return o;
};

describe.each(['auto', 'rlimit'] as const)('commands with limits %s', (limits) => {
  it('runs bash in a fresh task directory and kills what it leaves running, daemons included', async () => {
    const p = await pool(limits);
    const marker = `${process.pid}${limits.length}.5`;
    const r = ok(await run(p, `setsid sleep ${marker} >/dev/null 2>&1 & (sleep ${marker} >/dev/null 2>&1 &); echo "$PWD"; echo $HOME`));
    const [dir, home] = r.stdout.trim().split('\n');
    expect(path.basename(dir!)).toMatch(/^task-c-\d+$/);
    expect(home).toBe(dir);
    expect(r.returncode).toBe(0);
    expect(withMarker(marker)).toEqual([]);
    // The task's directory goes with the task.
    expect(existsSync(dir!)).toBe(false);
  });

  it('kills the whole tree at either walltime', async () => {
    const p = await pool(limits);
    const marker = `${process.pid}${limits.length}.75`;
    const started = Date.now();
    const soft = ok(await run(p, `sleep ${marker} & sleep ${marker}`, { commandWalltimeMs: 300 }));
    expect(soft).toMatchObject({ returncode: 124, timedOut: true });
    const hard = await run(p, `sleep ${marker} & sleep ${marker}`, { walltimeMs: 300 });
    expect(hard).toMatchObject({ ok: false, error: { type: 'TaskTimeout' } });
    expect(Date.now() - started).toBeLessThan(6_000);
    expect(withMarker(marker)).toEqual([]);
  });
});

it('ends a running command when the pool closes', async () => {
  const p = await pool('auto');
  const marker = `${process.pid}.125`;
  const running = run(p, `sleep ${marker}`);
  await eventually(async () => withMarker(marker).length > 0, 5_000, 'the command to start');
  await p.close();
  expect(await running).toMatchObject({ ok: false, error: { type: 'PoolClosed' } });
  expect(withMarker(marker)).toEqual([]);
});

describe('multi-user', () => {
  // Real POSIX accounts (the tests run as root, as CI does), made here and removed afterwards.
  const ACCOUNTS = ['ferry-cmd-alice', 'ferry-cmd-bob'];
  const exists = (name: string) => spawnSync('getent', ['passwd', name]).status === 0;
  beforeAll(() => {
    for (const name of ACCOUNTS) if (!exists(name)) execFileSync('useradd', ['--create-home', '--shell', '/bin/sh', name]);
  });
  afterAll(() => {
    for (const name of ACCOUNTS) if (exists(name)) spawnSync('userdel', ['--remove', name]);
  });

  it("runs a user's command as her account, in a task directory of hers that another account cannot enter", async () => {
    const p = new RuntimePool({
      size: 1,
      owner: 'alice',
      runtimes: ['node'],
      isolation: resolveIsolation({ isolation: 'multi-user', userMap: { alice: ACCOUNTS[0]!, bob: ACCOUNTS[1]! } }),
    });
    pools.push(p);
    await p.start();
    const alice = ok(
      await p.runCommand({
        taskId: 'mu-1',
        user: 'alice',
        script: 'id -un; echo "$HOME"; pwd; echo secret > ../mine.txt; readlink -f ../mine.txt',
        walltimeMs: 10_000,
      }),
    );
    const [name, home, cwd, file] = alice.stdout.trim().split('\n');
    expect(name).toBe(ACCOUNTS[0]);
    expect(home).toBe(`/home/${ACCOUNTS[0]}`);
    expect(cwd).toMatch(/\/task-mu-1$/);
    const bob = ok(
      await p.runCommand({ taskId: 'mu-2', user: 'bob', script: `id -un; cat ${file} || echo unreadable`, walltimeMs: 10_000 }),
    );
    expect(bob.stdout.trim().split('\n')).toEqual([ACCOUNTS[1], 'unreadable']);
    expect(existsSync(cwd!)).toBe(false);
    // A symlink planted where a task's directory will be is replaced, as Alice: what it pointed at stays.
    const victim = path.join('/var/tmp', `ferry-cmd-victim-${process.pid}`);
    mkdirSync(victim, { recursive: true });
    writeFileSync(path.join(victim, 'keep.txt'), 'root');
    try {
      ok(await p.runCommand({ taskId: 'mu-0', user: 'alice', script: `ln -s ${victim} ../task-mu-9`, walltimeMs: 10_000 }));
      const again = ok(
        await p.runCommand({ taskId: 'mu-9', user: 'alice', script: 'touch made.txt; ls; readlink -f .', walltimeMs: 10_000 }),
      );
      expect(again.stdout.trim().split('\n')[0]).toBe('made.txt');
      expect(readdirSync(victim)).toEqual(['keep.txt']);
    } finally {
      rmSync(victim, { recursive: true, force: true });
    }
    expect(await p.runCommand({ taskId: 'mu-3', user: 'mallory', script: 'true', walltimeMs: 10_000 })).toMatchObject({
      ok: false,
      error: { type: 'UserNotMapped' },
    });
  });
});
