import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateQueueCommand, DeleteQueueCommand, GetQueueAttributesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { resetClients, useDynamoTransport, useSqsTransport } from '../core/clients';
import { config, resetConfig } from '../core/config';
import { sweepDeadLetters, sweepUndeliverable } from '../core/lost-tasks';
import { issueUserToken } from '../core/tables/tokens';
import { handler as resultsHandler } from '../lambdas/results';
import { startApiServer, type ApiServer } from './api-server';
import { CredentialRegistry, newAccessKey, type AccessKey } from './credential-registry';
import { LOCAL_ACCOUNT_ID, LocalIam } from './iam';
import { startStsServer, type StsServer } from './sts-server';
import { createTables, startDynamoServer, type DynamoServer } from './dynamo';
import { InProcessHttpHandler } from './in-process-http';
import { startSqsEventSource, type EventSource } from './event-source';
import { startS3Server, type S3Server } from './s3/server';
import { startSqsServer, type SqsServer } from './sqs/server';

export interface LocalStackOptions {
  /** Keep data on disk here; in memory when absent. */
  dataDir?: string;
  apiPort?: number;
  /** Fixed ports for the AWS servers; needed with `dataDir`, since stored queue URLs name their port. */
  ports?: { dynamodb?: number; sqs?: number; s3?: number; sts?: number };
  stage?: string;
  /** How often endpoint dead-letter queues are swept for lost tasks, and open tasks for undeliverable ones (AWS: every minute). */
  sweepIntervalMs?: number;
  /** Seconds the API stand-in reuses an authorizer answer, like API Gateway's cache; default 30. */
  authorizerCacheSeconds?: number;
  /** Extra FERRY_* settings, e.g. FERRY_INLINE_LIMIT. */
  settings?: Record<string, string>;
}

export interface LocalStack {
  apiUrl: string;
  /** Environment for a process (a test, an operator's script) that talks to this stack's AWS servers with its admin credentials. */
  awsEnv: Record<string, string>;
  /**
   * Environment for a worker agent: where the AWS servers are, and no AWS credentials at all.
   * An agent works only with the credentials it is vended for its endpoint.
   */
  workerEnv: Record<string, string>;
  /** The admin credentials file (`aws.json` under the data dir), when there is a data dir. */
  adminCredentialsFile?: string;
  createUser(userId: string, ttlSeconds?: number): Promise<string>;
  /**
   * The local equivalent of destroying and deploying the service stack (`cdk destroy` then
   * `cdk deploy` of Ferry-<stage>-Service): stop the API, the results event source and the sweep,
   * delete the results queue and its DLQ (the service stack's own queues, with any result still in
   * them), then make them and start the rest again. What the data stack and the endpoint records
   * own stays: tables, bucket, endpoint queues and their messages. The API keeps its port (a
   * redeployed HTTP API gets a new URL; agents must then be pointed at it and restarted).
   */
  redeployService(): Promise<void>;
  close(): Promise<void>;
}

const REGION = 'us-east-1';

/**
 * The admin credentials file: the stack's own AWS key and where its servers listen, so an
 * operator's tool can reach the local DynamoDB, SQS, S3 and STS as the account's admin.
 */
export interface AdminCredentialsFile {
  region: string;
  access_key_id: string;
  secret_access_key: string;
  endpoints: { dynamodb: string; sqs: string; s3: string; sts: string };
}

/** The admin key kept in `file` (made on first use), or a fresh one per stack without a data dir. */
function adminKey(file: string | undefined): AccessKey {
  if (file && existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as Partial<AdminCredentialsFile>;
    if (saved.access_key_id && saved.secret_access_key)
      return { accessKeyId: saved.access_key_id, secretAccessKey: saved.secret_access_key };
  }
  return newAccessKey();
}

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
    const stage = opts.stage ?? 'local';
    const bucket = `ferry-${stage}-payloads`;
    const resultsQueueName = `ferry-${stage}-results`;
    const adminFile = disk('aws.json');
    const admin = adminKey(adminFile);
    // One IAM for every server: the admin key, the STS sessions (kept on disk across restarts), the worker role's policy.
    const iam = new LocalIam(new CredentialRegistry(admin, { sessionsFile: disk('sts-sessions.json') }), {
      region: REGION,
      stage,
      bucket,
      resultsQueueName,
    });

    const dynamo: DynamoServer = await startDynamoServer({ dataDir: disk('dynamodb'), port: opts.ports?.dynamodb, iam });
    started.push(dynamo);
    const sqsServer: SqsServer = await startSqsServer({ dataFile: disk('sqs.json'), region: REGION, port: opts.ports?.sqs, iam });
    started.push(sqsServer);
    const s3Server: S3Server = await startS3Server({ dataDir: disk('s3'), buckets: [bucket], port: opts.ports?.s3, iam });
    started.push(s3Server);
    const stsServer: StsServer = await startStsServer({ iam, port: opts.ports?.sts });
    started.push(stsServer);
    if (adminFile) {
      const file: AdminCredentialsFile = {
        region: REGION,
        access_key_id: admin.accessKeyId,
        secret_access_key: admin.secretAccessKey,
        endpoints: { dynamodb: dynamo.url, sqs: sqsServer.url, s3: s3Server.url, sts: stsServer.url },
      };
      // The account's admin key: readable by its owner only.
      writeFileSync(adminFile, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
      chmodSync(adminFile, 0o600);
    }

    const workerEnv: Record<string, string> = {
      AWS_REGION: REGION,
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.url,
      AWS_ENDPOINT_URL_SQS: sqsServer.url,
      AWS_ENDPOINT_URL_S3: s3Server.url,
      AWS_ENDPOINT_URL_STS: stsServer.url,
      FERRY_S3_FORCE_PATH_STYLE: 'true',
      FERRY_STAGE: stage,
      FERRY_BUCKET: bucket,
      ...opts.settings,
    };
    const awsEnv: Record<string, string> = {
      ...workerEnv,
      AWS_ACCESS_KEY_ID: admin.accessKeyId,
      AWS_SECRET_ACCESS_KEY: admin.secretAccessKey,
    };
    // This process runs the Lambdas: admin credentials, and the worker role the credentials handler
    // assumes and whose sessions the results handler believes (its unique id, as in AWS).
    Object.assign(process.env, awsEnv, { FERRY_WORKER_ROLE_ARN: iam.workerRole.arn, FERRY_WORKER_ROLE_ID: iam.workerRole.roleId });
    delete process.env.AWS_PROFILE;
    delete process.env.AWS_SESSION_TOKEN;
    resetConfig();
    resetClients();
    // This process's handlers reach the store directly: the admin's calls need no socket, signature or check of one.
    useDynamoTransport(new InProcessHttpHandler(dynamo.direct), { unsigned: true });
    useSqsTransport(new InProcessHttpHandler(sqsServer.direct));
    const cfg = config();

    const ddb = new DynamoDBClient({});
    await createTables(ddb, cfg, opts.dataDir);
    ddb.destroy();

    const sqs = new SQSClient({});
    const resultsDlqName = `ferry-${stage}-results-dlq`;
    // What the service stack owns: its results queues, the API, the event source and the sweep.
    const startService = async (apiPort: number | undefined): Promise<{ api: ApiServer; stop(): Promise<void> }> => {
      const resultsDlq = await sqs.send(
        new CreateQueueCommand({ QueueName: resultsDlqName, Attributes: { MessageRetentionPeriod: String(14 * 86400) } }),
      );
      const dlqArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: resultsDlq.QueueUrl, AttributeNames: ['QueueArn'] })))
        .Attributes!.QueueArn!;
      const results = await sqs.send(
        new CreateQueueCommand({
          QueueName: resultsQueueName,
          Attributes: { VisibilityTimeout: '30', RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 5 }) },
        }),
      );
      const resultsArn = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl: results.QueueUrl, AttributeNames: ['QueueArn'] })))
        .Attributes!.QueueArn!;
      awsEnv.FERRY_RESULTS_QUEUE_URL = workerEnv.FERRY_RESULTS_QUEUE_URL = results.QueueUrl!;
      process.env.FERRY_RESULTS_QUEUE_URL = results.QueueUrl!;
      resetConfig();

      const parts: { close(): Promise<void> }[] = [];
      try {
        const api: ApiServer = await startApiServer({ port: apiPort, authorizerCacheSeconds: opts.authorizerCacheSeconds });
        parts.push(api);
        const source: EventSource = startSqsEventSource({
          sqs,
          queueUrl: results.QueueUrl!,
          queueArn: resultsArn,
          handler: resultsHandler,
          waitSeconds: 20,
        });
        parts.push({ close: () => source.stop() });

        // The scheduled LostTasksSweep Lambda of infra/: dead letters, then tasks that can no longer be delivered.
        let sweeping = Promise.resolve();
        const sweep = setInterval(() => {
          sweeping = sweeping.then(async () => {
            await sweepDeadLetters().catch((err) => console.error('dead-letter sweep failed', String(err)));
            await sweepUndeliverable().catch((err) => console.error('undeliverable-task sweep failed', String(err)));
          });
        }, opts.sweepIntervalMs ?? 5000);
        parts.push({ close: async () => (clearInterval(sweep), await sweeping) });
        return {
          api,
          stop: async () => {
            for (const p of parts.reverse()) await p.close();
          },
        };
      } catch (err) {
        for (const p of parts.reverse()) await p.close().catch(() => undefined);
        throw err;
      }
    };
    let service = await startService(opts.apiPort);
    started.push({ close: () => service.stop() });
    const api = service.api;

    return {
      apiUrl: api.url,
      awsEnv,
      workerEnv,
      adminCredentialsFile: adminFile,
      createUser: async (userId, ttlSeconds) => (await issueUserToken(userId, ttlSeconds)).token,
      redeployService: async () => {
        await service.stop();
        for (const name of [resultsQueueName, resultsDlqName]) {
          await sqs.send(new DeleteQueueCommand({ QueueUrl: `${sqsServer.url}/${LOCAL_ACCOUNT_ID}/${name}` }));
        }
        service = await startService(service.api.port);
      },
      close: async () => {
        for (const s of started.reverse()) await s.close();
        useDynamoTransport(undefined);
        useSqsTransport(undefined);
        resetClients();
        sqs.destroy();
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    useDynamoTransport(undefined);
    useSqsTransport(undefined);
    throw err;
  }
}
