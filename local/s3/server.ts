/**
 * An S3-compatible server on loopback for local mode: the same S3Client that talks to AWS in
 * the cloud (with `forcePathStyle: true` and `endpoint` set to this server's url) talks to it.
 * It implements what Ferry and the AWS SDK v3 use (routes.ts). With `iam` (as the local stack
 * runs it) every request must be signed (SigV4 header or presigned query) by a known key and is
 * authorised as IAM would; without it any request is taken, for its protocol tests.
 *
 * Objects live in memory (memory-store.ts), or under `dataDir` when one is given (disk-store.ts).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { LocalIam } from '../iam';
import { listenOnLoopback, type LoopbackServer } from '../listen';
import { authorize } from './auth';
import { DiskStore } from './disk-store';
import { asS3Error, S3Error } from './errors';
import { MemoryStore } from './memory-store';
import { route } from './routes';
import { isValidBucketName, type ObjectStore } from './store';
import { sendXml } from './xml';

export type S3Server = LoopbackServer;

export interface S3ServerOptions {
  port?: number;
  host?: string;
  /** Keep objects on disk under this folder (created if missing); in memory when absent. */
  dataDir?: string;
  /** Buckets that exist from the start. */
  buckets?: string[];
  /** Authenticate and authorise every request; the local stack always passes one. */
  iam?: LocalIam;
}

// S3: a key is at most 1,024 bytes of UTF-8.
const MAX_KEY_BYTES = 1024;

export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const store: ObjectStore = opts.dataDir ? new DiskStore(opts.dataDir) : new MemoryStore();
  await store.init();
  for (const bucket of opts.buckets ?? []) {
    if (!isValidBucketName(bucket)) throw new Error(`invalid S3 bucket name: ${bucket}`);
    await store.createBucket(bucket);
  }
  const inFlight = new Set<Promise<void>>();
  const server = createServer((req, res) => {
    const done = handle(store, req, res, opts.iam).finally(() => inFlight.delete(done));
    inFlight.add(done);
  });
  // Interrupted uploads remove their files before close resolves.
  return listenOnLoopback(server, opts.port, opts.host, { afterDisconnect: () => Promise.allSettled([...inFlight]) });
}

async function handle(store: ObjectStore, req: IncomingMessage, res: ServerResponse, iam?: LocalIam): Promise<void> {
  const requestId = randomBytes(8).toString('hex').toUpperCase();
  res.setHeader('x-amz-request-id', requestId);
  res.setHeader('x-amz-id-2', randomBytes(24).toString('base64'));
  res.setHeader('server', 'FerryLocalS3');

  // The path is split by hand: URL parsing would resolve `..` segments, which are part of a key.
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const rawPath = q === -1 ? url : url.slice(0, q);
  try {
    if (!rawPath.startsWith('/')) throw new S3Error('InvalidURI', 400, "Couldn't parse the specified URI.");
    const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    const slash = rawPath.indexOf('/', 1);
    let bucket: string;
    let key: string;
    try {
      bucket = decodeURIComponent(slash === -1 ? rawPath.slice(1) : rawPath.slice(1, slash));
      key = slash === -1 ? '' : decodeURIComponent(rawPath.slice(slash + 1));
    } catch {
      throw new S3Error('InvalidURI', 400, "Couldn't parse the specified URI.");
    }
    if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
      throw new S3Error('KeyTooLongError', 400, 'Your key is too long', {
        Size: String(Buffer.byteLength(key)),
        MaxSizeAllowed: String(MAX_KEY_BYTES),
      });
    }
    await authorize(req, bucket, key, query, iam);
    await route(store, { req, res, method: req.method ?? 'GET', bucket, key, query });
  } catch (err) {
    sendError(req, res, asS3Error(err), requestId, rawPath);
  }
}

function sendError(req: IncomingMessage, res: ServerResponse, err: S3Error, requestId: string, resource: string): void {
  req.resume(); // drain what is left of the body so the connection can be reused
  if (res.headersSent) return void res.destroy();
  if (req.method === 'HEAD') return void res.writeHead(err.status, err.headers).end();
  sendXml(
    res,
    err.status,
    { Error: { Code: err.code, Message: err.message, ...err.details, Resource: resource, RequestId: requestId } },
    err.headers,
  );
}
