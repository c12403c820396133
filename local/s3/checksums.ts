/**
 * S3's flexible checksums, as far as the AWS SDK v3 sends them: CRC32 (its default on every
 * upload and on DeleteObjects) and CRC32C (when a caller asks for it). The value comes in an
 * `x-amz-checksum-<algorithm>` header or, on an aws-chunked body, a trailer of that name
 * announced by `x-amz-trailer`. Other algorithms (CRC64NVME, SHA-1, SHA-256) are refused with
 * 501 rather than stored unchecked.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { crc32 } from 'node:zlib';
import { buf as crc32c } from 'crc-32/crc32c';
import { invalidRequest, notImplemented } from './errors';

export type ChecksumAlgorithm = 'crc32' | 'crc32c';
const VERIFIED: readonly ChecksumAlgorithm[] = ['crc32', 'crc32c'];
const REFUSED = ['crc64nvme', 'sha1', 'sha256'];

export const checksumHeader = (a: string) => `x-amz-checksum-${a}`;

/** A running CRC, written as S3 writes it: the 32-bit value big-endian, in base64. */
export class Crc {
  private value = 0;
  constructor(readonly algorithm: ChecksumAlgorithm) {}

  update(chunk: Buffer): void {
    // crc-32's functions answer a signed 32-bit integer; zlib's an unsigned one.
    this.value = this.algorithm === 'crc32' ? crc32(chunk, this.value) : crc32c(chunk, this.value);
  }

  digest(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.value >>> 0);
    return out.toString('base64');
  }
}

/**
 * The checksum a request declares: its algorithm, and its value when it came as a header
 * (undefined: it is still to come as a trailer). A presigned URL may carry one in its query
 * string (the SDK signs the checksum of an empty body into it by default); S3 ignores that, and
 * so does this server.
 */
export function declaredChecksum(headers: IncomingHttpHeaders): { algorithm: ChecksumAlgorithm; value?: string } | undefined {
  const trailers = String(headers['x-amz-trailer'] ?? '')
    .split(',')
    .map((name) => name.trim().toLowerCase());
  const declared = (a: string) => headers[checksumHeader(a)] !== undefined || trailers.includes(checksumHeader(a));
  const refused = REFUSED.find(declared);
  if (refused) throw notImplemented(`The ${refused.toUpperCase()} checksum`);
  const algorithms = VERIFIED.filter(declared);
  if (algorithms.length > 1) throw invalidRequest('Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.');
  if (algorithms.length === 0) return undefined;
  const value = headers[checksumHeader(algorithms[0])];
  return { algorithm: algorithms[0], value: typeof value === 'string' ? value : undefined };
}
