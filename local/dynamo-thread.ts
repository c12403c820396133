import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

/** A request for dynalite: already read whole (and, on a stack with IAM, authenticated). */
export type DynaliteCall = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

/**
 * dynalite on its own thread (local/dynamo-worker.js): the returned call hands it one request and
 * writes its answer to `res`. Storage work (validation, the LevelDB encodings, expressions) then
 * runs beside the stack's event loop instead of on it.
 */
export function startDynaliteThread(options: Record<string, unknown>): { call: DynaliteCall; stop(): Promise<void> } {
  const worker = new Worker(join(__dirname, 'dynamo-worker.js'), { workerData: { options } });
  // Nothing waits on the thread but the requests in flight: it must not keep the process alive alone.
  worker.unref();
  const waiting = new Map<number, ServerResponse>();
  let next = 0;
  let closed: (() => void) | undefined;
  worker.on('message', (answers: 'closed' | { id: number; status: number; headers: Record<string, string>; body: Uint8Array }[]) => {
    if (answers === 'closed') return closed?.();
    for (const m of answers) {
      const res = waiting.get(m.id);
      waiting.delete(m.id);
      if (!res || res.destroyed) continue;
      res.writeHead(m.status, m.headers);
      res.end(Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength));
    }
  });
  // Requests go to the thread together, once per turn of the event loop: a message between threads
  // costs ~0.1 ms however small (it wakes the other thread), so a busy stack pays it once for many calls.
  let outbox: { id: number; method?: string; url?: string; headers: IncomingMessage['headers']; body: Buffer }[] = [];
  const sendRequests = () => {
    const batch = outbox;
    outbox = [];
    if (!gone) worker.postMessage(batch);
  };
  // A thread that ended (a failure, or stop()) answers nothing: later calls are refused at once, not left waiting.
  let gone: string | undefined;
  const fail = (why: string) => {
    gone ??= why;
    for (const res of waiting.values()) res.destroy();
    waiting.clear();
  };
  worker.on('error', (err) => {
    console.error('local DynamoDB thread failed', err);
    fail(`the local DynamoDB thread failed: ${String(err)}`);
  });
  worker.on('exit', () => fail('the local DynamoDB thread has stopped'));
  return {
    call(req, body, res) {
      if (gone) {
        const text = JSON.stringify({ __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: gone });
        res.writeHead(500, { 'content-type': 'application/x-amz-json-1.0', 'content-length': String(Buffer.byteLength(text)) });
        return void res.end(text);
      }
      const id = next++;
      waiting.set(id, res);
      if (outbox.push({ id, method: req.method, url: req.url, headers: req.headers, body }) === 1) setImmediate(sendRequests);
    },
    /** Close the store (its files and lock, when on disk) and end the thread. */
    async stop() {
      await new Promise<void>((resolve) => {
        closed = resolve;
        if (outbox.length) sendRequests();
        worker.postMessage('close');
        worker.once('exit', () => resolve());
      });
      await worker.terminate();
      for (const res of waiting.values()) res.destroy();
      waiting.clear();
    },
  };
}
