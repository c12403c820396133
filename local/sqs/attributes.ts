/**
 * Queue attributes: which ones the local SQS server keeps, how each given value is checked and
 * normalised as SQS does, and the typed settings a queue runs on. Attributes SQS has but nothing
 * in Ferry sets (delays, KMS keys, FIFO, redrive-allow policies) are refused, never ignored, so a
 * change that starts to rely on one fails a local test instead of passing it untried.
 */
import { MAX_VISIBILITY_SECONDS, SqsError, invalidParameter, isObject, notSupported } from './protocol';

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

export interface RedrivePolicy {
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

export const QUEUE_ATTRIBUTES: Record<string, AttributeSpec> = {
  MaximumMessageSize: integerIn(1024, 1_048_576, '262144'), // SQS: 1 KiB to 1 MiB, 256 KiB by default
  MessageRetentionPeriod: integerIn(60, 1_209_600, '345600'), // SQS: 1 minute to 14 days, 4 days by default
  VisibilityTimeout: integerIn(0, MAX_VISIBILITY_SECONDS, '30'),
  SqsManagedSseEnabled: booleanText('true'), // SQS: SSE-SQS is on for new queues since 2022
  // Kept and returned as given, not evaluated: the local stack speaks plain HTTP on loopback, so
  // the TLS-only statement every Ferry queue carries (aws:SecureTransport false -> Deny) would deny
  // every request here, and treating loopback as "secure" would test nothing. Access is decided by
  // the identity policies of local/iam.ts, as the deployed worker role's; TLS is AWS's to enforce.
  Policy: jsonText,
  RedrivePolicy: redrivePolicy,
};

/** SQS attributes this server refuses: nothing in Ferry sets or reads them. */
const UNSUPPORTED_ATTRIBUTES = new Set([
  'DelaySeconds',
  'ReceiveMessageWaitTimeSeconds',
  'KmsMasterKeyId',
  'KmsDataKeyReusePeriodSeconds',
  'RedriveAllowPolicy',
  'FifoQueue',
  'ContentBasedDeduplication',
  'DeduplicationScope',
  'FifoThroughputLimit',
  'ApproximateNumberOfMessagesDelayed',
  'CreatedTimestamp',
  'LastModifiedTimestamp',
]);

/** What GetQueueAttributes reports beside the stored attributes. */
const COMPUTED_ATTRIBUTES = new Set(['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'QueueArn']);

/** Checks attribute names a receiver asked GetQueueAttributes for. */
export function checkAttributeName(name: string): void {
  if (UNSUPPORTED_ATTRIBUTES.has(name)) throw notSupported(`The queue attribute ${name}`);
  if (name !== 'All' && !Object.hasOwn(QUEUE_ATTRIBUTES, name) && !COMPUTED_ATTRIBUTES.has(name))
    throw new SqsError('InvalidAttributeName', `Unknown Attribute ${name}.`);
}

/** Validates and normalises attributes given to CreateQueue or SetQueueAttributes. */
export function normalizeQueueAttributes(attributes: Record<string, string>): Record<string, string> {
  const normalized: Record<string, string> = {};
  for (const [name, value] of Object.entries(attributes)) {
    if (UNSUPPORTED_ATTRIBUTES.has(name)) throw notSupported(`The queue attribute ${name}`);
    const spec = Object.hasOwn(QUEUE_ATTRIBUTES, name) ? QUEUE_ATTRIBUTES[name] : undefined;
    if (!spec) throw new SqsError('InvalidAttributeName', `Unknown Attribute ${name}.`);
    normalized[name] = spec.normalize(value, name);
  }
  return normalized;
}

/** A new queue's attributes: the defaults, then those given (normalised). */
export function initialAttributes(given: Record<string, string>): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const [name, spec] of Object.entries(QUEUE_ATTRIBUTES)) if (spec.initial !== undefined) attributes[name] = spec.initial;
  Object.assign(attributes, given);
  if (attributes.RedrivePolicy === '') delete attributes.RedrivePolicy;
  return attributes;
}

/** Attributes read back from the log, less any an older server kept and this one no longer does. */
export function storedAttributes(logged: Record<string, string>): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const [name, value] of Object.entries(logged)) if (Object.hasOwn(QUEUE_ATTRIBUTES, name)) attributes[name] = value;
  return attributes;
}

/** Attributes after SetQueueAttributes: an empty value removes an attribute that has no default. */
export function mergeAttributes(current: Record<string, string>, given: Record<string, string>): Record<string, string> {
  const next = { ...current, ...given };
  for (const [name, value] of Object.entries(given)) {
    if (value === '' && QUEUE_ATTRIBUTES[name]!.initial === undefined) delete next[name];
  }
  return next;
}

/** The settings a queue runs on, parsed once from its attributes (not on each receive). */
export interface QueueSettings {
  visibilityTimeoutSeconds: number;
  maximumMessageBytes: number;
  retentionMs: number;
  redrive?: RedrivePolicy;
}

export function settingsOf(attributes: Record<string, string>): QueueSettings {
  const policy = attributes.RedrivePolicy;
  return {
    visibilityTimeoutSeconds: Number(attributes.VisibilityTimeout),
    maximumMessageBytes: Number(attributes.MaximumMessageSize),
    retentionMs: Number(attributes.MessageRetentionPeriod) * 1000,
    redrive: policy ? (JSON.parse(policy) as RedrivePolicy) : undefined,
  };
}
