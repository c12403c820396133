import type { CfnResource as Resource } from '../helpers/json';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { loadConfig } from '../../core/config';
import { API_ROUTES } from '../../lambdas/routes';
import { readContext } from '../../infra/lib/context';
import { DataStack } from '../../infra/lib/data-stack';
import { tableDefinitions } from '../../local/dynamo';
import { workerRoleStatements } from '../../local/access-policy';
import { FARGATE_ENDPOINT, normalised, synthesize, type Synthesized } from './synth';
import cdkJson from '../../cdk.json';

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: Record<string, unknown> };

const XRAY = ['xray:PutTelemetryRecords', 'xray:PutTraceSegments'];

let s: Synthesized;
let service: Record<string, Resource>;
let data: Record<string, Resource>;

beforeAll(() => {
  s = synthesize();
  service = s.serviceTemplate.toJSON().Resources;
  data = s.dataTemplate.toJSON().Resources;
}, 180_000);
afterAll(() => s?.cleanup());

const ofType = (resources: Record<string, Resource>, type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);
const actions = (st: Statement) => [st.Action].flat();
const str = (v: unknown): string => JSON.stringify(v) ?? '';
/** Statements of every IAM policy attached to the role with this logical id. */
const roleStatements = (roleId: string): Statement[] =>
  ofType(service, 'AWS::IAM::Policy')
    .filter(([, p]) => str(p.Properties.Roles).includes(`"${roleId}"`))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[]);
const logicalId = (prefix: string, type: string) => {
  const found = ofType(service, type).filter(([id]) => id.startsWith(prefix));
  expect(found).toHaveLength(1);
  return found[0]![0];
};

describe('synthesis', () => {
  test('matches the snapshot (asset hashes normalised)', () => {
    expect(normalised(s.dataTemplate)).toMatchSnapshot('data stack');
    expect(normalised(s.serviceTemplate)).toMatchSnapshot('service stack');
  });

  test('cdk-nag AwsSolutions reports no unacknowledged finding', () => {
    const findings = s.nagViolations.map(
      (v) => `${v.ruleName} at ${v.violatingResources.map((r) => r.constructPath ?? r.resourceLogicalId).join(', ')}`,
    );
    expect(findings).toEqual([]);
  });
});

describe('data stack', () => {
  test('tables match local/dynamo.ts tableDefinitions: keys, attribute types and indexes', () => {
    const defs = tableDefinitions(loadConfig({ FERRY_STAGE: 'dev' }));
    const tables = ofType(data, 'AWS::DynamoDB::Table').map(([, t]) => t.Properties);
    expect(tables.map((t) => t.TableName).sort()).toEqual(defs.map((d) => d.TableName).sort());
    const sortedBy = <T>(xs: T[] | undefined, k: (x: T) => string) => [...(xs ?? [])].sort((a, b) => k(a).localeCompare(k(b)));
    for (const def of defs) {
      const t = tables.find((x) => x.TableName === def.TableName)!;
      expect(t.KeySchema).toEqual(def.KeySchema);
      expect(sortedBy(t.AttributeDefinitions as { AttributeName: string }[], (a) => a.AttributeName)).toEqual(
        sortedBy(def.AttributeDefinitions, (a) => a.AttributeName!),
      );
      type Gsi = { IndexName?: string; KeySchema?: unknown; Projection?: unknown };
      const gsi = (g: Gsi) => ({ IndexName: g.IndexName, KeySchema: g.KeySchema, Projection: g.Projection });
      expect(sortedBy(t.GlobalSecondaryIndexes as Gsi[], (g) => g.IndexName!).map(gsi)).toEqual(
        sortedBy(def.GlobalSecondaryIndexes, (g) => g.IndexName!).map(gsi),
      );
    }
  });

  test('tables: fixed logical ids, on demand, point-in-time recovery, encrypted, retained; TTL on tasks and tokens', () => {
    for (const id of ['FunctionsTable', 'EndpointsTable', 'TasksTable', 'TokensTable']) {
      const t = data[id]!;
      expect(t.Type).toBe('AWS::DynamoDB::Table');
      expect(t.Properties).toMatchObject({
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true },
        DeletionProtectionEnabled: true,
      });
      expect(t.DeletionPolicy).toBe('Retain');
      expect(t.UpdateReplacePolicy).toBe('Retain');
    }
    expect(data.TasksTable!.Properties.TimeToLiveSpecification).toEqual({ AttributeName: 'expires_at', Enabled: true });
    expect(data.TokensTable!.Properties.TimeToLiveSpecification).toEqual({ AttributeName: 'expires_at', Enabled: true });
  });

  test('the payload bucket blocks public access, encrypts, denies non-TLS, is unversioned and expires payloads', () => {
    const b = data.PayloadBucket!;
    expect(b.Type).toBe('AWS::S3::Bucket');
    expect(b.DeletionPolicy).toBe('Retain');
    expect(b.Properties.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    expect(b.Properties.BucketEncryption).toEqual({
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
    });
    expect(b.Properties.VersioningConfiguration).toBeUndefined();
    expect(b.Properties.LifecycleConfiguration.Rules).toEqual([
      expect.objectContaining({
        Prefix: 'payloads/',
        ExpirationInDays: 15,
        AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
        Status: 'Enabled',
      }),
    ]);
    s.dataTemplate.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: 'PayloadBucket' },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  test('a throwaway stage (retainData=false) deletes its tables and empties its bucket on destroy', () => {
    const app = new App({ outdir: s.app.outdir, context: { ...cdkJson.context, stage: 'scratch', retainData: 'false' } });
    const stack = new DataStack(app, 'Scratch', { ferry: readContext(app.node) });
    const t = Template.fromStack(stack);
    t.hasResource('AWS::DynamoDB::Table', { DeletionPolicy: 'Delete', Properties: Match.objectLike({ DeletionProtectionEnabled: false }) });
    t.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Delete' });
    t.resourceCountIs('Custom::S3AutoDeleteObjects', 1);
    expect(new AwsSolutionsChecks().validateScope(app).violations).toEqual([]);
  });

  test('nothing stateless lives in the data stack', () => {
    const types = new Set(Object.values(data).map((r) => r.Type));
    expect([...types].sort()).toEqual(['AWS::DynamoDB::Table', 'AWS::S3::Bucket', 'AWS::S3::BucketPolicy']);
  });
});

describe('API', () => {
  test('every route of lambdas/routes.ts exists and has the Lambda authorizer', () => {
    const [[authorizerId, authorizer]] = ofType(service, 'AWS::ApiGatewayV2::Authorizer') as [[string, Resource]];
    expect(authorizer.Properties).toMatchObject({
      AuthorizerType: 'REQUEST',
      EnableSimpleResponses: true,
      AuthorizerPayloadFormatVersion: '2.0',
      IdentitySource: ['$request.header.Authorization'],
      AuthorizerResultTtlInSeconds: 30,
    });
    const routes = ofType(service, 'AWS::ApiGatewayV2::Route').map(([, r]) => r.Properties);
    expect(routes.map((r) => r.RouteKey).sort()).toEqual(API_ROUTES.map((r) => r.routeKey).sort());
    for (const r of routes) {
      expect({ route: r.RouteKey, type: r.AuthorizationType, authorizer: r.AuthorizerId }).toEqual({
        route: r.RouteKey,
        type: 'CUSTOM',
        authorizer: { Ref: authorizerId },
      });
    }
  });

  test('each route reaches the Lambda of its handler module', () => {
    const integrations = Object.fromEntries(
      ofType(service, 'AWS::ApiGatewayV2::Integration').map(([id, r]) => [id, str(r.Properties.IntegrationUri)]),
    );
    const moduleFn: Record<string, string> = {
      'api/functions': 'FunctionsApi',
      'api/endpoints': 'EndpointsApi',
      'api/credentials': 'CredentialsApi',
      'api/tasks': 'TasksApi',
      'api/payloads': 'PayloadsApi',
    };
    for (const [, r] of ofType(service, 'AWS::ApiGatewayV2::Route')) {
      const target = /integrations\/"?,?\{"Ref":"([^"]+)"/.exec(str(r.Properties.Target))![1]!;
      const module = API_ROUTES.find((x) => x.routeKey === r.Properties.RouteKey)!.module;
      expect(integrations[target]).toContain(`"${moduleFn[module]}`);
    }
  });

  test('stage: $default, auto-deployed, throttled, access-logged; CORS off by default', () => {
    s.serviceTemplate.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingBurstLimit: 200, ThrottlingRateLimit: 100 },
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('\\$context.requestId') },
    });
    const [[, api]] = ofType(service, 'AWS::ApiGatewayV2::Api') as [[string, Resource]];
    expect(api.Properties.ProtocolType).toBe('HTTP');
    expect(api.Properties.CorsConfiguration).toBeUndefined();
  });
});

describe('Lambdas', () => {
  const fns = () => ofType(service, 'AWS::Lambda::Function').filter(([id]) => !id.startsWith('CustomVpcRestrictDefaultSG'));

  test('ARM64, Node 24, tracing, explicit log group with retention, source maps', () => {
    expect(fns()).toHaveLength(9);
    for (const [id, f] of fns()) {
      expect({ id, ...f.Properties }).toMatchObject({
        id,
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        TracingConfig: { Mode: 'Active' },
        LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: expect.stringMatching(/Logs/) } },
        Environment: { Variables: expect.objectContaining({ NODE_OPTIONS: '--enable-source-maps', FERRY_STAGE: 'dev' }) },
      });
      const logGroup = service[f.Properties.LoggingConfig.LogGroup.Ref]!;
      expect(logGroup.Properties.RetentionInDays).toBe(30);
    }
  });

  test('environment variables are exactly those core/config.ts reads', () => {
    const known = new Set(
      [...readFileSync(join(__dirname, '../../core/config.ts'), 'utf8').matchAll(/env\.(FERRY_[A-Z_]+)/g)].map((m) => m[1]),
    );
    for (const [id, f] of fns()) {
      const ferryVars = Object.keys(f.Properties.Environment.Variables).filter((k) => k.startsWith('FERRY_'));
      expect({ id, unknown: ferryVars.filter((k) => !known.has(k)) }).toEqual({ id, unknown: [] });
    }
    const env = (id: string) => service[logicalId(id, 'AWS::Lambda::Function')]!.Properties.Environment.Variables;
    expect(Object.keys(env('TasksApi'))).toEqual(
      expect.arrayContaining(['FERRY_TASKS_TABLE', 'FERRY_ENDPOINTS_TABLE', 'FERRY_FUNCTIONS_TABLE', 'FERRY_BUCKET', 'FERRY_INLINE_LIMIT']),
    );
    expect(Object.keys(env('CredentialsApi'))).toEqual(
      expect.arrayContaining(['FERRY_WORKER_ROLE_ARN', 'FERRY_RESULTS_QUEUE_URL', 'FERRY_BUCKET', 'FERRY_ENDPOINTS_TABLE']),
    );
    expect(env('Authorizer').FERRY_TOKENS_TABLE).toBe('ferry-dev-tokens');
  });

  test('no function has AWS managed policies; each writes only its own log group', () => {
    for (const [, f] of fns()) {
      const role = service[f.Properties.Role['Fn::GetAtt'][0]]!;
      expect(role.Properties.ManagedPolicyArns).toBeUndefined();
      const logs = roleStatements(f.Properties.Role['Fn::GetAtt'][0]).filter((st) => actions(st).some((a) => a.startsWith('logs:')));
      expect(logs).toEqual([expect.objectContaining({ Resource: { 'Fn::GetAtt': [f.Properties.LoggingConfig.LogGroup.Ref, 'Arn'] } })]);
    }
  });

  test('the payloads and tasks handlers may put and get objects only under payloads/', () => {
    for (const fn of ['TasksApi', 'PayloadsApi']) {
      const role = service[logicalId(fn, 'AWS::Lambda::Function')]!.Properties.Role['Fn::GetAtt'][0];
      const s3 = roleStatements(role).filter((st) => actions(st).some((a) => a.startsWith('s3:')));
      expect(s3.length).toBeGreaterThan(0);
      for (const st of s3) {
        expect(actions(st).every((a) => ['s3:GetObject', 's3:PutObject'].includes(a))).toBe(true);
        expect(str(st.Resource)).toMatch(/ferry-dev-payloads-.*\/payloads\/\*"\]\]\}$/);
      }
    }
  });
});

describe('queues', () => {
  test('every queue has a DLQ (or is one), SSE, an explicit maximum message size, and denies non-TLS', () => {
    const queues = ofType(service, 'AWS::SQS::Queue');
    expect(queues.length).toBeGreaterThan(0);
    const dlqTargets = queues.map(([, q]) => str(q.Properties.RedrivePolicy?.deadLetterTargetArn)).filter(Boolean);
    const policies = ofType(service, 'AWS::SQS::QueuePolicy').map(([, p]) => p.Properties);
    for (const [id, q] of queues) {
      const isDlq = dlqTargets.some((t) => t.includes(`"${id}"`));
      expect({ id, redrive: Boolean(q.Properties.RedrivePolicy) || isDlq }).toEqual({ id, redrive: true });
      expect(q.Properties).toMatchObject({ SqsManagedSseEnabled: true, MaximumMessageSize: 262144 });
      const policy = policies.find((p) => str(p.Queues).includes(`"${id}"`));
      expect(policy?.PolicyDocument.Statement).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ Effect: 'Deny', Action: 'sqs:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      );
    }
  });

  test('the results Lambda consumes the results queue, reporting batch item failures', () => {
    const results = logicalId('ResultsQueue', 'AWS::SQS::Queue');
    s.serviceTemplate.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [results, 'Arn'] },
      FunctionName: { Ref: logicalId('ResultsConsumer', 'AWS::Lambda::Function') },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BatchSize: 10,
    });
    // AWS: an SQS event source's queue should stay invisible for six times the function's timeout.
    const timeout = service[logicalId('ResultsConsumer', 'AWS::Lambda::Function')]!.Properties.Timeout;
    expect(service[results]!.Properties.VisibilityTimeout).toBeGreaterThanOrEqual(6 * timeout);
  });

  test('the lost-task sweep runs every minute', () => {
    s.serviceTemplate.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalId('LostTasksSweep', 'AWS::Lambda::Function'), 'Arn'] } })],
    });
  });

  test('SQS rights on endpoint queues stop at the stage prefix ferry-dev-ep-*', () => {
    const prefixArn = (suffix: string) =>
      str({
        'Fn::Join': [
          '',
          ['arn:', { Ref: 'AWS::Partition' }, ':sqs:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, `:ferry-dev-ep-${suffix}`],
        ],
      });
    const ownQueues = ofType(service, 'AWS::SQS::Queue').map(([id]) => str({ 'Fn::GetAtt': [id, 'Arn'] }));
    const fnRoles = Object.fromEntries(
      ofType(service, 'AWS::Lambda::Function')
        .filter(([id]) => !id.startsWith('CustomVpc'))
        .map(([id, f]) => [id.replace(/[0-9A-F]{8}$/, ''), f.Properties.Role['Fn::GetAtt'][0] as string]),
    );
    for (const [fn, role] of Object.entries(fnRoles)) {
      for (const st of roleStatements(role).filter((x) => actions(x).some((a) => a.startsWith('sqs:')))) {
        const resources = [st.Resource].flat().map(str);
        // Only actions without resource-level permissions may take "*" (IAM merges them into one statement).
        if (str(st.Resource) === '"*"') expect({ fn, actions: actions(st) }).toEqual({ fn, actions: ['sqs:ListQueues', ...XRAY] });
        else
          for (const r of resources)
            expect({ fn, ok: [prefixArn('*'), prefixArn('*-dlq'), ...ownQueues].includes(r) }).toEqual({ fn, ok: true });
      }
    }
    // The register handler: create, tag, set attributes, delete, by prefix only.
    const register = roleStatements(fnRoles.EndpointsApi!).filter((x) => actions(x).some((a) => a.startsWith('sqs:')));
    expect(register).toEqual([
      expect.objectContaining({
        Action: ['sqs:CreateQueue', 'sqs:DeleteQueue', 'sqs:GetQueueAttributes', 'sqs:SetQueueAttributes', 'sqs:TagQueue'],
        Resource: JSON.parse(prefixArn('*')),
      }),
    ]);
    const sweep = roleStatements(fnRoles.LostTasksSweep!).filter((x) => actions(x).some((a) => a.startsWith('sqs:')));
    expect(sweep.map((x) => [actions(x), str(x.Resource)])).toEqual([
      [['sqs:ListQueues', ...XRAY], '"*"'],
      [['sqs:DeleteMessage', 'sqs:ReceiveMessage'], prefixArn('*-dlq')],
      // Whether an endpoint queue still exists, and its retention: nothing else on the task queues.
      [['sqs:GetQueueAttributes'], prefixArn('*')],
    ]);
  });

  test('the sweep reads and updates task records but never puts or deletes them; it reads endpoints and deletes only those whose deletion it finished', () => {
    const role = service[logicalId('LostTasksSweep', 'AWS::Lambda::Function')]!.Properties.Role['Fn::GetAtt'][0] as string;
    const dynamo = roleStatements(role).filter((x) => actions(x).some((a) => a.startsWith('dynamodb:')));
    const on = (table: string) => dynamo.filter((x) => str(x.Resource).includes(`table/ferry-dev-${table}`)).flatMap(actions);
    expect(on('tasks').sort()).toEqual(['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:UpdateItem']);
    expect(on('tasks')).not.toContain('dynamodb:Scan');
    expect(on('endpoints').filter((a) => /Put|Delete|Update|Write/.test(a))).toEqual(['dynamodb:DeleteItem']);
    // The task rights reach the table's indexes too (open-since-index is queried).
    expect(str(dynamo.filter((x) => actions(x).includes('dynamodb:UpdateItem')).map((x) => x.Resource))).toContain(
      'ferry-dev-tasks/index/*',
    );
  });
});

describe('worker identity', () => {
  const workerRoleId = () => logicalId('WorkerRole', 'AWS::IAM::Role');

  test('only the credentials handler may assume the worker role, with an endpointId session tag', () => {
    const role = service[workerRoleId()]!;
    const credentialsRole = service[logicalId('CredentialsApi', 'AWS::Lambda::Function')]!.Properties.Role['Fn::GetAtt'][0];
    expect(role.Properties.AssumeRolePolicyDocument.Statement).toEqual([
      {
        Effect: 'Allow',
        Action: ['sts:AssumeRole', 'sts:TagSession'],
        Principal: { AWS: { 'Fn::GetAtt': [credentialsRole, 'Arn'] } },
        Condition: { StringLike: { 'aws:RequestTag/endpointId': '?*' }, 'ForAllValues:StringEquals': { 'aws:TagKeys': ['endpointId'] } },
      },
    ]);
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
    expect(role.Properties.Policies).toBeUndefined();
    expect(role.Properties.MaxSessionDuration).toBe(3600);
    const grant = roleStatements(credentialsRole).find((st) => actions(st).includes('sts:AssumeRole'));
    expect(grant).toMatchObject({ Action: ['sts:AssumeRole', 'sts:TagSession'], Resource: { 'Fn::GetAtt': [workerRoleId(), 'Arn'] } });
  });

  test('its statements are scoped by the session tag and grant nothing else', () => {
    const statements = roleStatements(workerRoleId());
    const tagged = { StringLike: { 'aws:PrincipalTag/endpointId': '?*' } };
    const byActions = Object.fromEntries(statements.map((st) => [actions(st).join(' '), st]));
    expect(Object.keys(byActions).sort()).toEqual([
      's3:GetObject s3:PutObject',
      'sqs:ChangeMessageVisibility sqs:DeleteMessage sqs:GetQueueAttributes sqs:ReceiveMessage',
      'sqs:SendMessage',
    ]);
    for (const st of statements) {
      expect(st.Effect).toBe('Allow');
      expect(st.Condition).toEqual(tagged);
    }
    expect(str(byActions['sqs:ChangeMessageVisibility sqs:DeleteMessage sqs:GetQueueAttributes sqs:ReceiveMessage']!.Resource)).toMatch(
      /:ferry-dev-ep-\$\{aws:PrincipalTag\/endpointId\}"\]\]\}$/,
    );
    expect(str(byActions['s3:GetObject s3:PutObject']!.Resource)).toMatch(/\/payloads\/\$\{aws:PrincipalTag\/endpointId\}\/\*"\]\]\}$/);
    expect(byActions['sqs:SendMessage']!.Resource).toEqual({ 'Fn::GetAtt': [logicalId('ResultsQueue', 'AWS::SQS::Queue'), 'Arn'] });
  });

  test('the local servers enforce the same statements (local/access-policy.ts)', () => {
    // Resolve the template's references the way CloudFormation would in one account and region.
    const env = { partition: 'aws', region: 'eu-west-1', accountId: '123456789012' };
    const resultsQueueArn = `arn:aws:sqs:${env.region}:${env.accountId}:the-results-queue`;
    type Ref = { Ref?: string; 'Fn::Join'?: [string, unknown[]]; 'Fn::GetAtt'?: [string, string] };
    const resolve = (value: unknown): string => {
      if (typeof value === 'string') return value;
      const v = value as Ref;
      if (v.Ref === 'AWS::Partition') return env.partition;
      if (v.Ref === 'AWS::Region') return env.region;
      if (v.Ref === 'AWS::AccountId') return env.accountId;
      if (v['Fn::Join']) return v['Fn::Join'][1].map(resolve).join(v['Fn::Join'][0]);
      if (v['Fn::GetAtt']?.[0] === logicalId('ResultsQueue', 'AWS::SQS::Queue') && v['Fn::GetAtt'][1] === 'Arn') return resultsQueueArn;
      throw new Error(`unresolved ${JSON.stringify(v)}`);
    };
    const synthesized = roleStatements(workerRoleId()).map((st: Statement & { Sid?: string }) => ({
      sid: st.Sid,
      actions: actions(st).sort(),
      resources: [st.Resource].flat().map(resolve),
      condition: st.Condition,
    }));
    const bucket = `ferry-dev-payloads-${env.accountId}-${env.region}`;
    expect(synthesized.find((st) => st.sid === 'OwnPayloadPrefix')?.resources[0]).toMatch(new RegExp(`^arn:aws:s3:::${bucket}/`));
    const local = workerRoleStatements({ ...env, stage: 'dev', bucket, resultsQueueArn }).map((st) => ({
      sid: st.sid,
      actions: [...st.actions].sort(),
      resources: st.resources,
      condition: { StringLike: { [`aws:PrincipalTag/${st.requiresTag}`]: '?*' } },
    }));
    expect(local).toEqual(synthesized);
  });

  test("the results consumer believes the worker role's sessions: it gets the role's unique id", () => {
    const fn = service[logicalId('ResultsConsumer', 'AWS::Lambda::Function')]!;
    expect(fn.Properties.Environment.Variables.FERRY_WORKER_ROLE_ID).toEqual({ 'Fn::GetAtt': [workerRoleId(), 'RoleId'] });
  });
});

describe('Fargate endpoints', () => {
  test('the agent image is built from workers/Dockerfile with the repository root as context', () => {
    const manifest = JSON.parse(readFileSync(join(s.app.outdir, `${s.service.artifactId}.assets.json`), 'utf8'));
    const images = Object.values(manifest.dockerImages) as { source: { directory: string; dockerFile: string; platform: string } }[];
    expect(images).toHaveLength(1);
    expect(images[0]!.source).toMatchObject({ dockerFile: 'workers/Dockerfile', platform: 'linux/arm64' });
    // Only what the Dockerfile copies is staged, not node_modules.
    const staged = readdirSync(join(s.app.outdir, images[0]!.source.directory)).sort();
    expect(staged).toEqual(['core', 'package-lock.json', 'package.json', 'tsconfig.json', 'workers']);
  });

  test('a service per endpoint: secret from Secrets Manager, awslogs, Container Insights, stop grace', () => {
    s.serviceTemplate.hasResourceProperties('AWS::ECS::Cluster', { ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }] });
    s.serviceTemplate.hasResourceProperties('AWS::ECS::TaskDefinition', {
      Cpu: '1024',
      Memory: '2048',
      RuntimePlatform: { CpuArchitecture: 'ARM64', OperatingSystemFamily: 'LINUX' },
      ContainerDefinitions: [
        Match.objectLike({
          Environment: [
            Match.objectLike({ Name: 'FERRY_API_URL' }),
            { Name: 'FERRY_ENDPOINT_ID', Value: FARGATE_ENDPOINT.endpointId },
            { Name: 'FERRY_GRACE_MS', Value: '105000' },
          ],
          Secrets: [{ Name: 'FERRY_ENDPOINT_SECRET', ValueFrom: FARGATE_ENDPOINT.secretArn }],
          LogConfiguration: Match.objectLike({ LogDriver: 'awslogs' }),
          StopTimeout: 120,
        }),
      ],
    });
    s.serviceTemplate.hasResourceProperties('AWS::ECS::Service', {
      LaunchType: 'FARGATE',
      DesiredCount: Match.absent(),
      NetworkConfiguration: { AwsvpcConfiguration: Match.objectLike({ AssignPublicIp: 'ENABLED' }) },
    });
  });

  test('scales on the endpoint queue backlog, from zero to maxTasks', () => {
    s.serviceTemplate.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 0, MaxCapacity: 4 });
    const alarms = ofType(service, 'AWS::CloudWatch::Alarm').filter(([, a]) =>
      str(a.Properties.Metrics).includes(`ferry-dev-ep-${FARGATE_ENDPOINT.endpointId}`),
    );
    expect(alarms.map(([, a]) => [a.Properties.ComparisonOperator, a.Properties.Threshold]).sort()).toEqual([
      ['GreaterThanOrEqualToThreshold', 1],
      ['LessThanOrEqualToThreshold', 0],
    ]);
    for (const [, a] of alarms)
      expect(str(a.Properties.Metrics)).toMatch(/ApproximateNumberOfMessagesVisible.*ApproximateNumberOfMessagesNotVisible/);
    const policies = ofType(service, 'AWS::ApplicationAutoScaling::ScalingPolicy').map(
      ([, p]) => p.Properties.StepScalingPolicyConfiguration,
    );
    const steps = policies.flatMap((p) => p.StepAdjustments.map((a: { ScalingAdjustment: number }) => a.ScalingAdjustment));
    expect(policies.every((p) => p.AdjustmentType === 'ExactCapacity')).toBe(true);
    expect(steps.sort()).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('observability', () => {
  test('alarms on DLQ depth, Lambda errors and throttles, API 5xx', () => {
    const metrics = ofType(service, 'AWS::CloudWatch::Alarm').map(([, a]) => `${a.Properties.Namespace}/${a.Properties.MetricName}`);
    expect(metrics).toEqual(
      expect.arrayContaining(['AWS/SQS/ApproximateNumberOfMessagesVisible', 'AWS/SQS/ApproximateAgeOfOldestMessage', 'AWS/ApiGateway/5xx']),
    );
    expect(metrics.filter((m) => m === 'AWS/Lambda/Errors')).toHaveLength(9);
    expect(metrics.filter((m) => m === 'AWS/Lambda/Throttles')).toHaveLength(9);
    s.serviceTemplate.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  test('outputs: API URL, bucket, results queue', () => {
    const outputs = s.serviceTemplate.toJSON().Outputs;
    expect(Object.keys(outputs)).toEqual(expect.arrayContaining(['ApiUrl', 'PayloadBucketName', 'ResultsQueueUrl', 'WorkerRoleArn']));
  });
});
