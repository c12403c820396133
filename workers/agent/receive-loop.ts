import { parseBody, taskMessageSchema } from '../../core/messages';
import { MAX_BATCH_ENTRIES } from '../../core/queues/batch-send';
import { backoffMs, sleep, type Backoff } from '../../core/retry';
import type { AgentLog, Bundle, HeldMessages } from './held-messages';
import type { TaskSlots } from './task-slots';
import type { ReceivedMessage, TaskSource } from './task-source';

// A receive that failed is tried again after 250 ms, doubling to 20 s, with full jitter (many agents share one API).
const RECEIVE_RETRY: Backoff = { baseMs: 250, capMs: 20_000, jitter: 'full' };

/**
 * Long-polls the source while the slots have room (never hoarding the queue), holds each message
 * received and queues its tasks; makes a deleted endpoint queue again, and backs off on errors.
 */
export class ReceiveLoop {
  private readonly abort = new AbortController();
  private done?: Promise<void>;
  private stopping = false;
  /** A running average, so a receive asks for about as many messages as the slots have room for tasks. */
  private tasksPerMessage = 1;
  /** When the endpoint queue was last made again (source.recoverQueue). */
  private queueRecoveredAt = 0;

  constructor(
    private readonly source: TaskSource,
    private readonly slots: TaskSlots,
    private readonly held: HeldMessages,
    private readonly o: { visibilitySeconds: number; waitSeconds: number; log: AgentLog; onFatal: (err: Error) => void },
  ) {}

  start(): void {
    this.done = this.run();
  }

  /** Receive no more: a long poll under way is cut short; resolves once the loop has ended. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort();
    await this.done;
  }

  private async run(): Promise<void> {
    let errors = 0;
    while (!this.stopping) {
      // Prefetch: keep up to one task per slot waiting, so a slot that frees finds work at once.
      const room = this.slots.room;
      if (room <= 0) {
        await this.slots.untilRoom();
        continue;
      }
      let messages: ReceivedMessage[];
      try {
        const max = Math.min(MAX_BATCH_ENTRIES, Math.max(1, Math.floor(room / this.tasksPerMessage)));
        messages = await this.source.receive(max, this.o.visibilitySeconds, this.o.waitSeconds, this.abort.signal);
        errors = 0;
      } catch (err) {
        if (this.stopping) break;
        if ((err as { name?: string }).name === 'QueueDoesNotExist') {
          // Deleted outside Ferry (or by a stack teardown): the credentials call makes it again, once a
          // minute at most; an endpoint that is gone refuses the secret, and the agent stops.
          const recovered = Date.now() - this.queueRecoveredAt > 60_000 && (await this.recoverQueue());
          if (!recovered) return this.o.onFatal(new Error('the endpoint queue no longer exists (endpoint deleted?)'));
          continue;
        }
        this.o.log('receive failed; backing off', { error: String(err) });
        await sleep(backoffMs(errors++, RECEIVE_RETRY));
        continue;
      }
      if (this.stopping) {
        await this.held.release(messages.map((m) => m.receipt));
        break;
      }
      for (const m of messages) await this.accept(m);
      this.slots.wakeIdle();
    }
  }

  private async accept(m: ReceivedMessage): Promise<void> {
    const parsed = taskMessageSchema.safeParse(parseBody(m.body));
    if (!parsed.success) {
      // Nothing can run it and no task id can be trusted: drop it rather than let it cycle to the DLQ.
      this.o.log('dropping malformed task message', { messageId: m.id });
      await this.source.drop(m.receipt);
      return;
    }
    const bundle: Bundle = { msg: parsed.data, receipt: m.receipt, remaining: parsed.data.tasks.length, started: 0, broken: false };
    this.tasksPerMessage = (this.tasksPerMessage + bundle.remaining) / 2;
    this.held.add(bundle);
    this.slots.add(bundle);
  }

  /** The queue is gone: true once the API has made it again (source.recoverQueue). */
  private async recoverQueue(): Promise<boolean> {
    if (!this.source.recoverQueue) return false;
    this.queueRecoveredAt = Date.now();
    try {
      await this.source.recoverQueue();
      this.o.log('the endpoint queue was gone; the API made it again', {});
      return true;
    } catch (err) {
      this.o.log('the endpoint queue is gone and could not be made again', { error: String(err) });
      return false;
    }
  }
}
