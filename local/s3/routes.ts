/**
 * The S3 operations this server implements, which are what Ferry and the AWS SDK v3 use:
 * CreateBucket; PutObject, GetObject and HeadObject (by the SDK or a presigned URL). Any other
 * S3 request (DeleteObjects, DeleteObject, ListObjectsV2, ...) answers 501 NotImplemented, a
 * method S3 has not 405.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import { declaredLength, receiveBody } from './body';
import { checksumHeader } from './checksums';
import { noSuchKey, notImplemented, S3Error, unsupportedMethod } from './errors';
import { isValidBucketName, type ObjectMeta, type ObjectStore } from './store';

export interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  bucket: string;
  key: string;
  query: URLSearchParams;
}

// S3: user metadata (names and values) at most 2 KB.
const MAX_METADATA_BYTES = 2048;
// Headers stored with an object and returned by GET and HEAD.
const STORED_HEADERS = ['content-type', 'content-disposition', 'content-language', 'cache-control', 'expires'];

/**
 * A query parameter names an S3 operation (`?tagging`, `?uploadId`, `?list-type`) unless it is
 * the SDK's operation hint (`x-id`) or part of a signature or checksum (`X-Amz-*`); an operation
 * this server does not implement must not be taken for the plain one on the same path.
 */
const isOperationParameter = (name: string) => name !== 'x-id' && !name.toLowerCase().startsWith('x-amz-');

export async function route(store: ObjectStore, r: Request): Promise<void> {
  const { method, bucket, key, query } = r;
  if (!bucket) throw unsupportedMethod(method, 'SERVICE');
  const operation = [...query.keys()].filter(isOperationParameter);
  if (!key) {
    if (method === 'PUT' && operation.length === 0) return createBucket(store, r);
    throw unsupportedMethod(method, 'BUCKET');
  }
  if (operation.length > 0) throw notImplemented(`The object operation "?${operation[0]}"`);
  if (method === 'PUT') {
    if (r.req.headers['x-amz-copy-source']) throw notImplemented('CopyObject');
    return putObject(store, r);
  }
  if (method === 'GET' || method === 'HEAD') return getObject(store, r);
  throw unsupportedMethod(method, 'OBJECT');
}

async function createBucket(store: ObjectStore, { req, res, bucket }: Request): Promise<void> {
  req.resume(); // a CreateBucketConfiguration body, if any, is ignored
  if (!isValidBucketName(bucket)) throw new S3Error('InvalidBucketName', 400, 'The specified bucket is not valid.', { BucketName: bucket });
  // Creating a bucket you already own succeeds in us-east-1, as it does in AWS.
  await store.createBucket(bucket);
  res.writeHead(200, { location: `/${bucket}`, 'content-length': '0' }).end();
}

async function putObject(store: ObjectStore, { req, res, bucket, key }: Request): Promise<void> {
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
  // aws-chunked is how the body travelled, not how the object is encoded.
  const encodings = String(h['content-encoding'] ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e && e !== 'aws-chunked');
  if (encodings.length) headers['content-encoding'] = encodings.join(',');

  const sink = await store.beginPut(bucket, key, declaredLength(req));
  let meta: ObjectMeta;
  try {
    const received = await receiveBody(req, (chunk) => sink.write(chunk));
    meta = {
      key,
      size: received.size,
      etag: `"${received.md5.toString('hex')}"`,
      lastModified: Date.now(),
      headers,
      metadata,
      checksum: received.checksum,
    };
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

/** GET and HEAD of a whole object; a Range header is ignored, as HTTP lets a server do (200 and every byte). */
async function getObject(store: ObjectStore, { req, res, method, bucket, key }: Request): Promise<void> {
  const object = await store.open(bucket, key);
  if (!object) throw noSuchKey(key);
  let reading = false;
  try {
    const { meta } = object;
    const headers: Record<string, string> = {
      ...meta.headers,
      etag: meta.etag,
      'last-modified': new Date(meta.lastModified).toUTCString(),
      'content-length': String(meta.size),
    };
    for (const [name, value] of Object.entries(meta.metadata)) headers[`x-amz-meta-${name}`] = value;
    // The SDK v3 asks for the checksum on every GetObject and checks the bytes against it.
    if (meta.checksum && String(req.headers['x-amz-checksum-mode']).toUpperCase() === 'ENABLED') {
      headers[checksumHeader(meta.checksum.algorithm)] = meta.checksum.value;
      headers['x-amz-checksum-type'] = 'FULL_OBJECT';
    }
    res.writeHead(200, headers);
    if (method === 'HEAD' || meta.size === 0) return void res.end();
    reading = true;
    pipeline(object.read(), res, () => undefined); // a client gone mid-body is no error of ours
  } finally {
    if (!reading) await object.close();
  }
}
