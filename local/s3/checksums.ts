/**
 * S3's flexible checksums, as far as Ferry's requests carry them: CRC32, the AWS SDK v3's default
 * on every upload. The value comes in an `x-amz-checksum-crc32` header or, on an aws-chunked body,
 * a trailer of that name announced by `x-amz-trailer`. Any other algorithm (CRC32C, CRC64NVME,
 * SHA-1, SHA-256, ...), which the SDK sends only when a caller asks for it, is refused with 501
 * rather than stored unchecked.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { crc32 } from 'node:zlib';
import { notImplemented } from './errors';

export type ChecksumAlgorithm = 'crc32';
const VERIFIED: readonly string[] = ['crc32'] satisfies ChecksumAlgorithm[];
const PREFIX = 'x-amz-checksum-';
// Headers of the same prefix that carry no checksum.
const NOT_CHECKSUMS = ['mode', 'type', 'algorithm'];

export const checksumHeader = (a: string) => `${PREFIX}${a}`;

/** A running CRC32, written as S3 writes it: the 32-bit value big-endian, in base64. */
export class Crc32 {
  private value = 0;

  update(chunk: Buffer): void {
    this.value = crc32(chunk, this.value);
  }

  digest(): string {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.value);
    return out.toString('base64');
  }
}

/**
 * The checksum a request declares: its algorithm, and its value when it came as a header
 * (undefined: it is still to come as a trailer). A presigned URL may carry one in its query
 * string (the SDK signs the checksum of an empty body into it by default); S3 ignores that, and
 * so does this server. Two checksums at once always name one this server refuses.
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
  const [algorithm] = algorithms as Set<ChecksumAlgorithm>;
  if (!algorithm) return undefined;
  const value = headers[checksumHeader(algorithm)];
  return { algorithm, value: typeof value === 'string' ? value : undefined };
}
