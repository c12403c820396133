/**
 * The SQS actions the local server answers, each from its checked parameters to its output, on
 * the store's queues: the ones Ferry, its tests and the AWS SDK's SQS client send (CreateQueue,
 * GetQueueUrl, DeleteQueue, ListQueues, Get/SetQueueAttributes, SendMessage(Batch),
 * ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility(Batch)). Any other action is
 * answered UnsupportedOperation, as are message attributes and delays, which nothing sends.
 * Nothing here knows HTTP or SigV4 (server.ts does).
 */
import { randomUUID } from 'node:crypto';
import type { Caller } from '../credential-registry';
import { checkAttributeName, initialAttributes, mergeAttributes, normalizeQueueAttributes, type RedrivePolicy } from './attributes';
import {
  MAX_BATCH_PAYLOAD,
  MAX_LIST_RESULTS,
  MAX_RECEIVE,
  MAX_TAGS,
  MAX_VISIBILITY_SECONDS,
  MAX_WAIT_SECONDS,
  Params,
  SqsError,
  batchEntries,
  batchResult,
  invalidParameter,
  notSupported,
  queueDoesNotExist,
  type Json,
} from './protocol';
import { md5Hex, type Message, type Queue } from './queue';
import type { SqsStore } from './store';

type Run = (params: Params, signal: AbortSignal, caller?: Caller) => Json | Promise<Json>;

/**
 * An action and what its answer waits for: `none` for a read; `written` (to the OS, survives
 * kill -9) for a receive, delete or visibility change, whose loss in a machine crash only
 * delivers a message again; `synced` (fdatasync) for a send or a queue change, whose loss would
 * lose a message or a queue.
 */
export interface Action {
  run: Run;
  durability: 'none' | 'written' | 'synced';
  /** Waits (a long poll): `run` is given a signal that aborts when the caller hangs up. */
  waits?: true;
}

const QUEUE_NAME = /^[A-Za-z0-9_-]{1,80}$/; // SQS: up to 80 alphanumerics, hyphens, underscores
// SQS accepts only these characters (the XML 1.0 character set) in message bodies.
const FORBIDDEN_CHARACTER = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
/** The system attributes a received message carries, when asked for by name or with `All`. */
const SYSTEM_ATTRIBUTES = ['SenderId', 'SentTimestamp', 'ApproximateReceiveCount', 'ApproximateFirstReceiveTimestamp'] as const;
type SystemAttribute = (typeof SYSTEM_ATTRIBUTES)[number];
/** Send parameters of SQS that nothing in Ferry sets: refused rather than ignored. */
const UNSUPPORTED_SEND_PARAMETERS = ['MessageAttributes', 'MessageSystemAttributes'];

export class SqsActions {
  /** The server's URL, the origin of every QueueUrl it hands out; set once it listens. */
  url = '';
  private readonly parsedUrls = new Map<string, string[]>();

  readonly table: Record<string, Action> = {
    CreateQueue: { run: (p) => this.createQueue(p), durability: 'synced' },
    GetQueueUrl: { run: (p) => this.getQueueUrl(p), durability: 'none' },
    DeleteQueue: { run: (p) => (this.store.deleteQueue(this.queueFor(p)), {}), durability: 'synced' },
    ListQueues: { run: (p) => this.listQueues(p), durability: 'none' },
    GetQueueAttributes: { run: (p) => this.getQueueAttributes(p), durability: 'none' },
    SetQueueAttributes: { run: (p) => this.setQueueAttributes(p), durability: 'synced' },
    SendMessage: { run: (p, _s, caller) => this.sendMessage(p, caller), durability: 'synced' },
    SendMessageBatch: { run: (p, _s, caller) => this.sendMessageBatch(p, caller), durability: 'synced' },
    ReceiveMessage: { run: (p, signal) => this.receiveMessage(p, signal), durability: 'written', waits: true },
    DeleteMessage: { run: (p) => (this.queueFor(p).delete(p.requiredString('ReceiptHandle')), {}), durability: 'written' },
    DeleteMessageBatch: { run: (p) => this.deleteMessageBatch(p), durability: 'written' },
    ChangeMessageVisibility: { run: (p) => this.changeMessageVisibility(p), durability: 'written' },
    ChangeMessageVisibilityBatch: { run: (p) => this.changeMessageVisibilityBatch(p), durability: 'written' },
  };

  constructor(
    private readonly store: SqsStore,
    private readonly accountId: string,
  ) {}

  // ------------------------------------------------------------ queue URLs

  private urlOf(queue: Queue): string {
    return `${this.url}/${this.accountId}/${queue.name}`;
  }

  /** The queue name at the end of a QueueUrl (`<any origin>/<account>/<name>`), for IAM; may throw on a malformed escape. */
  queueNameIn(queueUrl: string): string {
    return decodeURIComponent(this.urlSegments(queueUrl).at(-1) ?? '');
  }

  /** The queue a request's QueueUrl names. */
  queueFor(params: Params): Queue {
    const queueUrl = params.requiredString('QueueUrl');
    const segments = this.urlSegments(queueUrl);
    if (segments.length !== 2) throw new SqsError('InvalidAddress', `The address ${queueUrl} is not valid for this endpoint.`);
    const [account, name] = segments;
    const queue = account === this.accountId ? this.store.queues.get(decodeURIComponent(name!)) : undefined;
    if (!queue) throw queueDoesNotExist();
    return queue;
  }

  /** A QueueUrl's path segments; the few URLs clients use are parsed once. */
  private urlSegments(queueUrl: string): string[] {
    let segments = this.parsedUrls.get(queueUrl);
    if (!segments) {
      try {
        segments = new URL(queueUrl, this.url).pathname.split('/').filter(Boolean);
      } catch {
        segments = [];
      }
      if (this.parsedUrls.size >= 10_000) this.parsedUrls.clear();
      this.parsedUrls.set(queueUrl, segments);
    }
    return segments;
  }

  // ------------------------------------------------------------ queues

  /** Checks attributes that refer to other queues. */
  private checkReferences(attributes: Record<string, string>): void {
    const policy = attributes.RedrivePolicy;
    if (policy && !this.store.queueByArn((JSON.parse(policy) as RedrivePolicy).deadLetterTargetArn)) {
      throw invalidParameter(`Value ${policy} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.`);
    }
  }

  private createQueue(params: Params): Json {
    const name = params.requiredString('QueueName');
    if (name.endsWith('.fifo')) throw notSupported('A FIFO queue');
    if (!QUEUE_NAME.test(name))
      throw invalidParameter('Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length');
    const attributes = normalizeQueueAttributes(params.stringMap('Attributes'));
    // Tags are checked as SQS checks them; nothing reads them back here, so they are not kept.
    if (Object.keys(params.stringMap('tags')).length > MAX_TAGS) throw invalidParameter(`Too many tags added for queue ${name}.`);
    const existing = this.store.queues.get(name);
    if (existing) {
      // SQS: CreateQueue of an existing name answers its URL if every attribute given is as the queue has it.
      for (const [attribute, value] of Object.entries(attributes)) {
        if ((existing.attributes[attribute] ?? '') !== value) {
          throw new SqsError(
            'QueueNameExists',
            `A queue already exists with the same name and a different value for attribute ${attribute}`,
          );
        }
      }
      return { QueueUrl: this.urlOf(existing) };
    }
    this.checkReferences(attributes);
    return { QueueUrl: this.urlOf(this.store.createQueue(name, initialAttributes(attributes))) };
  }

  private getQueueUrl(params: Params): Json {
    const name = params.requiredString('QueueName');
    const owner = params.string('QueueOwnerAWSAccountId');
    const queue = owner === undefined || owner === this.accountId ? this.store.queues.get(name) : undefined;
    if (!queue) throw queueDoesNotExist();
    return { QueueUrl: this.urlOf(queue) };
  }

  private listQueues(params: Params): Json {
    const prefix = params.string('QueueNamePrefix') ?? '';
    const maxResults = params.int('MaxResults', 1, MAX_LIST_RESULTS);
    const token = params.string('NextToken');
    let after = '';
    if (token) {
      try {
        after = (JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after: string }).after;
      } catch {
        throw invalidParameter('Invalid NextToken value.');
      }
      if (typeof after !== 'string') throw invalidParameter('Invalid NextToken value.');
    }
    const names = [...this.store.queues.keys()].filter((name) => name.startsWith(prefix) && name > after).sort();
    const page = names.slice(0, maxResults ?? MAX_LIST_RESULTS);
    const output: Json = {};
    if (page.length > 0) output.QueueUrls = page.map((name) => this.urlOf(this.store.queues.get(name)!));
    // SQS: a NextToken comes back only when the caller paged with MaxResults.
    if (maxResults !== undefined && names.length > page.length) {
      output.NextToken = Buffer.from(JSON.stringify({ after: page[page.length - 1] })).toString('base64url');
    }
    return output;
  }

  private getQueueAttributes(params: Params): Json {
    const queue = this.queueFor(params);
    const requested = params.strings('AttributeNames');
    for (const name of requested) checkAttributeName(name);
    const all = requested.includes('All');
    const wants = (name: string) => all || requested.includes(name);
    const selected: Record<string, string> = {};
    for (const [name, value] of Object.entries(queue.attributes)) if (wants(name)) selected[name] = value;
    if (wants('QueueArn')) selected.QueueArn = queue.arn;
    // Counting walks every message: only when asked.
    if (wants('ApproximateNumberOfMessages') || wants('ApproximateNumberOfMessagesNotVisible')) {
      const counts = queue.counts();
      if (wants('ApproximateNumberOfMessages')) selected.ApproximateNumberOfMessages = String(counts.visible);
      if (wants('ApproximateNumberOfMessagesNotVisible')) selected.ApproximateNumberOfMessagesNotVisible = String(counts.inFlight);
    }
    return Object.keys(selected).length > 0 ? { Attributes: selected } : {};
  }

  private setQueueAttributes(params: Params): Json {
    const queue = this.queueFor(params);
    const attributes = normalizeQueueAttributes(params.stringMap('Attributes'));
    this.checkReferences(attributes);
    this.store.setAttributes(queue, mergeAttributes(queue.attributes, attributes));
    return {};
  }

  // ------------------------------------------------------------ messages

  /** Checks one message to send as SQS does; returns its size in bytes. Throws the SqsError a send of it would return. */
  private checkMessage(queue: Queue, params: Params): number {
    const body = params.requiredString('MessageBody');
    for (const name of UNSUPPORTED_SEND_PARAMETERS) if (params.has(name)) throw notSupported(`The parameter ${name}`);
    if (params.int('DelaySeconds', 0, 900)) throw notSupported('A message delay (DelaySeconds)'); // SQS: up to 15 minutes
    if (FORBIDDEN_CHARACTER.test(body)) {
      throw new SqsError('InvalidMessageContents', 'Invalid characters found. Only XML 1.0 characters are allowed in the message body.');
    }
    const size = Buffer.byteLength(body, 'utf8');
    const max = queue.settings.maximumMessageBytes;
    if (size > max) throw invalidParameter(`One or more parameters are invalid. Reason: Message must be shorter than ${max} bytes.`);
    return size;
  }

  /** Enqueues a checked message; answers as SendMessage does (the SDK checks the MD5 against the body it sent). */
  private send(queue: Queue, body: string, caller?: Caller): Json {
    const now = Date.now();
    const message: Message = {
      id: randomUUID(),
      body,
      md5OfBody: md5Hex(body),
      sentAt: now,
      visibleAt: now,
      receiveCount: 0,
      senderId: caller?.principalId,
    };
    queue.enqueue(message);
    return { MessageId: message.id, MD5OfMessageBody: message.md5OfBody };
  }

  private sendMessage(params: Params, caller?: Caller): Json {
    const queue = this.queueFor(params);
    this.checkMessage(queue, params);
    return this.send(queue, params.requiredString('MessageBody'), caller);
  }

  private sendMessageBatch(params: Params, caller?: Caller): Json {
    const queue = this.queueFor(params);
    const entries = batchEntries(params);
    // Every entry is checked before any is sent: the batch's total size decides for all of them.
    const checked: (number | SqsError)[] = [];
    let total = 0;
    for (const entry of entries) {
      try {
        const size = this.checkMessage(queue, entry);
        total += size;
        checked.push(size);
      } catch (err) {
        if (!(err instanceof SqsError)) throw err;
        checked.push(err);
      }
    }
    if (total > MAX_BATCH_PAYLOAD) {
      throw new SqsError(
        'BatchRequestTooLong',
        `Batch requests cannot be longer than ${MAX_BATCH_PAYLOAD} bytes. You have sent ${total} bytes.`,
      );
    }
    return batchResult(entries, (entry, index) => {
      const outcome = checked[index];
      if (outcome instanceof SqsError) throw outcome;
      return this.send(queue, entry.requiredString('MessageBody'), caller);
    });
  }

  private async receiveMessage(params: Params, signal: AbortSignal): Promise<Json> {
    const queue = this.queueFor(params);
    const max = params.int('MaxNumberOfMessages', 1, MAX_RECEIVE) ?? 1;
    const visibilityTimeout = params.int('VisibilityTimeout', 0, MAX_VISIBILITY_SECONDS) ?? queue.settings.visibilityTimeoutSeconds;
    const waitSeconds = params.int('WaitTimeSeconds', 0, MAX_WAIT_SECONDS) ?? 0;
    const systemNames = systemAttributesWanted(params);
    // No message carries message attributes (a send with them is refused): there is nothing to select.
    params.strings('MessageAttributeNames');
    const deadline = Date.now() + waitSeconds * 1000;
    for (;;) {
      // A receiver that hung up or a closing server must not take messages nobody will see.
      if (signal.aborted || this.store.closing || queue.deleted) return {};
      const messages = queue.receive(max, visibilityTimeout);
      if (messages.length > 0) return { Messages: messages.map((message) => this.renderMessage(message, systemNames)) };
      if (Date.now() >= deadline) return {};
      await queue.waitForMessages(deadline, signal);
    }
  }

  private renderMessage(message: Message, systemNames: readonly SystemAttribute[]): Json {
    const rendered: Json = {
      MessageId: message.id,
      ReceiptHandle: message.receiptHandle,
      MD5OfBody: message.md5OfBody,
      Body: message.body,
    };
    if (systemNames.length > 0) {
      const attributes: Record<string, string> = {};
      for (const name of systemNames) attributes[name] = this.systemAttribute(message, name);
      rendered.Attributes = attributes;
    }
    return rendered;
  }

  private systemAttribute(message: Message, name: SystemAttribute): string {
    switch (name) {
      case 'SenderId':
        return message.senderId ?? this.accountId;
      case 'SentTimestamp':
        return String(message.sentAt);
      case 'ApproximateReceiveCount':
        return String(message.receiveCount);
      case 'ApproximateFirstReceiveTimestamp':
        return String(message.firstReceivedAt);
    }
  }

  private deleteMessageBatch(params: Params): Json {
    const queue = this.queueFor(params);
    return batchResult(batchEntries(params), (entry) => {
      queue.delete(entry.requiredString('ReceiptHandle'));
      return {};
    });
  }

  private changeMessageVisibility(params: Params): Json {
    const queue = this.queueFor(params);
    queue.changeVisibility(params.requiredString('ReceiptHandle'), params.requiredInt('VisibilityTimeout', 0, MAX_VISIBILITY_SECONDS));
    return {};
  }

  private changeMessageVisibilityBatch(params: Params): Json {
    const queue = this.queueFor(params);
    return batchResult(batchEntries(params), (entry) => {
      queue.changeVisibility(entry.requiredString('ReceiptHandle'), entry.requiredInt('VisibilityTimeout', 0, MAX_VISIBILITY_SECONDS));
      return {};
    });
  }
}

/** The system attributes a receive asked for (AttributeNames, and MessageSystemAttributeNames that replaces it); SQS ignores names that do not apply. */
function systemAttributesWanted(params: Params): readonly SystemAttribute[] {
  const names = params.strings('MessageSystemAttributeNames');
  const legacy = params.strings('AttributeNames');
  if (names.length === 0 && legacy.length === 0) return [];
  if (names.includes('All') || legacy.includes('All')) return SYSTEM_ATTRIBUTES;
  return SYSTEM_ATTRIBUTES.filter((name) => names.includes(name) || legacy.includes(name));
}
