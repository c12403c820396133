/** Objects in memory: what the tests' stacks use. */
import { Readable } from 'node:stream';
import { incompleteBody } from './errors';
import { ObjectStore, type OpenObject, type ObjectMeta, type PutSink } from './store';

// Above this a declared length is not allocated up front; the chunks are joined at the end.
const MAX_PREALLOCATED_BYTES = 256 * 1024 ** 2;

export class MemoryStore extends ObjectStore<{ meta: ObjectMeta; body: Buffer }> {
  async init(): Promise<void> {}

  async createBucket(name: string): Promise<void> {
    if (!this.buckets.has(name)) this.buckets.set(name, new Map());
  }

  async beginPut(bucket: string, key: string, expectedSize: number | undefined): Promise<PutSink> {
    this.requireBucket(bucket);
    // With a known size the bytes are copied once, into their final buffer.
    const preallocated =
      expectedSize !== undefined && expectedSize <= MAX_PREALLOCATED_BYTES ? Buffer.allocUnsafe(expectedSize) : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    return {
      write: async (chunk) => {
        if (!preallocated) chunks.push(chunk);
        else if (size + chunk.length <= preallocated.length) chunk.copy(preallocated, size);
        else throw incompleteBody('The request body is longer than its declared length.');
        size += chunk.length;
      },
      commit: async (meta) => {
        const body = preallocated ? preallocated.subarray(0, size) : Buffer.concat(chunks);
        this.requireBucket(bucket).set(key, { meta, body });
      },
      abort: async () => {
        chunks.length = 0;
      },
    };
  }

  async open(bucket: string, key: string): Promise<OpenObject | undefined> {
    const entry = this.requireBucket(bucket).get(key);
    if (!entry) return undefined;
    return { meta: entry.meta, read: () => Readable.from([entry.body]), close: async () => {} };
  }
}
