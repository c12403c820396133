/**
 * S3's flexible checksums, as far as the AWS SDK v3 sends them: CRC32 (its default on every
 * upload and on DeleteObjects) and CRC32C (when a caller asks for it). The value comes in an
 * `x-amz-checksum-<algorithm>` header or, on an aws-chunked body, a trailer of that name
 * announced by `x-amz-trailer`. Other algorithms (CRC64NVME, SHA-1, SHA-256, ...) are refused
 * with 501 rather than stored unchecked.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { crc32 } from 'node:zlib';
import { buf as crc32c } from 'crc-32/crc32c';
import { invalidRequest, notImplemented } from './errors';

export type ChecksumAlgorithm = 'crc32' | 'crc32c';
const VERIFIED: readonly string[] = ['crc32', 'crc32c'] satisfies ChecksumAlgorithm[];
const PREFIX = 'x-amz-checksum-';
// Headers of the same prefix that carry no checksum.
const NOT_CHECKSUMS = ['mode', 'type', 'algorithm'];

export const checksumHeader = (a: string) => `${PREFIX}${a}`;

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
  const algorithms = new Set(
    [...Object.keys(headers), ...trailers]
      .filter((name) => name.startsWith(PREFIX))
      .map((name) => name.slice(PREFIX.length))
      .filter((a) => !NOT_CHECKSUMS.includes(a)),
  );
  const refused = [...algorithms].find((a) => !VERIFIED.includes(a));
  if (refused) throw notImplemented(`The ${refused.toUpperCase()} checksum`);
  if (algorithms.size > 1) throw invalidRequest('Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.');
  const [algorithm] = algorithms as Set<ChecksumAlgorithm>;
  if (!algorithm) return undefined;
  const value = headers[checksumHeader(algorithm)];
  return { algorithm, value: typeof value === 'string' ? value : undefined };
}
