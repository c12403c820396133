/**
 * One standard queue of the local SQS server: its messages, which to deliver next, visibility
 * timeouts, receive counts and redrive to a dead-letter queue, retention, receipt handles, and
 * the long polls waiting on it. Every change is handed to the journal (see store.ts) as it is made.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { settingsOf, type QueueSettings } from './attributes';
import { MAX_VISIBILITY_SECONDS, SqsError, invalidParameter } from './protocol';

export interface Message {
  id: string;
  body: string;
  md5OfBody: string;
  sentAt: number;
  /** epoch ms; later than now while the message is in flight */
  visibleAt: number;
  receiveCount: number;
  firstReceivedAt?: number;
  lastReceivedAt?: number;
  /** the handle of the latest receive: only it may delete the message */
  receiptHandle?: string;
  /** Who sent it (SQS: an IAM user's id, or `<role id>:<session name>` for a role session). */
  senderId?: string;
}

export const md5Hex = (data: string) => createHash('md5').update(data).digest('hex');

/** A queue as the log keeps it (its messages are records of their own). */
export interface QueueState {
  name: string;
  attributes: Record<string, string>;
}

/** One line of the log: a change to the state, replayed in order on start. */
export type LogRecord =
  | { t: 'key'; key: string }
  | { t: 'queue'; q: QueueState }
  | { t: 'drop'; q: string }
  /** Written by servers that had PurgeQueue; still replayed. */
  | { t: 'purge'; q: string }
  | { t: 'send'; q: string; m: Message }
  | { t: 'recv'; q: string; id: string; n: number; v: number; h: string; f: number; l: number }
  | { t: 'vis'; q: string; id: string; v: number }
  | { t: 'del'; q: string; id: string };

/** What a queue needs from the server it belongs to. */
export interface QueueContext {
  readonly handles: ReceiptHandles;
  journal(record: LogRecord): void;
  queueByArn(arn: string): Queue | undefined;
}

// ---------------------------------------------------------------- receipt handles

interface ReceiptRef {
  queue: string;
  messageId: string;
}

/** Receipt handles carry the message they belong to, signed so a forged or mangled handle is refused. */
export class ReceiptHandles {
  /** Makes each handle unique: random per start, then counted (the signature makes it unforgeable, not the nonce). */
  private readonly noncePrefix = randomBytes(6).toString('hex');
  private issued = 0;

  constructor(private readonly key: Buffer) {}

  issue(queue: string, messageId: string): string {
    const n = `${this.noncePrefix}${(this.issued++).toString(16)}`;
    const payload = Buffer.from(JSON.stringify({ q: queue, m: messageId, n })).toString('base64url');
    return `${payload}.${this.sign(payload)}`;
  }

  /** The message a handle names, or undefined if this server never issued it. */
  parse(handle: string): ReceiptRef | undefined {
    const [payload, signature, ...rest] = handle.split('.');
    if (!payload || !signature || rest.length > 0) return undefined;
    const expected = Buffer.from(this.sign(payload));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
    const { q, m } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { q: string; m: string };
    return { queue: q, messageId: m };
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url').slice(0, 32);
  }
}

// ---------------------------------------------------------------- delivery order

/** A message's place in the delivery order as of one visibility change; stale once the message changes again. */
interface Slot {
  at: number;
  message: Message;
}

/**
 * Which message to deliver next, in O(log n) per change whatever the queue holds: visible
 * messages in a FIFO, hidden ones (in flight) in a min-heap by the time they show.
 * Entries are never updated in place; an entry whose message was deleted or re-timed since is
 * skipped when reached, and both are rebuilt from the live messages when mostly stale.
 */
class DeliveryOrder {
  private ready: Slot[] = [];
  private head = 0;
  private hidden: Slot[] = [];

  constructor(private readonly live: Map<string, Message>) {}

  private valid(slot: Slot): boolean {
    return this.live.get(slot.message.id) === slot.message && slot.message.visibleAt === slot.at;
  }

  /** After a message was added or its visibility changed. */
  add(message: Message, now = Date.now()): void {
    const slot = { at: message.visibleAt, message };
    if (slot.at <= now) this.ready.push(slot);
    else this.push(slot);
    if (this.ready.length - this.head + this.hidden.length > 2 * this.live.size + 1000) this.rebuild(now);
  }

  /** The next visible message, taken off the order (the caller re-adds it with its new visibility). */
  next(now: number, skip: Set<Message>): Message | undefined {
    while (this.hidden.length > 0 && this.hidden[0]!.at <= now) {
      const slot = this.pop();
      if (this.valid(slot)) this.ready.push(slot);
    }
    while (this.head < this.ready.length) {
      const slot = this.ready[this.head++]!;
      if (this.valid(slot) && slot.at <= now && !skip.has(slot.message)) {
        this.compactReady();
        return slot.message;
      }
    }
    this.compactReady();
    return undefined;
  }

  /** When the next hidden message shows, if any. */
  nextShowing(): number | undefined {
    while (this.hidden.length > 0 && !this.valid(this.hidden[0]!)) this.pop();
    return this.hidden[0]?.at;
  }

  rebuild(now = Date.now()): void {
    this.ready = [];
    this.head = 0;
    this.hidden = [];
    const slots = [...this.live.values()].map((message) => ({ at: message.visibleAt, message }));
    for (const slot of slots) if (slot.at <= now) this.ready.push(slot);
    // Heapify by sorting: a sorted array is a valid min-heap.
    this.hidden = slots.filter((slot) => slot.at > now).sort((a, b) => a.at - b.at);
    this.ready.sort((a, b) => a.message.sentAt - b.message.sentAt);
  }

  private compactReady(): void {
    if (this.head > 1024 && this.head * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.head);
      this.head = 0;
    }
  }

  private push(slot: Slot): void {
    const heap = this.hidden;
    heap.push(slot);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= slot.at) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = slot;
  }

  private pop(): Slot {
    const heap = this.hidden;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= heap.length) break;
        const r = l + 1;
        const c = r < heap.length && heap[r]!.at < heap[l]!.at ? r : l;
        if (heap[c]!.at >= last.at) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  }
}

// ---------------------------------------------------------------- one queue

/** One standard queue: its attributes, its messages and the receivers waiting on it. */
export class Queue {
  readonly messages = new Map<string, Message>();
  private readonly order = new DeliveryOrder(this.messages);
  /** Long polls waiting for a message to become visible; each is called to retry. */
  private readonly waiters = new Set<() => void>();
  private wakeTimer?: NodeJS.Timeout;
  /** No message expires before this (epoch ms), so retention is checked in O(1) until then. */
  private nextExpiryAt = 0;
  private attributeValues!: Record<string, string>;
  /** The attributes as numbers and a parsed policy, kept in step with `attributes`. */
  settings!: QueueSettings;
  deleted = false;

  constructor(
    readonly name: string,
    readonly arn: string,
    attributes: Record<string, string>,
    private readonly context: QueueContext,
  ) {
    this.attributes = attributes;
  }

  /** The attributes as stored and reported (strings, normalised). */
  get attributes(): Record<string, string> {
    return this.attributeValues;
  }

  set attributes(attributes: Record<string, string>) {
    this.attributeValues = attributes;
    this.settings = settingsOf(attributes);
    // A new retention period may expire messages at once.
    this.nextExpiryAt = 0;
  }

  state(): QueueState {
    return { name: this.name, attributes: this.attributes };
  }

  /** Logs the queue's name and attributes: after it is made or changed. */
  journalState(): void {
    this.context.journal({ t: 'queue', q: this.state() });
  }

  /** Applies one logged change to a message of this queue, on replay. */
  replay(record: LogRecord): void {
    switch (record.t) {
      case 'send':
        this.messages.set(record.m.id, record.m);
        this.order.add(record.m);
        return;
      case 'del':
        this.messages.delete(record.id);
        return;
      case 'purge':
        this.messages.clear();
        this.order.rebuild();
        return;
      case 'recv': {
        const message = this.messages.get(record.id);
        if (!message) return;
        message.receiveCount = record.n;
        message.visibleAt = record.v;
        message.receiptHandle = record.h;
        message.firstReceivedAt = record.f;
        message.lastReceivedAt = record.l;
        this.order.add(message);
        return;
      }
      case 'vis': {
        const message = this.messages.get(record.id);
        if (message) {
          message.visibleAt = record.v;
          this.order.add(message);
        }
        return;
      }
    }
  }

  enqueue(message: Message): void {
    this.messages.set(message.id, message);
    this.order.add(message);
    this.context.journal({ t: 'send', q: this.name, m: message });
    this.nextExpiryAt = Math.min(this.nextExpiryAt, message.sentAt + this.settings.retentionMs);
    if (message.visibleAt <= Date.now()) this.wake();
    else this.armWakeTimer();
  }

  /**
   * Takes up to `max` visible messages and hides each for `visibilityTimeout` seconds.
   * A message whose receives would exceed the redrive policy's maxReceiveCount moves to the
   * dead-letter queue instead, if that queue exists.
   */
  receive(max: number, visibilityTimeout: number): Message[] {
    const now = Date.now();
    this.dropExpired(now);
    const { retentionMs, redrive } = this.settings;
    const taken: Message[] = [];
    const seen = new Set<Message>();
    while (taken.length < max) {
      const message = this.order.next(now, seen);
      if (!message) break;
      seen.add(message);
      if (retentionMs + message.sentAt <= now) {
        this.remove(message.id);
        continue;
      }
      if (redrive && message.receiveCount >= redrive.maxReceiveCount && this.moveToDeadLetterQueue(message, redrive.deadLetterTargetArn)) {
        this.remove(message.id);
        continue;
      }
      message.receiveCount += 1;
      message.firstReceivedAt ??= now;
      message.lastReceivedAt = now;
      message.visibleAt = now + visibilityTimeout * 1000;
      message.receiptHandle = this.context.handles.issue(this.name, message.id);
      taken.push(message);
    }
    for (const message of taken) {
      this.order.add(message, now);
      this.context.journal({
        t: 'recv',
        q: this.name,
        id: message.id,
        n: message.receiveCount,
        v: message.visibleAt,
        h: message.receiptHandle!,
        f: message.firstReceivedAt!,
        l: message.lastReceivedAt!,
      });
    }
    if (taken.length > 0) this.armWakeTimer();
    return taken;
  }

  /** Moves a message that has used up its receives to the dead-letter queue, if it exists. */
  private moveToDeadLetterQueue(message: Message, targetArn: string): boolean {
    const target = this.context.queueByArn(targetArn);
    if (!target || target === this) return false;
    // SQS: the message keeps its id and original enqueue time (retention counts from it).
    target.enqueue({ ...message, visibleAt: Date.now(), receiptHandle: undefined });
    return true;
  }

  /** The message a receipt handle names, if it still exists; throws if the handle was never issued for this queue. */
  private messageFor(receiptHandle: string): Message | undefined {
    const ref = this.context.handles.parse(receiptHandle);
    if (!ref || ref.queue !== this.name) {
      throw new SqsError('ReceiptHandleIsInvalid', `The input receipt handle "${receiptHandle}" is not a valid receipt handle.`);
    }
    return this.messages.get(ref.messageId);
  }

  delete(receiptHandle: string): void {
    const message = this.messageFor(receiptHandle);
    // SQS: deleting an already deleted message, or with the handle of an earlier receive, succeeds;
    // only the latest handle deletes, so a late worker cannot drop a redelivered message.
    if (message && message.receiptHandle === receiptHandle) this.remove(message.id);
  }

  private remove(id: string): void {
    this.messages.delete(id);
    this.context.journal({ t: 'del', q: this.name, id });
  }

  changeVisibility(receiptHandle: string, seconds: number): void {
    const message = this.messageFor(receiptHandle);
    if (!message || message.receiptHandle !== receiptHandle) {
      throw invalidParameter(
        `Value ${receiptHandle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.`,
      );
    }
    const now = Date.now();
    // SQS: a message stays in flight at most 12 hours after it was received.
    if (now + seconds * 1000 - (message.lastReceivedAt ?? now) > MAX_VISIBILITY_SECONDS * 1000) {
      throw invalidParameter(
        `Value ${seconds} for parameter VisibilityTimeout is invalid. Reason: Total VisibilityTimeout for the message is beyond the limit [${MAX_VISIBILITY_SECONDS} seconds].`,
      );
    }
    message.visibleAt = now + seconds * 1000;
    this.order.add(message, now);
    this.context.journal({ t: 'vis', q: this.name, id: message.id, v: message.visibleAt });
    if (seconds === 0) this.wake();
    else this.armWakeTimer();
  }

  /** Messages that can be received now, and those in flight (received, not yet visible again). */
  counts(): { visible: number; inFlight: number } {
    const now = Date.now();
    this.dropExpired(now);
    let visible = 0;
    for (const message of this.messages.values()) if (message.visibleAt <= now) visible += 1;
    return { visible, inFlight: this.messages.size - visible };
  }

  /** Resolves when a message may have become visible, at `deadline`, or when `signal` aborts. */
  waitForMessages(deadline: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        if (this.waiters.size === 0) this.clearWakeTimer();
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
      signal.addEventListener('abort', done);
      this.waiters.add(done);
      this.armWakeTimer();
    });
  }

  /** Lets every waiting receiver retry: used on new or newly visible messages, deletion and shutdown. */
  wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** While receivers wait, a single timer fires when the next in-flight message becomes visible. */
  private armWakeTimer(): void {
    this.clearWakeTimer();
    if (this.waiters.size === 0) return;
    const next = this.order.nextShowing();
    if (next === undefined) return;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimer = undefined;
        this.wake();
      },
      Math.max(0, next - Date.now()),
    );
    this.wakeTimer.unref();
  }

  private clearWakeTimer(): void {
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
  }

  /**
   * SQS: a message older than the queue's MessageRetentionPeriod is deleted, received or not
   * (retention counts from the first send, also in a dead-letter queue). The walk over all
   * messages runs only when the oldest may have expired, not on every call.
   */
  private dropExpired(now: number): void {
    if (now < this.nextExpiryAt) return;
    const retentionMs = this.settings.retentionMs;
    let next = Infinity;
    for (const message of this.messages.values()) {
      const expiresAt = message.sentAt + retentionMs;
      if (expiresAt <= now) this.remove(message.id);
      else if (expiresAt < next) next = expiresAt;
    }
    this.nextExpiryAt = next;
  }
}
