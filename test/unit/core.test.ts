import { deserialize } from 'node:v8';
import { FerryError, NotFound, PartialSubmitFailure, ValidationFailed } from '../../core/errors';
import { derivedId, UUID_RE } from '../../core/ids';
import { encodeJsonArgs, inlineBytes, inlineEnvelope, verifyPayload } from '../../core/payload';
import { packBatches } from '../../core/queues/batch-send';
import { canTransition, isFinal, statesAllowing, TASK_STATES } from '../../core/states';
import { bundleTasks, shareLayout } from '../../core/tasks/packing';
import type { FunctionRecord } from '../../core/tables/functions';
import { MAX_SHARE_BYTES, shareIdOf, shareOfTask, taskIdAt, type TaskRecord } from '../../core/tables/task-records';
import { errorReply } from '../../lambdas/http';
import { encodeArgs } from '../../sdk/codec';

describe('task states', () => {
  it('never leaves a final state', () => {
    for (const from of TASK_STATES.filter(isFinal)) for (const to of TASK_STATES) expect(canTransition(from, to)).toBe(false);
  });
  it('lets any open task be cancelled, and only open tasks finish', () => {
    expect(statesAllowing('cancelled')).toEqual(['received', 'waiting-for-endpoint', 'running']);
    expect(statesAllowing('success')).toEqual(['waiting-for-endpoint', 'running']);
    expect(statesAllowing('running')).toEqual(['waiting-for-endpoint', 'running']);
  });
});

describe('payload envelope', () => {
  it('round-trips inline bytes and refuses tampered ones', () => {
    const bytes = encodeJsonArgs([1, 'two'], { three: 3 });
    const env = inlineEnvelope(bytes, 'json');
    expect(JSON.parse(inlineBytes(env).toString())).toEqual({ args: [1, 'two'], kwargs: { three: 3 } });
    expect(() => inlineBytes({ ...env, inline: Buffer.from('{"args":[2]}').toString('base64') })).toThrow(/checksum/);
    expect(() => verifyPayload(bytes, { size: bytes.length + 1, sha256: env.sha256 })).toThrow(/checksum/);
  });
  it('keeps what JSON cannot in the node-v8 codec', () => {
    const value = deserialize(encodeArgs([new Date(0), new Map([[1, 2]]), 5n, Buffer.from('hi')])) as { args: unknown[] };
    expect(value.args).toEqual([new Date(0), new Map([[1, 2]]), 5n, Buffer.from('hi')]);
  });
});

describe('ids', () => {
  it('derives the same UUID from the same parts, and another from others', () => {
    expect(derivedId('a', 'b')).toBe(derivedId('a', 'b'));
    expect(derivedId('a', 'b')).not.toBe(derivedId('ab'));
    expect(derivedId('x')).toMatch(UUID_RE);
  });
});

describe('shares', () => {
  it('names a share by a UUID ending in 000 and its tasks by their position (hex)', () => {
    const share = shareIdOf(derivedId('share', 'u', 'k', '0'));
    expect(share).toMatch(UUID_RE);
    expect(share.endsWith('000')).toBe(true);
    const last = taskIdAt(share, 99);
    expect(last).toMatch(UUID_RE);
    expect(last.endsWith('063')).toBe(true);
    expect(shareOfTask(last)).toEqual({ shareId: share, position: 99 });
    // Past position 99 an id is no share's (a task from before shares).
    expect(shareOfTask(`${share.slice(0, 33)}064`)).toBeUndefined();
    expect(shareOfTask('idempotency#u#k')).toBeUndefined();
  });
  it('puts at most 100 tasks, and about 300 KB of them, in one share', () => {
    expect(shareLayout(Array.from({ length: 250 }, () => ({ function_id: 'f', args: [1] })))).toEqual([100, 100, 50]);
    expect(shareLayout([{ function_id: 'f' }])).toEqual([1]);
    const big = Array.from({ length: 20 }, () => ({ function_id: 'f', kwargs: { x: 'y'.repeat(60 * 1024) } }));
    const layout = shareLayout(big);
    expect(layout.reduce((a, n) => a + n, 0)).toBe(20);
    // 60 KB of JSON is about 80 KB of base64 inline: at most 4 a share keeps it under DynamoDB's 400 KB item.
    expect(Math.max(...layout)).toBeLessThanOrEqual(4);
    expect(Math.max(...layout) * 80 * 1024).toBeLessThan(MAX_SHARE_BYTES + 100 * 1024);
  });
});

describe('bundling tasks into messages', () => {
  const fn = (id: string): FunctionRecord => ({
    function_id: id,
    owner: 'u',
    name: id,
    runtime: 'node',
    source: '() => 1',
    source_sha256: '',
    created_at: '',
  });
  const functions = new Map([
    ['f1', fn('f1')],
    ['f2', fn('f2')],
  ]);
  const task = (i: number, functionId = 'f1', argBytes = 10): TaskRecord =>
    ({ task_id: `t${i}`, function_id: functionId, args: inlineEnvelope(Buffer.alloc(argBytes), 'json'), walltime_ms: 1000 }) as TaskRecord;

  it('sends small submits one task per message so every worker can take one', () => {
    const msgs = bundleTasks(
      'ep',
      Array.from({ length: 10 }, (_, i) => task(i)),
      functions,
      'now',
    );
    expect(msgs.map((m) => m.tasks.length)).toEqual(Array(10).fill(1));
  });
  it('packs 100 tasks into 50 messages (5 SendMessageBatch calls) and 500 into 50', () => {
    expect(
      bundleTasks(
        'ep',
        Array.from({ length: 100 }, (_, i) => task(i)),
        functions,
        'now',
      ),
    ).toHaveLength(50);
    expect(
      bundleTasks(
        'ep',
        Array.from({ length: 500 }, (_, i) => task(i)),
        functions,
        'now',
      ),
    ).toHaveLength(50);
  });
  it('keeps one function per message and every task exactly once', () => {
    const records = Array.from({ length: 200 }, (_, i) => task(i, i % 2 ? 'f1' : 'f2'));
    const msgs = bundleTasks('ep', records, functions, 'now');
    for (const m of msgs)
      expect(new Set(m.tasks.map((t) => records.find((r) => r.task_id === t.task_id)!.function_id))).toEqual(
        new Set([m.function.function_id]),
      );
    expect(msgs.flatMap((m) => m.tasks.map((t) => t.task_id)).sort()).toEqual(records.map((r) => r.task_id).sort());
  });
  it('never lets a message of two or more tasks outgrow one 64 KiB billing chunk', () => {
    // Argument sizes around the edge: two tasks of about 24 KiB (32 KiB of base64 each) just fit or just miss;
    // at 24,404 bytes a count that left out the tasks array's brackets and commas went 3 bytes over.
    for (const argBytes of [20 * 1024, 23 * 1024, 24_376, 24_403, 24_404, 24_408, 30 * 1024]) {
      const msgs = bundleTasks(
        'ep',
        Array.from({ length: 500 }, (_, i) => task(i, 'f1', argBytes)),
        functions,
        'now',
      );
      expect(msgs.flatMap((m) => m.tasks)).toHaveLength(500);
      for (const m of msgs.filter((x) => x.tasks.length > 1)) expect(Buffer.byteLength(JSON.stringify(m))).toBeLessThanOrEqual(64 * 1024);
    }
    // 20 KiB of arguments: two tasks to a message, not one.
    const msgs = bundleTasks(
      'ep',
      Array.from({ length: 500 }, (_, i) => task(i, 'f1', 20 * 1024)),
      functions,
      'now',
    );
    expect(msgs.every((m) => m.tasks.length === 2)).toBe(true);
  });
  it('sends a task too large for one chunk alone', () => {
    const msgs = bundleTasks(
      'ep',
      Array.from({ length: 100 }, (_, i) => task(i, 'f1', 64 * 1024)),
      functions,
      'now',
    );
    expect(msgs).toHaveLength(100);
    expect(Math.min(...msgs.map((m) => Buffer.byteLength(JSON.stringify(m))))).toBeGreaterThan(64 * 1024);
  });
});

describe('SQS batch packing', () => {
  it('never puts more than 10 entries or 256 KiB in one call', () => {
    const messages = Array.from({ length: 25 }, (_, i) => ({ id: String(i), body: 'x'.repeat(i % 3 === 0 ? 100 * 1024 : 10) }));
    const batches = packBatches(messages);
    for (const b of batches) {
      expect(b.length).toBeLessThanOrEqual(10);
      expect(b.reduce((n, m) => n + m.body.length, 0)).toBeLessThanOrEqual(256 * 1024);
    }
    expect(batches.flat()).toEqual(messages);
  });
});

describe('errors become HTTP answers in one place', () => {
  it('maps typed errors to their status and code, and hides the rest', () => {
    const answer = (e: unknown) => ({ status: errorReply(e).statusCode, body: JSON.parse(errorReply(e).body as string) });
    expect(answer(new ValidationFailed('tasks: required'))).toEqual({
      status: 400,
      body: { error: { code: 'ValidationFailed', message: 'tasks: required' } },
    });
    expect(answer(new NotFound('task x not found')).status).toBe(404);
    expect(answer(new PartialSubmitFailure('1 of 2', { not_queued: ['a'] })).body.error.not_queued).toEqual(['a']);
    // Only keeps the expected "unhandled error" log line out of the test output.
    const spy = jest.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(answer(new Error('secret detail'))).toEqual({
      status: 500,
      body: { error: { code: 'InternalError', message: 'internal error' } },
    });
    spy.mockRestore();
    expect(answer(Object.assign(new Error('slow down'), { name: 'ThrottlingException' })).status).toBe(429);
    expect(new NotFound('x')).toBeInstanceOf(FerryError);
  });
});
