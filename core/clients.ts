import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { STSClient } from '@aws-sdk/client-sts';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import type { InitializeHandlerOptions, InitializeMiddleware, MetadataBearer } from '@smithy/types';
import { config } from './config';
import { DocumentClient } from './document-client';

/**
 * AWS SDK calls made by this process, by "Service.Command". The benchmark reads it to report
 * calls per task; counting happens in one middleware added to every client built here.
 */
export const sdkCallCounts = new Map<string, number>();
/**
 * DynamoDB write capacity consumed by this process, counted only with FERRY_COUNT_CAPACITY=1
 * (the bench): by table name, the table's write plus its indexes'; by "table/index", each
 * index's share. AWS reports it when a write asks for ReturnConsumedCapacity INDEXES, which
 * the counting middleware adds, so a production process never asks and pays nothing.
 * A conditional write that fails consumes capacity on AWS too, but its error carries no
 * figure: those are counted as "conditional-check-failed" (calls, not units).
 */
export const sdkWriteUnits = new Map<string, number>();
export const resetSdkCallCounts = (): void => {
  sdkCallCounts.clear();
  sdkWriteUnits.clear();
};

/** Any AWS SDK v3 client, as far as adding a middleware at the initialize step goes. */
type Middleware = InitializeMiddleware<object, MetadataBearer>;
type AnyClient = { middlewareStack: { add(mw: Middleware, opts: InitializeHandlerOptions): void } };

/**
 * Called with every client built here, before first use. A Lambda registers the X-Ray tracer's
 * capture (lambdas/observability.ts), so core stays free of Lambda-only code; elsewhere it is unset.
 */
type ClientHook = <C extends AnyClient>(client: C) => C;
let clientHook: ClientHook | undefined;
export function onClientCreated(hook: ClientHook | undefined): void {
  clientHook = hook;
}

const WRITE_COMMANDS = /^(PutItem|UpdateItem|DeleteItem|BatchWriteItem|TransactWriteItems)Command$/;

interface ConsumedCapacity {
  TableName?: string;
  CapacityUnits?: number;
  Table?: { CapacityUnits?: number };
  GlobalSecondaryIndexes?: Record<string, { CapacityUnits?: number }>;
  LocalSecondaryIndexes?: Record<string, { CapacityUnits?: number }>;
}

const addUnits = (key: string, units: number) => sdkWriteUnits.set(key, (sdkWriteUnits.get(key) ?? 0) + units);

function recordCapacity(consumed: ConsumedCapacity | ConsumedCapacity[] | undefined): void {
  for (const c of consumed === undefined ? [] : Array.isArray(consumed) ? consumed : [consumed]) {
    const table = c.TableName ?? 'unknown';
    const indexes = { ...c.GlobalSecondaryIndexes, ...c.LocalSecondaryIndexes };
    for (const [name, v] of Object.entries(indexes)) addUnits(`${table}/${name}`, v.CapacityUnits ?? 0);
    // CapacityUnits is the whole write's (table and indexes); Table and the index entries its parts.
    const indexUnits = Object.values(indexes).reduce((n, v) => n + (v.CapacityUnits ?? 0), 0);
    addUnits(table, c.CapacityUnits ?? (c.Table?.CapacityUnits ?? 0) + indexUnits);
  }
}

/** Asks every write for its consumed capacity (table and indexes) and sums it into sdkWriteUnits. */
const capacityCounter: Middleware = (next, context) => async (args) => {
  if (!WRITE_COMMANDS.test(String(context.commandName))) return next(args);
  (args.input as { ReturnConsumedCapacity?: string }).ReturnConsumedCapacity = 'INDEXES';
  try {
    const result = await next(args);
    recordCapacity((result.output as { ConsumedCapacity?: ConsumedCapacity | ConsumedCapacity[] } | undefined)?.ConsumedCapacity);
    return result;
  } catch (err) {
    if (/ConditionalCheckFailed|TransactionCanceled/.test(String((err as { name?: unknown } | undefined)?.name))) {
      addUnits('conditional-check-failed', 1);
    }
    throw err;
  }
};

/** Counts every call by service and command (sdkCallCounts). */
const callCounter =
  (service: string): Middleware =>
  (next, context) =>
  (args) => {
    const key = `${service}.${String(context.commandName ?? 'Unknown').replace(/Command$/, '')}`;
    sdkCallCounts.set(key, (sdkCallCounts.get(key) ?? 0) + 1);
    return next(args);
  };

function counted<C extends AnyClient>(client: C, service: string): C {
  if (clientHook) client = clientHook(client);
  if (service === 'DynamoDB' && /^(1|true|on|yes)$/i.test(process.env.FERRY_COUNT_CAPACITY ?? '')) {
    client.middlewareStack.add(capacityCounter, { step: 'initialize', name: 'ferryCapacityCounter' });
  }
  client.middlewareStack.add(callCounter(service), { step: 'initialize', name: 'ferryCallCounter' });
  return client;
}

export interface ClientOptions {
  region?: string;
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
}

/**
 * The transport of this process's shared DynamoDB client (dynamo()): set by the local stack
 * (local/in-process-http.ts), whose handlers then reach its store in this process, without a
 * socket; unset, the SDK's own HTTP handler. Setting it drops the shared client.
 * With `unsigned`, the client does not sign: a store in this process checks no signature (its
 * callers hold the admin key anyway), and SigV4 was about a sixth of each call's CPU.
 */
let dynamoTransport: { handler: NonNullable<DynamoDBClientConfig['requestHandler']>; unsigned: boolean } | undefined;
export function useDynamoTransport(handler: DynamoDBClientConfig['requestHandler'] | undefined, opts: { unsigned?: boolean } = {}): void {
  dynamoTransport = handler ? { handler, unsigned: opts.unsigned ?? false } : undefined;
  ddb?.destroy();
  ddb = undefined;
}

/** A signer that leaves the request as it is (useDynamoTransport's `unsigned`, useSqsTransport). */
const NOT_SIGNED: NonNullable<DynamoDBClientConfig['signer'] & SQSClientConfig['signer']> = { sign: (request) => Promise.resolve(request) };

/**
 * The transport of this process's shared SQS client (sqsClient()), as useDynamoTransport's: set by
 * the local stack, whose handlers then reach its queues in this process, unsigned.
 */
let sqsTransport: NonNullable<SQSClientConfig['requestHandler']> | undefined;
export function useSqsTransport(handler: SQSClientConfig['requestHandler'] | undefined): void {
  sqsTransport = handler;
  sqs?.destroy();
  sqs = undefined;
}

/**
 * Clients resolve their middleware stack once per command type (`cacheMiddleware`), not on every
 * call: about a fifth of an in-process call's SDK time. Middleware is added before first use
 * (counted()), as the cache requires.
 */
export const makeSqsClient = (o: ClientOptions & Pick<SQSClientConfig, 'requestHandler' | 'signer'> = {}): SQSClient =>
  counted(new SQSClient({ ...o, cacheMiddleware: true }), 'SQS');
export const makeS3Client = (o: ClientOptions & { presign?: boolean } = {}): S3Client =>
  counted(
    new S3Client({
      region: o.region,
      credentials: o.credentials,
      forcePathStyle: config().s3ForcePathStyle,
      // Presigned URLs are used by plain HTTP clients that send no checksum headers.
      ...(o.presign ? { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' } : {}),
    }),
    'S3',
  );
export const makeDynamoClient = (o: ClientOptions & Pick<DynamoDBClientConfig, 'requestHandler' | 'signer'> = {}): DocumentClient =>
  new DocumentClient(counted(new DynamoDBClient({ ...o, cacheMiddleware: true }), 'DynamoDB'));

/**
 * A client of a server in this process (useDynamoTransport, useSqsTransport) sends no User-Agent:
 * nothing here reads it, and building it was a tenth of each in-process call.
 */
function inProcess<C extends { middlewareStack: { remove(name: string): boolean } }>(client: C): C {
  client.middlewareStack.remove('getUserAgentMiddleware');
  return client;
}

// Created once per process (per Lambda container), on first use so that configuration set
// before the first call is the one that counts.
let ddb: DocumentClient | undefined;
let sqs: SQSClient | undefined;
let s3: S3Client | undefined;
let s3Presign: S3Client | undefined;
let sts: STSClient | undefined;
export function dynamo(): DocumentClient {
  if (!ddb) {
    const t = dynamoTransport;
    ddb = makeDynamoClient(t ? { requestHandler: t.handler, ...(t.unsigned ? { signer: NOT_SIGNED } : {}) } : {});
    if (t) inProcess(ddb.client);
  }
  return ddb;
}
export const sqsClient = (): SQSClient =>
  (sqs ??= sqsTransport ? inProcess(makeSqsClient({ requestHandler: sqsTransport, signer: NOT_SIGNED })) : makeSqsClient());
export const s3Client = (): S3Client => (s3 ??= makeS3Client());
export const s3PresignClient = (): S3Client => (s3Presign ??= makeS3Client({ presign: true }));
export const stsClient = (): STSClient => (sts ??= counted(new STSClient({}), 'STS'));

/** Drop the cached clients (the local stack calls it after it points the SDK at new servers). */
export function resetClients(): void {
  for (const c of [ddb, sqs, s3, s3Presign, sts]) c?.destroy();
  ddb = sqs = s3 = s3Presign = sts = undefined;
}
