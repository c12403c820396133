/**
 * The local SQS server's state: its queues by name and the key that signs receipt handles, in
 * memory, and with a data file also in an append-only log (log.ts) that a restart replays, so
 * queues, messages and receipt handles survive kill -9.
 *
 * Every change a queue makes is journaled as it is made and appended to the log, in order,
 * before the server answers (see `commit`). An old whole-state snapshot at the data file
 * (`sqs.json`, written before the log existed) is migrated into the log once.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { storedAttributes } from './attributes';
import { AppendLog } from './log';
import { Queue, ReceiptHandles, type LogRecord, type Message, type QueueContext, type QueueState } from './queue';

export interface StoreOptions {
  region: string;
  accountId: string;
  /** Keep state on disk: the log is this path with `.json` replaced by `.log`. */
  dataFile?: string;
  /** With `dataFile`: `commit(true)` waits for fdatasync. */
  fsync: boolean;
  /** Compact the log once it holds this many records (and twice the live items). */
  compactAfterRecords: number;
}

/** The whole-state snapshot (version 1) the server wrote before it kept a log. */
interface Snapshot {
  version: number;
  receiptHandleKey: string;
  queues: (QueueState & { messages: Message[] })[];
}

export class SqsStore implements QueueContext {
  readonly queues = new Map<string, Queue>();
  private receiptHandleKey = randomBytes(32).toString('hex');
  handles = new ReceiptHandles(Buffer.from(this.receiptHandleKey, 'hex'));
  private log?: AppendLog<LogRecord>;
  /** Changes made but not yet appended; appended together before any answer. */
  private pending: LogRecord[] = [];
  private readonly arnPrefix: string;
  /** The server is closing: receives take nothing, so no message goes to a receiver that will not see it. */
  closing = false;

  constructor(private readonly opts: StoreOptions) {
    this.arnPrefix = `arn:aws:sqs:${opts.region}:${opts.accountId}:`;
  }

  arnOf(name: string): string {
    return this.arnPrefix + name;
  }

  queueByArn(arn: string): Queue | undefined {
    return arn.startsWith(this.arnPrefix) ? this.queues.get(arn.slice(this.arnPrefix.length)) : undefined;
  }

  journal(record: LogRecord): void {
    if (!this.log) return;
    if (this.pending.length === 0) setImmediate(() => this.flush());
    this.pending.push(record);
  }

  createQueue(name: string, attributes: Record<string, string>): Queue {
    const queue = new Queue(name, this.arnOf(name), attributes, this);
    this.queues.set(name, queue);
    queue.journalState();
    return queue;
  }

  setAttributes(queue: Queue, attributes: Record<string, string>): void {
    queue.attributes = attributes;
    queue.journalState();
  }

  deleteQueue(queue: Queue): void {
    this.queues.delete(queue.name);
    this.journal({ t: 'drop', q: queue.name });
    queue.deleted = true;
    queue.wake();
  }

  // ------------------------------------------------------------ the log

  /** Opens the log and replays it; migrates an old snapshot at `dataFile` first. */
  async load(): Promise<void> {
    const { dataFile } = this.opts;
    if (!dataFile) return;
    const logFile = dataFile.replace(/\.json$/, '') + '.log';
    mkdirSync(dirname(logFile), { recursive: true });
    const migrating = existsSync(dataFile) && !existsSync(logFile);
    const { log, records } = AppendLog.open<LogRecord>(logFile, { fsync: this.opts.fsync });
    this.log = log;
    if (migrating) {
      this.restoreSnapshot(dataFile);
      this.compact();
    } else {
      for (const record of records) this.replay(record);
      if (records.length === 0) {
        this.journal({ t: 'key', key: this.receiptHandleKey });
        this.flush();
      } else if (records.length > 2 * this.liveItems() + 1000) {
        this.compact();
      }
    }
    if (existsSync(dataFile)) {
      // The snapshot is in the log now; keep it aside, never read it again.
      renameSync(dataFile, `${dataFile}.migrated`);
      console.error('local sqs: migrated %s into %s (the old file is kept as %s.migrated)', dataFile, logFile, dataFile);
    }
    await this.log.durable();
  }

  private restoreSnapshot(file: string): void {
    const snapshot = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
    if (snapshot.version !== 1) throw new Error(`local sqs: ${file} has unknown snapshot version ${String(snapshot.version)}`);
    this.replay({ t: 'key', key: snapshot.receiptHandleKey });
    for (const { messages, ...state } of snapshot.queues) {
      this.replay({ t: 'queue', q: state });
      for (const m of messages) this.replay({ t: 'send', q: state.name, m });
    }
  }

  private replay(record: LogRecord): void {
    switch (record.t) {
      case 'key':
        // The saved key keeps receipt handles issued before the restart valid.
        this.receiptHandleKey = record.key;
        this.handles = new ReceiptHandles(Buffer.from(record.key, 'hex'));
        return;
      case 'queue': {
        const attributes = storedAttributes(record.q.attributes);
        const existing = this.queues.get(record.q.name);
        if (existing) existing.attributes = attributes;
        else this.queues.set(record.q.name, new Queue(record.q.name, this.arnOf(record.q.name), attributes, this));
        return;
      }
      case 'drop':
        this.queues.delete(record.q);
        return;
      default:
        this.queues.get(record.q)?.replay(record);
    }
  }

  /** Appends the changes made so far, in the order they were made. */
  flush(): void {
    if (!this.log || this.pending.length === 0) return;
    const records = this.pending;
    this.pending = [];
    this.log.append(records);
    const since = this.log.recordsSinceRewrite;
    if (since > this.opts.compactAfterRecords && since > 2 * this.liveItems()) this.compact();
  }

  /** Before an answer: the request's changes (and all earlier ones) are with the OS, and with `sync` on stable storage if fsync is on. */
  async commit(sync: boolean): Promise<void> {
    if (!this.log) return;
    this.flush();
    if (sync) await this.log.durable();
  }

  private liveItems(): number {
    let n = 1;
    for (const queue of this.queues.values()) n += 1 + queue.messages.size;
    return n;
  }

  /** Rewrites the log as the live state: the key, each queue, its messages as they are now. */
  private compact(): void {
    this.pending = [];
    const queues = [...this.queues.values()];
    const key = this.receiptHandleKey;
    function* records(): Generator<LogRecord> {
      yield { t: 'key', key };
      for (const queue of queues) {
        yield { t: 'queue', q: queue.state() };
        for (const m of queue.messages.values()) {
          // The whole message as it is now: receive count, visibility and latest handle included.
          yield { t: 'send', q: queue.name, m };
        }
      }
    }
    this.log!.rewrite(records());
  }

  /** Appends what is pending and closes the log, compacted if that makes the next start quicker. */
  async close(): Promise<void> {
    if (!this.log) return;
    this.flush();
    if (this.log.recordsSinceRewrite > this.liveItems() + 1000) this.compact();
    const log = this.log;
    this.log = undefined;
    await log.close();
  }
}
