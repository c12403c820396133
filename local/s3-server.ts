/**
 * An S3-compatible server on loopback for local mode: the same S3Client that talks to AWS in
 * the cloud (with `forcePathStyle: true` and `endpoint` set to this server's url) talks to it.
 *
 * It covers what Ferry uses and no more: buckets (create, head, delete), objects (put, get
 * with a byte range, head, delete, batch delete), ListObjectsV2, and presigned URLs (whose
 * expiry is enforced). With `iam` (as the local stack runs it) every request must be signed
 * (SigV4 header or presigned query) by a known key and is authorised as IAM would; without it
 * any request is taken, for its protocol tests. Uploads may come
 * as plain bodies or as `aws-chunked` bodies with trailing checksums, which the SDK sends by
 * default; CRC32, CRC32C, SHA-1, SHA-256 and Content-MD5 are verified (CRC64NVME is stored
 * and echoed but not verified). Anything else answers 501 NotImplemented.
 *
 * Objects live in memory, or under `dataDir` when one is given: one folder per bucket, and per
 * object a data file and a JSON sidecar whose names derive from the SHA-256 of the key, so no
 * key can name a path outside its bucket folder.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Readable, pipeline } from 'node:stream';
import { crc32 } from 'node:zlib';
import type { Caller } from './credential-registry';
import type { LocalIam } from './iam';
import { AuthError, type AuthFailure } from './sigv4';

export interface S3Server {
  url: string;
  port: number;
  close(): Promise<void>;
}

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

const XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';
const REGION = 'us-east-1';
const MAX_OBJECT_BYTES = 5 * 1024 ** 3; // the limit of a single PutObject
const MAX_KEY_BYTES = 1024;
const MAX_METADATA_BYTES = 2048;
const MAX_DELETE_BODY_BYTES = 2 * 1024 ** 2;
const MAX_PRESIGN_EXPIRES_SECONDS = 7 * 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Errors

class S3Error extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details: Record<string, string> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const noSuchBucket = (bucket: string) => new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist', { BucketName: bucket });
const noSuchKey = (key: string) => new S3Error('NoSuchKey', 404, 'The specified key does not exist.', { Key: key });
const notImplemented = (what: string) => new S3Error('NotImplemented', 501, `${what} is not implemented by Ferry's local S3 server.`);
const invalidArgument = (message: string, name: string, value: string) =>
  new S3Error('InvalidArgument', 400, message, { ArgumentName: name, ArgumentValue: value });
const badDigest = (what: string) => new S3Error('BadDigest', 400, `The ${what} you specified did not match the calculated checksum.`);

/** S3's answers to a request it cannot authenticate (HTTP status as S3 gives them). */
function authError(err: AuthError, presigned: boolean): S3Error {
  const table: Record<AuthFailure, [string, number]> = {
    missing: ['AccessDenied', 403],
    malformed: [presigned ? 'AuthorizationQueryParametersError' : 'AuthorizationHeaderMalformed', 400],
    'unknown-key': ['InvalidAccessKeyId', 403],
    'bad-signature': ['SignatureDoesNotMatch', 403],
    skewed: ['RequestTimeTooSkewed', 403],
    expired: ['ExpiredToken', 400],
  };
  const [code, status] = table[err.reason];
  const message =
    err.reason === 'unknown-key'
      ? 'The AWS Access Key Id you provided does not exist in our records.'
      : err.reason === 'expired'
        ? 'The provided token has expired.'
        : err.message;
  return new S3Error(code, status, message);
}

/** The IAM action and resource ARN an S3 request is authorised as. */
function s3Permission(method: string, bucket: string, key: string, query: URLSearchParams): { action: string; resource: string } {
  if (!bucket) return { action: 's3:ListAllMyBuckets', resource: '*' };
  if (!key) {
    const bucketArn = `arn:aws:s3:::${bucket}`;
    if (method === 'PUT') return { action: 's3:CreateBucket', resource: bucketArn };
    if (method === 'DELETE') return { action: 's3:DeleteBucket', resource: bucketArn };
    // S3: DeleteObjects is authorised as s3:DeleteObject on each key; no worker may delete anything.
    if (method === 'POST' && query.has('delete')) return { action: 's3:DeleteObject', resource: `${bucketArn}/*` };
    return { action: 's3:ListBucket', resource: bucketArn };
  }
  const objectArn = `arn:aws:s3:::${bucket}/${key}`;
  const action =
    method === 'PUT' ? 's3:PutObject' : method === 'DELETE' ? 's3:DeleteObject' : method === 'HEAD' ? 's3:HeadObject' : 's3:GetObject';
  return { action, resource: objectArn };
}

// ---------------------------------------------------------------------------------------------
// Checksums

const CHECKSUM_ALGORITHMS = ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256'] as const;
type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];
const checksumHeader = (a: ChecksumAlgorithm) => `x-amz-checksum-${a}`;

interface Digest {
  update(chunk: Buffer): void;
  /** Base64, as S3 writes it. */
  digest(): string;
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32c(buf: Uint8Array, previous = 0): number {
  let c = (previous ^ 0xffffffff) >>> 0;
  for (let i = 0; i < buf.length; i++) c = CRC32C_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function crcDigest(fn: (buf: Uint8Array, previous: number) => number): Digest {
  let value = 0;
  return {
    update: (chunk) => void (value = fn(chunk, value)),
    digest: () => {
      const out = Buffer.alloc(4);
      out.writeUInt32BE(value >>> 0);
      return out.toString('base64');
    },
  };
}

function hashDigest(hash: Hash): Digest {
  return { update: (chunk) => void hash.update(chunk), digest: () => hash.digest('base64') };
}

/** A running checksum, or undefined for an algorithm this server does not verify (CRC64NVME). */
function makeDigest(algorithm: ChecksumAlgorithm): Digest | undefined {
  switch (algorithm) {
    case 'crc32':
      return crcDigest((buf, previous) => crc32(buf, previous));
    case 'crc32c':
      return crcDigest(crc32c);
    case 'sha1':
      return hashDigest(createHash('sha1'));
    case 'sha256':
      return hashDigest(createHash('sha256'));
    case 'crc64nvme':
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// aws-chunked bodies
//
//   unsigned:  <hex-size>\r\n<bytes>\r\n ... 0\r\n<trailer>:<value>\r\n\r\n
//   signed:    <hex-size>;chunk-signature=<sig>\r\n<bytes>\r\n ... 0;chunk-signature=<sig>\r\n
//              [<trailer>:<value>\r\nx-amz-trailer-signature:<sig>\r\n]\r\n

class AwsChunkedDecoder {
  readonly trailers: Record<string, string> = {};
  private state: 'size' | 'data' | 'dataEnd' | 'trailer' | 'done' = 'size';
  private line = '';
  private remaining = 0;

  /** The payload bytes within `chunk`, as views into it. */
  feed(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, chunk.length - i);
        out.push(chunk.subarray(i, i + n));
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'dataEnd';
      } else if (this.state === 'done') {
        throw malformedChunk('data after the final chunk');
      } else {
        const newline = chunk.indexOf(0x0a, i);
        const end = newline === -1 ? chunk.length : newline;
        this.line += chunk.toString('latin1', i, end);
        if (this.line.length > 8192) throw malformedChunk('a chunk header or trailer is too long');
        if (newline === -1) break;
        i = newline + 1;
        const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
        this.line = '';
        this.onLine(line);
      }
    }
    return out;
  }

  /** Call at the end of the body. */
  finish(): void {
    const endedInTrailer = this.state === 'trailer' && this.line === '';
    if (this.state !== 'done' && !endedInTrailer) {
      throw new S3Error('IncompleteBody', 400, 'The request body ended before the final aws-chunked chunk.');
    }
  }

  private onLine(line: string): void {
    if (this.state === 'dataEnd') {
      if (line !== '') throw malformedChunk('a chunk is longer than its declared size');
      this.state = 'size';
    } else if (this.state === 'size') {
      const sizeText = line.split(';', 1)[0].trim();
      if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) throw malformedChunk(`bad chunk size "${sizeText.slice(0, 20)}"`);
      const size = parseInt(sizeText, 16);
      if (size === 0) this.state = 'trailer';
      else {
        this.remaining = size;
        this.state = 'data';
      }
    } else if (line === '') {
      this.state = 'done';
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0) throw malformedChunk('a trailer has no name');
      this.trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
}

const malformedChunk = (why: string) => new S3Error('InvalidRequest', 400, `Malformed aws-chunked body: ${why}.`);

// ---------------------------------------------------------------------------------------------
// Storage

/** What is known of an object besides its bytes. */
interface ObjectMeta {
  key: string;
  size: number;
  /** Quoted MD5 hex, as in the ETag header. */
  etag: string;
  /** Milliseconds since the epoch. */
  lastModified: number;
  /** Standard headers stored with the object (content-type, cache-control, ...), lower case. */
  headers: Record<string, string>;
  /** User metadata, the names without `x-amz-meta-`. */
  metadata: Record<string, string>;
  checksum?: { algorithm: ChecksumAlgorithm; value: string };
}

interface OpenObject {
  meta: ObjectMeta;
  /** The bytes start..end inclusive. Closes the object when the stream ends or is destroyed. */
  read(start: number, end: number): Readable;
  /** Release the object when it is not read. */
  close(): Promise<void>;
}

interface PutSink {
  write(chunk: Buffer): Promise<void>;
  commit(meta: ObjectMeta): Promise<void>;
  abort(): Promise<void>;
}

interface BucketIndex<E> {
  created: number;
  objects: Map<string, E>;
  /** Keys in S3 order, rebuilt on demand after a change. */
  sorted?: string[];
}

abstract class ObjectStore<E extends { meta: ObjectMeta } = { meta: ObjectMeta }> {
  protected readonly buckets = new Map<string, BucketIndex<E>>();
  private queue: Promise<unknown> = Promise.resolve();

  abstract init(): Promise<void>;
  /** False when the bucket already existed. */
  abstract createBucket(name: string): Promise<boolean>;
  abstract deleteBucket(name: string): Promise<void>;
  abstract beginPut(bucket: string, key: string, expectedSize: number | undefined): Promise<PutSink>;
  abstract open(bucket: string, key: string): Promise<OpenObject | undefined>;
  abstract deleteObject(bucket: string, key: string): Promise<void>;

  bucketNames(): { name: string; created: number }[] {
    return [...this.buckets].map(([name, b]) => ({ name, created: b.created })).sort((a, b) => compareKeys(a.name, b.name));
  }

  hasBucket(name: string): boolean {
    return this.buckets.has(name);
  }

  requireBucket(name: string): BucketIndex<E> {
    const bucket = this.buckets.get(name);
    if (!bucket) throw noSuchBucket(name);
    return bucket;
  }

  sortedKeys(name: string): string[] {
    const bucket = this.requireBucket(name);
    return (bucket.sorted ??= [...bucket.objects.keys()].sort(compareKeys));
  }

  head(bucket: string, key: string): ObjectMeta | undefined {
    return this.requireBucket(bucket).objects.get(key)?.meta;
  }

  /** Run changes one at a time, so that a bucket's index and its folder never disagree. */
  protected serially<T>(change: () => Promise<T>): Promise<T> {
    const result = this.queue.then(change);
    this.queue = result.catch(() => undefined);
    return result;
  }

  protected setEntry(bucket: BucketIndex<E>, key: string, entry: E): E | undefined {
    const previous = bucket.objects.get(key);
    if (!previous) bucket.sorted = undefined;
    bucket.objects.set(key, entry);
    return previous;
  }

  protected removeEntry(bucket: BucketIndex<E>, key: string): E | undefined {
    const previous = bucket.objects.get(key);
    if (previous) {
      bucket.objects.delete(key);
      bucket.sorted = undefined;
    }
    return previous;
  }
}

/** S3 lists keys in UTF-8 byte order, which is code point order, not UTF-16 code unit order. */
function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    const sa = ca >= 0xd800 && ca <= 0xdfff;
    const sb = cb >= 0xd800 && cb <= 0xdfff;
    if (sa !== sb) return sa ? 1 : -1;
    return ca - cb;
  }
  return a.length - b.length;
}

class MemoryStore extends ObjectStore<{ meta: ObjectMeta; body: Buffer }> {
  async init(): Promise<void> {}

  async createBucket(name: string): Promise<boolean> {
    if (this.buckets.has(name)) return false;
    this.buckets.set(name, { created: Date.now(), objects: new Map() });
    return true;
  }

  async deleteBucket(name: string): Promise<void> {
    const bucket = this.requireBucket(name);
    if (bucket.objects.size > 0) throw bucketNotEmpty(name);
    this.buckets.delete(name);
  }

  async beginPut(bucket: string, key: string, expectedSize: number | undefined): Promise<PutSink> {
    this.requireBucket(bucket);
    // With a known size the bytes are copied once, into their final buffer.
    const preallocated = expectedSize !== undefined && expectedSize <= 256 * 1024 ** 2 ? Buffer.allocUnsafe(expectedSize) : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    return {
      write: async (chunk) => {
        if (!preallocated) chunks.push(chunk);
        else if (size + chunk.length <= preallocated.length) chunk.copy(preallocated, size);
        else throw new S3Error('IncompleteBody', 400, 'The request body is longer than its declared length.');
        size += chunk.length;
      },
      commit: async (meta) => {
        const index = this.requireBucket(bucket); // it may have been deleted meanwhile
        const body = preallocated ? preallocated.subarray(0, size) : Buffer.concat(chunks);
        this.setEntry(index, key, { meta, body });
      },
      abort: async () => {
        chunks.length = 0;
      },
    };
  }

  async open(bucket: string, key: string): Promise<OpenObject | undefined> {
    const entry = this.requireBucket(bucket).objects.get(key);
    if (!entry) return undefined;
    return {
      meta: entry.meta,
      read: (start, end) => Readable.from([entry.body.subarray(start, end + 1)]),
      close: async () => {},
    };
  }

  async deleteObject(bucket: string, key: string): Promise<void> {
    this.removeEntry(this.requireBucket(bucket), key);
  }
}

async function writeSynced(file: string, text: string): Promise<void> {
  const handle = await fsp.open(file, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const bucketNotEmpty = (name: string) =>
  new S3Error('BucketNotEmpty', 409, 'The bucket you tried to delete is not empty', { BucketName: name });

/**
 * Layout under the root: `<bucket>/<sha256(key)>.json` holds `{ version, meta }` and
 * `<bucket>/<sha256(key)>.<version>.data` the bytes; uploads land in `.tmp/` and are renamed
 * into place once complete and verified. A new version of an object gets a new data file, so
 * a reader that opened the old one keeps reading consistent bytes.
 */
class DiskStore extends ObjectStore<{ meta: ObjectMeta; version: string }> {
  private readonly root: string;
  private readonly tmpDir: string;

  constructor(root: string) {
    super();
    this.root = path.resolve(root);
    this.tmpDir = path.join(this.root, '.tmp');
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true });
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
    await fsp.mkdir(this.tmpDir);
    for (const entry of await fsp.readdir(this.root, { withFileTypes: true })) {
      if (entry.isDirectory() && isValidBucketName(entry.name)) await this.loadBucket(entry.name);
    }
  }

  private async loadBucket(name: string): Promise<void> {
    const dir = this.bucketDir(name);
    const stat = await fsp.stat(dir);
    const bucket: BucketIndex<{ meta: ObjectMeta; version: string }> = {
      created: stat.birthtimeMs || stat.mtimeMs,
      objects: new Map(),
    };
    const files = await fsp.readdir(dir);
    const referenced = new Set<string>();
    for (const file of files) {
      const match = /^([0-9a-f]{64})\.json$/.exec(file);
      if (!match) continue;
      try {
        const sidecar = JSON.parse(await fsp.readFile(path.join(dir, file), 'utf8')) as { version: unknown; meta: ObjectMeta };
        const { version, meta } = sidecar;
        if (typeof version !== 'string' || !/^[0-9a-f]{16}$/.test(version)) continue;
        if (typeof meta?.key !== 'string' || objectId(meta.key) !== match[1]) continue;
        const dataFile = `${match[1]}.${version}.data`;
        if ((await fsp.stat(path.join(dir, dataFile))).size !== meta.size) continue;
        bucket.objects.set(meta.key, { meta, version });
        referenced.add(dataFile);
      } catch {
        // An unreadable sidecar or a missing data file: the object is not there.
      }
    }
    // Data files left by a crash between writing the bytes and the sidecar.
    for (const file of files) {
      if (/^[0-9a-f]{64}\.[0-9a-f]{16}\.data$/.test(file) && !referenced.has(file)) {
        await fsp.rm(path.join(dir, file), { force: true });
      }
    }
    this.buckets.set(name, bucket);
  }

  createBucket(name: string): Promise<boolean> {
    return this.serially(async () => {
      if (this.buckets.has(name)) return false;
      await fsp.mkdir(this.bucketDir(name), { recursive: true });
      this.buckets.set(name, { created: Date.now(), objects: new Map() });
      return true;
    });
  }

  deleteBucket(name: string): Promise<void> {
    return this.serially(async () => {
      const bucket = this.requireBucket(name);
      if (bucket.objects.size > 0) throw bucketNotEmpty(name);
      this.buckets.delete(name);
      await fsp.rm(this.bucketDir(name), { recursive: true, force: true });
    });
  }

  async beginPut(bucket: string, key: string): Promise<PutSink> {
    this.requireBucket(bucket);
    const tmp = path.join(this.tmpDir, randomBytes(12).toString('hex'));
    const file = await fsp.open(tmp, 'wx');
    let closed = false;
    const closeFile = async () => {
      if (!closed) {
        closed = true;
        await file.close();
      }
    };
    return {
      write: async (chunk) => {
        for (let offset = 0; offset < chunk.length;) offset += (await file.write(chunk, offset)).bytesWritten;
      },
      commit: async (meta) => {
        // Durable before the 200: the bytes, then the sidecar naming them, each synced before its
        // rename, and the directory after, so the object survives kill -9 and a machine crash.
        if (!closed) await file.sync();
        await closeFile();
        await this.serially(async () => {
          const index = this.requireBucket(bucket);
          const id = objectId(key);
          const version = randomBytes(8).toString('hex');
          await fsp.rename(tmp, this.dataPath(bucket, id, version));
          const sidecarTmp = `${tmp}.json`;
          await writeSynced(sidecarTmp, JSON.stringify({ version, meta }));
          await fsp.rename(sidecarTmp, this.sidecarPath(bucket, id));
          await syncDirectory(this.bucketDir(bucket));
          const previous = this.setEntry(index, key, { meta, version });
          if (previous) await fsp.rm(this.dataPath(bucket, id, previous.version), { force: true });
        });
      },
      abort: async () => {
        await closeFile().catch(() => undefined);
        await fsp.rm(tmp, { force: true });
      },
    };
  }

  async open(bucket: string, key: string): Promise<OpenObject | undefined> {
    // A concurrent overwrite or delete may remove the data file between reading the index
    // and opening the file; then read the index again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = this.requireBucket(bucket).objects.get(key);
      if (!entry) return undefined;
      let file: fsp.FileHandle;
      try {
        file = await fsp.open(this.dataPath(bucket, objectId(key), entry.version), 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      return {
        meta: entry.meta,
        read: (start, end) => file.createReadStream({ start, end }),
        close: () => file.close(),
      };
    }
    throw new S3Error('InternalError', 500, 'The object kept changing while it was being opened.');
  }

  deleteObject(bucket: string, key: string): Promise<void> {
    return this.serially(async () => {
      const previous = this.removeEntry(this.requireBucket(bucket), key);
      if (!previous) return;
      const id = objectId(key);
      await fsp.rm(this.sidecarPath(bucket, id), { force: true });
      await fsp.rm(this.dataPath(bucket, id, previous.version), { force: true });
    });
  }

  // Bucket names are validated before they get here and object file names are hex digests,
  // so every path stays inside the root; the check below makes that explicit.
  private bucketDir(bucket: string): string {
    if (!isValidBucketName(bucket)) throw noSuchBucket(bucket);
    const dir = path.join(this.root, bucket);
    if (path.dirname(dir) !== this.root) throw noSuchBucket(bucket);
    return dir;
  }

  private sidecarPath(bucket: string, id: string): string {
    return path.join(this.bucketDir(bucket), `${id}.json`);
  }

  private dataPath(bucket: string, id: string, version: string): string {
    return path.join(this.bucketDir(bucket), `${id}.${version}.data`);
  }
}

const objectId = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex');

function isValidBucketName(name: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !name.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(name);
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  bucket: string;
  key: string;
  query: URLSearchParams;
}

// Sub-resources that select an operation this server does not implement.
const BUCKET_SUBRESOURCES = new Set([
  'accelerate',
  'acl',
  'analytics',
  'cors',
  'encryption',
  'intelligent-tiering',
  'inventory',
  'lifecycle',
  'location',
  'logging',
  'metadataConfiguration',
  'metrics',
  'notification',
  'object-lock',
  'ownershipControls',
  'policy',
  'policyStatus',
  'publicAccessBlock',
  'replication',
  'requestPayment',
  'session',
  'tagging',
  'uploads',
  'versioning',
  'versions',
  'website',
]);
const OBJECT_SUBRESOURCES = new Set([
  'acl',
  'attributes',
  'legal-hold',
  'partNumber',
  'renameObject',
  'restore',
  'retention',
  'select',
  'tagging',
  'torrent',
  'uploadId',
  'uploads',
  'versionId',
]);

// Headers stored with an object and returned by GET and HEAD.
const STORED_HEADERS = ['content-type', 'content-disposition', 'content-language', 'cache-control', 'expires'];
// Query parameters of a GET that override a returned header.
const RESPONSE_OVERRIDES: Record<string, string> = {
  'response-content-type': 'content-type',
  'response-content-language': 'content-language',
  'response-expires': 'expires',
  'response-cache-control': 'cache-control',
  'response-content-disposition': 'content-disposition',
  'response-content-encoding': 'content-encoding',
};

async function route(store: ObjectStore, r: Request): Promise<void> {
  const { method, bucket, key, query } = r;
  const subresource = (names: Set<string>) => [...query.keys()].find((k) => names.has(k));

  if (!bucket) {
    if (method === 'GET') return listBuckets(store, r);
    throw methodNotAllowed(method, 'SERVICE');
  }

  if (!key) {
    const sub = subresource(BUCKET_SUBRESOURCES);
    if (method === 'HEAD') return headBucket(store, r);
    if (sub) throw notImplemented(`The bucket sub-resource "${sub}"`);
    switch (method) {
      case 'PUT':
        return createBucket(store, r);
      case 'DELETE':
        return deleteBucket(store, r);
      case 'GET':
        if (query.get('list-type') === '2') return listObjectsV2(store, r);
        throw notImplemented('ListObjects (version 1; use ListObjectsV2)');
      case 'POST':
        if (query.has('delete')) return deleteObjects(store, r);
        throw notImplemented('This bucket POST');
      default:
        throw methodNotAllowed(method, 'BUCKET');
    }
  }

  const sub = subresource(OBJECT_SUBRESOURCES);
  if (sub) throw notImplemented(`The object sub-resource "${sub}"`);
  switch (method) {
    case 'PUT':
      if (r.req.headers['x-amz-copy-source']) throw notImplemented('CopyObject');
      return putObject(store, r);
    case 'GET':
    case 'HEAD':
      return getObject(store, r);
    case 'DELETE':
      store.requireBucket(bucket);
      await store.deleteObject(bucket, key);
      return void r.res.writeHead(204).end();
    default:
      throw methodNotAllowed(method, 'OBJECT');
  }
}

const methodNotAllowed = (method: string, resourceType: string) =>
  new S3Error(
    'MethodNotAllowed',
    405,
    'The specified method is not allowed against this resource.',
    { Method: method, ResourceType: resourceType },
    { allow: resourceType === 'OBJECT' ? 'GET, HEAD, PUT, DELETE' : 'GET, HEAD, PUT, POST, DELETE' },
  );

// --- buckets

function listBuckets(store: ObjectStore, { res }: Request): void {
  const buckets = store
    .bucketNames()
    .map((b) => `<Bucket><Name>${xml(b.name)}</Name><CreationDate>${new Date(b.created).toISOString()}</CreationDate></Bucket>`)
    .join('');
  sendXml(
    res,
    200,
    `<ListAllMyBucketsResult xmlns="${XMLNS}"><Owner><ID>ferry</ID><DisplayName>ferry</DisplayName></Owner>` +
      `<Buckets>${buckets}</Buckets></ListAllMyBucketsResult>`,
  );
}

async function createBucket(store: ObjectStore, { req, res, bucket }: Request): Promise<void> {
  req.resume(); // a CreateBucketConfiguration body, if any, is ignored
  if (!isValidBucketName(bucket)) {
    throw new S3Error('InvalidBucketName', 400, 'The specified bucket is not valid.', { BucketName: bucket });
  }
  // Creating a bucket you already own succeeds in us-east-1, as it does in AWS.
  await store.createBucket(bucket);
  res.writeHead(200, { location: `/${bucket}`, 'content-length': '0' }).end();
}

function headBucket(store: ObjectStore, { res, bucket }: Request): void {
  store.requireBucket(bucket);
  res.writeHead(200, { 'x-amz-bucket-region': REGION, 'content-length': '0' }).end();
}

async function deleteBucket(store: ObjectStore, { res, bucket }: Request): Promise<void> {
  await store.deleteBucket(bucket);
  res.writeHead(204).end();
}

function listObjectsV2(store: ObjectStore, { res, bucket, query }: Request): void {
  const keys = store.sortedKeys(bucket);
  const prefix = query.get('prefix') ?? '';
  const delimiter = query.get('delimiter') ?? '';
  const startAfter = query.get('start-after') ?? '';
  const token = query.get('continuation-token');
  const encodingType = query.get('encoding-type');
  if (encodingType !== null && encodingType !== 'url') {
    throw invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', encodingType);
  }
  const maxKeysText = query.get('max-keys');
  const maxKeys = maxKeysText === null ? 1000 : Number(maxKeysText);
  if (!Number.isInteger(maxKeys) || maxKeys < 0) {
    throw invalidArgument('Provided max-keys not an integer or within integer range', 'max-keys', String(maxKeysText));
  }
  const limit = Math.min(maxKeys, 1000);

  // Listing resumes after `after`; when that is a common prefix, after every key under it.
  let after: { key: string; isPrefix: boolean } | undefined;
  if (token !== null) {
    try {
      after = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
      if (typeof after?.key !== 'string') throw new Error('bad token');
    } catch {
      throw invalidArgument('The continuation token provided is incorrect', 'continuation-token', token);
    }
  } else if (startAfter) {
    after = { key: startAfter, isPrefix: false };
  }

  const contents: ObjectMeta[] = [];
  const commonPrefixes: string[] = [];
  let last: { key: string; isPrefix: boolean } | undefined;
  let truncated = false;
  for (const key of keys) {
    if (!key.startsWith(prefix)) continue;
    if (after && (compareKeys(key, after.key) <= 0 || (after.isPrefix && key.startsWith(after.key)))) continue;
    let common: string | undefined;
    if (delimiter) {
      const at = key.indexOf(delimiter, prefix.length);
      if (at >= 0) common = key.slice(0, at + delimiter.length);
    }
    if (common !== undefined && last?.isPrefix && last.key === common) continue; // keys under it are adjacent
    if (contents.length + commonPrefixes.length >= limit) {
      truncated = true;
      break;
    }
    if (common !== undefined) {
      commonPrefixes.push(common);
      last = { key: common, isPrefix: true };
    } else {
      contents.push(store.head(bucket, key)!);
      last = { key, isPrefix: false };
    }
  }

  const enc = (s: string) => xml(encodingType === 'url' ? encodeURIComponent(s).replace(/%2F/g, '/') : s);
  const parts = [
    `<ListBucketResult xmlns="${XMLNS}">`,
    `<Name>${xml(bucket)}</Name><Prefix>${enc(prefix)}</Prefix>`,
    delimiter ? `<Delimiter>${enc(delimiter)}</Delimiter>` : '',
    `<MaxKeys>${maxKeys}</MaxKeys><KeyCount>${contents.length + commonPrefixes.length}</KeyCount>`,
    `<IsTruncated>${truncated}</IsTruncated>`,
    encodingType ? `<EncodingType>${encodingType}</EncodingType>` : '',
    token !== null ? `<ContinuationToken>${xml(token)}</ContinuationToken>` : '',
    truncated && last ? `<NextContinuationToken>${Buffer.from(JSON.stringify(last)).toString('base64url')}</NextContinuationToken>` : '',
    startAfter ? `<StartAfter>${enc(startAfter)}</StartAfter>` : '',
    ...contents.map(
      (o) =>
        `<Contents><Key>${enc(o.key)}</Key><LastModified>${new Date(o.lastModified).toISOString()}</LastModified>` +
        `<ETag>${xml(o.etag)}</ETag><Size>${o.size}</Size><StorageClass>STANDARD</StorageClass>` +
        (query.get('fetch-owner') === 'true' ? '<Owner><ID>ferry</ID><DisplayName>ferry</DisplayName></Owner>' : '') +
        (o.checksum
          ? `<ChecksumAlgorithm>${o.checksum.algorithm.toUpperCase()}</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType>`
          : '') +
        `</Contents>`,
    ),
    ...commonPrefixes.map((p) => `<CommonPrefixes><Prefix>${enc(p)}</Prefix></CommonPrefixes>`),
    `</ListBucketResult>`,
  ];
  sendXml(res, 200, parts.join(''));
}

async function deleteObjects(store: ObjectStore, r: Request): Promise<void> {
  const { req, res, bucket } = r;
  store.requireBucket(bucket);
  const chunks: Buffer[] = [];
  let length = 0;
  const received = await receiveBody(r, async (chunk) => {
    chunks.push(chunk);
    length += chunk.length;
    if (length > MAX_DELETE_BODY_BYTES) throw malformedXml();
  });
  if (!req.headers['content-md5'] && !received.checksum) {
    throw new S3Error('InvalidRequest', 400, 'Missing required header for this request: Content-MD5');
  }
  const body = Buffer.concat(chunks).toString('utf8');
  if (!/<Delete[\s>]/.test(body)) throw malformedXml();
  const objects = [...body.matchAll(/<Object>([\s\S]*?)<\/Object>/g)].map((m) => /<Key>([\s\S]*?)<\/Key>/.exec(m[1]));
  if (objects.length === 0 || objects.length > 1000 || objects.some((m) => !m)) throw malformedXml();
  const quiet = /<Quiet>\s*true\s*<\/Quiet>/i.test(body);
  const deleted: string[] = [];
  for (const match of objects) {
    const key = xmlDecode(match![1]);
    await store.deleteObject(bucket, key);
    deleted.push(key);
  }
  sendXml(
    res,
    200,
    `<DeleteResult xmlns="${XMLNS}">${quiet ? '' : deleted.map((k) => `<Deleted><Key>${xml(k)}</Key></Deleted>`).join('')}</DeleteResult>`,
  );
}

const malformedXml = () =>
  new S3Error('MalformedXML', 400, 'The XML you provided was not well-formed or did not validate against our published schema');

// --- objects

async function putObject(store: ObjectStore, r: Request): Promise<void> {
  const { req, res, bucket, key } = r;
  store.requireBucket(bucket);
  const h = req.headers;

  const metadata: Record<string, string> = {};
  let metadataBytes = 0;
  for (const [name, value] of Object.entries(h)) {
    if (!name.startsWith('x-amz-meta-') || value === undefined) continue;
    const short = name.slice('x-amz-meta-'.length);
    metadata[short] = Array.isArray(value) ? value.join(',') : value;
    metadataBytes += Buffer.byteLength(short) + Buffer.byteLength(metadata[short]);
  }
  if (metadataBytes > MAX_METADATA_BYTES) {
    throw new S3Error('MetadataTooLarge', 400, 'Your metadata headers exceed the maximum allowed metadata size.');
  }
  const headers: Record<string, string> = {};
  for (const name of STORED_HEADERS) {
    const value = h[name];
    if (typeof value === 'string') headers[name] = value;
  }
  headers['content-type'] ??= 'binary/octet-stream';
  const encodings = String(h['content-encoding'] ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e && e !== 'aws-chunked');
  if (encodings.length) headers['content-encoding'] = encodings.join(',');

  const sink = await store.beginPut(bucket, key, declaredLength(req));
  let received: Received;
  try {
    received = await receiveBody(r, (chunk) => sink.write(chunk));
  } catch (err) {
    await sink.abort();
    throw err;
  }
  const meta: ObjectMeta = {
    key,
    size: received.size,
    etag: `"${received.md5.toString('hex')}"`,
    lastModified: Date.now(),
    headers,
    metadata,
    checksum: received.checksum,
  };
  try {
    await sink.commit(meta);
  } catch (err) {
    await sink.abort();
    throw err;
  }
  const out: Record<string, string> = { etag: meta.etag, 'content-length': '0' };
  if (meta.checksum) {
    out[checksumHeader(meta.checksum.algorithm)] = meta.checksum.value;
    out['x-amz-checksum-type'] = 'FULL_OBJECT';
  }
  res.writeHead(200, out).end();
}

function isAwsChunked(req: IncomingMessage): boolean {
  const encoding = String(req.headers['content-encoding'] ?? '');
  const sha = String(req.headers['x-amz-content-sha256'] ?? '');
  return encoding.split(',').some((e) => e.trim() === 'aws-chunked') || sha.startsWith('STREAMING-');
}

/** The payload length the client declared, if any. */
function declaredLength(req: IncomingMessage): number | undefined {
  const text = isAwsChunked(req) ? req.headers['x-amz-decoded-content-length'] : req.headers['content-length'];
  if (typeof text !== 'string' || text === '') return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw invalidArgument('Invalid content length', 'Content-Length', text);
  if (n > MAX_OBJECT_BYTES) {
    throw new S3Error('EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed size', {
      ProposedSize: text,
      MaxSizeAllowed: String(MAX_OBJECT_BYTES),
    });
  }
  return n;
}

interface Received {
  size: number;
  md5: Buffer;
  checksum?: { algorithm: ChecksumAlgorithm; value: string };
}

/**
 * Read a request body, unwrapping aws-chunked encoding, and verify what the client declared:
 * its length, Content-MD5, x-amz-content-sha256 and an x-amz-checksum-* header or trailer.
 * Each payload chunk goes to `onChunk` as it arrives; nothing is kept here.
 */
async function receiveBody({ req }: Request, onChunk: (chunk: Buffer) => Promise<void>): Promise<Received> {
  const h = req.headers;
  const chunked = isAwsChunked(req);
  const expectedSize = declaredLength(req);
  if (expectedSize === undefined && !chunked) {
    throw new S3Error('MissingContentLength', 411, 'You must provide the Content-Length HTTP header.');
  }

  const contentMd5 = typeof h['content-md5'] === 'string' ? h['content-md5'] : undefined;
  if (contentMd5 !== undefined && Buffer.from(contentMd5, 'base64').length !== 16) {
    throw new S3Error('InvalidDigest', 400, 'The Content-MD5 you specified was not valid.');
  }
  const contentSha256 = String(h['x-amz-content-sha256'] ?? '');
  const sha256 = !chunked && /^[0-9a-f]{64}$/i.test(contentSha256) ? createHash('sha256') : undefined;

  // At most one checksum algorithm, whose value comes in a header or a trailer. A presigned URL
  // may carry one in its query string (the SDK signs the checksum of an empty body into it by
  // default); S3 ignores that, and so does this server.
  const declared = new Map<ChecksumAlgorithm, string | undefined>();
  for (const algorithm of CHECKSUM_ALGORITHMS) {
    const value = h[checksumHeader(algorithm)];
    if (typeof value === 'string') declared.set(algorithm, value);
  }
  for (const name of String(h['x-amz-trailer'] ?? '').split(',')) {
    const algorithm = CHECKSUM_ALGORITHMS.find((a) => checksumHeader(a) === name.trim().toLowerCase());
    if (algorithm && !declared.has(algorithm)) declared.set(algorithm, undefined);
  }
  if (declared.size > 1) {
    throw new S3Error('InvalidRequest', 400, 'Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.');
  }
  const [algorithm] = declared.keys();
  const digest = algorithm && makeDigest(algorithm);

  const md5 = createHash('md5');
  const decoder = chunked ? new AwsChunkedDecoder() : undefined;
  let size = 0;
  // The iterator must not destroy the request when an error ends the loop: the error is still
  // to be answered on the same connection.
  for await (const raw of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    for (const chunk of decoder ? decoder.feed(raw) : [raw]) {
      size += chunk.length;
      if (size > (expectedSize ?? MAX_OBJECT_BYTES)) {
        throw new S3Error('IncompleteBody', 400, 'The request body is longer than its declared length.');
      }
      md5.update(chunk);
      sha256?.update(chunk);
      digest?.update(chunk);
      await onChunk(chunk);
    }
  }
  decoder?.finish();
  if (expectedSize !== undefined && size !== expectedSize) {
    throw new S3Error('IncompleteBody', 400, 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
  }

  const md5Digest = md5.digest();
  if (contentMd5 !== undefined && md5Digest.toString('base64') !== contentMd5) {
    throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.');
  }
  if (sha256 && sha256.digest('hex') !== contentSha256.toLowerCase()) {
    throw new S3Error('XAmzContentSHA256Mismatch', 400, "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  let checksum: Received['checksum'];
  if (algorithm) {
    const value = declared.get(algorithm) ?? decoder?.trailers[checksumHeader(algorithm)];
    if (value === undefined) {
      throw new S3Error('InvalidRequest', 400, `The trailer ${checksumHeader(algorithm)} was declared but not sent.`);
    }
    if (digest && digest.digest() !== value) throw badDigest(algorithm.toUpperCase());
    checksum = { algorithm, value };
  }
  return { size, md5: md5Digest, checksum };
}

async function getObject(store: ObjectStore, { req, res, method, bucket, key, query }: Request): Promise<void> {
  const object = await store.open(bucket, key);
  if (!object) throw noSuchKey(key);
  let reading = false;
  try {
    const { meta } = object;
    const range = parseRange(req.headers.range, meta.size);
    const headers: Record<string, string> = {
      ...meta.headers,
      etag: meta.etag,
      'last-modified': new Date(meta.lastModified).toUTCString(),
      'accept-ranges': 'bytes',
    };
    for (const [name, value] of Object.entries(meta.metadata)) headers[`x-amz-meta-${name}`] = value;
    if (method === 'GET') {
      for (const [param, header] of Object.entries(RESPONSE_OVERRIDES)) {
        const value = query.get(param);
        if (value !== null) headers[header] = value;
      }
    }
    const checksumMode = req.headers['x-amz-checksum-mode'] ?? query.get('x-amz-checksum-mode');
    if (meta.checksum && !range && String(checksumMode).toUpperCase() === 'ENABLED') {
      headers[checksumHeader(meta.checksum.algorithm)] = meta.checksum.value;
      headers['x-amz-checksum-type'] = 'FULL_OBJECT';
    }
    const [start, end] = range ?? [0, meta.size - 1];
    headers['content-length'] = String(end - start + 1);
    if (range) headers['content-range'] = `bytes ${start}-${end}/${meta.size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (method === 'HEAD' || end < start) return void res.end();
    reading = true;
    pipeline(object.read(start, end), res, () => undefined);
  } finally {
    if (!reading) await object.close();
  }
}

/** [start, end] inclusive, or undefined to send the whole object (S3 ignores ranges it cannot parse). */
function parseRange(header: string | undefined, size: number): [number, number] | undefined {
  const match = header && /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    start = Math.max(0, size - suffix);
    end = size - 1;
    if (suffix === 0) start = size; // unsatisfiable
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (match[2] !== '' && Number(match[2]) < start) return undefined;
  }
  if (start >= size) {
    throw new S3Error(
      'InvalidRange',
      416,
      'The requested range is not satisfiable',
      { RangeRequested: header!, ActualObjectSize: String(size) },
      { 'content-range': `bytes */${size}` },
    );
  }
  return [start, end];
}

// --- presigned URLs

/** A presigned URL carries its date and lifetime; past them it is refused, as by S3. */
function checkPresignedExpiry(query: URLSearchParams): void {
  const amzDate = query.get('X-Amz-Date');
  const expiresText = query.get('X-Amz-Expires');
  if (!query.has('X-Amz-Algorithm') && amzDate === null && expiresText === null) return;
  const m = amzDate && /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  const expires = Number(expiresText);
  if (!m || expiresText === null || !Number.isInteger(expires) || expires < 0) {
    throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Date and X-Amz-Expires must be present and valid.');
  }
  if (expires > MAX_PRESIGN_EXPIRES_SECONDS) {
    throw new S3Error('AuthorizationQueryParametersError', 400, 'X-Amz-Expires must be less than a week (in seconds) that is; 604800');
  }
  const signedAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
  const expiresAt = signedAt + expires * 1000;
  if (Date.now() > expiresAt) {
    throw new S3Error('AccessDenied', 403, 'Request has expired', {
      'X-Amz-Expires': String(expires),
      Expires: new Date(expiresAt).toISOString(),
      ServerTime: new Date().toISOString(),
    });
  }
}

// --- plumbing

function xml(s: string): string {
  return s.replace(/[&<>"'\u0000-\u0008\u000b\u000c\u000e-\u001f\r]/g, (c) => {
    switch (c) {
      case '&':
        return '&amp;';
      case '<':
        return '&lt;';
      case '>':
        return '&gt;';
      case '"':
        return '&quot;';
      case "'":
        return '&apos;';
      default:
        return `&#x${c.charCodeAt(0).toString(16)};`;
    }
  });
}

function xmlDecode(s: string): string {
  const cdata = /^<!\[CDATA\[([\s\S]*)\]\]>$/.exec(s);
  if (cdata) return cdata[1];
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" } as Record<string, string>)[e];
  });
}

function sendXml(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
  res.writeHead(status, { ...headers, 'content-type': 'application/xml', 'content-length': String(bytes.length) });
  res.end(bytes);
}

function sendError(req: IncomingMessage, res: ServerResponse, err: S3Error, requestId: string, resource: string): void {
  req.resume(); // drain what is left of the body so the connection can be reused
  if (res.headersSent) return void res.destroy();
  if (req.method === 'HEAD') {
    res.writeHead(err.status, err.headers).end();
    return;
  }
  const details = Object.entries(err.details)
    .map(([name, value]) => `<${name}>${xml(value)}</${name}>`)
    .join('');
  sendXml(
    res,
    err.status,
    `<Error><Code>${err.code}</Code><Message>${xml(err.message)}</Message>${details}` +
      `<Resource>${xml(resource)}</Resource><RequestId>${requestId}</RequestId></Error>`,
    err.headers,
  );
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
      throw new S3Error('KeyTooLongError', 400, 'Your key is too long', { Size: String(Buffer.byteLength(key)), MaxSizeAllowed: '1024' });
    }
    checkPresignedExpiry(query);
    if (iam) {
      const method = req.method ?? 'GET';
      let caller: Caller;
      try {
        caller = await iam.authenticate('s3', { method, url, headers: req.headers });
      } catch (err) {
        throw err instanceof AuthError ? authError(err, query.has('X-Amz-Algorithm')) : err;
      }
      const { action, resource } = s3Permission(method, bucket, key, query);
      if (!iam.allows(caller, action, resource)) {
        throw new S3Error(
          'AccessDenied',
          403,
          `User: ${caller.principalId} is not authorized to perform: ${action} on resource: "${resource}" because no identity-based policy allows the ${action} action`,
        );
      }
    }
    await route(store, { req, res, method: req.method ?? 'GET', bucket, key, query });
  } catch (err) {
    const s3err =
      err instanceof S3Error
        ? err
        : new S3Error('InternalError', 500, `We encountered an internal error: ${(err as Error)?.message ?? err}`);
    sendError(req, res, s3err, requestId, rawPath);
  }
}

export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const host = opts.host ?? '127.0.0.1';
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await Promise.allSettled([...inFlight]); // interrupted uploads clean up after themselves
        await closed;
      })()),
  };
}
