import { createHash } from 'node:crypto';
import { deserialize, serialize } from 'node:v8';
import type { Codec, PayloadView } from './types';

/** Arguments for node functions: v8's structured clone keeps Date, Map, Set, BigInt, typed arrays and Buffer. */
export const encodeArgs = (args: unknown[], kwargs: Record<string, unknown> = {}): Buffer => serialize({ args, kwargs });

/** Decode a result's bytes by codec. Python pickles come back as their raw bytes. */
export function decodeValue(bytes: Buffer, codec: Codec): unknown {
  switch (codec) {
    case 'json':
      return JSON.parse(bytes.toString('utf8'));
    case 'node-v8':
      return deserialize(bytes);
    case 'python-pickle':
      return bytes;
  }
}

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The bytes of a payload, inline or by its presigned URL, checked against its SHA-256. */
export async function payloadBytes(p: PayloadView): Promise<Buffer> {
  let bytes: Buffer;
  if (p.data !== undefined) bytes = Buffer.from(p.data, 'base64');
  else if (p.url) {
    const res = await fetch(p.url);
    if (!res.ok) throw new Error(`could not download the payload (HTTP ${res.status})`);
    bytes = Buffer.from(await res.arrayBuffer());
  } else throw new Error('payload has neither data nor url');
  if (bytes.length !== p.size || sha256(bytes) !== p.sha256) throw new Error('payload does not match its checksum');
  return bytes;
}

export async function decodePayload(p: PayloadView): Promise<unknown> {
  if (p.codec === 'json' && p.value !== undefined) return p.value;
  return decodeValue(await payloadBytes(p), p.codec);
}
