/**
 * An upload's body: read plain or aws-chunked, passed on chunk by chunk as it arrives, and
 * checked against what the client declared: its length, Content-MD5, x-amz-content-sha256 and an
 * x-amz-checksum-crc32 header or trailer (checksums.ts). Nothing is kept here.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { AwsChunkedDecoder } from './aws-chunked';
import { checksumHeader, Crc32, declaredChecksum, type ChecksumAlgorithm } from './checksums';
import { badDigest, incompleteBody, invalidArgument, invalidRequest, notImplemented, S3Error } from './errors';

const MAX_OBJECT_BYTES = 5 * 1024 ** 3; // the limit of a single PutObject
// The only aws-chunked mode the AWS SDK v3 sends: chunks unsigned, the checksum in a trailer.
const UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';

export interface Received {
  size: number;
  md5: Buffer;
  checksum?: { algorithm: ChecksumAlgorithm; value: string };
}

function isAwsChunked(req: IncomingMessage): boolean {
  const encoding = String(req.headers['content-encoding'] ?? '');
  const sha = String(req.headers['x-amz-content-sha256'] ?? '');
  return encoding.split(',').some((e) => e.trim() === 'aws-chunked') || sha.startsWith('STREAMING-');
}

/** The payload length the client declared, if any. */
export function declaredLength(req: IncomingMessage): number | undefined {
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

/** Read the body of `req`, giving each payload chunk to `onChunk`; throws an S3Error for what does not match. */
export async function receiveBody(req: IncomingMessage, onChunk: (chunk: Buffer) => Promise<void>): Promise<Received> {
  const h = req.headers;
  const chunked = isAwsChunked(req);
  const contentSha256 = String(h['x-amz-content-sha256'] ?? '');
  if (contentSha256.startsWith('STREAMING-') && contentSha256 !== UNSIGNED_TRAILER) {
    throw notImplemented(`The aws-chunked mode ${contentSha256.slice(0, 60)}`);
  }
  const expectedSize = declaredLength(req);
  if (expectedSize === undefined && !chunked)
    throw new S3Error('MissingContentLength', 411, 'You must provide the Content-Length HTTP header.');

  const contentMd5 = typeof h['content-md5'] === 'string' ? h['content-md5'] : undefined;
  if (contentMd5 !== undefined && Buffer.from(contentMd5, 'base64').length !== 16) {
    throw new S3Error('InvalidDigest', 400, 'The Content-MD5 you specified was not valid.');
  }
  const sha256 = !chunked && /^[0-9a-f]{64}$/i.test(contentSha256) ? createHash('sha256') : undefined;
  const declared = declaredChecksum(h);
  const crc = declared && new Crc32();

  const md5 = createHash('md5');
  const decoder = chunked ? new AwsChunkedDecoder() : undefined;
  let size = 0;
  // The iterator must not destroy the request when an error ends the loop: the error is still
  // to be answered on the same connection.
  for await (const raw of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    for (const chunk of decoder ? decoder.feed(raw) : [raw]) {
      size += chunk.length;
      if (size > (expectedSize ?? MAX_OBJECT_BYTES)) throw incompleteBody('The request body is longer than its declared length.');
      md5.update(chunk);
      sha256?.update(chunk);
      crc?.update(chunk);
      await onChunk(chunk);
    }
  }
  decoder?.finish();
  if (expectedSize !== undefined && size !== expectedSize) {
    throw incompleteBody('You did not provide the number of bytes specified by the Content-Length HTTP header.');
  }

  const md5Digest = md5.digest();
  if (contentMd5 !== undefined && md5Digest.toString('base64') !== contentMd5) {
    throw new S3Error('BadDigest', 400, 'The Content-MD5 you specified did not match what we received.');
  }
  if (sha256 && sha256.digest('hex') !== contentSha256.toLowerCase()) {
    throw new S3Error('XAmzContentSHA256Mismatch', 400, "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  if (!declared || !crc) return { size, md5: md5Digest };
  const value = declared.value ?? decoder?.trailers[checksumHeader(declared.algorithm)];
  if (value === undefined) throw invalidRequest(`The trailer ${checksumHeader(declared.algorithm)} was declared but not sent.`);
  if (crc.digest() !== value) throw badDigest(declared.algorithm.toUpperCase());
  return { size, md5: md5Digest, checksum: { algorithm: declared.algorithm, value } };
}
