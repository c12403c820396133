/** What the routes need of an object store; MemoryStore and DiskStore implement it. */
import type { Readable } from 'node:stream';
import { noSuchBucket } from './errors';

/** What is known of an object besides its bytes; DiskStore keeps it as JSON, so its shape stays. */
export interface ObjectMeta {
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
  /** The algorithm in lower case: crc32; an object kept on disk by an earlier version of this server may name another (crc32c). */
  checksum?: { algorithm: string; value: string };
}

export interface OpenObject {
  meta: ObjectMeta;
  /** The whole object. Closes it when the stream ends or is destroyed. */
  read(): Readable;
  /** Release the object when it is not read. */
  close(): Promise<void>;
}

/** An upload under way: its bytes as they arrive, then the object made visible, or dropped. */
export interface PutSink {
  write(chunk: Buffer): Promise<void>;
  commit(meta: ObjectMeta): Promise<void>;
  abort(): Promise<void>;
}

export abstract class ObjectStore<E extends { meta: ObjectMeta } = { meta: ObjectMeta }> {
  /** Each bucket's objects by key. */
  protected readonly buckets = new Map<string, Map<string, E>>();

  abstract init(): Promise<void>;
  /** Creating a bucket that exists does nothing. */
  abstract createBucket(name: string): Promise<void>;
  /** `expectedSize`: the declared length, when the client gave one. */
  abstract beginPut(bucket: string, key: string, expectedSize: number | undefined): Promise<PutSink>;
  abstract open(bucket: string, key: string): Promise<OpenObject | undefined>;

  requireBucket(name: string): Map<string, E> {
    const bucket = this.buckets.get(name);
    if (!bucket) throw noSuchBucket(name);
    return bucket;
  }
}

export function isValidBucketName(name: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !name.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(name);
}
