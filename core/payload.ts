import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ChecksumMismatch } from './errors';
import { CODECS, type Codec } from './runtimes';

/**
 * The payload envelope: arguments, a result or an exception, inline (base64) or by reference
 * to S3 (claim check). This module pulls in no AWS client, so the SDK may share it.
 */

export interface Envelope {
  v: 1;
  codec: Codec;
  size: number;
  sha256: string;
  /** base64 bytes; exactly one of inline and ref. */
  inline?: string;
  /** An S3 key (claim check). */
  ref?: string;
}
// A plain interface, not z.infer: the SDK's bundled declarations carry it without zod.
export const envelopeSchema = z
  .object({
    v: z.literal(1),
    codec: z.enum(CODECS),
    size: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    inline: z.string().optional(),
    ref: z.string().min(1).max(1024).optional(),
  })
  .refine((e) => (e.inline === undefined) !== (e.ref === undefined), 'exactly one of inline or ref') satisfies z.ZodType<Envelope>;

export const sha256Of = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

export const inlineEnvelope = (bytes: Uint8Array, codec: Codec): Envelope => ({
  v: 1,
  codec,
  size: bytes.byteLength,
  sha256: sha256Of(bytes),
  inline: Buffer.from(bytes).toString('base64'),
});

export const refEnvelope = (ref: string, codec: Codec, size: number, sha256: string): Envelope => ({ v: 1, codec, size, sha256, ref });

/** Check bytes against their envelope; a mismatch is an error, never silent data. */
export function verifyPayload(bytes: Uint8Array, env: Pick<Envelope, 'size' | 'sha256'>, what = 'payload'): Buffer {
  const buf = Buffer.from(bytes);
  if (buf.byteLength !== env.size || sha256Of(buf) !== env.sha256) {
    throw new ChecksumMismatch(`${what} does not match its checksum (expected ${env.size} bytes, sha256 ${env.sha256})`);
  }
  return buf;
}

/** The bytes of an inline envelope, verified. */
export function inlineBytes(env: Envelope, what?: string): Buffer {
  if (env.inline === undefined) throw new Error('envelope is not inline');
  return verifyPayload(Buffer.from(env.inline, 'base64'), env, what);
}

/** JSON arguments as the runtimes read them: {"args": [...], "kwargs": {...}}. */
export const encodeJsonArgs = (args: unknown[] = [], kwargs: Record<string, unknown> = {}): Buffer =>
  Buffer.from(JSON.stringify({ args, kwargs }));
