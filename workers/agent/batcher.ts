import { MAX_BATCH_ENTRIES } from '../../core/queues/batch-send';

/**
 * Collects what the task slots produce and sends it in as few calls as it can (SQS batch calls take
 * up to 10 entries): a lone item leaves on the next turn of the event loop; while two sends are
 * under way what arrives waits for one of them to finish and then leaves together. A busy agent so
 * pays about one call per ten tasks without adding a delay to a quiet one, and one slow send does
 * not hold the rest. With `lingerMs`, a call of fewer than 10 items waits that long for company:
 * for what no one waits on (deleting finished messages), fewer calls matter more than a few ms.
 * With `busyLingerMs`, only a second call waits (that long, or until the first is back, or for ten
 * items): a quiet agent's lone report still leaves at once, a busy one's leave in fuller calls.
 */
export class Batcher<T> {
  private pending: { item: T; done: (err?: Error) => void }[] = [];
  private scheduled = false;
  private lingering?: NodeJS.Timeout;
  private sending = 0;
  private static readonly MAX_SENDING = 2;

  /** `flushItems` sends the items and returns the indexes of those that failed. */
  constructor(
    private readonly flushItems: (items: T[]) => Promise<Set<number>>,
    private readonly opts: { lingerMs?: number; busyLingerMs?: number } = {},
  ) {}

  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ item, done: (err) => (err ? reject(err) : resolve()) });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.sending >= Batcher.MAX_SENDING || !this.pending.length) return;
    const linger = this.sending > 0 ? (this.opts.busyLingerMs ?? this.opts.lingerMs ?? 0) : (this.opts.lingerMs ?? 0);
    if (linger > 0 && this.pending.length < MAX_BATCH_ENTRIES) {
      this.lingering ??= setTimeout(() => {
        this.lingering = undefined;
        this.leave();
      }, linger);
      return;
    }
    this.leave();
  }

  /** The pending items go on the next turn (unless a call is already on its way or two are under way). */
  private leave(): void {
    clearTimeout(this.lingering);
    this.lingering = undefined;
    if (this.scheduled || this.sending >= Batcher.MAX_SENDING || !this.pending.length) return;
    this.scheduled = true;
    setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    this.sending++;
    const batch = this.pending.splice(0);
    try {
      const failed = await this.flushItems(batch.map((p) => p.item)).catch(() => new Set(batch.map((_, i) => i)));
      batch.forEach((p, i) => p.done(failed.has(i) ? new Error('SQS did not take it') : undefined));
    } finally {
      this.sending--;
      this.schedule();
    }
  }
}
