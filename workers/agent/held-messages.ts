import type { TaskInMessage, TaskMessage } from '../../core/messages';
import type { TaskSource } from './task-source';

export type AgentLog = (msg: string, extra?: Record<string, unknown>) => void;

/** A received message: one function's bundle of tasks, deleted once every task is reported. */
export interface Bundle {
  msg: TaskMessage;
  receipt: string;
  remaining: number;
  started: number;
  /** A report could not be sent: the message must come back, so it is not deleted. */
  broken: boolean;
}

/** One task of a held bundle, waiting in the backlog or running in a slot. */
export interface QueuedTask {
  bundle: Bundle;
  task: TaskInMessage;
}

/**
 * The task messages the agent holds: keeps them invisible while their tasks wait or run, hands them
 * back, and deletes each only once every result of it was sent (at-least-once: a crash anywhere
 * before the delete lets another worker run the tasks again).
 */
export class HeldMessages {
  private readonly bundles = new Set<Bundle>();
  /** Deletes under way: stop() waits for them. */
  private readonly deleting = new Set<Promise<void>>();
  private extendTimer?: NodeJS.Timeout;

  constructor(
    private readonly source: TaskSource,
    private readonly visibilitySeconds: number,
    private readonly log: AgentLog,
    /** Told how many messages are held whenever that changes. */
    private readonly onHeld?: (count: number) => void,
  ) {}

  get size(): number {
    return this.bundles.size;
  }

  /** Extend every held message's invisibility at half its timeout, well before it lapses. */
  startExtending(): void {
    this.extendTimer = setInterval(() => void this.extend(), (this.visibilitySeconds * 1000) / 2);
  }

  add(bundle: Bundle): void {
    this.bundles.add(bundle);
    this.onHeld?.(this.bundles.size);
  }

  /** One of the bundle's tasks was reported (or could not be): after its last, the message goes. */
  taskReported(bundle: Bundle): void {
    if (--bundle.remaining > 0) return;
    this.bundles.delete(bundle);
    this.onHeld?.(this.bundles.size);
    // Only once every result is safely on the results queue may the task message go.
    if (bundle.broken) return;
    // The slot moves on; stop() waits for deletes still in flight.
    const deleted = this.source
      .finish(bundle.receipt)
      .catch((err) => this.log('could not delete a finished message; its tasks will run again', { error: String(err) }));
    this.deleting.add(deleted);
    void deleted.finally(() => this.deleting.delete(deleted));
  }

  /** Hand back at once the messages none of whose tasks has started; a started bundle is finished. */
  async releaseUnstarted(): Promise<void> {
    const unstarted = [...this.bundles].filter((b) => b.started === 0);
    for (const b of unstarted) this.bundles.delete(b);
    this.onHeld?.(this.bundles.size);
    await this.release(unstarted.map((b) => b.receipt));
  }

  /** Hand back every message still held (its tasks will be delivered again). */
  async releaseAll(): Promise<void> {
    await this.release([...this.bundles].map((b) => b.receipt));
  }

  /** Hand messages back at once (visibility 0), so another worker can take them. */
  async release(receipts: string[]): Promise<void> {
    if (receipts.length)
      await this.source.release(receipts).catch((err) => this.log('could not hand messages back', { error: String(err) }));
  }

  /** Once the deletes under way are done, stop extending. */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.deleting]);
    clearInterval(this.extendTimer);
  }

  private async extend(): Promise<void> {
    const receipts = [...this.bundles].map((b) => b.receipt);
    if (receipts.length)
      await this.source
        .extend(receipts, this.visibilitySeconds)
        .catch((err) => this.log('could not extend visibility', { error: String(err) }));
  }
}
