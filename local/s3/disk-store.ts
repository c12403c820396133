/**
 * Objects on disk: what `npm start` keeps under `.ferry/s3/`. Layout under the root:
 * `<bucket>/<sha256(key)>.json` holds `{ version, meta }` and `<bucket>/<sha256(key)>.<version>.data`
 * the bytes, so no key can name a path outside its bucket folder; uploads land in `.tmp/` and
 * are renamed into place once complete and verified. A new version of an object gets a new data
 * file, so a reader that opened the old one keeps reading consistent bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { noSuchBucket, S3Error } from './errors';
import { isValidBucketName, ObjectStore, type ObjectMeta, type OpenObject, type PutSink } from './store';

type Entry = { meta: ObjectMeta; version: string };

export class DiskStore extends ObjectStore<Entry> {
  private readonly root: string;
  private readonly tmpDir: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(root: string) {
    super();
    this.root = path.resolve(root);
    this.tmpDir = path.join(this.root, '.tmp');
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true });
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
    await fsp.mkdir(this.tmpDir);
    for (const entry of await fsp.readdir(this.root, { withFileTypes: true })) {
      if (entry.isDirectory() && isValidBucketName(entry.name)) await this.loadBucket(entry.name);
    }
  }

  private async loadBucket(name: string): Promise<void> {
    const dir = this.bucketDir(name);
    const objects = new Map<string, Entry>();
    const files = await fsp.readdir(dir);
    const referenced = new Set<string>();
    for (const file of files) {
      const match = /^([0-9a-f]{64})\.json$/.exec(file);
      if (!match) continue;
      try {
        const { version, meta } = JSON.parse(await fsp.readFile(path.join(dir, file), 'utf8')) as { version: unknown; meta: ObjectMeta };
        if (typeof version !== 'string' || !/^[0-9a-f]{16}$/.test(version)) continue;
        if (typeof meta?.key !== 'string' || objectId(meta.key) !== match[1]) continue;
        const dataFile = `${match[1]}.${version}.data`;
        if ((await fsp.stat(path.join(dir, dataFile))).size !== meta.size) continue;
        objects.set(meta.key, { meta, version });
        referenced.add(dataFile);
      } catch {
        // An unreadable sidecar or a missing data file: the object is not there.
      }
    }
    // Data files left by a crash between writing the bytes and the sidecar.
    for (const file of files) {
      if (/^[0-9a-f]{64}\.[0-9a-f]{16}\.data$/.test(file) && !referenced.has(file)) {
        await fsp.rm(path.join(dir, file), { force: true });
      }
    }
    this.buckets.set(name, objects);
  }

  createBucket(name: string): Promise<void> {
    return this.serially(async () => {
      if (this.buckets.has(name)) return;
      await fsp.mkdir(this.bucketDir(name), { recursive: true });
      this.buckets.set(name, new Map());
    });
  }

  async beginPut(bucket: string, key: string): Promise<PutSink> {
    this.requireBucket(bucket);
    const tmp = path.join(this.tmpDir, randomBytes(12).toString('hex'));
    const file = await fsp.open(tmp, 'wx');
    let closed = false;
    const closeFile = async () => {
      if (!closed) {
        closed = true;
        await file.close();
      }
    };
    return {
      write: async (chunk) => {
        for (let offset = 0; offset < chunk.length;) offset += (await file.write(chunk, offset)).bytesWritten;
      },
      commit: async (meta) => {
        // Durable before the 200: the bytes, then the sidecar naming them, each synced before its
        // rename, and the directory after, so the object survives kill -9 and a machine crash.
        if (!closed) await file.sync();
        await closeFile();
        await this.serially(async () => {
          const objects = this.requireBucket(bucket);
          const id = objectId(key);
          const version = randomBytes(8).toString('hex');
          await fsp.rename(tmp, this.dataPath(bucket, id, version));
          const sidecarTmp = `${tmp}.json`;
          await writeSynced(sidecarTmp, JSON.stringify({ version, meta }));
          await fsp.rename(sidecarTmp, this.sidecarPath(bucket, id));
          await syncDirectory(this.bucketDir(bucket));
          const previous = objects.get(key);
          objects.set(key, { meta, version });
          if (previous) await fsp.rm(this.dataPath(bucket, id, previous.version), { force: true });
        });
      },
      abort: async () => {
        await closeFile().catch(() => undefined);
        await fsp.rm(tmp, { force: true });
      },
    };
  }

  async open(bucket: string, key: string): Promise<OpenObject | undefined> {
    // A concurrent overwrite may remove the data file between reading the index and opening
    // the file; then read the index again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = this.requireBucket(bucket).get(key);
      if (!entry) return undefined;
      let file: fsp.FileHandle;
      try {
        file = await fsp.open(this.dataPath(bucket, objectId(key), entry.version), 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      return { meta: entry.meta, read: () => file.createReadStream(), close: () => file.close() };
    }
    throw new S3Error('InternalError', 500, 'The object kept changing while it was being opened.');
  }

  /** Run changes one at a time, so that a bucket's index and its folder never disagree. */
  private serially<T>(change: () => Promise<T>): Promise<T> {
    const result = this.queue.then(change);
    this.queue = result.catch(() => undefined);
    return result;
  }

  // Bucket names are validated before they get here and object file names are hex digests,
  // so every path stays inside the root; the check below makes that explicit.
  private bucketDir(bucket: string): string {
    if (!isValidBucketName(bucket)) throw noSuchBucket(bucket);
    const dir = path.join(this.root, bucket);
    if (path.dirname(dir) !== this.root) throw noSuchBucket(bucket);
    return dir;
  }

  private sidecarPath(bucket: string, id: string): string {
    return path.join(this.bucketDir(bucket), `${id}.json`);
  }

  private dataPath(bucket: string, id: string, version: string): string {
    return path.join(this.bucketDir(bucket), `${id}.${version}.data`);
  }
}

const objectId = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex');

async function writeSynced(file: string, text: string): Promise<void> {
  const handle = await fsp.open(file, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
