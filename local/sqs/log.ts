/**
 * The local SQS server's storage (see store.ts): an append-only log of state changes, one JSON line each,
 * rewritten as the live state alone (compaction) once it holds mostly dead records.
 *
 * Why a log of our own and not an embedded store (better-sqlite3 in WAL mode would also do):
 * the server already keeps every queue in memory and reads only from there, so the disk only
 * has to take writes and give them back once at start. An append is one write(2) of a few
 * hundred bytes whatever the queues hold, so a write costs O(1); compaction costs O(live
 * state) but runs only after twice as many records as live items were appended, so it is O(1)
 * per write amortised. It needs no native module (better-sqlite3 must be built or downloaded
 * for each Node version and machine), and it gives group commit: one fdatasync for all the
 * requests that wrote while the previous one ran.
 *
 * Durability, as the server uses it: `append` hands the bytes to the OS with a synchronous
 * write before the server answers, so an answered change survives kill -9 of the process.
 * With `fsync` (the default) the server also waits for `durable()` — an fdatasync shared by
 * every change appended so far — so an answered change survives a machine crash as well.
 * A crash can leave half a line at the end of the log; it was never answered for, and it is
 * cut off when the log is opened again.
 */
import { closeSync, existsSync, fdatasync, fsyncSync, openSync, readFileSync, renameSync, ftruncateSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export interface AppendLogOptions {
  /** fdatasync before `durable()` resolves (group commit); without it, writes reach the OS only. */
  fsync: boolean;
}

export class AppendLog<R> {
  private fd: number;
  /** Records appended since the log was last rewritten (opened records included). */
  recordsSinceRewrite: number;
  private appended = 0;
  private synced = 0;
  private syncing?: Promise<void>;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly opts: AppendLogOptions,
    records: number,
  ) {
    this.fd = openSync(file, 'a', 0o600);
    this.recordsSinceRewrite = records;
  }

  /**
   * Opens the log at `file` (made if missing) and returns the records it holds. A last line
   * cut short by a crash, or anything after the first line that does not parse, is cut off.
   */
  static open<R>(file: string, opts: AppendLogOptions): { log: AppendLog<R>; records: R[] } {
    const records: R[] = [];
    if (existsSync(file)) {
      const bytes = readFileSync(file);
      let start = 0;
      let good = 0;
      while (start < bytes.length) {
        const end = bytes.indexOf(0x0a, start);
        if (end < 0) break; // a torn last write
        let record: R;
        try {
          record = JSON.parse(bytes.toString('utf8', start, end)) as R;
        } catch {
          break;
        }
        records.push(record);
        start = end + 1;
        good = start;
      }
      if (good < bytes.length) {
        console.error('local sqs: %s: cutting off %d bytes of an unfinished write at its end', file, bytes.length - good);
        const fd = openSync(file, 'r+');
        try {
          ftruncateSync(fd, good);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
    } else {
      closeSync(openSync(file, 'a', 0o600));
      syncDirectory(dirname(file));
    }
    return { log: new AppendLog<R>(file, opts, records.length), records };
  }

  /** Hands the records to the OS in one write: once this returns they survive the process. */
  append(records: R[]): void {
    if (records.length === 0) return;
    if (this.closed) throw new Error(`local sqs: ${this.file} is closed`);
    let text = '';
    for (const record of records) text += JSON.stringify(record) + '\n';
    const bytes = Buffer.from(text, 'utf8');
    for (let offset = 0; offset < bytes.length;) offset += writeSync(this.fd, bytes, offset);
    this.appended += 1;
    this.recordsSinceRewrite += records.length;
  }

  /** Resolves once everything appended so far is on stable storage (at once without fsync). */
  async durable(): Promise<void> {
    if (!this.opts.fsync) return;
    const target = this.appended;
    while (this.synced < target) {
      // Group commit: whoever comes while an fdatasync runs waits for it, then for one more that covers them all.
      if (!this.syncing) {
        const upTo = this.appended;
        const fd = this.fd;
        this.syncing = new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())))
          .then(() => void (this.synced = Math.max(this.synced, upTo)))
          .finally(() => (this.syncing = undefined));
      }
      await this.syncing;
    }
  }

  /**
   * Compaction: replaces the log by `records` (the live state), written to a new file, synced,
   * and renamed over the old one, so a crash at any point leaves one whole log.
   */
  rewrite(records: Iterable<R>): void {
    const tmp = `${this.file}.compacting`;
    const fd = openSync(tmp, 'w', 0o600);
    let count = 0;
    try {
      let chunk: string[] = [];
      const flush = () => {
        const bytes = Buffer.from(chunk.join(''), 'utf8');
        for (let offset = 0; offset < bytes.length;) offset += writeSync(fd, bytes, offset);
        chunk = [];
      };
      for (const record of records) {
        chunk.push(JSON.stringify(record) + '\n');
        count += 1;
        if (chunk.length >= 1000) flush();
      }
      flush();
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    closeSync(fd);
    renameSync(tmp, this.file);
    syncDirectory(dirname(this.file));
    const old = this.fd;
    this.fd = openSync(this.file, 'a', 0o600);
    this.recordsSinceRewrite = count;
    // The new file holds everything appended so far, synced.
    this.synced = this.appended;
    // An fdatasync may still run on the old descriptor; close it when that is done.
    void (this.syncing ?? Promise.resolve()).catch(() => undefined).finally(() => closeSync(old));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.durable().catch(() => undefined);
    await this.syncing?.catch(() => undefined);
    this.closed = true;
    if (this.opts.fsync) fsyncSync(this.fd);
    closeSync(this.fd);
  }
}

/** Makes a new or renamed directory entry itself durable (POSIX: fsync the directory). */
export function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
