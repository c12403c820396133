import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RunOutcome, RunRequest, RuntimePool } from '../../workers/runtime/pool';
import type { ProcessRuntime } from '../../core/runtimes';
import { resolveIsolation } from '../../workers/runtime/isolation';
import { TaskLimits, type LimitMode } from '../../workers/runtime/limits';
import { fitOutput, shrinkText, type TaskOutput } from '../../workers/runtime/output';
import { isRunning } from '../helpers/proc';
import { eventually } from '../helpers/api';
import { sleep } from '../../core/retry';

// Real runtime processes under real kernel limits, no mocks: a task over its memory cap, a task
// that leaves a daemon behind, a walltime kill of a task with a forked child, a flood of output.

jest.setTimeout(60_000);

const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)']).toString().trim();
const OWNER = 'owner';
let n = 0;
const json = (args: unknown[] = []) => Buffer.from(JSON.stringify({ args, kwargs: {} }));
function task(runtime: ProcessRuntime, source: string, extra: Partial<RunRequest> = {}): RunRequest {
  return { taskId: `t-${++n}`, user: OWNER, runtime, source, args: json(), codec: 'json', walltimeMs: 20_000, ...extra };
}
const node = (source: string, extra: Partial<RunRequest> = {}) => task('node', source, extra);
const py = (source: string, extra: Partial<RunRequest> = {}) => task('python', source, { entrypoint: 'f', ...extra });
const value = (o: RunOutcome) => {
  if (!o.ok) throw new Error(`task failed: ${o.error.type}: ${o.error.message}`);
  return JSON.parse(o.result.toString());
};

// Allocates (and touches) 64 MB at a time up to 2 GB: far past the caps used here.
const NODE_HOG = '() => { const keep = []; for (let i = 0; i < 32; i++) keep.push(Buffer.alloc(64 << 20, 1)); return keep.length; }';
const PY_HOG = 'def f():\n    keep = []\n    for _ in range(32):\n        keep.append(b"x" * (64 << 20))\n    return len(keep)\n';

/** A task that starts a child in a new session which writes `file` after `delayS`, and returns at once. */
const nodeDaemon = (file: string, delayS: number) =>
  `() => { const { spawn } = require('child_process'); spawn('setsid', ['sh', '-c', 'sleep ${delayS}; echo escaped > ${file}'], { detached: true, stdio: 'ignore' }).unref(); return 'started'; }`;
const pyDaemon = (file: string, delayS: number) =>
  `import os\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            import time\n            time.sleep(${delayS})\n            open(${JSON.stringify(file)}, "w").write("escaped")\n        os._exit(0)\n    os.wait()\n    return "started"\n`;
/** The same daemons, but the task returns only once the daemon has written its pid to `${file}.pid` (whole, by a rename). */
const nodeDaemonWithPid = (file: string, delayS: number) =>
  `() => { const { spawn } = require('child_process'); const fs = require('fs'); spawn('setsid', ['sh', '-c', 'echo $$ > ${file}.tmp && mv ${file}.tmp ${file}.pid; sleep ${delayS}; echo escaped > ${file}'], { detached: true, stdio: 'ignore' }).unref(); const t = Date.now(); while (!fs.existsSync('${file}.pid') && Date.now() - t < 5000); return 'started'; }`;
const pyDaemonWithPid = (file: string, delayS: number) =>
  `import os, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            open(${JSON.stringify(file + '.tmp')}, "w").write(str(os.getpid()))\n            os.rename(${JSON.stringify(file + '.tmp')}, ${JSON.stringify(file + '.pid')})\n            time.sleep(${delayS})\n            open(${JSON.stringify(file)}, "w").write("escaped")\n        os._exit(0)\n    os.wait()\n    t = time.time()\n    while not os.path.exists(${JSON.stringify(file + '.pid')}) and time.time() - t < 5:\n        time.sleep(0.01)\n    return "started"\n`;
const pidIn = (file: string) => Number(readFileSync(file, 'utf8').trim());

const limitModes: LimitMode[] = TaskLimits.resolve('auto').mechanism === 'rlimit' ? ['rlimit'] : ['auto', 'rlimit'];
// The mechanism this machine gives, said once in the test log.
beforeAll(() => {
  const limits = TaskLimits.resolve('auto');
  console.log(`task limits here: ${limits.describe()}`);
  limits.close();
});

describe.each(limitModes)('task limits (%s)', (mode) => {
  let pool: RuntimePool;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ferry-limits-'));
    pool = new RuntimePool({ size: 1, owner: OWNER, pythonCommand: PYTHON, taskMemoryMb: 512, limits: mode });
    await pool.start();
  });
  afterAll(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('says which mechanism it uses', () => {
    const info = pool.limitsInfo()!;
    expect(info.memoryMb).toBe(512);
    if (mode === 'rlimit') expect(info.mechanism).toBe('rlimit');
    else expect(['cgroup1', 'cgroup2']).toContain(info.mechanism);
  });

  for (const [runtime, hog] of [
    ['node', NODE_HOG],
    ['python', PY_HOG],
  ] as const) {
    it(`${runtime}: a task allocating far past its cap fails with MemoryLimitExceeded; the next task in that slot runs`, async () => {
      const req = runtime === 'node' ? node(hog, { memoryMb: 256 }) : py(hog, { memoryMb: 256 });
      const out = await pool.run(req);
      expect(out.ok).toBe(false);
      if (out.ok) return;
      expect(out.error.type).toBe('MemoryLimitExceeded');
      expect(out.error.message).toMatch(/256 MB/);
      const next = await pool.run(runtime === 'node' ? node('() => 40 + 2') : py('def f():\n    return 40 + 2\n'));
      expect(value(next)).toBe(42);
    });

    if (mode === 'rlimit') {
      it(`${runtime}: the task runs under its own cap as RLIMIT_DATA, set by the runtime on itself`, async () => {
        const src =
          runtime === 'node'
            ? "() => /^Max data size\\s+(\\S+)\\s+(\\S+)/m.exec(require('fs').readFileSync('/proc/self/limits', 'utf8')).slice(1).map(Number)"
            : 'import resource\ndef f():\n    return list(resource.getrlimit(resource.RLIMIT_DATA))\n';
        const mk = (memoryMb?: number) => (runtime === 'node' ? node(src, { memoryMb }) : py(src, { memoryMb }));
        // Soft: the task's cap; hard: the endpoint's, so a later task may have more again.
        expect(value(await pool.run(mk(300)))).toEqual([300 << 20, 512 << 20]);
        expect(value(await pool.run(mk()))).toEqual([512 << 20, 512 << 20]);
        expect(value(await pool.run(mk(100_000)))).toEqual([512 << 20, 512 << 20]);
      });

      it(`${runtime}: a cap below what the runtime itself holds fails the task with MemoryLimitExceeded`, async () => {
        // A fresh node runtime holds ~50 MB of data already; python ~10 MB.
        const out = await pool.run(
          runtime === 'node' ? node('() => 1', { memoryMb: 16 }) : py('def f():\n    return bytearray(64 << 20)\n', { memoryMb: 16 }),
        );
        expect(out.ok).toBe(false);
        if (!out.ok) expect(out.error.type).toBe('MemoryLimitExceeded');
        expect(value(await pool.run(runtime === 'node' ? node('() => 2') : py('def f():\n    return 2\n')))).toBe(2);
      });
    }

    it(`${runtime}: a task asking for more than the endpoint allows gets the endpoint's cap, and the error says so`, async () => {
      const out = await pool.run(runtime === 'node' ? node(hog, { memoryMb: 100_000 }) : py(hog, { memoryMb: 100_000 }));
      expect(out.ok).toBe(false);
      if (out.ok) return;
      expect(out.error.type).toBe('MemoryLimitExceeded');
      expect(out.error.message).toMatch(/512 MB.*asked for 100000 MB/);
    });

    it(`${runtime}: a child in a new session that would write a file after the task ends never does`, async () => {
      const file = path.join(dir, `${runtime}-daemon-${mode}`);
      const out = await pool.run(runtime === 'node' ? node(nodeDaemonWithPid(file, 1)) : py(pyDaemonWithPid(file, 1)));
      expect(value(out)).toBe('started');
      const pid = pidIn(`${file}.pid`);
      await eventually(async () => !isRunning(pid), 2_000, 'the daemon to be killed');
      // The process that would write the file is gone, so it can never appear.
      expect(existsSync(file)).toBe(false);
      // The slot still runs tasks.
      expect(value(await pool.run(runtime === 'node' ? node('() => 1') : py('def f():\n    return 1\n')))).toBe(1);
    });

    it(`${runtime}: a walltime kill takes the task's forked and new-session children along`, async () => {
      const file = path.join(dir, `${runtime}-walltime-${mode}`);
      const pidFile = path.join(dir, `${runtime}-walltime-pid-${mode}`);
      const source =
        runtime === 'node'
          ? `() => { const { spawn, execSync } = require('child_process'); const c = spawn('sh', ['-c', 'echo $$ > ${pidFile}; sleep 2; echo escaped > ${file}'], { stdio: 'ignore' }); spawn('setsid', ['sh', '-c', 'echo $$ > ${pidFile}.setsid; sleep 2; echo escaped >> ${file}'], { detached: true, stdio: 'ignore' }); while (true) {} }`
          : `import os, subprocess, time\ndef f():\n    subprocess.Popen(["sh", "-c", "echo $$ > ${pidFile}; sleep 2; echo escaped > ${file}"])\n    subprocess.Popen(["setsid", "sh", "-c", "echo $$ > ${pidFile}.setsid; sleep 2; echo escaped >> ${file}"], start_new_session=True)\n    time.sleep(60)\n`;
      const out = await pool.run(runtime === 'node' ? node(source, { walltimeMs: 700 }) : py(source, { walltimeMs: 700 }));
      expect(out.ok).toBe(false);
      if (!out.ok) expect(out.error.type).toBe('TaskTimeout');
      const pids = [pidIn(pidFile), pidIn(`${pidFile}.setsid`)];
      await eventually(async () => pids.every((pid) => !isRunning(pid)), 2_000, "the task's children to be killed");
      // The processes that would write the file are gone, so it can never appear.
      expect(existsSync(file)).toBe(false);
    });
  }
});

// Without cgroups the memory cap must hold where the agent could never prlimit the runtime from
// outside: a runtime under another uid (nobody in a sandbox; an account in multi-user mode, see
// test/e2e/multi-user.test.ts) without CAP_SYS_RESOURCE, and behind bwrap's pid namespace.
describe('task limits (rlimit) in a sandbox', () => {
  let pool: RuntimePool;
  beforeAll(async () => {
    const isolation = resolveIsolation({ isolation: 'sandbox' });
    pool = new RuntimePool({ size: 1, owner: OWNER, isolation, pythonCommand: PYTHON, taskMemoryMb: 512, limits: 'rlimit' });
    await pool.start();
  });
  afterAll(() => pool?.close());

  for (const [runtime, hog] of [
    ['node', NODE_HOG],
    ['python', PY_HOG],
  ] as const) {
    const run = (source: string, extra: Partial<RunRequest> = {}) => pool.run(runtime === 'node' ? node(source, extra) : py(source, extra));

    it(`${runtime}: a task runs, under its cap, as nobody`, async () => {
      const src =
        runtime === 'node'
          ? "() => [process.getuid(), ...(/^Max data size\\s+(\\S+)\\s+(\\S+)/m.exec(require('fs').readFileSync('/proc/self/limits', 'utf8')).slice(1).map(Number))]"
          : 'import os, resource\ndef f():\n    return [os.getuid(), *resource.getrlimit(resource.RLIMIT_DATA)]\n';
      expect(value(await run(src, { memoryMb: 200 }))).toEqual([65534, 200 << 20, 512 << 20]);
      expect(value(await run(runtime === 'node' ? '() => 40 + 2' : 'def f():\n    return 40 + 2\n'))).toBe(42);
    });

    it(`${runtime}: a task allocating far past its cap fails with MemoryLimitExceeded; the next task runs`, async () => {
      const out = await run(hog, { memoryMb: 256 });
      expect(out.ok).toBe(false);
      if (out.ok) return;
      expect(out.error.type).toBe('MemoryLimitExceeded');
      expect(out.error.message).toMatch(/256 MB/);
      expect(value(await run(runtime === 'node' ? '() => 40 + 2' : 'def f():\n    return 40 + 2\n'))).toBe(42);
    });

    it(`${runtime}: a child in a new session that would write a file after the task ends never does`, async () => {
      // In the task's own scratch directory (its working directory), looked at by a later task.
      const file = `daemon-${runtime}-${n}`;
      expect(value(await run(runtime === 'node' ? nodeDaemon(file, 1) : pyDaemon(file, 1)))).toBe('started');
      await sleep(2000);
      const check =
        runtime === 'node'
          ? `() => require('fs').existsSync(${JSON.stringify(file)})`
          : `import os\ndef f():\n    return os.path.exists(${JSON.stringify(file)})\n`;
      expect(value(await run(check))).toBe(false);
    });
  }
});

describe('task output', () => {
  let pool: RuntimePool;
  beforeAll(async () => {
    pool = new RuntimePool({ size: 2, owner: OWNER, pythonCommand: PYTHON, taskOutputBytes: 4096 });
    await pool.start();
  });
  afterAll(() => pool?.close());

  for (const runtime of ['node', 'python'] as const) {
    it(`${runtime}: 10 MB printed comes back capped, head and tail, with a marker of what was cut`, async () => {
      const source =
        runtime === 'node'
          ? '() => { process.stdout.write("BEGIN\\n"); const line = "x".repeat(1023) + "\\n"; for (let i = 0; i < 10240; i++) process.stdout.write(line); process.stdout.write("END\\n"); return 1; }'
          : 'import sys\ndef f():\n    print("BEGIN")\n    line = "x" * 1023 + "\\n"\n    for _ in range(10240):\n        sys.stdout.write(line)\n    print("END")\n    return 1\n';
      const out = await pool.run(runtime === 'node' ? node(source) : py(source));
      expect(value(out)).toBe(1);
      const o = out.output!;
      expect(o.truncated).toBe(true);
      expect(o.stdout_bytes).toBe(10 * 1024 * 1024 + 10);
      expect(o.stdout.startsWith('BEGIN\n')).toBe(true);
      expect(o.stdout.endsWith('END\n')).toBe(true);
      expect(o.stdout).toMatch(/\[ferry: \d+ bytes of output cut\]/);
      const cut = Number(/\[ferry: (\d+) bytes/.exec(o.stdout)![1]);
      expect(cut).toBe(o.stdout_bytes - 4096);
      expect(o.stdout.length).toBeLessThan(4096 + 100);
    });

    it(`${runtime}: prints come back with a success and with an exception, each with its own task`, async () => {
      const mk = (i: number, fail: boolean) =>
        runtime === 'node'
          ? node(
              `async () => { console.log("out ${i}"); console.error("err ${i}"); await new Promise(r => setTimeout(r, 200)); console.log("late ${i}"); ${fail ? 'throw new Error("boom ' + i + '")' : `return ${i}`}; }`,
            )
          : py(
              `import sys, time\ndef f():\n    print("out ${i}")\n    print("err ${i}", file=sys.stderr)\n    time.sleep(0.2)\n    print("late ${i}")\n    ${fail ? `raise ValueError("boom ${i}")` : `return ${i}`}\n`,
            );
      const outs = await Promise.all([pool.run(mk(1, false)), pool.run(mk(2, true)), pool.run(mk(3, false)), pool.run(mk(4, true))]);
      outs.forEach((o, k) => {
        const i = k + 1;
        expect(o.ok).toBe(i % 2 === 1);
        expect(o.output).toMatchObject({ stdout: `out ${i}\nlate ${i}\n`, stderr: `err ${i}\n` });
        expect(o.output!.truncated).toBeUndefined();
      });
      // A quiet task has no output at all.
      expect((await pool.run(runtime === 'node' ? node('() => 1') : py('def f():\n    return 1\n'))).output).toBeUndefined();
    });
  }
});

describe('output fitting', () => {
  it('cuts further, keeping head, tail and the count of what was cut', () => {
    const text = 'a'.repeat(1000) + 'b'.repeat(1000);
    const once = shrinkText(text, 200);
    expect(once).toMatch(/^a{100}\n\[ferry: 1800 bytes of output cut\]\nb{100}$/);
    const twice = shrinkText(once, 50);
    expect(twice).toMatch(/^a{25}\n\[ferry: 1950 bytes of output cut\]\nb{25}$/);
  });

  it('fits a report into a byte budget by cutting its output', () => {
    const report: { kind: string; output?: TaskOutput } = {
      kind: 'success',
      output: { stdout: 'é'.repeat(100_000), stderr: '\u0001'.repeat(50_000), stdout_bytes: 200_000, stderr_bytes: 50_000 },
    };
    const size = (r: object) => Buffer.byteLength(JSON.stringify(r));
    expect(size(report)).toBeGreaterThan(200_000);
    const fitted = fitOutput(report, 20_000, size);
    expect(size(fitted)).toBeLessThanOrEqual(20_000);
    expect(fitted.output!.truncated).toBe(true);
    expect(fitted.output!.stdout).toMatch(/\[ferry: \d+ bytes of output cut\]/);
  });
});
