import { jsonEnvelope } from '../helpers/envelope';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DynamoDBClient, GetItemCommand, ListTablesCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { AssumeRoleCommand, STSClient } from '@aws-sdk/client-sts';
import type { AwsCredentialIdentity } from '@aws-sdk/types';
import { argsKey, endpointPrefix } from '../../core/bucket';
import { resetClients, sqsClient } from '../../core/clients';
import { resetConfig } from '../../core/config';
import { putBytes } from '../../core/bucket';
import type { ResultMessage } from '../../core/messages';
import { startLocalStack, type AdminCredentialsFile, type LocalStack } from '../../local/stack';
import { caller, eventually, vendedCredentials } from '../helpers/api';
import type { WorkerGrant } from '../../core/credentials';

/**
 * The local AWS servers enforce what IAM enforces in AWS: SigV4 against known keys, and for
 * credentials vended to an endpoint exactly the worker role's rights. The results handler
 * believes a report only from the sender's endpoint (SQS SenderId), never from its body.
 */

jest.setTimeout(60_000);

let stack: LocalStack;
let alice: ReturnType<typeof caller>;
let a: Endpoint;
let b: Endpoint;
let fnId: string;

interface Endpoint {
  id: string;
  secret: string;
  grant: WorkerGrant;
  credentials: AwsCredentialIdentity;
  sqs: SQSClient;
  s3: S3Client;
}

const region = 'us-east-1';

async function endpoint(name: string): Promise<Endpoint> {
  const ep = await alice('POST', '/v1/endpoints', { name });
  expect(ep.status).toBe(201);
  const { endpoint_id: id, endpoint_secret: secret } = ep.body;
  const { grant, credentials } = await vendedCredentials(stack.apiUrl, id, secret);
  return {
    id,
    secret,
    grant,
    credentials,
    sqs: new SQSClient({ region, credentials }),
    s3: new S3Client({ region, credentials, forcePathStyle: true }),
  };
}

/** The error name (AWS error code) a call is refused with, or undefined if it succeeds. */
async function refusal(call: Promise<unknown>): Promise<string | undefined> {
  try {
    await call;
    return undefined;
  } catch (err) {
    return (err as { name?: string }).name ?? String(err);
  }
}

const view = async (taskId: string) => (await alice('GET', `/v1/tasks/${taskId}`)).body;

async function submit(endpointId: string): Promise<string> {
  const sub = await alice('POST', `/v1/endpoints/${endpointId}/submit`, { tasks: [{ function_id: fnId, args: [1, 1] }] });
  expect(sub.status).toBe(202);
  return sub.body.task_ids[0];
}

async function report(from: Endpoint, msg: ResultMessage): Promise<void> {
  await from.sqs.send(new SendMessageCommand({ QueueUrl: from.grant.results_queue_url, MessageBody: JSON.stringify(msg) }));
}

/** Until the results handler has taken every message off the results queue. */
async function resultsDrained(): Promise<void> {
  await eventually(
    async () => {
      const q = await sqsClient().send(
        new GetQueueAttributesCommand({
          QueueUrl: a.grant.results_queue_url,
          AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
        }),
      );
      return Number(q.Attributes!.ApproximateNumberOfMessages) + Number(q.Attributes!.ApproximateNumberOfMessagesNotVisible) === 0;
    },
    15_000,
    'the results queue to drain',
  );
}

beforeAll(async () => {
  stack = await startLocalStack({ authorizerCacheSeconds: 0, settings: { FERRY_INLINE_LIMIT: '1024' } });
  alice = caller(stack.apiUrl, await stack.createUser('alice'));
  fnId = (await alice('POST', '/v1/functions', { name: 'add', runtime: 'node', source: '(a, b) => a + b' })).body.function_id;
  a = await endpoint('a');
  b = await endpoint('b');
});
afterAll(async () => {
  for (const e of [a, b]) {
    e?.sqs.destroy();
    e?.s3.destroy();
  }
  await stack?.close();
});

describe("an endpoint's vended credentials", () => {
  it('are those of a role session (STS AssumeRole), not the admin key', () => {
    expect(a.credentials.accessKeyId).toMatch(/^ASIA[A-Z2-7]{16}$/);
    expect(a.credentials.sessionToken).toBeTruthy();
    expect(a.credentials.accessKeyId).not.toBe(stack.awsEnv.AWS_ACCESS_KEY_ID);
    expect(new Date(a.grant.credentials.expiration).getTime()).toBeGreaterThan(Date.now());
  });

  it('reach their own queue and the results queue, and no other queue or SQS action', async () => {
    const taskId = await submit(a.id);
    const own = await a.sqs.send(new ReceiveMessageCommand({ QueueUrl: a.grant.queue_url, WaitTimeSeconds: 5 }));
    expect(own.Messages?.[0]?.Body).toContain(taskId);
    const receipt = own.Messages![0]!.ReceiptHandle!;
    expect(
      await refusal(
        a.sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: a.grant.queue_url, ReceiptHandle: receipt, VisibilityTimeout: 0 })),
      ),
    ).toBeUndefined();
    expect(
      await refusal(a.sqs.send(new SendMessageCommand({ QueueUrl: a.grant.results_queue_url, MessageBody: '{"not":"a result"}' }))),
    ).toBeUndefined();
    // An endpoint manager reads its own queue's depth to scale its blocks.
    expect(
      await refusal(
        a.sqs.send(new GetQueueAttributesCommand({ QueueUrl: a.grant.queue_url, AttributeNames: ['ApproximateNumberOfMessages'] })),
      ),
    ).toBeUndefined();

    const bQueue = b.grant.queue_url;
    const refused = {
      receiveFromOther: await refusal(a.sqs.send(new ReceiveMessageCommand({ QueueUrl: bQueue, WaitTimeSeconds: 0 }))),
      deleteOnOther: await refusal(
        a.sqs.send(new DeleteMessageBatchCommand({ QueueUrl: bQueue, Entries: [{ Id: '0', ReceiptHandle: receipt }] })),
      ),
      receiveFromOwnDlq: await refusal(a.sqs.send(new ReceiveMessageCommand({ QueueUrl: a.grant.dlq_url, WaitTimeSeconds: 0 }))),
      sendToOwnQueue: await refusal(a.sqs.send(new SendMessageCommand({ QueueUrl: a.grant.queue_url, MessageBody: '{}' }))),
      sendBatchToOther: await refusal(
        a.sqs.send(new SendMessageBatchCommand({ QueueUrl: bQueue, Entries: [{ Id: '0', MessageBody: '{}' }] })),
      ),
      listQueues: await refusal(a.sqs.send(new ListQueuesCommand({}))),
      getQueueUrl: await refusal(a.sqs.send(new GetQueueUrlCommand({ QueueName: `ferry-local-ep-${b.id}` }))),
      getOtherQueueAttributes: await refusal(a.sqs.send(new GetQueueAttributesCommand({ QueueUrl: bQueue, AttributeNames: ['All'] }))),
      getResultsQueueAttributes: await refusal(
        a.sqs.send(new GetQueueAttributesCommand({ QueueUrl: a.grant.results_queue_url, AttributeNames: ['All'] })),
      ),
      createQueue: await refusal(a.sqs.send(new CreateQueueCommand({ QueueName: 'mine' }))),
    };
    expect(refused).toEqual(Object.fromEntries(Object.keys(refused).map((k) => [k, 'AccessDenied'])));
  });

  it('reach objects under their own payload prefix only', async () => {
    const bKey = argsKey(b.id, 'some-task');
    await putBytes(bKey, Buffer.from('b secret'));
    const ownKey = `${endpointPrefix(a.id)}t1/result`;
    expect(a.grant.prefix).toBe(endpointPrefix(a.id));
    expect(await refusal(a.s3.send(new PutObjectCommand({ Bucket: a.grant.bucket, Key: ownKey, Body: 'mine' })))).toBeUndefined();
    const got = await a.s3.send(new GetObjectCommand({ Bucket: a.grant.bucket, Key: ownKey }));
    expect(await got.Body!.transformToString()).toBe('mine');
    expect((await a.s3.send(new HeadObjectCommand({ Bucket: a.grant.bucket, Key: ownKey }))).ContentLength).toBe(4);

    const refused = {
      readOther: await refusal(a.s3.send(new GetObjectCommand({ Bucket: a.grant.bucket, Key: bKey }))),
      writeOther: await refusal(
        a.s3.send(new PutObjectCommand({ Bucket: a.grant.bucket, Key: `${endpointPrefix(b.id)}planted`, Body: 'x' })),
      ),
      writeOutsidePayloads: await refusal(
        a.s3.send(new PutObjectCommand({ Bucket: a.grant.bucket, Key: `elsewhere/${a.id}/x`, Body: 'x' })),
      ),
      writeSiblingPrefix: await refusal(a.s3.send(new PutObjectCommand({ Bucket: a.grant.bucket, Key: `payloads/${a.id}x/y`, Body: 'x' }))),
      list: await refusal(a.s3.send(new ListObjectsV2Command({ Bucket: a.grant.bucket, Prefix: endpointPrefix(a.id) }))),
      deleteOwn: await refusal(a.s3.send(new DeleteObjectCommand({ Bucket: a.grant.bucket, Key: ownKey }))),
    };
    expect(refused).toEqual(Object.fromEntries(Object.keys(refused).map((k) => [k, 'AccessDenied'])));
    // HEAD answers carry no body, so the SDK knows only the status.
    const head = await a.s3
      .send(new HeadObjectCommand({ Bucket: a.grant.bucket, Key: bKey }))
      .catch((err: { $metadata?: { httpStatusCode?: number } }) => err);
    expect(head.$metadata?.httpStatusCode).toBe(403);
  });

  it('have no DynamoDB access and may not assume a role', async () => {
    const ddb = new DynamoDBClient({ region, credentials: a.credentials });
    const sts = new STSClient({ region, credentials: a.credentials });
    expect(await refusal(ddb.send(new ListTablesCommand({})))).toBe('AccessDeniedException');
    expect(await refusal(ddb.send(new ScanCommand({ TableName: 'ferry-local-tasks' })))).toBe('AccessDeniedException');
    expect(await refusal(ddb.send(new GetItemCommand({ TableName: 'ferry-local-endpoints', Key: { endpoint_id: { S: b.id } } })))).toBe(
      'AccessDeniedException',
    );
    const assume = new AssumeRoleCommand({
      RoleArn: process.env.FERRY_WORKER_ROLE_ARN,
      RoleSessionName: `ferry-ep-${b.id}`,
      Tags: [{ Key: 'endpointId', Value: b.id }],
    });
    expect(await refusal(sts.send(assume))).toBe('AccessDenied');
    ddb.destroy();
    sts.destroy();
  });
});

describe('SigV4 on the local servers', () => {
  const with_ = (credentials: AwsCredentialIdentity) => ({
    sqs: new SQSClient({ region, credentials }),
    s3: new S3Client({ region, credentials, forcePathStyle: true }),
    ddb: new DynamoDBClient({ region, credentials }),
  });
  const tryAll = async (c: ReturnType<typeof with_>) => {
    const out = [
      await refusal(c.sqs.send(new ReceiveMessageCommand({ QueueUrl: a.grant.queue_url, WaitTimeSeconds: 0 }))),
      await refusal(c.s3.send(new GetObjectCommand({ Bucket: a.grant.bucket, Key: `${endpointPrefix(a.id)}t1/result` }))),
      await refusal(c.ddb.send(new ListTablesCommand({}))),
    ];
    for (const client of Object.values(c)) client.destroy();
    return out;
  };

  it('refuses a wrong secret key', async () => {
    // One character changed (a secret may already start with 'x').
    const secret = a.credentials.secretAccessKey;
    expect(await tryAll(with_({ ...a.credentials, secretAccessKey: (secret[0] === 'x' ? 'y' : 'x') + secret.slice(1) }))).toEqual([
      'SignatureDoesNotMatch',
      'SignatureDoesNotMatch',
      'InvalidSignatureException',
    ]);
    expect(await tryAll(with_({ accessKeyId: stack.awsEnv.AWS_ACCESS_KEY_ID!, secretAccessKey: 'not-the-admin-secret' }))).toEqual([
      'SignatureDoesNotMatch',
      'SignatureDoesNotMatch',
      'InvalidSignatureException',
    ]);
  });

  it('refuses an unknown key, and a session key without its own token', async () => {
    expect(await tryAll(with_({ accessKeyId: 'ferry-local', secretAccessKey: 'ferry-local' }))).toEqual([
      'InvalidClientTokenId',
      'InvalidAccessKeyId',
      'UnrecognizedClientException',
    ]);
    expect(await tryAll(with_({ ...a.credentials, sessionToken: b.credentials.sessionToken }))).toEqual([
      'InvalidClientTokenId',
      'InvalidAccessKeyId',
      'UnrecognizedClientException',
    ]);
  });

  it('refuses an expired session', async () => {
    // The same AssumeRole the credentials handler makes, asking for a one-second session.
    const sts = new STSClient({});
    const out = await sts.send(
      new AssumeRoleCommand({
        RoleArn: process.env.FERRY_WORKER_ROLE_ARN,
        RoleSessionName: `ferry-ep-${a.id}`,
        DurationSeconds: 1,
        Tags: [{ Key: 'endpointId', Value: a.id }],
      }),
    );
    sts.destroy();
    const c = out.Credentials!;
    expect(c.Expiration!.getTime() - Date.now()).toBeLessThanOrEqual(1000);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await tryAll(with_({ accessKeyId: c.AccessKeyId!, secretAccessKey: c.SecretAccessKey!, sessionToken: c.SessionToken }))).toEqual(
      ['ExpiredToken', 'ExpiredToken', 'ExpiredTokenException'],
    );
  });

  it('refuses an unsigned request', async () => {
    const sqs = await fetch(stack.workerEnv.AWS_ENDPOINT_URL_SQS!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'AmazonSQS.ListQueues' },
      body: '{}',
    });
    expect([sqs.status, ((await sqs.json()) as { __type: string }).__type]).toEqual([
      403,
      'com.amazon.coral.service#MissingAuthenticationToken',
    ]);
    const s3 = await fetch(`${stack.workerEnv.AWS_ENDPOINT_URL_S3}/${a.grant.bucket}/${endpointPrefix(a.id)}t1/result`);
    expect([s3.status, /<Code>(\w+)<\/Code>/.exec(await s3.text())?.[1]]).toEqual([403, 'AccessDenied']);
    const ddb = await fetch(stack.workerEnv.AWS_ENDPOINT_URL_DYNAMODB!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.ListTables' },
      body: '{}',
    });
    expect(((await ddb.json()) as { __type: string }).__type).toBe('com.amazon.coral.service#MissingAuthenticationTokenException');
  });

  it("stamps each message with its sender's identity, as SQS does", async () => {
    const admin = new SQSClient({});
    const url = (await admin.send(new CreateQueueCommand({ QueueName: 'sender-ids' }))).QueueUrl!;
    await admin.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'hi' }));
    const got = await admin.send(
      new ReceiveMessageCommand({ QueueUrl: url, MessageSystemAttributeNames: ['SenderId'], WaitTimeSeconds: 1 }),
    );
    expect(got.Messages![0]!.Attributes!.SenderId).toMatch(/^AIDA[A-Z2-7]{16}$/);
    admin.destroy();
  });
});

describe('results are believed only from the reporting endpoint', () => {
  // The results handler logs through Powertools' Logger, which writes JSON lines to the process's
  // own stdout/stderr (what Lambda ships to CloudWatch Logs): read them there.
  let logged: Record<string, unknown>[] = [];
  const spies: jest.SpyInstance[] = [];
  beforeEach(() => {
    logged = [];
    for (const stream of [process.stdout, process.stderr]) {
      const write = stream.write.bind(stream);
      spies.push(
        jest.spyOn(stream, 'write').mockImplementation(((chunk: unknown, ...rest: unknown[]) => {
          const lines = String(chunk)
            .split('\n')
            .filter((l) => l.startsWith('{'));
          const parsed = lines.flatMap((l) => {
            try {
              return [JSON.parse(l) as Record<string, unknown>];
            } catch {
              return [];
            }
          });
          logged.push(...parsed);
          return parsed.length ? true : write(chunk as string, ...(rest as []));
        }) as typeof stream.write),
      );
    }
  });
  afterEach(() => {
    for (const spy of spies.splice(0)) spy.mockRestore();
  });
  const refusals = () => logged.filter((l) => l.message === 'refused forged result report');

  it("refuses A's worker reporting B's waiting or running task, whichever endpoint the body names", async () => {
    const waiting = await submit(b.id);
    const running = await submit(b.id);
    const at = new Date().toISOString();
    await report(b, { v: 1, kind: 'started', task_id: running, endpoint_id: b.id, worker_id: 'b1', at });
    await eventually(async () => (await view(running)).status === 'running', 10_000, 'the genuine start to apply');

    for (const task_id of [waiting, running]) {
      for (const claimed of [a.id, b.id]) {
        await report(a, {
          v: 1,
          kind: 'success',
          task_id,
          endpoint_id: claimed,
          worker_id: 'intruder',
          at: new Date().toISOString(),
          result: jsonEnvelope('forged'),
        });
      }
    }
    await resultsDrained();
    expect((await view(waiting)).status).toBe('waiting-for-endpoint');
    expect((await view(running)).status).toBe('running');
    expect((await view(running)).result).toBeUndefined();
    const lines = refusals();
    expect(lines).toHaveLength(4);
    for (const line of lines) {
      expect(line).toMatchObject({ level: 'WARN', sender: `AROAFERRYLOCALWORKER:ferry-ep-${a.id}`, correlation_id: expect.any(String) });
      expect([waiting, running]).toContain(line.task_id);
    }
  });

  it("refuses a report on A's own task whose body claims endpoint B, and applies the genuine one", async () => {
    const taskId = await submit(a.id);
    await report(a, {
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: b.id,
      worker_id: 'a1',
      at: new Date().toISOString(),
      result: jsonEnvelope(666),
    });
    await resultsDrained();
    expect((await view(taskId)).status).toBe('waiting-for-endpoint');
    expect(refusals()).toEqual([expect.objectContaining({ task_id: taskId, sender: `AROAFERRYLOCALWORKER:ferry-ep-${a.id}` })]);

    await report(a, {
      v: 1,
      kind: 'success',
      task_id: taskId,
      endpoint_id: a.id,
      worker_id: 'a1',
      at: new Date().toISOString(),
      result: jsonEnvelope(2),
    });
    const done = await eventually(
      async () => {
        const t = await view(taskId);
        return t.status === 'success' && t;
      },
      10_000,
      'the genuine result',
    );
    expect(done.result.value).toBe(2);
  });

  it('refuses a report sent with the admin key: only worker sessions report results', async () => {
    const taskId = await submit(a.id);
    await sqsClient().send(
      new SendMessageCommand({
        QueueUrl: a.grant.results_queue_url,
        MessageBody: JSON.stringify({
          v: 1,
          kind: 'success',
          task_id: taskId,
          endpoint_id: a.id,
          worker_id: 'op',
          at: new Date().toISOString(),
          result: jsonEnvelope(1),
        }),
      }),
    );
    await resultsDrained();
    expect((await view(taskId)).status).toBe('waiting-for-endpoint');
    expect(refusals()).toEqual([
      expect.objectContaining({ reason: 'the sender is not a worker session', sender: expect.stringMatching(/^AIDA/) }),
    ]);
  });
});

describe('the admin credentials and sessions on disk', () => {
  it('keeps them 0600 under the data dir, and a vended session survives a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-access-'));
    // A second stack in this process: the first one's environment is restored after.
    const saved = { ...process.env };
    try {
      const first = await startLocalStack({ dataDir: dir, authorizerCacheSeconds: 0 });
      const file = JSON.parse(readFileSync(join(dir, 'aws.json'), 'utf8')) as AdminCredentialsFile;
      expect(Object.keys(file).sort()).toEqual(['access_key_id', 'endpoints', 'region', 'secret_access_key']);
      expect(Object.keys(file.endpoints).sort()).toEqual(['dynamodb', 's3', 'sqs', 'sts']);
      expect(file.access_key_id).toBe(first.awsEnv.AWS_ACCESS_KEY_ID);
      expect(statSync(join(dir, 'aws.json')).mode & 0o777).toBe(0o600);
      expect(first.workerEnv.AWS_ACCESS_KEY_ID).toBeUndefined();
      expect(first.workerEnv.AWS_SECRET_ACCESS_KEY).toBeUndefined();

      const user = caller(first.apiUrl, await first.createUser('zed'));
      const ep = (await user('POST', '/v1/endpoints', { name: 'z' })).body;
      const grant = (await caller(first.apiUrl, ep.endpoint_secret)('POST', `/v1/endpoints/${ep.endpoint_id}/credentials`)).body;
      expect(statSync(join(dir, 'sts-sessions.json')).mode & 0o777).toBe(0o600);
      await first.close();

      const second = await startLocalStack({ dataDir: dir, authorizerCacheSeconds: 0 });
      expect(second.awsEnv.AWS_ACCESS_KEY_ID).toBe(file.access_key_id);
      const c = grant.credentials;
      const s3 = new S3Client({
        region,
        endpoint: second.workerEnv.AWS_ENDPOINT_URL_S3,
        forcePathStyle: true,
        credentials: { accessKeyId: c.access_key_id, secretAccessKey: c.secret_access_key, sessionToken: c.session_token },
      });
      expect(
        await refusal(s3.send(new PutObjectCommand({ Bucket: grant.bucket, Key: `${grant.prefix}after-restart`, Body: 'x' }))),
      ).toBeUndefined();
      s3.destroy();
      await second.close();
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
      resetConfig();
      resetClients();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
