/**
 * Teardown and redeploy of the service stack leave endpoint queues alone, and run-time endpoint
 * queues carry the same TLS-only policy and encryption as the stack's own queues.
 *
 * The retired custom resource handler runs against the local SQS server; a plain HTTP server
 * stands in for CloudFormation's presigned response URL (CloudFormation cannot run here).
 * The rest are assertions on the synthesized templates.
 */
import type { CfnResource as Resource } from '../helpers/json';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CreateTableCommand, DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateQueueCommand, ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { resetClients } from '../../core/clients';
import { resetConfig } from '../../core/config';
import { tlsOnlyQueuePolicy } from '../../core/queues/endpoint-queue';
import { handler as retired } from '../../infra/handlers/delete-endpoint-queues';
import { startSqsServer, type SqsServer } from '../../local/sqs/server';
import { startDynamoServer } from '../../local/dynamo';
import { deleteQueuesByPrefix, handler as stageQueues } from '../../infra/handlers/delete-stage-queues';
import { readContext } from '../../infra/lib/context';
import { DataStack } from '../../infra/lib/data-stack';
import { synthesize, type Synthesized } from './synth';
import cdkJson from '../../cdk.json';

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: Record<string, unknown>; Principal?: unknown };

const saved = { ...process.env };
let sqsServer: SqsServer;
let cfn: Server;
let cfnUrl: string;
const responses: Record<string, unknown>[] = [];
let s: Synthesized;
let service: Record<string, Resource>;

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
  s = synthesize();
  service = s.serviceTemplate.toJSON().Resources;
}, 180_000);

afterAll(async () => {
  s?.cleanup();
  resetClients();
  resetConfig();
  process.env = saved;
  await Promise.all([sqsServer?.close(), new Promise((ok) => cfn?.close(ok))]);
});

const ofType = (type: string) => Object.entries(service).filter(([, r]) => r.Type === type);
const str = (v: unknown): string => JSON.stringify(v) ?? '';
const actions = (st: Statement) => [st.Action].flat();
const fnId = (prefix: string) => {
  const found = ofType('AWS::Lambda::Function').filter(([id]) => id.startsWith(prefix));
  expect(found).toHaveLength(1);
  return found[0]![0];
};
const roleOf = (fn: string) => service[fnId(fn)]!.Properties.Role['Fn::GetAtt'][0] as string;
const roleStatements = (roleId: string): Statement[] =>
  ofType('AWS::IAM::Policy')
    .filter(([, p]) => str(p.Properties.Roles).includes(`"${roleId}"`))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[]);
const sqsActions = (fn: string) => roleStatements(roleOf(fn)).filter((x) => actions(x).some((a) => a.startsWith('sqs:')));

describe('service stack teardown leaves endpoint queues alone', () => {
  const sqs = () => new SQSClient({});
  const names = async () => ((await sqs().send(new ListQueuesCommand({}))).QueueUrls ?? []).map((u) => u.split('/').pop()).sort();

  test('the retired EndpointQueues handler answers every request SUCCESS and deletes no queue', async () => {
    for (const q of ['ferry-dev-ep-a', 'ferry-dev-ep-a-dlq', 'ferry-dev-results'])
      await sqs().send(new CreateQueueCommand({ QueueName: q }));
    const base = {
      ServiceToken: 'x',
      ResponseURL: cfnUrl,
      StackId: 's',
      LogicalResourceId: 'EndpointQueues',
      ResourceType: 'Custom::FerryEndpointQueues',
    };
    const props = { ServiceToken: 'x', QueueNamePrefix: 'ferry-dev-ep-' };
    const events: CloudFormationCustomResourceEvent[] = [
      { ...base, RequestId: 'c', RequestType: 'Create', ResourceProperties: props },
      {
        ...base,
        RequestId: 'u',
        RequestType: 'Update',
        PhysicalResourceId: 'endpoint-queues:ferry-dev-ep-',
        ResourceProperties: props,
        OldResourceProperties: props,
      },
      { ...base, RequestId: 'd', RequestType: 'Delete', PhysicalResourceId: 'endpoint-queues:ferry-dev-ep-', ResourceProperties: props },
    ];
    for (const e of events) await retired(e);
    expect(responses.splice(0).map((r) => [r.RequestId, r.Status, r.PhysicalResourceId, r.contentType])).toEqual([
      // The presigned URL is signed without a content type; fetch would otherwise add text/plain.
      ['c', 'SUCCESS', 'endpoint-queues:ferry-dev-ep-', ''],
      ['u', 'SUCCESS', 'endpoint-queues:ferry-dev-ep-', ''],
      ['d', 'SUCCESS', 'endpoint-queues:ferry-dev-ep-', ''],
    ]);
    expect(await names()).toEqual(['ferry-dev-ep-a', 'ferry-dev-ep-a-dlq', 'ferry-dev-results']);
  });

  test('the custom resource is retained (CloudFormation never sends it Delete) and its Lambda has no SQS rights', () => {
    const crs = ofType('Custom::FerryEndpointQueues');
    expect(crs).toHaveLength(1);
    const [, cr] = crs[0]!;
    expect(cr.DeletionPolicy).toBe('Retain');
    expect(cr.UpdateReplacePolicy).toBe('Retain');
    // Same logical ids and service token as the releases whose handler deleted queues, so a deploy only swaps the code.
    expect(crs[0]![0]).toBe('EndpointQueues');
    expect(cr.Properties.ServiceToken).toEqual({ 'Fn::GetAtt': [fnId('EndpointQueueReaper'), 'Arn'] });
    expect(sqsActions('EndpointQueueReaper')).toEqual([]);
  });

  test('only the register/delete handler and the credentials handler may delete endpoint queues', () => {
    const deleters = ofType('AWS::Lambda::Function')
      .filter(([id]) => roleStatements(service[id]!.Properties.Role['Fn::GetAtt'][0]).some((st) => actions(st).includes('sqs:DeleteQueue')))
      .map(([id]) => id.replace(/[0-9A-F]{8}$/, ''))
      .sort();
    // Endpoints: DELETE /v1/endpoints. Credentials: only a queue it just remade for an endpoint deleted meanwhile.
    expect(deleters).toEqual(['CredentialsApi', 'EndpointsApi']);
  });
});

describe("run-time endpoint queues get the stack queues' policy and encryption", () => {
  const prefixArn = {
    'Fn::Join': [
      '',
      ['arn:', { Ref: 'AWS::Partition' }, ':sqs:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':ferry-dev-ep-*'],
    ],
  };

  test('IAM lets the handlers that make queues (register, credentials) create, tag and set attributes, by the stage prefix only', () => {
    for (const fn of ['EndpointsApi', 'CredentialsApi']) {
      // CreateQueue with a Policy attribute needs sqs:SetQueueAttributes too; with tags, sqs:TagQueue.
      expect(sqsActions(fn)).toEqual([
        expect.objectContaining({
          Action: ['sqs:CreateQueue', 'sqs:DeleteQueue', 'sqs:GetQueueAttributes', 'sqs:SetQueueAttributes', 'sqs:TagQueue'],
          Resource: prefixArn,
        }),
      ]);
    }
    // Nobody else may create queues or change their attributes (a policy among them).
    for (const [id, f] of ofType('AWS::Lambda::Function')) {
      if (/^(EndpointsApi|CredentialsApi)/.test(id)) continue;
      const st = roleStatements(f.Properties.Role['Fn::GetAtt'][0]).flatMap(actions);
      expect({ id, st: st.filter((a) => ['sqs:CreateQueue', 'sqs:SetQueueAttributes'].includes(a)) }).toEqual({ id, st: [] });
    }
  });

  test('the run-time policy is the statement the stack puts on its own queues, and both use SSE-SQS', () => {
    const ownQueues = ofType('AWS::SQS::Queue');
    expect(ownQueues.length).toBeGreaterThan(0);
    for (const [id, q] of ownQueues) {
      expect({ id, sse: q.Properties.SqsManagedSseEnabled }).toEqual({ id, sse: true });
      const policies = ofType('AWS::SQS::QueuePolicy').filter(([, p]) => str(p.Properties.Queues).includes(`"${id}"`));
      expect(policies).toHaveLength(1);
      const statements = policies[0]![1].Properties.PolicyDocument.Statement as Statement[];
      const runTime = JSON.parse(tlsOnlyQueuePolicy('QUEUE_ARN')).Statement as Statement[];
      // Same effect, principal, actions and condition; the resource is each queue's own ARN.
      const shape = (st: Statement) => ({ Effect: st.Effect, Principal: st.Principal, Action: st.Action, Condition: st.Condition });
      expect(statements.map(shape)).toEqual(runTime.map(shape));
      expect(statements[0]!.Resource).toEqual({ 'Fn::GetAtt': [id, 'Arn'] });
    }
  });
});

describe('a throwaway stage (retainData=false) takes its endpoint queues with its data', () => {
  const scratch = () => {
    const app = new App({ outdir: s.app.outdir, context: { ...cdkJson.context, stage: 'scratch', retainData: 'false' } });
    const stack = new DataStack(app, 'Scratch', { ferry: readContext(app.node) });
    return { app, resources: Template.fromStack(stack).toJSON().Resources as Record<string, Resource> };
  };

  test('the data stack of a throwaway stage holds the queue reaper, deleted after the tables; a retained stage has none', () => {
    const { app, resources } = scratch();
    const crs = Object.entries(resources).filter(([, r]) => r.Type === 'Custom::FerryStageEndpointQueues');
    expect(crs).toHaveLength(1);
    const [crId, cr] = crs[0]!;
    expect(cr.Properties).toMatchObject({ QueueNamePrefix: 'ferry-scratch-ep-', EndpointsTableName: 'ferry-scratch-endpoints' });
    // Every table depends on it: CloudFormation deletes the tables first, then the queues.
    const tables = Object.values(resources).filter((r) => r.Type === 'AWS::DynamoDB::Table');
    expect(tables).toHaveLength(4);
    for (const t of tables) expect(t.DependsOn).toContain(crId);
    expect(new AwsSolutionsChecks().validateScope(app).violations).toEqual([]);
    expect(
      Object.values(s.dataTemplate.toJSON().Resources as Record<string, Resource>).filter((r) => r.Type.startsWith('Custom::')),
    ).toEqual([]);
  });

  test("on Delete it removes the stage's endpoint queues only once the endpoints table is gone", async () => {
    const dynamo = await startDynamoServer({});
    process.env.AWS_ENDPOINT_URL_DYNAMODB = dynamo.url;
    try {
      const sqs = new SQSClient({});
      for (const q of ['ferry-scratch-ep-a', 'ferry-scratch-ep-a-dlq', 'ferry-prod-ep-c', 'ferry-scratch-results'])
        await sqs.send(new CreateQueueCommand({ QueueName: q }));
      const ddb = new DynamoDBClient({});
      await ddb.send(
        new CreateTableCommand({
          TableName: 'ferry-scratch-endpoints',
          KeySchema: [{ AttributeName: 'endpoint_id', KeyType: 'HASH' }],
          AttributeDefinitions: [{ AttributeName: 'endpoint_id', AttributeType: 'S' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      const props = { ServiceToken: 'x', QueueNamePrefix: 'ferry-scratch-ep-', EndpointsTableName: 'ferry-scratch-endpoints' };
      const del: CloudFormationCustomResourceEvent = {
        RequestType: 'Delete',
        ServiceToken: 'x',
        ResponseURL: cfnUrl,
        StackId: 's',
        RequestId: 'd1',
        LogicalResourceId: 'StageEndpointQueues',
        ResourceType: 'Custom::FerryStageEndpointQueues',
        PhysicalResourceId: 'stage-queues:ferry-scratch-ep-',
        ResourceProperties: props,
      };
      const names = async () => ((await sqs.send(new ListQueuesCommand({}))).QueueUrls ?? []).map((u) => u.split('/').pop()).sort();
      // The records still exist: nothing is deleted.
      await stageQueues(del);
      expect(responses.pop()).toMatchObject({ Status: 'SUCCESS', Reason: expect.stringContaining('still exists') });
      expect(await names()).toEqual(expect.arrayContaining(['ferry-scratch-ep-a', 'ferry-scratch-ep-a-dlq']));
      await ddb.send(new DeleteTableCommand({ TableName: 'ferry-scratch-endpoints' }));
      await stageQueues({ ...del, RequestId: 'd2' });
      expect(responses.pop()).toMatchObject({ Status: 'SUCCESS', Reason: 'deleted 2 endpoint queue(s)' });
      expect((await names()).filter((n) => n!.startsWith('ferry-scratch-ep-'))).toEqual([]);
      expect(await names()).toEqual(expect.arrayContaining(['ferry-prod-ep-c', 'ferry-scratch-results']));
      await expect(deleteQueuesByPrefix('ferry-')).rejects.toThrow(/refusing/);
      ddb.destroy();
      sqs.destroy();
    } finally {
      await dynamo.close();
    }
  });
});
