import { CfnOutput, CustomResource, Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaAuthorizer, HttpLambdaResponseType } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { API_ROUTES, type ApiModule } from '../../lambdas/routes';
import { endpointQueuePrefix, type FerryContext, type TableKey } from './context';
import type { DataStack } from './data-stack';
import { FargateEndpoints } from './fargate-endpoints';
import { FerryFunction, type FerryTable } from './ferry-function';
import { Observability } from './observability';
import { ResultsQueue } from './results-queue';
import { WorkerRole } from './worker-role';

export interface ServiceStackProps extends StackProps {
  ferry: FerryContext;
  /** The stateful stack: tables and bucket. */
  data: DataStack;
}

// Results Lambda timeout; the results queue's visibility is six times it (AWS's advice for SQS event sources).
const RESULTS_TIMEOUT = Duration.seconds(30);
// API Gateway HTTP APIs wait at most 30 s for an integration.
const API_TIMEOUT = Duration.seconds(29);
// How long API Gateway reuses an authorizer answer per Authorization header. Short, because a
// revoked or expired token keeps working until its cached answer lapses.
const AUTHORIZER_CACHE = Duration.seconds(30);

/**
 * The stateless half: the HTTP API and its Lambdas, the results queue and its consumer, the
 * dead-letter sweep, the worker role, Fargate endpoints, alarms and a dashboard. It can be
 * destroyed and redeployed at will; data lives in the DataStack it is given.
 */
export class ServiceStack extends Stack {
  readonly api: apigwv2.HttpApi;
  readonly functions: Record<string, FerryFunction>;
  readonly workerRole: WorkerRole;
  readonly results: ResultsQueue;
  readonly fargate?: FargateEndpoints;

  constructor(scope: Construct, id: string, props: ServiceStackProps) {
    super(scope, id, props);
    const { ferry, data } = props;
    const { stage } = ferry;
    // Found by their fixed names, not by cross-stack export (see DataStack).
    const imported = (key: TableKey): FerryTable => ({
      table: dynamodb.Table.fromTableAttributes(this, `${key[0]!.toUpperCase()}${key.slice(1)}Table`, {
        tableName: data.tables[key].tableName,
        globalIndexes: data.tables[key].globalIndexes,
      }),
      envVar: data.tables[key].envVar,
    });
    const tables = {
      functions: imported('functions'),
      endpoints: imported('endpoints'),
      tasks: imported('tasks'),
      tokens: imported('tokens'),
    };
    const bucket = s3.Bucket.fromBucketName(this, 'PayloadBucket', data.bucketName);
    const logRetention = ferry.logRetentionDays as logs.RetentionDays;
    const fn = (fnId: string, entry: string, description: string, more: { memorySize?: number; timeout?: Duration } = {}) =>
      new FerryFunction(this, fnId, {
        entry,
        description,
        stage,
        logRetention,
        ...more,
        environment: {
          FERRY_INLINE_LIMIT: String(ferry.inlineLimit),
          FERRY_RESULT_TTL_DAYS: String(ferry.resultTtlDays),
          FERRY_MAX_ATTEMPTS: String(ferry.maxAttempts),
          FERRY_CREDENTIALS_TTL_SECONDS: String(ferry.credentialsTtlSeconds),
        },
      });

    this.results = new ResultsQueue(this, 'Results', {
      visibilityTimeout: Duration.seconds(RESULTS_TIMEOUT.toSeconds() * 6),
      maxReceiveCount: 5,
    });

    // ---------------------------------------------------------------- API handlers
    const authorizerFn = fn('Authorizer', 'lambdas/authorizer.ts', 'bearer token -> principal (HTTP API authorizer)', {
      timeout: Duration.seconds(10),
    });
    authorizerFn.bindTable(tables.tokens, 'RO');

    // One Lambda per handler module in lambdas/routes.ts; a module added there fails to compile here until it is bound.
    const api: Record<ApiModule, FerryFunction> = {
      'api/functions': fn('FunctionsApi', 'lambdas/api/functions.ts', 'register, read and delete functions', {
        timeout: API_TIMEOUT,
      }).bindTable(tables.functions, 'RW'),
      'api/endpoints': fn('EndpointsApi', 'lambdas/api/endpoints.ts', 'register, share, delete endpoints; heartbeats', {
        timeout: API_TIMEOUT,
      })
        .bindTable(tables.endpoints, 'RW')
        .bindTable(tables.tokens, 'RW')
        .bindTable(tables.tasks, 'RW')
        .bindEndpointQueues('manage'),
      // Makes an endpoint's queues again if they are gone (core/queues/endpoint-queue.ts ensureEndpointQueues),
      // and deletes what it just made if the endpoint was deleted meanwhile: the same queue rights as registration.
      'api/credentials': fn(
        'CredentialsApi',
        'lambdas/api/credentials.ts',
        'vend endpoint-scoped worker credentials; remake missing endpoint queues',
        { timeout: API_TIMEOUT },
      )
        .bindTable(tables.endpoints, 'RO')
        .bindResultsQueue(this.results.queue, 'url')
        .bindBucket(bucket, 'name')
        .bindEndpointQueues('manage'),
      // Submits of up to 500 tasks encode and queue every task in one request: more memory, more CPU.
      'api/tasks': fn('TasksApi', 'lambdas/api/tasks.ts', 'submit, read, cancel tasks', { timeout: API_TIMEOUT, memorySize: 1024 })
        .bindTable(tables.tasks, 'RW')
        .bindTable(tables.endpoints, 'RO')
        .bindTable(tables.functions, 'RO')
        .bindBucket(bucket, 'RW')
        .bindEndpointQueues('send'),
      'api/payloads': fn('PayloadsApi', 'lambdas/api/payloads.ts', 'presigned uploads of large arguments', { timeout: API_TIMEOUT })
        .bindTable(tables.endpoints, 'RO')
        .bindBucket(bucket, 'W'),
    };

    this.workerRole = new WorkerRole(this, 'Worker', {
      stage,
      bucket,
      resultsQueue: this.results.queue,
      vendedBy: api['api/credentials'].role!,
    });
    api['api/credentials'].bindWorkerRole(this.workerRole.role);

    // ---------------------------------------------------------------- HTTP API
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogs', { retention: logRetention, removalPolicy: RemovalPolicy.DESTROY });
    this.api = new apigwv2.HttpApi(this, 'Api', {
      apiName: `ferry-${stage}`,
      description: `Ferry ${stage}: function-as-a-service API`,
      createDefaultStage: false,
      corsPreflight: ferry.corsAllowOrigins.length
        ? {
            allowOrigins: ferry.corsAllowOrigins,
            allowHeaders: ['authorization', 'content-type', 'idempotency-key'],
            allowMethods: [apigwv2.CorsHttpMethod.GET, apigwv2.CorsHttpMethod.POST, apigwv2.CorsHttpMethod.DELETE],
            maxAge: Duration.hours(1),
          }
        : undefined,
      // Every route. A bad token is "authorized" as principal none so the handler answers 401 itself
      // (see lambdas/authorizer.ts); a request with no Authorization header at all never reaches the
      // authorizer, since the header is its identity source: API Gateway answers that 401 itself.
      defaultAuthorizer: new HttpLambdaAuthorizer('BearerToken', authorizerFn, {
        responseTypes: [HttpLambdaResponseType.SIMPLE],
        identitySource: ['$request.header.Authorization'],
        resultsCacheTtl: AUTHORIZER_CACHE,
      }),
    });
    new apigwv2.HttpStage(this, 'DefaultStage', {
      httpApi: this.api,
      stageName: '$default',
      autoDeploy: true,
      throttle: ferry.apiThrottle,
      accessLogSettings: {
        destination: new apigwv2.LogGroupLogDestination(accessLogs),
        format: apigateway.AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            time: '$context.requestTime',
            routeKey: '$context.routeKey',
            status: '$context.status',
            latencyMs: '$context.responseLatency',
            responseLength: '$context.responseLength',
            integrationError: '$context.integrationErrorMessage',
            authorizerError: '$context.authorizer.error',
            principal: '$context.authorizer.principal',
          }),
        ),
      },
    });
    const integrations = new Map<ApiModule, HttpLambdaIntegration>();
    for (const r of API_ROUTES) {
      const [method, path] = r.routeKey.split(' ') as [keyof typeof apigwv2.HttpMethod, string];
      if (!integrations.has(r.module))
        integrations.set(r.module, new HttpLambdaIntegration(`${api[r.module].node.id}Integration`, api[r.module]));
      this.api.addRoutes({ path, methods: [apigwv2.HttpMethod[method]], integration: integrations.get(r.module)! });
    }
    const apiUrl = this.api.apiEndpoint;

    // ---------------------------------------------------------------- results and lost tasks
    const resultsFn = fn('ResultsConsumer', 'lambdas/results.ts', 'apply worker results to task records', { timeout: RESULTS_TIMEOUT })
      .bindTable(tables.tasks, 'RW')
      .bindWorkerSessions(this.workerRole.role);
    // A failed record is retried alone (and reaches the DLQ alone), not with its whole batch.
    resultsFn.addEventSource(new SqsEventSource(this.results.queue, { batchSize: 10, reportBatchItemFailures: true }));

    const sweepFn = fn(
      'LostTasksSweep',
      'lambdas/lost-tasks.ts',
      'fail tasks that can no longer be delivered: dead-lettered, expired unread, queue gone or endpoint deleted',
      {
        timeout: Duration.seconds(55),
      },
    )
      .bindTable(tables.tasks, 'RU')
      // Deletes the record of an endpoint whose deletion it finished (core/endpoints.ts finishDeletedEndpoint).
      .bindTable(tables.endpoints, 'RD')
      .bindEndpointQueues('drain-dlq')
      .bindEndpointQueues('inspect');
    // Endpoint queues are created at run time, so no event source can be wired to their DLQs, and an
    // expired message leaves no trace at all: sweep them, from the queues and from the task records.
    new events.Rule(this, 'LostTasksSchedule', {
      description: `Ferry ${stage}: fail undeliverable tasks (endpoint DLQs, expired messages, deleted queues)`,
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(sweepFn, { retryAttempts: 0 })],
    });

    // ---------------------------------------------------------------- run-time queues outlive this stack
    // Endpoint queues belong to their endpoint records (in the data stack): registration makes them,
    // DELETE /v1/endpoints deletes them, the credentials handler remakes a missing one. Nothing here
    // deletes them. Releases before this one had a custom resource here whose Delete removed every
    // ferry-<stage>-ep-* queue; removing it from the template would run that Delete one last time
    // (CloudFormation deletes a dropped resource with the policy of the template it was made by), so
    // it stays, retained: CloudFormation never sends it Delete again, and its handler deletes nothing
    // and holds no SQS rights. A later release may drop both once every stage has deployed this one.
    const retiredFn = fn(
      'EndpointQueueReaper',
      'infra/handlers/delete-endpoint-queues.ts',
      'retired: answers CloudFormation for Custom::FerryEndpointQueues and deletes nothing',
      {
        timeout: Duration.minutes(1),
      },
    );
    new CustomResource(this, 'EndpointQueues', {
      serviceToken: retiredFn.functionArn,
      resourceType: 'Custom::FerryEndpointQueues',
      properties: { QueueNamePrefix: endpointQueuePrefix(stage) },
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // ---------------------------------------------------------------- Fargate endpoints
    if (ferry.fargateEndpoints.length) {
      this.fargate = new FargateEndpoints(this, 'Fargate', { stage, endpoints: ferry.fargateEndpoints, apiUrl, logRetention });
    }

    this.functions = {
      Authorizer: authorizerFn,
      FunctionsApi: api['api/functions'],
      EndpointsApi: api['api/endpoints'],
      CredentialsApi: api['api/credentials'],
      TasksApi: api['api/tasks'],
      PayloadsApi: api['api/payloads'],
      ResultsConsumer: resultsFn,
      LostTasksSweep: sweepFn,
      EndpointQueueReaper: retiredFn,
    };
    const observability = new Observability(this, 'Observability', {
      stage,
      api: this.api,
      functions: this.functions,
      resultsQueue: this.results.queue,
      resultsDeadLetterQueue: this.results.deadLetterQueue,
      fargate: this.fargate?.services ?? [],
      alarmTopicArn: ferry.alarmTopicArn,
    });

    new CfnOutput(this, 'ApiUrl', { value: apiUrl, description: 'FERRY_API_URL for the SDK, CLI and worker agents' });
    new CfnOutput(this, 'PayloadBucketName', { value: bucket.bucketName });
    new CfnOutput(this, 'ResultsQueueUrl', { value: this.results.queue.queueUrl });
    new CfnOutput(this, 'WorkerRoleArn', { value: this.workerRole.role.roleArn });
    new CfnOutput(this, 'Stage', { value: stage, description: 'the stage for ferry token create --stage' });
    new CfnOutput(this, 'DashboardName', { value: observability.dashboard.dashboardName });
  }
}
