/**
 * The wire side of the local SQS server: the AWS JSON 1.0 protocol that @aws-sdk/client-sqs
 * speaks (`POST /` with `X-Amz-Target: AmazonSQS.<Action>`, a JSON object each way), the error
 * shapes SQS answers with, and the checks SQS makes on a request's parameters and batches
 * before any of it runs.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthFailure } from '../sigv4';

// ---------------------------------------------------------------- limits (AWS quotas)

export const MAX_BATCH_ENTRIES = 10; // SQS: 10 entries per batch request
export const MAX_BATCH_PAYLOAD = 1_048_576; // SQS: 1 MiB for all messages of a batch together
export const MAX_RECEIVE = 10; // SQS: 10 messages per ReceiveMessage
export const MAX_WAIT_SECONDS = 20; // SQS: long polls wait at most 20 s
export const MAX_VISIBILITY_SECONDS = 43_200; // SQS: 12 hours of visibility timeout
export const MAX_LIST_RESULTS = 1000; // SQS: ListQueues returns at most 1000 URLs
export const MAX_TAGS = 50; // SQS: 50 tags per queue
const BATCH_ENTRY_ID = /^[A-Za-z0-9_-]{1,80}$/; // SQS: up to 80 alphanumerics, hyphens, underscores

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
export const AUTH_ERRORS: Record<AuthFailure, ErrorShape> = {
  missing: 'MissingAuthenticationToken',
  malformed: 'IncompleteSignature',
  'unknown-key': 'InvalidClientTokenId',
  'bad-signature': 'SignatureDoesNotMatch',
  skewed: 'SignatureDoesNotMatch',
  expired: 'ExpiredToken',
};

export class SqsError extends Error {
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

export const invalidParameter = (message: string) => new SqsError('InvalidParameterValueException', message);
export const queueDoesNotExist = () => new SqsError('QueueDoesNotExist', 'The specified queue does not exist.');
/** A part of SQS this server leaves out because nothing in Ferry uses it: refused, never ignored. */
export const notSupported = (what: string) => new SqsError('UnsupportedOperation', `${what} is not supported by the local SQS server.`);

// ---------------------------------------------------------------- request parameters

export type Json = Record<string, unknown>;

/** Typed access to one JSON request object, raising the errors SQS raises. */
export class Params {
  constructor(private readonly input: Json) {}

  has(name: string): boolean {
    const value = this.input[name];
    return value !== undefined && value !== null;
  }

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

  list(name: string): Params[] {
    const value = this.input[name] ?? [];
    if (!Array.isArray(value) || !value.every(isObject)) throw invalidParameter(`Value for parameter ${name} must be a list of objects.`);
    return value.map((entry) => new Params(entry));
  }
}

export function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// ---------------------------------------------------------------- batches

/** The Entries of a batch request, checked as SQS checks them before running any. */
export function batchEntries(params: Params): Params[] {
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

/**
 * Runs each entry on its own: an entry's SqsError becomes its Failed item, the others go on.
 * `run` returns a fresh object for the entry's Successful item; its Id is added to it.
 */
export function batchResult(entries: Params[], run: (entry: Params, index: number) => Json): Json {
  const successful: Json[] = [];
  const failed: Json[] = [];
  for (let index = 0; index < entries.length; index++) {
    const entry = entries[index]!;
    const id = entry.requiredString('Id');
    try {
      const item = run(entry, index);
      item.Id = id;
      successful.push(item);
    } catch (err) {
      if (!(err instanceof SqsError)) throw err;
      failed.push({ Id: id, SenderFault: true, Code: err.queryCode, Message: err.message });
    }
  }
  return { Successful: successful, Failed: failed };
}

// ---------------------------------------------------------------- HTTP

const TARGET_PREFIX = 'AmazonSQS.';

/** The action an `X-Amz-Target` header names; '' when it names none. */
export function actionOf(target: string | string[] | undefined): string {
  return typeof target === 'string' && target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : '';
}

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** The request's parameters: its body, a JSON object (an empty body is an empty object). */
export function parseRequest(body: Buffer): Params {
  const text = body.toString('utf8');
  if (text.trim() === '') return new Params({});
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalidParameter('The request body is not valid JSON.');
  }
  if (!isObject(value)) throw invalidParameter('The request body must be a JSON object.');
  return new Params(value);
}

/** One answer, before it is written anywhere: the HTTP server writes it to its socket, the in-process path hands it back. */
export interface SqsAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A JSON answer. */
export function answer(status: number, requestId: string, body: Json, headers: Record<string, string> = {}): SqsAnswer {
  const json = JSON.stringify(body);
  return {
    status,
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'content-length': String(Buffer.byteLength(json)),
      'x-amzn-requestid': requestId,
      ...headers,
    },
    body: json,
  };
}

/** An error as SQS answers it, with the legacy query code the SDK maps back to its exception class. */
export function errorAnswer(requestId: string, error: SqsError): SqsAnswer {
  // Errors every AWS service shares come from the common namespace, the queue's own from SQS's.
  const namespace = COMMON_ERRORS.has(error.shape) ? 'com.amazon.coral.service' : 'com.amazonaws.sqs';
  return answer(
    error.status,
    requestId,
    { __type: `${namespace}#${error.shape}`, message: error.message },
    { 'x-amzn-query-error': `${error.queryCode};${error.status >= 500 ? 'Receiver' : 'Sender'}` },
  );
}

/** Writes an answer; resolves once it is handed to the socket, so close() does not cut it off. */
export function respond(res: ServerResponse, out: SqsAnswer): Promise<void> {
  if (res.destroyed) return Promise.resolve();
  res.writeHead(out.status, out.headers);
  return new Promise((resolve) => {
    res.once('close', resolve);
    res.end(out.body, resolve);
  });
}
