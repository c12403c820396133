import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { s3Client, s3PresignClient } from './clients';
import { config } from './config';
import { NotFound } from './errors';
import { inlineBytes, inlineEnvelope, refEnvelope, sha256Of, verifyPayload, type Envelope } from './payload';
import type { Codec } from './runtimes';

/** The payload bucket: the only module that builds its keys. Everything lives under `payloads/<endpointId>/`. */
export const endpointPrefix = (endpointId: string): string => `payloads/${endpointId}/`;
export const argsKey = (endpointId: string, taskId: string): string => `${endpointPrefix(endpointId)}${taskId}/args`;
export const resultKey = (endpointId: string, taskId: string): string => `${endpointPrefix(endpointId)}${taskId}/result`;
export const exceptionKey = (endpointId: string, taskId: string): string => `${endpointPrefix(endpointId)}${taskId}/exception`;
/** Arguments a client uploads by presigned PUT before it submits; the user id keeps uploads apart. */
export const uploadKey = (endpointId: string, userId: string, uploadId: string): string =>
  `${endpointPrefix(endpointId)}uploads/${userId}/${uploadId}`;
export const isUploadKeyOf = (key: string, endpointId: string, userId: string): boolean =>
  isUnder(key, `${endpointPrefix(endpointId)}uploads/${userId}/`);
/** A key under the endpoint's own prefix: where its workers' credentials may write. */
export const isPayloadKeyOf = (key: string, endpointId: string): boolean => isUnder(key, endpointPrefix(endpointId));
/** A key under `prefix` that cannot climb out of it: S3 keys are plain strings, but a `..` would when read as a path. */
const isUnder = (key: string, prefix: string): boolean => key.startsWith(prefix) && !key.includes('..');

const PRESIGN_SECONDS = 3600;

export async function putBytes(key: string, bytes: Uint8Array, s3: S3Client = s3Client(), bucket = config().bucket): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes, ContentType: 'application/octet-stream' }));
}

/** Read a payload's bytes, inline or from S3, and verify them against the envelope. */
export async function readPayload(env: Envelope, s3: S3Client = s3Client(), bucket = config().bucket): Promise<Buffer> {
  if (env.inline !== undefined) return inlineBytes(env);
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: env.ref }));
    return verifyPayload(await out.Body!.transformToByteArray(), env, `payload ${env.ref}`);
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') throw new NotFound(`payload ${env.ref} is gone`);
    throw err;
  }
}

/** An envelope for bytes: inline when small, otherwise stored at `key` first (claim check). */
export async function storePayload(
  bytes: Uint8Array,
  codec: Codec,
  key: string,
  opts: { s3?: S3Client; bucket?: string; inlineLimit?: number } = {},
): Promise<Envelope> {
  if (bytes.byteLength <= (opts.inlineLimit ?? config().inlineLimit)) return inlineEnvelope(bytes, codec);
  await putBytes(key, bytes, opts.s3, opts.bucket);
  return refEnvelope(key, codec, bytes.byteLength, sha256Of(bytes));
}

/** Size of an uploaded object, or undefined if it is not there. */
export async function objectSize(key: string): Promise<number | undefined> {
  try {
    const out = await s3Client().send(new HeadObjectCommand({ Bucket: config().bucket, Key: key }));
    return out.ContentLength;
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'NotFound' || name === 'NoSuchKey') return undefined;
    throw err;
  }
}

export async function presignPut(key: string): Promise<{ url: string; expiresAt: Date }> {
  const url = await getSignedUrl(s3PresignClient(), new PutObjectCommand({ Bucket: config().bucket, Key: key }), {
    expiresIn: PRESIGN_SECONDS,
  });
  return { url, expiresAt: new Date(Date.now() + PRESIGN_SECONDS * 1000) };
}

export async function presignGet(key: string): Promise<{ url: string; expiresAt: Date }> {
  const url = await getSignedUrl(s3PresignClient(), new GetObjectCommand({ Bucket: config().bucket, Key: key }), {
    expiresIn: PRESIGN_SECONDS,
  });
  return { url, expiresAt: new Date(Date.now() + PRESIGN_SECONDS * 1000) };
}
