import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import { STSClient } from '@aws-sdk/client-sts';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import { config } from './config';

/**
 * AWS SDK calls made by this process, by "Service.Command". The benchmark reads it to report
 * calls per task; counting happens in one middleware added to every client built here.
 */
export const sdkCallCounts = new Map<string, number>();
export const resetSdkCallCounts = (): void => sdkCallCounts.clear();

type AnyClient = { middlewareStack: { add: (mw: any, opts: any) => void } };

/**
 * Called with every client built here, before first use. A Lambda registers the X-Ray tracer's
 * capture (lambdas/observability.ts), so core stays free of Lambda-only code; elsewhere it is unset.
 */
type ClientHook = <C extends AnyClient>(client: C) => C;
let clientHook: ClientHook | undefined;
export function onClientCreated(hook: ClientHook | undefined): void {
  clientHook = hook;
}

function counted<C extends AnyClient>(client: C, service: string): C {
  if (clientHook) client = clientHook(client);
  client.middlewareStack.add(
    (next: any, context: any) => (args: any) => {
      const key = `${service}.${String(context.commandName ?? 'Unknown').replace(/Command$/, '')}`;
      sdkCallCounts.set(key, (sdkCallCounts.get(key) ?? 0) + 1);
      return next(args);
    },
    { step: 'initialize', name: 'ferryCallCounter' },
  );
  return client;
}

export interface ClientOptions {
  region?: string;
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
}

export const makeSqsClient = (o: ClientOptions = {}): SQSClient => counted(new SQSClient({ ...o }), 'SQS');
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
export const makeDynamoClient = (o: ClientOptions = {}): DynamoDBDocumentClient =>
  DynamoDBDocumentClient.from(counted(new DynamoDBClient({ ...o }), 'DynamoDB'), {
    marshallOptions: { removeUndefinedValues: true },
  });

// Created once per process (per Lambda container), on first use so that configuration set
// before the first call is the one that counts.
let ddb: DynamoDBDocumentClient | undefined;
let sqs: SQSClient | undefined;
let s3: S3Client | undefined;
let s3Presign: S3Client | undefined;
let sts: STSClient | undefined;
export const dynamo = (): DynamoDBDocumentClient => (ddb ??= makeDynamoClient());
export const sqsClient = (): SQSClient => (sqs ??= makeSqsClient());
export const s3Client = (): S3Client => (s3 ??= makeS3Client());
export const s3PresignClient = (): S3Client => (s3Presign ??= makeS3Client({ presign: true }));
export const stsClient = (): STSClient => (sts ??= counted(new STSClient({}), 'STS'));

/** Drop the cached clients (the local stack calls it after it points the SDK at new servers). */
export function resetClients(): void {
  for (const c of [ddb, sqs, s3, s3Presign, sts]) c?.destroy();
  ddb = sqs = s3 = s3Presign = sts = undefined;
}
