/**
 * An in-process SQS server on loopback, speaking the AWS JSON 1.0 protocol that
 * @aws-sdk/client-sqs uses: `POST /` with `X-Amz-Target: AmazonSQS.<Action>`.
 * Standard queues only. With `iam` (as the local stack runs it) every request must carry a valid
 * SigV4 signature of a known key and is authorised as IAM would (local/iam.ts); a message's
 * SenderId is its sender's identity. Without `iam` it takes any request, for its protocol tests.
 *
 * State lives in memory. With `dataFile` every change a client is told about — a sent,
 * received, deleted or re-timed message, a queue made, changed, purged or deleted — is
 * appended to a log (local/sqs-log.ts) before the answer; a restart replays it, so queues,
 * messages and receipt handles survive kill -9. Unless `fsync: false`, a sent message and a
 * queue change are also fdatasync'ed before the answer, so they survive a machine crash too.
 * A receive, delete or visibility change is not waited for (an fdatasync costs milliseconds on
 * the path of every task): a machine crash can undo only the last of those, which makes a
 * message visible again, i.e. delivers it once more, as at-least-once allows. The log sits next
 * to `dataFile` as `<name>.log`; an old whole-state snapshot at `dataFile` (`sqs.json`) is
 * migrated into it once.
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import type { Caller } from './credential-registry';
import type { LocalIam } from './iam';
import { AuthError, type AuthFailure } from './sigv4';
import { AppendLog } from './sqs-log';

export interface SqsServerOptions {
  port?: number;
  host?: string;
  /** Keep state on disk: the log is this path with `.json` replaced by `.log`. */
  dataFile?: string;
  /**
   * With `dataFile`: wait for fdatasync (shared by concurrent requests) before answering a
   * change, so it survives a machine crash; default true. Off, a change survives kill -9 only.
   */
  fsync?: boolean;
  /** Compact the log once it holds this many records (and twice the live items); for tests. */
  compactAfterRecords?: number;
  region?: string;
  accountId?: string;
  /** Authenticate and authorise every request; the local stack always passes one. */
  iam?: LocalIam;
}

export interface SqsServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startSqsServer(opts: SqsServerOptions = {}): Promise<SqsServer> {
  const server = new LocalSqsServer(opts);
  await server.start(opts.port ?? 0, opts.host ?? '127.0.0.1');
  return server;
}

/** A received message as ReceiveMessage answers it (the AWS SDK's `Message`). */
export interface ReceivedSqsMessage {
  MessageId: string;
  ReceiptHandle: string;
  MD5OfBody: string;
  Body: string;
  Attributes?: Record<string, string>;
}

/**
 * A queue of a server running in this process, read without HTTP, SigV4 or the SDK: the local
 * results event source's way, as Lambda's pollers read SQS from inside AWS. Same semantics as
 * ReceiveMessage (all attributes) and DeleteMessageBatch, journal included.
 */
export interface InProcessQueue {
  receive(max: number, waitSeconds: number, signal: AbortSignal): Promise<ReceivedSqsMessage[]>;
  /** Deletes by receipt handle; returns the indexes that failed. */
  delete(receiptHandles: string[]): Set<number>;
}

/** Servers of this process by URL origin (`http://127.0.0.1:<port>`). */
const inProcessServers = new Map<string, LocalSqsServer>();

/** The queue at `queueUrl` when a server in this process serves it; undefined otherwise. */
export function inProcessQueue(queueUrl: string): InProcessQueue | undefined {
  let origin: string;
  try {
    origin = new URL(queueUrl).origin;
  } catch {
    return undefined;
  }
  const server = inProcessServers.get(origin);
  return server && server.inProcessQueue(queueUrl);
}

// ---------------------------------------------------------------- limits (AWS quotas)

const MAX_BATCH_ENTRIES = 10; // SQS: 10 entries per batch request
const MAX_BATCH_PAYLOAD = 1_048_576; // SQS: 1 MiB for all messages of a batch together
const MAX_MESSAGE_ATTRIBUTES = 10; // SQS: 10 message attributes per message
const MAX_RECEIVE = 10; // SQS: 10 messages per ReceiveMessage
const MAX_WAIT_SECONDS = 20; // SQS: long polls wait at most 20 s
const MAX_VISIBILITY_SECONDS = 43_200; // SQS: 12 hours of visibility timeout
const MAX_DELAY_SECONDS = 900; // SQS: 15 minutes of delay
const MAX_LIST_RESULTS = 1000; // SQS: ListQueues returns at most 1000 URLs
const MAX_TAGS = 50; // SQS: 50 tags per queue
// Compaction: once the log holds this many records and twice as many as there are live items.
const COMPACT_MIN_RECORDS = 20_000;
const CLOSE_GRACE_MS = 1000;

// ---------------------------------------------------------------- errors

/** Error shape name -> [legacy query code the SDK maps back to its class, HTTP status], from the SQS model. */
const ERROR_CODES = {
  BatchEntryIdsNotDistinct: ['AWS.SimpleQueueService.BatchEntryIdsNotDistinct', 400],
  BatchRequestTooLong: ['AWS.SimpleQueueService.BatchRequestTooLong', 400],
  EmptyBatchRequest: ['AWS.SimpleQueueService.EmptyBatchRequest', 400],
  InternalError: ['InternalError', 500],
  InvalidAddress: ['InvalidAddress', 404],
  InvalidAttributeName: ['InvalidAttributeName', 400],
  InvalidAttributeValue: ['InvalidAttributeValue', 400],
  InvalidBatchEntryId: ['AWS.SimpleQueueService.InvalidBatchEntryId', 400],
  InvalidMessageContents: ['InvalidMessageContents', 400],
  InvalidParameterValueException: ['InvalidParameterValue', 400],
  MissingParameterException: ['MissingParameter', 400],
  QueueDoesNotExist: ['AWS.SimpleQueueService.NonExistentQueue', 400],
  QueueNameExists: ['QueueAlreadyExists', 400],
  ReceiptHandleIsInvalid: ['ReceiptHandleIsInvalid', 404],
  TooManyEntriesInBatchRequest: ['AWS.SimpleQueueService.TooManyEntriesInBatchRequest', 400],
  UnsupportedOperation: ['AWS.SimpleQueueService.UnsupportedOperation', 400],
  // Authentication and authorisation: common to every AWS service, answered before any action runs.
  AccessDenied: ['AccessDenied', 403],
  ExpiredToken: ['ExpiredToken', 403],
  IncompleteSignature: ['IncompleteSignature', 400],
  InvalidClientTokenId: ['InvalidClientTokenId', 403],
  MissingAuthenticationToken: ['MissingAuthenticationToken', 403],
  SignatureDoesNotMatch: ['SignatureDoesNotMatch', 403],
} as const satisfies Record<string, readonly [string, number]>;

type ErrorShape = keyof typeof ERROR_CODES;
const COMMON_ERRORS = new Set<ErrorShape>([
  'AccessDenied',
  'ExpiredToken',
  'IncompleteSignature',
  'InvalidClientTokenId',
  'MissingAuthenticationToken',
  'SignatureDoesNotMatch',
]);
const AUTH_ERRORS: Record<AuthFailure, ErrorShape> = {
  missing: 'MissingAuthenticationToken',
  malformed: 'IncompleteSignature',
  'unknown-key': 'InvalidClientTokenId',
  'bad-signature': 'SignatureDoesNotMatch',
  skewed: 'SignatureDoesNotMatch',
  expired: 'ExpiredToken',
};

class SqsError extends Error {
  constructor(
    readonly shape: ErrorShape,
    message: string,
  ) {
    super(message);
  }
  get queryCode(): string {
    return ERROR_CODES[this.shape][0];
  }
  get status(): number {
    return ERROR_CODES[this.shape][1];
  }
}

const invalidParameter = (message: string) => new SqsError('InvalidParameterValueException', message);
const queueDoesNotExist = () => new SqsError('QueueDoesNotExist', 'The specified queue does not exist.');

// ---------------------------------------------------------------- request parameters

type Json = Record<string, unknown>;

/** Typed access to one JSON request object, raising the errors SQS raises. */
class Params {
  constructor(private readonly input: Json) {}

  string(name: string): string | undefined {
    const value = this.input[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') throw invalidParameter(`Value for parameter ${name} must be a string.`);
    return value;
  }

  requiredString(name: string): string {
    const value = this.string(name);
    if (value === undefined || value === '')
      throw new SqsError('MissingParameterException', `The request must contain the parameter ${name}.`);
    return value;
  }

  requiredInt(name: string, min: number, max: number): number {
    const value = this.int(name, min, max);
    if (value === undefined) throw new SqsError('MissingParameterException', `The request must contain the parameter ${name}.`);
    return value;
  }

  int(name: string, min: number, max: number): number | undefined {
    const raw = this.input[name];
    if (raw === undefined || raw === null) return undefined;
    const value = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw invalidParameter(`Value ${String(raw)} for parameter ${name} is invalid. Reason: must be between ${min} and ${max}.`);
    }
    return value;
  }

  strings(name: string): string[] {
    const value = this.input[name] ?? [];
    if (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))
      throw invalidParameter(`Value for parameter ${name} must be a list of strings.`);
    return value as string[];
  }

  stringMap(name: string): Record<string, string> {
    const value = this.input[name] ?? {};
    if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string')) {
      throw invalidParameter(`Value for parameter ${name} must be a map of strings.`);
    }
    return value as Record<string, string>;
  }

  object(name: string): Json | undefined {
    const value = this.input[name];
    if (value === undefined || value === null) return undefined;
    if (!isObject(value)) throw invalidParameter(`Value for parameter ${name} must be an object.`);
    return value;
  }

  list(name: string): Params[] {
    const value = this.input[name] ?? [];
    if (!Array.isArray(value) || !value.every(isObject)) throw invalidParameter(`Value for parameter ${name} must be a list of objects.`);
    return value.map((entry) => new Params(entry));
  }
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------- queue attributes

/** How one settable queue attribute is validated and normalised; `initial` is set on every new queue. */
interface AttributeSpec {
  initial?: string;
  normalize(value: string, name: string): string;
}

const integerIn = (min: number, max: number, initial?: string): AttributeSpec => ({
  initial,
  normalize(value, name) {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
      throw new SqsError(
        'InvalidAttributeValue',
        `Invalid value for the parameter ${name}. Reason: must be an integer from ${min} to ${max}.`,
      );
    }
    return String(n);
  },
});

const booleanText = (initial?: string): AttributeSpec => ({
  initial,
  normalize(value, name) {
    const lower = value.toLowerCase();
    if (lower !== 'true' && lower !== 'false') throw new SqsError('InvalidAttributeValue', `Invalid value for the parameter ${name}.`);
    return lower;
  },
});

const jsonText: AttributeSpec = {
  normalize(value, name) {
    if (value === '') return value;
    try {
      JSON.parse(value);
    } catch {
      throw new SqsError('InvalidAttributeValue', `Invalid value for the parameter ${name}. Reason: not valid JSON.`);
    }
    return value;
  },
};

interface RedrivePolicy {
  deadLetterTargetArn: string;
  maxReceiveCount: number;
}

const redrivePolicy: AttributeSpec = {
  normalize(value, name) {
    if (value === '') return value; // an empty policy removes redrive
    const invalid = (reason: string) => invalidParameter(`Value ${value} for parameter ${name} is invalid. Reason: ${reason}`);
    let policy: unknown;
    try {
      policy = JSON.parse(value);
    } catch {
      throw invalid('Redrive policy is not a valid JSON map.');
    }
    if (!isObject(policy) || typeof policy.deadLetterTargetArn !== 'string') {
      throw invalid('Redrive policy does not contain mandatory attribute: deadLetterTargetArn.');
    }
    const count = Number(policy.maxReceiveCount);
    // SQS: maxReceiveCount from 1 to 1000
    if (!Number.isInteger(count) || count < 1 || count > 1000)
      throw invalid('Invalid value for maxReceiveCount: must be an integer from 1 to 1000.');
    return JSON.stringify({ deadLetterTargetArn: policy.deadLetterTargetArn, maxReceiveCount: count } satisfies RedrivePolicy);
  },
};

const QUEUE_ATTRIBUTES: Record<string, AttributeSpec> = {
  DelaySeconds: integerIn(0, MAX_DELAY_SECONDS, '0'),
  MaximumMessageSize: integerIn(1024, 1_048_576, '262144'), // SQS: 1 KiB to 1 MiB, 256 KiB by default
  MessageRetentionPeriod: integerIn(60, 1_209_600, '345600'), // SQS: 1 minute to 14 days, 4 days by default
  ReceiveMessageWaitTimeSeconds: integerIn(0, MAX_WAIT_SECONDS, '0'),
  VisibilityTimeout: integerIn(0, MAX_VISIBILITY_SECONDS, '30'),
  SqsManagedSseEnabled: booleanText('true'), // SQS: SSE-SQS is on for new queues since 2022
  KmsMasterKeyId: { normalize: (value) => value },
  KmsDataKeyReusePeriodSeconds: integerIn(60, 86_400),
  // Kept and returned as given, not evaluated: the local stack speaks plain HTTP on loopback, so
  // the TLS-only statement every Ferry queue carries (aws:SecureTransport false -> Deny) would deny
  // every request here, and treating loopback as "secure" would test nothing. Access is decided by
  // the identity policies of local/iam.ts, as the deployed worker role's; TLS is AWS's to enforce.
  Policy: jsonText,
  RedriveAllowPolicy: jsonText,
  RedrivePolicy: redrivePolicy,
};

const FIFO_ATTRIBUTES = new Set(['FifoQueue', 'ContentBasedDeduplication', 'DeduplicationScope', 'FifoThroughputLimit']);

const COMPUTED_ATTRIBUTES = [
  'ApproximateNumberOfMessages',
  'ApproximateNumberOfMessagesNotVisible',
  'ApproximateNumberOfMessagesDelayed',
  'CreatedTimestamp',
  'LastModifiedTimestamp',
  'QueueArn',
];

/** Validates and normalises attributes given to CreateQueue or SetQueueAttributes. */
function normalizeQueueAttributes(attributes: Record<string, string>): Record<string, string> {
  const normalized: Record<string, string> = {};
  for (const [name, value] of Object.entries(attributes)) {
    if (FIFO_ATTRIBUTES.has(name))
      throw new SqsError('UnsupportedOperation', `FIFO queues are not supported by the local SQS server (attribute ${name}).`);
    const spec = Object.hasOwn(QUEUE_ATTRIBUTES, name) ? QUEUE_ATTRIBUTES[name] : undefined;
    if (!spec) throw new SqsError('InvalidAttributeName', `Unknown Attribute ${name}.`);
    normalized[name] = spec.normalize(value, name);
  }
  return normalized;
}

// ---------------------------------------------------------------- messages

interface MessageAttribute {
  DataType: string;
  StringValue?: string;
  /** base64, as on the wire */
  BinaryValue?: string;
}

interface Message {
  id: string;
  body: string;
  md5OfBody: string;
  attributes: Record<string, MessageAttribute>;
  /** AWSTraceHeader, the one system attribute a sender may set */
  systemAttributes: Record<string, MessageAttribute>;
  sentAt: number;
  /** epoch ms; later than now while the message is delayed or in flight */
  visibleAt: number;
  receiveCount: number;
  firstReceivedAt?: number;
  lastReceivedAt?: number;
  /** the handle of the latest receive: only it may delete the message */
  receiptHandle?: string;
  deadLetterSourceArn?: string;
  /** Who sent it (SQS: an IAM user's id, or `<role id>:<session name>` for a role session). */
  senderId?: string;
}

const md5Hex = (data: string | Buffer) => createHash('md5').update(data).digest('hex');

/**
 * MD5 of message attributes as SQS computes it: attributes sorted by name, each as
 * length-prefixed (4 bytes, big-endian) name, data type, a transport byte (1 string, 2 binary)
 * and the length-prefixed value.
 */
function md5OfAttributes(attributes: Record<string, MessageAttribute>): string | undefined {
  const names = Object.keys(attributes).sort();
  if (names.length === 0) return undefined;
  const hash = createHash('md5');
  const field = (bytes: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    hash.update(length).update(bytes);
  };
  for (const name of names) {
    const { DataType, StringValue, BinaryValue } = attributes[name];
    field(Buffer.from(name, 'utf8'));
    field(Buffer.from(DataType, 'utf8'));
    if (isBinaryType(DataType)) {
      hash.update(Uint8Array.of(2));
      field(Buffer.from(BinaryValue ?? '', 'base64'));
    } else {
      hash.update(Uint8Array.of(1));
      field(Buffer.from(StringValue ?? '', 'utf8'));
    }
  }
  return hash.digest('hex');
}

const isBinaryType = (dataType: string) => dataType === 'Binary' || dataType.startsWith('Binary.');

// SQS accepts only these characters (the XML 1.0 character set) in bodies and string attributes.
const FORBIDDEN_CHARACTER = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const ATTRIBUTE_NAME = /^(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}$/;
const RESERVED_ATTRIBUTE_PREFIX = /^(aws|amazon)\./i;
const ATTRIBUTE_DATA_TYPE = /^(String|Number|Binary)(\..+)?$/;
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Validates message attributes from a send; returns them and their size in bytes. */
function parseMessageAttributes(
  input: Json | undefined,
  kind: 'user' | 'system',
): { attributes: Record<string, MessageAttribute>; size: number } {
  const attributes: Record<string, MessageAttribute> = {};
  let size = 0;
  const entries = Object.entries(input ?? {});
  if (entries.length > MAX_MESSAGE_ATTRIBUTES) {
    throw invalidParameter(`Number of message attributes [${entries.length}] exceeds the allowed maximum [${MAX_MESSAGE_ATTRIBUTES}].`);
  }
  for (const [name, raw] of entries) {
    if (kind === 'system' && name !== 'AWSTraceHeader') throw invalidParameter(`Message system attribute name '${name}' is invalid.`);
    if (kind === 'user' && (!ATTRIBUTE_NAME.test(name) || RESERVED_ATTRIBUTE_PREFIX.test(name))) {
      throw invalidParameter(`Message (${kind}) attribute name '${name}' is invalid.`);
    }
    const value = isObject(raw) ? new Params(raw) : undefined;
    const dataType = value?.string('DataType');
    if (!dataType || dataType.length > 256 || !ATTRIBUTE_DATA_TYPE.test(dataType)) {
      throw invalidParameter(`The message (${kind}) attribute '${name}' has an invalid message attribute type.`);
    }
    const attribute: MessageAttribute = { DataType: dataType };
    let valueBytes: number;
    if (isBinaryType(dataType)) {
      const binary = value?.string('BinaryValue');
      if (!binary) throw invalidParameter(`Message (${kind}) attribute '${name}' must contain a non-empty value of type 'Binary'.`);
      attribute.BinaryValue = binary;
      valueBytes = Buffer.from(binary, 'base64').length;
    } else {
      const text = value?.string('StringValue');
      if (!text) throw invalidParameter(`Message (${kind}) attribute '${name}' must contain a non-empty value of type '${dataType}'.`);
      if (dataType.startsWith('Number') && !NUMBER.test(text.trim())) {
        throw invalidParameter(`Can't cast the value of message (${kind}) attribute '${name}' to a number.`);
      }
      if (FORBIDDEN_CHARACTER.test(text))
        throw new SqsError('InvalidMessageContents', `Message (${kind}) attribute '${name}' contains invalid characters.`);
      attribute.StringValue = text;
      valueBytes = Buffer.byteLength(text, 'utf8');
    }
    attributes[name] = attribute;
    size += Buffer.byteLength(name, 'utf8') + Buffer.byteLength(dataType, 'utf8') + valueBytes;
  }
  return { attributes, size };
}

/** Selects the attributes a receiver asked for: `All`, `.*`, `prefix.*` or exact names. */
function selectAttributes(attributes: Record<string, MessageAttribute>, requested: string[]): Record<string, MessageAttribute> {
  const wanted = (name: string) =>
    requested.some((pattern) => {
      if (pattern === 'All' || pattern === '.*') return true;
      if (pattern.endsWith('.*')) return name.startsWith(pattern.slice(0, -1));
      return pattern === name;
    });
  return Object.fromEntries(Object.entries(attributes).filter(([name]) => wanted(name)));
}

// ---------------------------------------------------------------- receipt handles

interface ReceiptRef {
  queue: string;
  messageId: string;
}

/** Receipt handles carry the message they belong to, signed so a forged or mangled handle is refused. */
class ReceiptHandles {
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

// ---------------------------------------------------------------- one queue

interface QueueSnapshot {
  name: string;
  attributes: Record<string, string>;
  tags: Record<string, string>;
  createdAt: number;
  lastModifiedAt: number;
  messages: Message[];
}

type QueueState = Omit<QueueSnapshot, 'messages'>;

/** One line of the log: a change to the state, replayed in order on start. */
type LogRecord =
  | { t: 'key'; key: string }
  | { t: 'queue'; q: QueueState }
  | { t: 'drop'; q: string }
  | { t: 'purge'; q: string }
  | { t: 'send'; q: string; m: Message }
  | { t: 'recv'; q: string; id: string; n: number; v: number; h: string; f: number; l: number }
  | { t: 'vis'; q: string; id: string; v: number }
  | { t: 'del'; q: string; id: string };

type Journal = (record: LogRecord) => void;

/** A message's place in the delivery order as of one visibility change; stale once the message changes again. */
interface Slot {
  at: number;
  message: Message;
}

/**
 * Which message to deliver next, in O(log n) per change whatever the queue holds: visible
 * messages in a FIFO, hidden ones (delayed, in flight) in a min-heap by the time they show.
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

/** One standard queue: its attributes, its messages and the receivers waiting on it. */
class Queue {
  readonly messages = new Map<string, Message>();
  private readonly order = new DeliveryOrder(this.messages);
  /** Long polls waiting for a message to become visible; each is called to retry. */
  private readonly waiters = new Set<() => void>();
  private wakeTimer?: NodeJS.Timeout;
  /** No message expires before this (epoch ms), so retention is checked in O(1) until then. */
  private nextExpiryAt = 0;
  deleted = false;

  constructor(
    readonly name: string,
    readonly arn: string,
    public attributes: Record<string, string>,
    public tags: Record<string, string>,
    private readonly handles: ReceiptHandles,
    private readonly journal: Journal,
    readonly createdAt = Date.now(),
    public lastModifiedAt = createdAt,
  ) {}

  state(): QueueState {
    const { name, attributes, tags, createdAt, lastModifiedAt } = this;
    return { name, attributes, tags, createdAt, lastModifiedAt };
  }

  /** Logs the queue's name, attributes and tags: after it is made or changed. */
  journalState(): void {
    this.journal({ t: 'queue', q: this.state() });
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
        Object.assign(message, {
          receiveCount: record.n,
          visibleAt: record.v,
          receiptHandle: record.h,
          firstReceivedAt: record.f,
          lastReceivedAt: record.l,
        });
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

  /** A new retention period may expire messages at once. */
  retentionChanged(): void {
    this.nextExpiryAt = 0;
  }

  private seconds(attribute: string): number {
    return Number(this.attributes[attribute]);
  }
  get visibilityTimeout(): number {
    return this.seconds('VisibilityTimeout');
  }
  get delaySeconds(): number {
    return this.seconds('DelaySeconds');
  }
  get maximumMessageSize(): number {
    return this.seconds('MaximumMessageSize');
  }
  get receiveWaitSeconds(): number {
    return this.seconds('ReceiveMessageWaitTimeSeconds');
  }
  get redrivePolicy(): RedrivePolicy | undefined {
    const policy = this.attributes.RedrivePolicy;
    return policy ? (JSON.parse(policy) as RedrivePolicy) : undefined;
  }

  enqueue(message: Message): void {
    this.messages.set(message.id, message);
    this.order.add(message);
    this.journal({ t: 'send', q: this.name, m: message });
    this.nextExpiryAt = Math.min(this.nextExpiryAt, message.sentAt + this.retentionMs);
    if (message.visibleAt <= Date.now()) this.wake();
    else this.armWakeTimer();
  }

  /**
   * Takes up to `max` visible messages and hides each for `visibilityTimeout` seconds.
   * A message whose receives would exceed the redrive policy's maxReceiveCount is offered to
   * `deadLetter` instead, and leaves this queue if it was taken.
   */
  receive(max: number, visibilityTimeout: number, deadLetter: (message: Message) => boolean): Message[] {
    const now = Date.now();
    this.dropExpired(now);
    const maxReceiveCount = this.redrivePolicy?.maxReceiveCount;
    const taken: Message[] = [];
    const seen = new Set<Message>();
    while (taken.length < max) {
      const message = this.order.next(now, seen);
      if (!message) break;
      seen.add(message);
      if (this.retentionMs + message.sentAt <= now) {
        this.remove(message.id);
        continue;
      }
      if (maxReceiveCount !== undefined && message.receiveCount >= maxReceiveCount && deadLetter(message)) {
        this.remove(message.id);
        continue;
      }
      message.receiveCount += 1;
      message.firstReceivedAt ??= now;
      message.lastReceivedAt = now;
      message.visibleAt = now + visibilityTimeout * 1000;
      message.receiptHandle = this.handles.issue(this.name, message.id);
      taken.push(message);
    }
    for (const message of taken) {
      this.order.add(message, now);
      this.journal({
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

  /** The message a receipt handle names, if it still exists; throws if the handle was never issued for this queue. */
  private messageFor(receiptHandle: string): Message | undefined {
    const ref = this.handles.parse(receiptHandle);
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
    this.journal({ t: 'del', q: this.name, id });
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
    this.journal({ t: 'vis', q: this.name, id: message.id, v: message.visibleAt });
    if (seconds === 0) this.wake();
    else this.armWakeTimer();
  }

  purge(): void {
    this.messages.clear();
    this.order.rebuild();
    this.journal({ t: 'purge', q: this.name });
  }

  counts(): { visible: number; inFlight: number; delayed: number } {
    const now = Date.now();
    this.dropExpired(now);
    let visible = 0;
    let inFlight = 0;
    let delayed = 0;
    for (const message of this.messages.values()) {
      if (message.visibleAt <= now) visible += 1;
      else if (message.receiveCount > 0) inFlight += 1;
      else delayed += 1;
    }
    return { visible, inFlight, delayed };
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

  /** While receivers wait, a single timer fires when the next delayed or in-flight message becomes visible. */
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

  private get retentionMs(): number {
    return this.seconds('MessageRetentionPeriod') * 1000;
  }

  /**
   * SQS: a message older than the queue's MessageRetentionPeriod is deleted, received or not
   * (retention counts from the first send, also in a dead-letter queue). The walk over all
   * messages runs only when the oldest may have expired, not on every call.
   */
  private dropExpired(now: number): void {
    if (now < this.nextExpiryAt) return;
    const retentionMs = this.retentionMs;
    let next = Infinity;
    for (const message of this.messages.values()) {
      const expiresAt = message.sentAt + retentionMs;
      if (expiresAt <= now) this.remove(message.id);
      else if (expiresAt < next) next = expiresAt;
    }
    this.nextExpiryAt = next;
  }
}

// ---------------------------------------------------------------- the server

type Action = (params: Params, signal: AbortSignal, caller?: Caller) => Json | Promise<Json>;

const READ_ONLY_ACTIONS = new Set(['GetQueueUrl', 'ListQueues', 'GetQueueAttributes', 'ListQueueTags', 'ListDeadLetterSourceQueues']);
/**
 * Changes whose loss in a machine crash would lose a message or a queue: fdatasync'ed before
 * the answer. The others (receive, delete, visibility) reach the OS before the answer, and a
 * crash that undoes one only delivers a message again.
 */
const SYNCED_ACTIONS = new Set([
  'CreateQueue',
  'DeleteQueue',
  'SetQueueAttributes',
  'TagQueue',
  'UntagQueue',
  'PurgeQueue',
  'SendMessage',
  'SendMessageBatch',
]);
const QUEUE_NAME = /^[A-Za-z0-9_-]{1,80}$/; // SQS: up to 80 alphanumerics, hyphens, underscores
const BATCH_ENTRY_ID = /^[A-Za-z0-9_-]{1,80}$/;
const SYSTEM_ATTRIBUTE_NAMES = [
  'SenderId',
  'SentTimestamp',
  'ApproximateReceiveCount',
  'ApproximateFirstReceiveTimestamp',
  'AWSTraceHeader',
  'DeadLetterQueueSourceArn',
];

class LocalSqsServer implements SqsServer {
  url = '';
  port = 0;
  private readonly region: string;
  private readonly accountId: string;
  private readonly dataFile?: string;
  private readonly iam?: LocalIam;
  private readonly http: Server;
  private readonly queues = new Map<string, Queue>();
  private readonly inFlightRequests = new Set<Promise<void>>();
  private readonly parsedUrls = new Map<string, string[]>();
  private readonly fsync: boolean;
  private readonly compactAfterRecords: number;
  private receiptHandleKey = randomBytes(32).toString('hex');
  private handles = new ReceiptHandles(Buffer.from(this.receiptHandleKey, 'hex'));
  private closing = false;
  private closed?: Promise<void>;
  private log?: AppendLog<LogRecord>;
  /** Changes made but not yet appended; appended together before any answer. */
  private pending: LogRecord[] = [];
  private readonly journal: Journal = (record) => {
    if (!this.log) return;
    if (this.pending.length === 0) setImmediate(() => this.flush());
    this.pending.push(record);
  };

  private readonly actions: Record<string, Action> = {
    CreateQueue: (p) => this.createQueue(p),
    GetQueueUrl: (p) => this.getQueueUrl(p),
    DeleteQueue: (p) => this.deleteQueue(p),
    ListQueues: (p) => this.listQueues(p),
    GetQueueAttributes: (p) => this.getQueueAttributes(p),
    SetQueueAttributes: (p) => this.setQueueAttributes(p),
    TagQueue: (p) => this.tagQueue(p),
    UntagQueue: (p) => this.untagQueue(p),
    ListQueueTags: (p) => ({ Tags: this.queueFor(p).tags }),
    ListDeadLetterSourceQueues: (p) => this.listDeadLetterSourceQueues(p),
    PurgeQueue: (p) => (this.queueFor(p).purge(), {}),
    SendMessage: (p, _s, caller) => this.sendMessage(p, caller),
    SendMessageBatch: (p, _s, caller) => this.sendMessageBatch(p, caller),
    ReceiveMessage: (p, signal) => this.receiveMessage(p, signal),
    DeleteMessage: (p) => (this.queueFor(p).delete(p.requiredString('ReceiptHandle')), {}),
    DeleteMessageBatch: (p) => this.deleteMessageBatch(p),
    ChangeMessageVisibility: (p) => this.changeMessageVisibility(p),
    ChangeMessageVisibilityBatch: (p) => this.changeMessageVisibilityBatch(p),
  };

  constructor(opts: SqsServerOptions) {
    this.region = opts.region ?? 'us-east-1';
    this.accountId = opts.accountId ?? '000000000000';
    this.dataFile = opts.dataFile;
    this.fsync = opts.fsync ?? true;
    this.compactAfterRecords = opts.compactAfterRecords ?? COMPACT_MIN_RECORDS;
    this.iam = opts.iam;
    this.http = createServer((req, res) => {
      const request = this.handle(req, res).finally(() => this.inFlightRequests.delete(request));
      this.inFlightRequests.add(request);
    });
    // Outlive the SDK's idle keep-alive sockets, so a reused socket is not closed under a request.
    this.http.keepAliveTimeout = 65_000;
  }

  async start(port: number, host: string): Promise<void> {
    await this.load();
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    this.port = (this.http.address() as AddressInfo).port;
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
    inProcessServers.set(new URL(this.url).origin, this);
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    if (inProcessServers.get(new URL(this.url).origin) === this) inProcessServers.delete(new URL(this.url).origin);
    // Long polls answer (empty) at once; then the sockets, idle keep-alive ones included, go.
    // The grace period only matters for a client stuck sending its request body.
    for (const queue of this.queues.values()) queue.wake();
    let grace: NodeJS.Timeout | undefined;
    const graceOver = new Promise((resolve) => (grace = setTimeout(resolve, CLOSE_GRACE_MS)));
    await Promise.race([Promise.allSettled([...this.inFlightRequests]), graceOver]);
    clearTimeout(grace);
    const stopped = new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.http.closeAllConnections();
    await stopped;
    if (this.log) {
      this.flush();
      // A compact log makes the next start quick.
      if (this.log.recordsSinceRewrite > this.liveItems() + 1000) this.compact();
      const log = this.log;
      this.log = undefined;
      await log.close();
    }
  }

  /** See `inProcessQueue`: ReceiveMessage and DeleteMessageBatch without the HTTP request. */
  inProcessQueue(queueUrl: string): InProcessQueue {
    return {
      receive: async (max, waitSeconds, signal) => {
        const params = new Params({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: max,
          WaitTimeSeconds: waitSeconds,
          MessageSystemAttributeNames: ['All'],
        });
        const out = await this.receiveMessage(params, signal);
        await this.commit(false);
        return (out.Messages ?? []) as ReceivedSqsMessage[];
      },
      delete: (receiptHandles) => {
        const entries = receiptHandles.map((handle, i) => ({ Id: String(i), ReceiptHandle: handle }));
        const out = this.deleteMessageBatch(new Params({ QueueUrl: queueUrl, Entries: entries }));
        this.flush();
        return new Set((out.Failed as { Id: string }[]).map((f) => Number(f.Id)));
      },
    };
  }

  // ------------------------------------------------------------ HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const requestId = randomUUID();
    const aborted = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) aborted.abort();
    });
    const target = req.headers['x-amz-target'];
    const action = typeof target === 'string' && target.startsWith('AmazonSQS.') ? target.slice('AmazonSQS.'.length) : '';
    const run = Object.hasOwn(this.actions, action) ? this.actions[action] : undefined;
    try {
      const raw = await readBuffer(req);
      const caller = await this.authenticate(req, raw);
      if (req.method !== 'POST' || !run)
        throw new SqsError('UnsupportedOperation', `The operation ${String(target ?? req.method)} is not supported.`);
      const params = new Params(parseJsonObject(raw.toString('utf8')));
      if (caller && !this.iam!.allows(caller, `sqs:${action}`, this.resourceOf(action, params))) {
        throw new SqsError(
          'AccessDenied',
          `User: ${caller.principalId} is not authorized to perform: sqs:${action} on resource: ${this.resourceOf(action, params)} because no identity-based policy allows the sqs:${action} action`,
        );
      }
      const output = await run(params, aborted.signal, caller);
      if (!READ_ONLY_ACTIONS.has(action)) await this.commit(SYNCED_ACTIONS.has(action));
      await respond(res, 200, requestId, output);
    } catch (err) {
      const error =
        err instanceof SqsError
          ? err
          : err instanceof AuthError
            ? new SqsError(AUTH_ERRORS[err.reason], err.message)
            : new SqsError('InternalError', 'The request processing has failed because of an unknown error.');
      if (!(err instanceof SqsError) && !(err instanceof AuthError)) console.error('sqs-server: %s failed', action, err);
      // A batch may have changed some entries before one failed: those, too, are on disk before the answer.
      else if (run && !READ_ONLY_ACTIONS.has(action)) await this.commit(SYNCED_ACTIONS.has(action)).catch(() => undefined);
      // Errors every AWS service shares come from the common namespace, the queue's own from SQS's.
      const namespace = COMMON_ERRORS.has(error.shape) ? 'com.amazon.coral.service' : 'com.amazonaws.sqs';
      await respond(
        res,
        error.status,
        requestId,
        { __type: `${namespace}#${error.shape}`, message: error.message },
        {
          'x-amzn-query-error': `${error.queryCode};${error.status >= 500 ? 'Receiver' : 'Sender'}`,
        },
      );
    }
  }

  // ------------------------------------------------------------ identity

  /** The caller a request is signed by; undefined when this server runs without IAM. */
  private async authenticate(req: IncomingMessage, body: Buffer): Promise<Caller | undefined> {
    if (!this.iam) return undefined;
    return this.iam.authenticate('sqs', { method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body });
  }

  /** The ARN IAM authorises an action on: the queue it names, or every queue for the account-wide ones. */
  private resourceOf(action: string, params: Params): string {
    let name: string | undefined;
    try {
      const url = params.string('QueueUrl');
      if (url !== undefined) name = decodeURIComponent(this.urlSegments(url).at(-1) ?? '');
      else name = params.string('QueueName');
    } catch {
      name = undefined;
    }
    return this.arnOf(action === 'ListQueues' || !name ? '*' : name);
  }

  // ------------------------------------------------------------ queues

  private arnOf(name: string): string {
    return `arn:aws:sqs:${this.region}:${this.accountId}:${name}`;
  }

  private urlOf(queue: Queue): string {
    return `${this.url}/${this.accountId}/${queue.name}`;
  }

  /** The queue a request's QueueUrl names: `<any origin>/<account>/<name>`. */
  private queueFor(params: Params): Queue {
    const queueUrl = params.requiredString('QueueUrl');
    const segments = this.urlSegments(queueUrl);
    if (segments.length !== 2) throw new SqsError('InvalidAddress', `The address ${queueUrl} is not valid for this endpoint.`);
    const [account, name] = segments;
    const queue = account === this.accountId ? this.queues.get(decodeURIComponent(name)) : undefined;
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

  private queueByArn(arn: string): Queue | undefined {
    const prefix = this.arnOf('');
    return arn.startsWith(prefix) ? this.queues.get(arn.slice(prefix.length)) : undefined;
  }

  /** Checks attributes that refer to other queues. */
  private checkReferences(attributes: Record<string, string>): void {
    const policy = attributes.RedrivePolicy;
    if (policy && !this.queueByArn((JSON.parse(policy) as RedrivePolicy).deadLetterTargetArn)) {
      throw invalidParameter(`Value ${policy} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.`);
    }
  }

  private createQueue(params: Params): Json {
    const name = params.requiredString('QueueName');
    if (name.endsWith('.fifo')) throw new SqsError('UnsupportedOperation', 'FIFO queues are not supported by the local SQS server.');
    if (!QUEUE_NAME.test(name))
      throw invalidParameter('Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length');
    const attributes = normalizeQueueAttributes(params.stringMap('Attributes'));
    const tags = params.stringMap('tags');
    const existing = this.queues.get(name);
    if (existing) {
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
    if (attributes.RedrivePolicy === '') delete attributes.RedrivePolicy;
    this.checkReferences(attributes);
    if (Object.keys(tags).length > MAX_TAGS) throw invalidParameter(`Too many tags added for queue ${name}.`);
    const initial = Object.entries(QUEUE_ATTRIBUTES).flatMap(([attribute, spec]) =>
      spec.initial === undefined ? [] : [[attribute, spec.initial]],
    );
    const queue = new Queue(name, this.arnOf(name), { ...Object.fromEntries(initial), ...attributes }, tags, this.handles, this.journal);
    this.queues.set(name, queue);
    queue.journalState();
    return { QueueUrl: this.urlOf(queue) };
  }

  private getQueueUrl(params: Params): Json {
    const name = params.requiredString('QueueName');
    const owner = params.string('QueueOwnerAWSAccountId');
    const queue = owner === undefined || owner === this.accountId ? this.queues.get(name) : undefined;
    if (!queue) throw queueDoesNotExist();
    return { QueueUrl: this.urlOf(queue) };
  }

  private deleteQueue(params: Params): Json {
    const queue = this.queueFor(params);
    this.queues.delete(queue.name);
    this.journal({ t: 'drop', q: queue.name });
    queue.deleted = true;
    queue.wake();
    return {};
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
    const names = [...this.queues.keys()].filter((name) => name.startsWith(prefix) && name > after).sort();
    const page = names.slice(0, maxResults ?? MAX_LIST_RESULTS);
    const output: Json = {};
    if (page.length > 0) output.QueueUrls = page.map((name) => this.urlOf(this.queues.get(name)!));
    // SQS: a NextToken comes back only when the caller paged with MaxResults.
    if (maxResults !== undefined && names.length > page.length) {
      output.NextToken = Buffer.from(JSON.stringify({ after: page[page.length - 1] })).toString('base64url');
    }
    return output;
  }

  private getQueueAttributes(params: Params): Json {
    const queue = this.queueFor(params);
    const requested = params.strings('AttributeNames');
    const counts = queue.counts();
    const all: Record<string, string> = {
      ...queue.attributes,
      QueueArn: queue.arn,
      ApproximateNumberOfMessages: String(counts.visible),
      ApproximateNumberOfMessagesNotVisible: String(counts.inFlight),
      ApproximateNumberOfMessagesDelayed: String(counts.delayed),
      CreatedTimestamp: String(Math.floor(queue.createdAt / 1000)),
      LastModifiedTimestamp: String(Math.floor(queue.lastModifiedAt / 1000)),
    };
    if (requested.includes('All')) return { Attributes: all };
    const selected: Record<string, string> = {};
    for (const name of requested) {
      const known = Object.hasOwn(QUEUE_ATTRIBUTES, name) || COMPUTED_ATTRIBUTES.includes(name) || FIFO_ATTRIBUTES.has(name);
      if (!known) throw new SqsError('InvalidAttributeName', `Unknown Attribute ${name}.`);
      if (all[name] !== undefined) selected[name] = all[name];
    }
    return Object.keys(selected).length > 0 ? { Attributes: selected } : {};
  }

  private setQueueAttributes(params: Params): Json {
    const queue = this.queueFor(params);
    const attributes = normalizeQueueAttributes(params.stringMap('Attributes'));
    this.checkReferences(attributes);
    const next = { ...queue.attributes, ...attributes };
    for (const [name, value] of Object.entries(attributes)) {
      if (value === '' && QUEUE_ATTRIBUTES[name].initial === undefined) delete next[name];
    }
    queue.attributes = next;
    queue.lastModifiedAt = Date.now();
    if (attributes.MessageRetentionPeriod !== undefined) queue.retentionChanged();
    queue.journalState();
    return {};
  }

  private tagQueue(params: Params): Json {
    const queue = this.queueFor(params);
    const tags = { ...queue.tags, ...params.stringMap('Tags') };
    if (Object.keys(tags).length > MAX_TAGS) throw invalidParameter(`Too many tags added for queue ${queue.name}.`);
    queue.tags = tags;
    queue.journalState();
    return {};
  }

  private untagQueue(params: Params): Json {
    const queue = this.queueFor(params);
    for (const key of params.strings('TagKeys')) delete queue.tags[key];
    queue.journalState();
    return {};
  }

  private listDeadLetterSourceQueues(params: Params): Json {
    const target = this.queueFor(params);
    const sources = [...this.queues.values()].filter((queue) => queue.redrivePolicy?.deadLetterTargetArn === target.arn);
    return { queueUrls: sources.map((queue) => this.urlOf(queue)) };
  }

  // ------------------------------------------------------------ messages

  /** Validates one message to send and builds it; throws the SqsError a send of it would return. */
  private prepareMessage(queue: Queue, params: Params, caller?: Caller): { message: Message; size: number } {
    const body = params.requiredString('MessageBody');
    if (FORBIDDEN_CHARACTER.test(body)) {
      throw new SqsError('InvalidMessageContents', 'Invalid characters found. Only XML 1.0 characters are allowed in the message body.');
    }
    const delaySeconds = params.int('DelaySeconds', 0, MAX_DELAY_SECONDS) ?? queue.delaySeconds;
    const user = parseMessageAttributes(params.object('MessageAttributes'), 'user');
    const system = parseMessageAttributes(params.object('MessageSystemAttributes'), 'system');
    const size = Buffer.byteLength(body, 'utf8') + user.size;
    if (size > queue.maximumMessageSize) {
      throw invalidParameter(`One or more parameters are invalid. Reason: Message must be shorter than ${queue.maximumMessageSize} bytes.`);
    }
    const now = Date.now();
    const message: Message = {
      id: randomUUID(),
      body,
      md5OfBody: md5Hex(body),
      attributes: user.attributes,
      systemAttributes: system.attributes,
      sentAt: now,
      visibleAt: now + delaySeconds * 1000,
      receiveCount: 0,
      senderId: caller?.principalId,
    };
    return { message, size };
  }

  private sendResult(message: Message): Json {
    const result: Json = { MessageId: message.id, MD5OfMessageBody: message.md5OfBody };
    const userMd5 = md5OfAttributes(message.attributes);
    if (userMd5) result.MD5OfMessageAttributes = userMd5;
    const systemMd5 = md5OfAttributes(message.systemAttributes);
    if (systemMd5) result.MD5OfMessageSystemAttributes = systemMd5;
    return result;
  }

  private sendMessage(params: Params, caller?: Caller): Json {
    const queue = this.queueFor(params);
    const { message } = this.prepareMessage(queue, params, caller);
    queue.enqueue(message);
    return this.sendResult(message);
  }

  private sendMessageBatch(params: Params, caller?: Caller): Json {
    const queue = this.queueFor(params);
    const entries = batchEntries(params);
    // Every entry is checked before any is sent: the batch's total size decides for all of them.
    const prepared = entries.map((entry) => {
      try {
        return this.prepareMessage(queue, entry, caller);
      } catch (err) {
        if (err instanceof SqsError) return err;
        throw err;
      }
    });
    const total = prepared.reduce((sum, p) => sum + (p instanceof SqsError ? 0 : p.size), 0);
    if (total > MAX_BATCH_PAYLOAD) {
      throw new SqsError(
        'BatchRequestTooLong',
        `Batch requests cannot be longer than ${MAX_BATCH_PAYLOAD} bytes. You have sent ${total} bytes.`,
      );
    }
    return batchResult(entries, (_entry, index) => {
      const p = prepared[index];
      if (p instanceof SqsError) throw p;
      queue.enqueue(p.message);
      return this.sendResult(p.message);
    });
  }

  private async receiveMessage(params: Params, signal: AbortSignal): Promise<Json> {
    const queue = this.queueFor(params);
    const max = params.int('MaxNumberOfMessages', 1, MAX_RECEIVE) ?? 1;
    const visibilityTimeout = params.int('VisibilityTimeout', 0, MAX_VISIBILITY_SECONDS) ?? queue.visibilityTimeout;
    const waitSeconds = params.int('WaitTimeSeconds', 0, MAX_WAIT_SECONDS) ?? queue.receiveWaitSeconds;
    const systemNames = [...params.strings('AttributeNames'), ...params.strings('MessageSystemAttributeNames')];
    const attributeNames = params.strings('MessageAttributeNames');
    const deadline = Date.now() + waitSeconds * 1000;
    for (;;) {
      // A receiver that hung up or a closing server must not take messages nobody will see.
      if (signal.aborted || this.closing || queue.deleted) return {};
      const messages = queue.receive(max, visibilityTimeout, (message) => this.moveToDeadLetterQueue(queue, message));
      if (messages.length > 0) return { Messages: messages.map((message) => this.renderMessage(message, systemNames, attributeNames)) };
      if (Date.now() >= deadline) return {};
      await queue.waitForMessages(deadline, signal);
    }
  }

  /** Moves a message that has used up its receives to the source queue's dead-letter queue, if it exists. */
  private moveToDeadLetterQueue(source: Queue, message: Message): boolean {
    const target = this.queueByArn(source.redrivePolicy!.deadLetterTargetArn);
    if (!target || target === source) return false;
    // SQS: the message keeps its id, attributes and original enqueue time (retention counts from it).
    target.enqueue({ ...message, visibleAt: Date.now(), receiptHandle: undefined, deadLetterSourceArn: source.arn });
    return true;
  }

  private renderMessage(message: Message, systemNames: string[], attributeNames: string[]): Json {
    const rendered: Json = {
      MessageId: message.id,
      ReceiptHandle: message.receiptHandle,
      MD5OfBody: message.md5OfBody,
      Body: message.body,
    };
    const system: Record<string, string | undefined> = {
      SenderId: message.senderId ?? this.accountId,
      SentTimestamp: String(message.sentAt),
      ApproximateReceiveCount: String(message.receiveCount),
      ApproximateFirstReceiveTimestamp: message.firstReceivedAt === undefined ? undefined : String(message.firstReceivedAt),
      AWSTraceHeader: message.systemAttributes.AWSTraceHeader?.StringValue,
      DeadLetterQueueSourceArn: message.deadLetterSourceArn,
    };
    const wantAll = systemNames.includes('All');
    const attributes: Record<string, string> = {};
    for (const name of SYSTEM_ATTRIBUTE_NAMES) {
      const value = system[name];
      if (value !== undefined && (wantAll || systemNames.includes(name))) attributes[name] = value;
    }
    if (Object.keys(attributes).length > 0) rendered.Attributes = attributes;
    const selected = selectAttributes(message.attributes, attributeNames);
    const md5 = md5OfAttributes(selected);
    if (md5) {
      rendered.MessageAttributes = selected;
      rendered.MD5OfMessageAttributes = md5;
    }
    return rendered;
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

  // ------------------------------------------------------------ persistence

  /** Opens the log and replays it; migrates an old snapshot at `dataFile` first. */
  private async load(): Promise<void> {
    if (!this.dataFile) return;
    const logFile = this.dataFile.replace(/\.json$/, '') + '.log';
    mkdirSync(dirname(logFile), { recursive: true });
    const migrating = existsSync(this.dataFile) && !existsSync(logFile);
    const { log, records } = AppendLog.open<LogRecord>(logFile, { fsync: this.fsync });
    this.log = log;
    if (migrating) {
      this.restoreSnapshot(this.dataFile);
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
    if (existsSync(this.dataFile)) {
      // The snapshot is in the log now; keep it aside, never read it again.
      renameSync(this.dataFile, `${this.dataFile}.migrated`);
      console.error('sqs-server: migrated %s into %s (the old file is kept as %s.migrated)', this.dataFile, logFile, this.dataFile);
    }
    await this.log.durable();
  }

  /** Reads the whole-state snapshot (version 1) the server wrote before it kept a log. */
  private restoreSnapshot(file: string): void {
    const snapshot = JSON.parse(readFileSync(file, 'utf8')) as { version: number; receiptHandleKey: string; queues: QueueSnapshot[] };
    if (snapshot.version !== 1) throw new Error(`sqs-server: ${file} has unknown snapshot version ${String(snapshot.version)}`);
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
        const existing = this.queues.get(record.q.name);
        if (existing) {
          existing.attributes = record.q.attributes;
          existing.tags = record.q.tags;
          existing.lastModifiedAt = record.q.lastModifiedAt;
          existing.retentionChanged();
        } else {
          const { name, attributes, tags, createdAt, lastModifiedAt } = record.q;
          this.queues.set(name, new Queue(name, this.arnOf(name), attributes, tags, this.handles, this.journal, createdAt, lastModifiedAt));
        }
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
  private flush(): void {
    if (!this.log || this.pending.length === 0) return;
    const records = this.pending;
    this.pending = [];
    this.log.append(records);
    const live = this.liveItems();
    if (this.log.recordsSinceRewrite > this.compactAfterRecords && this.log.recordsSinceRewrite > 2 * live) this.compact();
  }

  /** Before an answer: the request's changes (and all earlier ones) are with the OS, and with `sync` on stable storage if fsync is on. */
  private async commit(sync: boolean): Promise<void> {
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
}

// ---------------------------------------------------------------- helpers

function readBuffer(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJsonObject(body: string): Json {
  if (body.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw invalidParameter('The request body is not valid JSON.');
  }
  if (!isObject(value)) throw invalidParameter('The request body must be a JSON object.');
  return value;
}

/** Writes a JSON answer; resolves once it is handed to the socket, so close() does not cut it off. */
function respond(res: ServerResponse, status: number, requestId: string, body: Json, headers: Record<string, string> = {}): Promise<void> {
  if (res.destroyed) return Promise.resolve();
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/x-amz-json-1.0',
    'content-length': Buffer.byteLength(json),
    'x-amzn-requestid': requestId,
    ...headers,
  });
  return new Promise((resolve) => {
    res.once('close', resolve);
    res.end(json, resolve);
  });
}

/** The Entries of a batch request, checked as SQS checks them before running any. */
function batchEntries(params: Params): Params[] {
  const entries = params.list('Entries');
  if (entries.length === 0) throw new SqsError('EmptyBatchRequest', 'There should be at least one entry in the request.');
  if (entries.length > MAX_BATCH_ENTRIES) {
    throw new SqsError(
      'TooManyEntriesInBatchRequest',
      `Maximum number of entries per request are ${MAX_BATCH_ENTRIES}. You have sent ${entries.length}.`,
    );
  }
  const ids = new Set<string>();
  for (const entry of entries) {
    const id = entry.requiredString('Id');
    if (!BATCH_ENTRY_ID.test(id)) {
      throw new SqsError(
        'InvalidBatchEntryId',
        'A batch entry id may hold only alphanumerics, hyphens and underscores, at most 80 of them.',
      );
    }
    if (ids.has(id)) throw new SqsError('BatchEntryIdsNotDistinct', `Id ${id} repeated.`);
    ids.add(id);
  }
  return entries;
}

/** Runs each entry on its own: an entry's SqsError becomes its Failed item, the others go on. */
function batchResult(entries: Params[], run: (entry: Params, index: number) => Json): Json {
  const successful: Json[] = [];
  const failed: Json[] = [];
  entries.forEach((entry, index) => {
    const id = entry.requiredString('Id');
    try {
      successful.push({ Id: id, ...run(entry, index) });
    } catch (err) {
      if (!(err instanceof SqsError)) throw err;
      failed.push({ Id: id, SenderFault: true, Code: err.queryCode, Message: err.message });
    }
  });
  return { Successful: successful, Failed: failed };
}
