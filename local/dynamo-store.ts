import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import dynalite from 'dynalite';
import { install as installFastPaths } from './dynamo-fast-paths';

/** A request for dynalite: already read whole (and, on a stack with IAM, authenticated). */
export type DynaliteCall = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

/**
 * dynalite, in memory or on disk (`options.path`), with the fast paths of local/dynamo-fast-paths.js,
 * on the stack's own event loop: the returned call hands it one request and writes its answer to
 * `res`. It used to run on a thread of its own; with the fast paths a request costs it about as
 * much as handing the request across and waking the other thread did (~0.15 ms each way), and
 * the stack's round trip, throughput and backlog drains were as good or better here (docs/bench.md).
 */
export function startDynalite(options: Record<string, unknown>): { call: DynaliteCall; stop(): Promise<void> } {
  // Before dynalite's first request: its expression parsers reuse the trees of repeated expressions.
  installFastPaths();
  const server = dynalite(options);
  const handle = server.listeners('request')[0] as (req: EventEmitter, res: unknown) => void;
  // dynalite closes its store (LevelDB's files and lock) only through its server's close(), and
  // that only once it has listened: it listens on a loopback port nothing is told of.
  server.listen(0, '127.0.0.1');
  let stopped: string | undefined;
  return {
    call(req, body, res) {
      if (stopped) return answer(res, 500, 'com.amazonaws.dynamodb.v20120810#InternalServerError', stopped);
      if (notAnObject(body))
        return answer(res, 400, 'com.amazon.coral.service#SerializationException', 'Start of structure or map found where not expected');
      const out = collector(res);
      // The request's events fire here, not a tick later: what dynalite throws while it reads and
      // checks a request is this request's 500, never the stack's end.
      const request = Object.assign(new EventEmitter(), { method: req.method, url: req.url, headers: req.headers });
      try {
        handle(request, out);
        request.emit('data', body);
        request.emit('end');
      } catch (err) {
        console.error('local DynamoDB: a request failed inside dynalite', err);
        if (!out.ended) answer(res, 500, 'com.amazonaws.dynamodb.v20120810#InternalServerError', 'local DynamoDB failed on this request');
      }
    },
    /** Close the store (its files and lock, when on disk); later calls are refused. */
    stop: () =>
      new Promise<void>((resolve) => {
        stopped = 'the local DynamoDB has stopped';
        server.close(() => resolve());
      }),
  };
}

/** What dynalite uses of a ServerResponse, written to `res` whole when dynalite ends it. */
function collector(res: ServerResponse) {
  const headers: Record<string, string> = {};
  return {
    statusCode: 200,
    ended: false,
    setHeader(name: string, value: unknown) {
      headers[name.toLowerCase()] = String(value);
    },
    getHeader(name: string) {
      return headers[name.toLowerCase()];
    },
    writeHead(status: number, more?: Record<string, unknown>) {
      this.statusCode = status;
      for (const [k, v] of Object.entries(more ?? {})) this.setHeader(k, v);
      return this;
    },
    end(body?: unknown) {
      if (this.ended) return;
      this.ended = true;
      if (res.destroyed) return;
      res.writeHead(this.statusCode, headers);
      res.end(body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(String(body), 'utf8'));
    },
  };
}

/** An error answer in DynamoDB's JSON shape. */
function answer(res: ServerResponse, status: number, type: string, message: string): void {
  const body = JSON.stringify({ __type: type, message });
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}

/**
 * A body that is JSON but not an object (`null`, a number, a list): DynamoDB refuses it as a
 * SerializationException; dynalite would read members of it, and `null` would throw.
 */
function notAnObject(body: Buffer): boolean {
  let i = 0;
  while (i < body.length && (body[i] === 0x20 || body[i] === 0x0a || body[i] === 0x0d || body[i] === 0x09)) i++;
  if (i === body.length || body[i] === 0x7b /* { */) return false;
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false; // not JSON at all: dynalite's own SerializationException
  }
}
