import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { resetClients } from '../core/clients';
import { config, resetConfig } from '../core/config';
import { sweepDeadLetters } from '../core/lost-tasks';
import { issueUserToken } from '../core/tables/tokens';
import { handler as resultsHandler } from '../lambdas/results';
import { startApiServer, type ApiServer } from './api-server';
import { createTables, startDynamoServer, type DynamoServer } from './dynamo';
import { startSqsEventSource, type EventSource } from './event-source';
import { startS3Server, type S3Server } from './s3-server';
import { startSqsServer, type SqsServer } from './sqs-server';

export interface LocalStackOptions {
  /** Keep data on disk here; in memory when absent. */
  dataDir?: string;
  apiPort?: number;
  /** Fixed ports for the AWS servers; needed with `dataDir`, since stored queue URLs name their port. */
  ports?: { dynamodb?: number; sqs?: number; s3?: number };
  stage?: string;
  /** How often endpoint dead-letter queues are swept for lost tasks (AWS: every minute). */
  sweepIntervalMs?: number;
  /** Seconds the API stand-in reuses an authorizer answer, like API Gateway's cache; default 30. */
  authorizerCacheSeconds?: number;
  /** Extra FERRY_* settings, e.g. FERRY_INLINE_LIMIT. */
  settings?: Record<string, string>;
}

export interface LocalStack {
  apiUrl: string;
  /** Environment for a process (a worker agent, a test) that talks to this stack's AWS servers. */
  awsEnv: Record<string, string>;
  createUser(userId: string, ttlSeconds?: number): Promise<string>;
  close(): Promise<void>;
}

const REGION = 'us-east-1';

/**
 * The whole of Ferry on loopback: DynamoDB, S3 and SQS servers, the API, the results event
 * source and the dead-letter sweep, all wired through the same environment variables the
 * deployed Lambdas read. The handlers run in this process, so it points this process's
 * environment at the servers; one stack per process.
 */
export async function startLocalStack(opts: LocalStackOptions = {}): Promise<LocalStack> {
  if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const disk = (name: string) => (opts.dataDir ? join(opts.dataDir, name) : undefined);
  const started: { close(): Promise<void> }[] = [];
  try {
    const dynamo: DynamoServer = await startDynamoServer({ dataDir: disk('dynamodb'), port: opts.ports?.dynamodb });
    started.push(dynamo);
    const sqsServer: SqsServer = await startSqsServer({ dataFile: disk('sqs.json'), region: REGION, port: opts.ports?.sqs });
    started.push(sqsServer);
    const stage = opts.stage ?? 'local';
    const bucket = `ferry-${stage}-payloads`;
    const s3Server: S3Server = await startS3Server({ dataDir: disk('s3'), buckets: [bucket], port: opts.ports?.s3 });
    started.push(s3Server);

    const awsEnv: Record<string, string> = {
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: 'ferry-local',
      AWS_SECRET_ACCESS_KEY: 'ferry-local',
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.url,
      AWS_ENDPOINT_URL_SQS: sqsServer.url,
      AWS_ENDPOINT_URL_S3: s3Server.url,
      FERRY_S3_FORCE_PATH_STYLE: 'true',
      FERRY_STAGE: stage,
      FERRY_BUCKET: bucket,
      ...opts.settings,
    };
    Object.assign(process.env, awsEnv);
    delete process.env.AWS_PROFILE;
    delete process.env.AWS_SESSION_TOKEN;
    resetConfig();
    resetClients();
    const cfg = config();

    const ddb = new DynamoDBClient({});
    await createTables(ddb, cfg);
    ddb.destroy();
    const s3 = new S3Client({ forcePathStyle: true });
    await s3.send(new CreateBucketCommand({ Bucket: bucket })).catch((err) => {
      if (!/BucketAlready/.test(err?.name ?? '')) throw err;
    });
    s3.destroy();

    const sqs = new SQSClient({});
    const resultsDlq = await sqs.send(new CreateQueueCommand({ QueueName: `ferry-${stage}-results-dlq`, Attributes: { MessageRetentionPeriod: String(14 * 86400) } }));
    const dlqArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: resultsDlq.QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
    const results = await sqs.send(
      new CreateQueueCommand({
        QueueName: `ferry-${stage}-results`,
        Attributes: { VisibilityTimeout: '30', RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 5 }) },
      }),
    );
    const resultsArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: results.QueueUrl, AttributeNames: ['QueueArn'] }))).Attributes!.QueueArn!;
    awsEnv.FERRY_RESULTS_QUEUE_URL = results.QueueUrl!;
    process.env.FERRY_RESULTS_QUEUE_URL = results.QueueUrl!;
    resetConfig();

    const api: ApiServer = await startApiServer({ port: opts.apiPort, authorizerCacheSeconds: opts.authorizerCacheSeconds });
    started.push(api);
    const source: EventSource = startSqsEventSource({ sqs, queueUrl: results.QueueUrl!, queueArn: resultsArn, handler: resultsHandler, waitSeconds: 20 });
    started.push({ close: () => source.stop() });

    let sweeping = Promise.resolve();
    const sweep = setInterval(() => {
      sweeping = sweeping.then(() => sweepDeadLetters().then(() => undefined, (err) => console.error('dead-letter sweep failed', String(err))));
    }, opts.sweepIntervalMs ?? 5000);
    started.push({ close: async () => (clearInterval(sweep), await sweeping) });

    return {
      apiUrl: api.url,
      awsEnv,
      createUser: async (userId, ttlSeconds) => (await issueUserToken(userId, ttlSeconds)).token,
      close: async () => {
        for (const s of started.reverse()) await s.close();
        resetClients();
        sqs.destroy();
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
}
