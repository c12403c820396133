/**
 * Collects what the task slots produce and sends it in as few calls as it can (SQS batch calls take
 * up to 10 entries): a lone item leaves on the next turn of the event loop; while two sends are
 * under way what arrives waits for one of them to finish and then leaves together. A busy agent so
 * pays about one call per ten tasks without adding a delay to a quiet one, and one slow send does
 * not hold the rest.
 */
export class Batcher<T> {
  private pending: { item: T; done: (err?: Error) => void }[] = [];
  private scheduled = false;
  private sending = 0;
  private static readonly MAX_SENDING = 2;

  /** `flushItems` sends the items and returns the indexes of those that failed. */
  constructor(private readonly flushItems: (items: T[]) => Promise<Set<number>>) {}

  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ item, done: (err) => (err ? reject(err) : resolve()) });
      this.schedule();
    });
  }

  private schedule(): void {
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
