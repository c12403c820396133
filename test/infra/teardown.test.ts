/**
 * The operator path the CDK app adds beside the stacks, run against the local AWS protocol
 * servers: the custom resource that deletes run-time endpoint queues on `cdk destroy`. (The first
 * user token comes from `ferry token create --stage`, tested in test/e2e/token-cli.test.ts.)
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateQueueCommand, ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { CloudFormationCustomResourceDeleteEvent } from 'aws-lambda';
import { resetClients } from '../../core/clients';
import { resetConfig } from '../../core/config';
import { startSqsServer, type SqsServer } from '../../local/sqs-server';
import { deleteQueuesByPrefix, handler as reaper } from '../../infra/handlers/delete-endpoint-queues';

const saved = { ...process.env };
let sqsServer: SqsServer;
let cfn: Server;
let cfnUrl: string;
const responses: Record<string, unknown>[] = [];

beforeAll(async () => {
  jest.spyOn(console, 'log').mockImplementation(() => undefined);
  sqsServer = await startSqsServer();
  Object.assign(process.env, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    AWS_ENDPOINT_URL_SQS: sqsServer.url,
  });
  // Stands in for CloudFormation's presigned response URL.
  cfn = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      responses.push({ method: req.method, contentType: req.headers['content-type'], ...JSON.parse(body) });
      res.end();
    });
  });
  await new Promise<void>((ok) => cfn.listen(0, '127.0.0.1', ok));
  cfnUrl = `http://127.0.0.1:${(cfn.address() as AddressInfo).port}/response`;
});

afterAll(async () => {
  resetClients();
  resetConfig();
  process.env = saved;
  await Promise.all([sqsServer?.close(), new Promise((ok) => cfn?.close(ok))]);
});

describe('endpoint queue teardown (custom resource)', () => {
  const sqs = () => new SQSClient({});
  const names = async () => ((await sqs().send(new ListQueuesCommand({}))).QueueUrls ?? []).map((u) => u.split('/').pop()).sort();

  test('on Delete it removes every ferry-<stage>-ep-* queue of the stage, and nothing else', async () => {
    for (const q of ['ferry-dev-ep-a', 'ferry-dev-ep-a-dlq', 'ferry-dev-ep-b', 'ferry-dev-ep-b-dlq', 'ferry-prod-ep-c', 'ferry-dev-results']) {
      await sqs().send(new CreateQueueCommand({ QueueName: q }));
    }
    const event: CloudFormationCustomResourceDeleteEvent = {
      RequestType: 'Delete',
      ServiceToken: 'arn:aws:lambda:us-east-1:123456789012:function:reaper',
      ResponseURL: cfnUrl,
      StackId: 'arn:aws:cloudformation:us-east-1:123456789012:stack/Ferry-dev-Service/1',
      RequestId: 'req-1',
      LogicalResourceId: 'EndpointQueues',
      PhysicalResourceId: 'endpoint-queues:ferry-dev-ep-',
      ResourceType: 'Custom::FerryEndpointQueues',
      ResourceProperties: { ServiceToken: 'x', QueueNamePrefix: 'ferry-dev-ep-' },
    };
    await reaper(event);
    expect(await names()).toEqual(['ferry-dev-results', 'ferry-prod-ep-c']);
    expect(responses.pop()).toMatchObject({
      method: 'PUT',
      // The presigned URL is signed without a content type; fetch would otherwise add text/plain.
      contentType: '',
      Status: 'SUCCESS',
      Reason: 'deleted 4 endpoint queue(s)',
      PhysicalResourceId: 'endpoint-queues:ferry-dev-ep-',
      RequestId: 'req-1',
      LogicalResourceId: 'EndpointQueues',
    });
  });

  test('Create and Update delete nothing and keep one physical id', async () => {
    await sqs().send(new CreateQueueCommand({ QueueName: 'ferry-dev-ep-live' }));
    const base = { ServiceToken: 'x', ResponseURL: cfnUrl, StackId: 's', RequestId: 'r', LogicalResourceId: 'EndpointQueues', ResourceType: 'Custom::FerryEndpointQueues' };
    const props = { ServiceToken: 'x', QueueNamePrefix: 'ferry-dev-ep-' };
    await reaper({ ...base, RequestType: 'Create', ResourceProperties: props });
    await reaper({ ...base, RequestType: 'Update', PhysicalResourceId: 'endpoint-queues:ferry-dev-ep-', ResourceProperties: props, OldResourceProperties: props });
    expect(responses.splice(0).map((r) => [r.Status, r.PhysicalResourceId])).toEqual([
      ['SUCCESS', 'endpoint-queues:ferry-dev-ep-'],
      ['SUCCESS', 'endpoint-queues:ferry-dev-ep-'],
    ]);
    expect(await names()).toContain('ferry-dev-ep-live');
  });

  test('refuses a prefix that is not an endpoint queue prefix', async () => {
    await expect(deleteQueuesByPrefix('ferry-')).rejects.toThrow(/refusing/);
    await expect(deleteQueuesByPrefix('')).rejects.toThrow(/refusing/);
  });
});
