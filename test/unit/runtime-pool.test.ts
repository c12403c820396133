import { execFileSync } from 'node:child_process';
import os from 'node:os';
import v8 from 'node:v8';
import { ProcessOutput, RunOutcome, RunRequest, RuntimePool } from '../../workers/runtime/pool';
import type { Codec, ProcessRuntime } from '../../core/runtimes';

// Real child processes, no mocks: each runtime process is forked or spawned by the pool.

const json = (args: unknown[] = [], kwargs: Record<string, unknown> = {}): Buffer => Buffer.from(JSON.stringify({ args, kwargs }));
// The interpreter itself, not a launcher shim that may cost a second per call.
const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)']).toString().trim();
const python = (code: string, input?: Buffer): Buffer => execFileSync(PYTHON, ['-c', code], { input });
/** pickle.dumps of a python expression, e.g. "((1, 2), {'c': 3})". */
const pickled = (expr: string): Buffer => python(`import pickle, sys; sys.stdout.buffer.write(pickle.dumps(${expr}, protocol=4))`);
/** "<type name> <repr>" of pickled bytes, read back by a real python. */
const unpickled = (data: Buffer): string =>
  python('import pickle, sys; o = pickle.loads(sys.stdin.buffer.read()); print(type(o).__name__, repr(o))', data).toString().trim();

// The endpoint owner: these pools run with isolation "none", where only the owner's tasks run.
const OWNER = 'owner';
let taskCounter = 0;
function task(runtime: ProcessRuntime, source: string, extra: Partial<RunRequest> = {}): RunRequest {
  return { taskId: `t-${++taskCounter}`, user: OWNER, runtime, source, args: json(), codec: 'json', walltimeMs: 10_000, ...extra };
}
const node = (source: string, extra: Partial<RunRequest> = {}) => task('node', source, extra);
const py = (source: string, entrypoint: string, extra: Partial<RunRequest> = {}) => task('python', source, { entrypoint, ...extra });

function resultOf(outcome: RunOutcome, codec: Codec = 'json'): unknown {
  if (!outcome.ok) throw new Error(`task failed: ${outcome.error.type}: ${outcome.error.message}\n${outcome.error.traceback}`);
  expect(outcome.codec).toBe(codec);
  return codec === 'node-v8' ? v8.deserialize(outcome.result) : JSON.parse(outcome.result.toString('utf8'));
}

function errorOf(outcome: RunOutcome) {
  if (outcome.ok) throw new Error(`task succeeded with ${outcome.result.toString()}, expected a failure`);
  return outcome.error;
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const output: { text: string; from: ProcessOutput }[] = [];
const onOutput = (chunk: Buffer, from: ProcessOutput) => output.push({ text: chunk.toString(), from });

describe('RuntimePool', () => {
  let pool: RuntimePool;

  beforeAll(async () => {
    pool = new RuntimePool({ size: 2, owner: OWNER, onOutput });
    await pool.start();
  });
  afterAll(() => pool.close());

  it('starts its processes up front', () => {
    expect(pool.stats().runtimes).toEqual({
      node: { processes: 2, busy: 0, queued: 0 },
      python: { processes: 2, busy: 0, queued: 0 },
    });
  });

  describe('node', () => {
    it('runs hello world', async () => {
      expect(resultOf(await pool.run(node("() => 'hello world'")))).toBe('hello world');
    });

    it('passes args, and kwargs as a last object argument only when there are any', async () => {
      const source = 'function add(a, b, options) { return { sum: (a + b) * (options ? options.scale : 1), arity: arguments.length } }';
      expect(resultOf(await pool.run(node(source, { args: json([2, 3], { scale: 10 }) })))).toEqual({ sum: 50, arity: 3 });
      expect(resultOf(await pool.run(node(source, { args: json([2, 3]) })))).toEqual({ sum: 5, arity: 2 });
    });

    it('awaits an async function', async () => {
      const source = 'async function double(x) { await new Promise((r) => setTimeout(r, 10)); return x * 2 }';
      expect(resultOf(await pool.run(node(source, { args: json([21]) })))).toBe(42);
    });

    it('gives the body require() and await import()', async () => {
      expect(resultOf(await pool.run(node("() => require('os').platform()")))).toBe(os.platform());
      expect(resultOf(await pool.run(node("async () => (await import('node:path')).posix.join('a', 'b')")))).toBe('a/b');
    });

    it('lets the function run a subprocess', async () => {
      expect(resultOf(await pool.run(node("() => require('child_process').execSync('echo hi').toString().trim()")))).toBe('hi');
    });

    it('keeps what the function prints off the protocol channel', async () => {
      const req = node("() => { console.log('noise on stdout'); console.error('noise on stderr'); return 'clean' }");
      const outcome = await pool.run(req);
      expect(resultOf(outcome)).toBe('clean');
      // The task's own capture waits for both streams' end marks; the raw output tap may see a chunk late.
      expect(outcome.output?.stdout).toContain('noise on stdout');
      expect(outcome.output?.stderr).toContain('noise on stderr');
    });

    it('reports a thrown error with its type, message and the function frame', async () => {
      const error = errorOf(await pool.run(node("function explode(n) { throw new RangeError('too big: ' + n) }", { args: json([7]) })));
      expect(error.type).toBe('RangeError');
      expect(error.message).toBe('too big: 7');
      expect(error.traceback).toMatch(/^RangeError: too big: 7\n\s+at explode \(<ferry function>:1:\d+\)/);
      expect(error.traceback).not.toContain('node_runner');
    });

    it('names a custom error by its class and reports a thrown non-Error', async () => {
      expect(errorOf(await pool.run(node("() => { class QuotaExceeded extends Error {}; throw new QuotaExceeded('no') }"))).type).toBe(
        'QuotaExceeded',
      );
      const error = errorOf(await pool.run(node("() => { throw 'plain string' }")));
      expect(error.type).toBe('ThrownValue');
      expect(error.message).toContain("'plain string'");
    });

    it('round-trips Date, Map, Set, BigInt, Buffer and Uint8Array with node-v8', async () => {
      const input = {
        when: new Date('2024-05-01T12:00:00Z'),
        map: new Map<string, number>([['a', 1]]),
        set: new Set([1, 2]),
        big: 2n ** 70n,
        buf: Buffer.from('bytes'),
        u8: new Uint8Array([1, 2, 3]),
      };
      const source = `(v) => ({
        ...v,
        seen: { date: v.when instanceof Date, buffer: Buffer.isBuffer(v.buf), u8: v.u8 instanceof Uint8Array && !Buffer.isBuffer(v.u8), big: typeof v.big },
        next: { when: new Date(v.when.getTime() + 1000), big: v.big + 1n, buf: Buffer.concat([v.buf, Buffer.from('!')]) },
      })`;
      const out = resultOf(
        await pool.run(node(source, { codec: 'node-v8', args: v8.serialize({ args: [input], kwargs: {} }) })),
        'node-v8',
      ) as typeof input & {
        seen: unknown;
        next: { when: Date; big: bigint; buf: Buffer };
      };
      expect(out.seen).toEqual({ date: true, buffer: true, u8: true, big: 'bigint' });
      expect(out.when).toEqual(input.when);
      expect(out.map).toEqual(input.map);
      expect(out.set).toEqual(input.set);
      expect(out.big).toBe(2n ** 70n);
      expect(Buffer.isBuffer(out.buf) && out.buf.toString()).toBe('bytes');
      expect(out.u8).toBeInstanceOf(Uint8Array);
      expect(Buffer.isBuffer(out.u8)).toBe(false);
      expect([...out.u8]).toEqual([1, 2, 3]);
      expect(out.next.when).toEqual(new Date('2024-05-01T12:00:01Z'));
      expect(out.next.big).toBe(2n ** 70n + 1n);
      expect(Buffer.isBuffer(out.next.buf) && out.next.buf.toString()).toBe('bytes!');
    });

    it('fails a json result that JSON cannot represent with SerializationError', async () => {
      const error = errorOf(await pool.run(node('() => ({ count: 10n })')));
      expect(error.type).toBe('SerializationError');
      expect(error.message).toMatch(/result at \.count is a BigInt/);
      expect(errorOf(await pool.run(node('() => { const a = {}; a.self = a; return a }'))).type).toBe('SerializationError');
      expect(errorOf(await pool.run(node('() => () => 1'))).type).toBe('SerializationError');
      expect(resultOf(await pool.run(node('() => undefined')))).toBeNull();
    });

    it('runs two tasks at once on a pool of two', async () => {
      const source =
        'async () => { const start = Date.now(); await new Promise((r) => setTimeout(r, 300)); return { start, end: Date.now(), pid: process.pid } }';
      const [a, b] = (await Promise.all([pool.run(node(source)), pool.run(node(source))])).map((o) => resultOf(o)) as {
        start: number;
        end: number;
        pid: number;
      }[];
      expect(a.pid).not.toBe(b.pid);
      // Overlap as the tasks measured it themselves: each started before the other ended.
      expect(a.start).toBeLessThan(b.end);
      expect(b.start).toBeLessThan(a.end);
    });
  });

  describe('python', () => {
    it('runs hello world', async () => {
      expect(resultOf(await pool.run(py("def hello():\n    return 'hello world'\n", 'hello')))).toBe('hello world');
    });

    it('passes args and kwargs', async () => {
      const source = 'def scaled_sum(a, b, *, scale=1):\n    return {"sum": (a + b) * scale}\n';
      expect(resultOf(await pool.run(py(source, 'scaled_sum', { args: json([2, 3], { scale: 10 }) })))).toEqual({ sum: 50 });
    });

    it('execs the source in a fresh module per task, not __main__', async () => {
      const source = 'count = 0\ndef bump():\n    global count\n    count += 1\n    return [__name__, count]\n';
      const first = resultOf(await pool.run(py(source, 'bump'))) as [string, number];
      expect(first[0]).not.toBe('__main__');
      expect(first[1]).toBe(1);
      expect(resultOf(await pool.run(py(source, 'bump')))).toEqual(first);
    });

    it('round-trips python-pickle arguments and results', async () => {
      const source = 'def pair(a, b, *, c):\n    return (a + b, {c})\n';
      const outcome = await pool.run(py(source, 'pair', { codec: 'python-pickle', args: pickled("((1, 2), {'c': 3})") }));
      expect(outcome.ok && outcome.codec).toBe('python-pickle');
      expect(outcome.ok && unpickled(outcome.result)).toBe('tuple (3, {3})');
    });

    it('reports ZeroDivisionError with its traceback and the pickled exception', async () => {
      const source = 'def divide(a, b):\n    return a / b\n';
      const outcome = await pool.run(py(source, 'divide', { codec: 'python-pickle', args: pickled('((1, 0), {})') }));
      const error = errorOf(outcome);
      expect(error.type).toBe('ZeroDivisionError');
      expect(error.message).toBe('division by zero');
      expect(error.traceback).toContain('Traceback (most recent call last):');
      expect(error.traceback).toContain('in divide');
      expect(error.traceback).toContain('return a / b');
      expect(error.traceback).not.toContain('python_runner');
      expect(!outcome.ok && outcome.payload?.codec).toBe('python-pickle');
      expect(!outcome.ok && outcome.payload && unpickled(outcome.payload.data)).toBe(
        "ZeroDivisionError ZeroDivisionError('division by zero')",
      );
    });

    it('fails an unpicklable result with SerializationError', async () => {
      const outcome = await pool.run(
        py('def make():\n    return lambda: 1\n', 'make', { codec: 'python-pickle', args: pickled('((), {})') }),
      );
      expect(errorOf(outcome).type).toBe('SerializationError');
    });

    it('imports inside the function body and runs a subprocess', async () => {
      expect(resultOf(await pool.run(py('def root(x):\n    import math\n    return math.sqrt(x)\n', 'root', { args: json([16]) })))).toBe(
        4,
      );
      expect(resultOf(await pool.run(py("import os\ndef echo():\n    return os.popen('echo hi').read()\n", 'echo')))).toBe('hi\n');
    });

    it('keeps print() off the protocol channel', async () => {
      const req = py("def noisy():\n    print('noise on stdout')\n    return 'clean'\n", 'noisy');
      expect(resultOf(await pool.run(req))).toBe('clean');
      expect(
        output
          .filter((o) => o.from.taskId === req.taskId)
          .map((o) => o.text)
          .join(''),
      ).toContain('noise on stdout');
    });

    it('fails a json result with NaN, which JSON cannot carry', async () => {
      expect(errorOf(await pool.run(py("def nan():\n    return float('nan')\n", 'nan'))).type).toBe('SerializationError');
    });
  });

  it('answers a task for an unknown entrypoint, runtime or codec with a failure, not a throw', async () => {
    expect(errorOf(await pool.run(py('x = 1\n', 'missing'))).type).toBe('EntrypointNotFound');
    expect(errorOf(await pool.run(node('() => 1', { codec: 'python-pickle' }))).type).toBe('UnsupportedCodec');
  });
});

describe('RuntimePool faults (one process per runtime)', () => {
  let pool: RuntimePool;

  beforeAll(async () => {
    pool = new RuntimePool({ size: 1, owner: OWNER, onOutput });
    await pool.start();
  });
  afterAll(() => pool.close());

  it.each([
    ['node', node('() => process.exit(3)'), 'exit code 3'],
    ['node', node("() => process.kill(process.pid, 'SIGSEGV')"), 'signal SIGSEGV'],
    ['python', py('import os\ndef crash():\n    os._exit(3)\n', 'crash'), 'exit code 3'],
    ['python', py('import os, signal\ndef crash():\n    os.kill(os.getpid(), signal.SIGSEGV)\n', 'crash'), 'signal SIGSEGV'],
  ])('%s: a task that kills its process fails alone (%#)', async (runtime, req, how) => {
    const error = errorOf(await pool.run(req));
    expect(error.type).toBe('WorkerProcessDied');
    expect(error.message).toContain(how);
    const next = runtime === 'node' ? node("() => 'still here'") : py("def ok():\n    return 'still here'\n", 'ok');
    expect(resultOf(await pool.run(next))).toBe('still here');
    expect(pool.stats().runtimes[runtime as ProcessRuntime].processes).toBe(1);
  });

  it.each([
    ['node', node('() => { for (;;) {} }', { walltimeMs: 300 })],
    ['python', py('import time\ndef slow():\n    time.sleep(30)\n', 'slow', { walltimeMs: 300 })],
  ])('%s: a task past its walltime is killed and the next one runs', async (runtime, req) => {
    expect(errorOf(await pool.run(req))).toEqual({
      type: 'TaskTimeout',
      message: 'task exceeded its walltime of 300 ms',
      traceback: 'TaskTimeout: task exceeded its walltime of 300 ms',
    });
    const next = runtime === 'node' ? node("() => 'still here'") : py("def ok():\n    return 'still here'\n", 'ok');
    expect(resultOf(await pool.run(next))).toBe('still here');
  });

  it('queues tasks while its process is busy', async () => {
    const source = 'async (i) => { await new Promise((r) => setTimeout(r, 50)); return i }';
    const runs = [1, 2, 3].map((i) => pool.run(node(source, { args: json([i]) })));
    expect(pool.stats().runtimes.node).toEqual({ processes: 1, busy: 1, queued: 2 });
    expect((await Promise.all(runs)).map((o) => resultOf(o))).toEqual([1, 2, 3]);
  });
});

describe('RuntimePool close', () => {
  it('kills every process and fails what is still queued or running', async () => {
    const pool = new RuntimePool({ size: 1, owner: OWNER, onOutput });
    await pool.start();
    const pids = [
      resultOf(await pool.run(node('() => process.pid'))) as number,
      resultOf(await pool.run(py('import os\ndef pid():\n    return os.getpid()\n', 'pid'))) as number,
    ];
    const running = pool.run(node('() => new Promise(() => {})'));
    const queued = pool.run(node("() => 'never'"));
    await pool.close();
    expect(errorOf(await running).type).toBe('PoolClosed');
    expect(errorOf(await queued).type).toBe('PoolClosed');
    expect(errorOf(await pool.run(node("() => 'late'"))).type).toBe('PoolClosed');
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it('rejects start() and reports the cause when the python command is missing', async () => {
    const pool = new RuntimePool({ size: 1, owner: OWNER, runtimes: ['python'], pythonCommand: 'no-such-python-ferry', onOutput });
    await expect(pool.start()).rejects.toThrow(
      /python runtime (could not start: spawn no-such-python-ferry ENOENT|exited while starting .*no-such-python-ferry: not found)/,
    );
    expect(pool.stats().runtimes.python.processes).toBe(0);
  });
});
