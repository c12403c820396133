import * as path from 'node:path';
import { ArnFormat, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import type { Construct } from 'constructs';
import { METRICS_NAMESPACE, SERVICE_NAME } from '../../core/telemetry';
import { endpointQueuePrefix } from './context';

/** The repository root: handler entries, package-lock.json and the worker Dockerfile are found from it. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export interface FerryFunctionProps {
  /** Handler module, relative to the repository root (e.g. `lambdas/api/tasks.ts`); it exports `handler`. */
  entry: string;
  description: string;
  stage: string;
  logRetention: logs.RetentionDays;
  memorySize?: number;
  timeout?: Duration;
  environment?: Record<string, string>;
}

/**
 * Powertools for AWS Lambda (lambdas/observability.ts), the same on every function: one service
 * name and namespace, so the task metrics of all functions add up per stage; INFO and above, and
 * all of one invocation in a hundred at DEBUG (an API answer's route and status, the authorizer's
 * verdict, an idle sweep); the handler's response never copied into its X-Ray segment (an API
 * answer may be megabytes, a segment holds 64 KB).
 */
export const POWERTOOLS_ENVIRONMENT: Readonly<Record<string, string>> = {
  POWERTOOLS_SERVICE_NAME: SERVICE_NAME,
  POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
  POWERTOOLS_LOG_LEVEL: 'INFO',
  POWERTOOLS_LOGGER_SAMPLE_RATE: '0.01',
  POWERTOOLS_TRACE_ENABLED: 'true',
  POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
};

/**
 * Read; read and write; read and update existing items only (conditional state moves, never a put
 * or a delete); or read and delete (never a put or an update).
 */
export type TableAccess = 'RO' | 'RW' | 'RU' | 'RD';
/** What a function does with the payload bucket: read and write objects, write only (presigned PUT), or just know its name. */
export type BucketAccess = 'RW' | 'W' | 'name';
/** What a function does with the runtime-created endpoint queues `ferry-<stage>-ep-*`. */
export type EndpointQueueAccess = 'manage' | 'send' | 'drain-dlq' | 'inspect' | 'delete';

/** A table and the environment variable through which core/config.ts finds it. */
export interface FerryTable {
  readonly table: dynamodb.ITable;
  readonly envVar: string;
}

/**
 * Every Ferry Lambda: ARM64, the newest Node runtime Lambda offers, bundled by the local esbuild
 * (no Docker) from the repository's lockfile with source maps, an explicit log group with
 * retention, X-Ray tracing, Powertools' environment (POWERTOOLS_ENVIRONMENT), and a role of its own that starts with nothing but its log group.
 * The bind helpers grant access and set the environment variable in one call, so a permission
 * and its use cannot drift apart.
 */
export class FerryFunction extends nodejs.NodejsFunction {
  private readonly stage: string;

  constructor(scope: Construct, id: string, props: FerryFunctionProps) {
    const logGroup = new logs.LogGroup(scope, `${id}Logs`, { retention: props.logRetention, removalPolicy: RemovalPolicy.DESTROY });
    const role = new iam.Role(scope, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Ferry ${props.stage}: ${props.description}`,
    });
    // Only its own log group: no AWSLambdaBasicExecutionRole (which allows every log group).
    logGroup.grantWrite(role);
    super(scope, id, {
      entry: path.join(REPO_ROOT, props.entry),
      handler: 'handler',
      description: `Ferry ${props.stage}: ${props.description}`,
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 512,
      timeout: props.timeout ?? Duration.seconds(29),
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      // Lambda passes every level and Powertools filters (POWERTOOLS_LOG_LEVEL), so that its debug
      // sampling works: with a higher level here Lambda would drop the sampled DEBUG lines.
      applicationLogLevelV2: lambda.ApplicationLogLevel.DEBUG,
      role,
      projectRoot: REPO_ROOT,
      depsLockFilePath: path.join(REPO_ROOT, 'package-lock.json'),
      // Stack traces in the logs point at the TypeScript sources (the bundle ships its source map).
      environment: { NODE_OPTIONS: '--enable-source-maps', FERRY_STAGE: props.stage, ...POWERTOOLS_ENVIRONMENT, ...props.environment },
      bundling: {
        forceDockerBundling: false,
        sourceMap: true,
        minify: true,
        // Ship the AWS SDK versions the tests ran against, not whatever the runtime carries.
        bundleAwsSDK: true,
        externalModules: [],
        format: nodejs.OutputFormat.CJS,
        // Quiet synthesis: esbuild still prints warnings and errors, not every bundle's size.
        logLevel: nodejs.LogLevel.WARNING,
      },
    });
    this.stage = props.stage;
    this.acknowledgeIam5('*', 'Only xray:PutTraceSegments/PutTelemetryRecords (active tracing), which have no resource-level permissions.');
  }

  /** Read or read-write access to a table (and its indexes), and its name in the variable core/config.ts reads. */
  bindTable(t: FerryTable, access: TableAccess): this {
    if (access === 'RW') t.table.grantReadWriteData(this);
    else if (access === 'RU') t.table.grant(this, 'dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query', 'dynamodb:UpdateItem');
    else if (access === 'RD') {
      t.table.grantReadData(this);
      t.table.grant(this, 'dynamodb:DeleteItem');
    } else t.table.grantReadData(this);
    this.addEnvironment(t.envVar, t.table.tableName);
    this.acknowledgeIam5(
      `${t.table.tableArn}/index/*`,
      "The table's own global secondary indexes (table/index/*), which core/tables queries.",
    );
    return this;
  }

  /**
   * The payload bucket, limited to `payloads/*`: the only prefix core/bucket.ts writes. Presigned
   * URLs are signed with this role, so a presigned PUT or GET needs the same object right here.
   */
  bindBucket(bucket: s3.IBucket, access: BucketAccess): this {
    const objects = bucket.arnForObjects('payloads/*');
    if (access === 'RW' || access === 'W') {
      const actions = access === 'RW' ? ['s3:GetObject', 's3:PutObject'] : ['s3:PutObject'];
      this.addToRolePolicy(new iam.PolicyStatement({ actions, resources: [objects] }));
      this.acknowledgeIam5(
        objects,
        'Payload objects are created at run time under payloads/<endpointId>/<taskId>/; the grant stops at that prefix.',
      );
    }
    this.addEnvironment('FERRY_BUCKET', bucket.bucketName);
    return this;
  }

  /** The results queue: `send` grants SendMessage; `url` only tells this function where it is (for vended grants). */
  bindResultsQueue(queue: sqs.IQueue, access: 'send' | 'url'): this {
    if (access === 'send') queue.grantSendMessages(this);
    this.addEnvironment('FERRY_RESULTS_QUEUE_URL', queue.queueUrl);
    return this;
  }

  /** The worker role that the credentials handler assumes, with the endpoint id as a session tag. */
  bindWorkerRole(role: iam.IRole): this {
    this.addToRolePolicy(new iam.PolicyStatement({ actions: ['sts:AssumeRole', 'sts:TagSession'], resources: [role.roleArn] }));
    this.addEnvironment('FERRY_WORKER_ROLE_ARN', role.roleArn);
    return this;
  }

  /**
   * The worker role whose sessions' reports are believed: its unique id (AROA…), the first half of
   * the SQS SenderId `<role id>:<session name>` of every message sent with vended credentials.
   */
  bindWorkerSessions(role: iam.Role): this {
    this.addEnvironment('FERRY_WORKER_ROLE_ID', role.roleId);
    return this;
  }

  /**
   * Rights on the endpoint queues the register handler creates at run time. They do not exist at
   * deploy time, so the grant is by name prefix: `ferry-<stage>-ep-*` and nothing else.
   */
  bindEndpointQueues(access: EndpointQueueAccess): this {
    const prefix = endpointQueuePrefix(this.stage);
    const arn = (pattern: string) => Stack.of(this).formatArn({ service: 'sqs', resource: pattern, arnFormat: ArnFormat.NO_RESOURCE_NAME });
    const statements: Record<EndpointQueueAccess, iam.PolicyStatement[]> = {
      // CreateQueue with tags needs TagQueue too; GetQueueAttributes reads the DLQ's ARN and the depth for /status.
      manage: [
        new iam.PolicyStatement({
          actions: ['sqs:CreateQueue', 'sqs:TagQueue', 'sqs:SetQueueAttributes', 'sqs:GetQueueAttributes', 'sqs:DeleteQueue'],
          resources: [arn(`${prefix}*`)],
        }),
      ],
      send: [new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [arn(`${prefix}*`)] })],
      'drain-dlq': [
        // SQS: ListQueues takes no resource; the handler filters by prefix and rights stop at the DLQs.
        new iam.PolicyStatement({ actions: ['sqs:ListQueues'], resources: ['*'] }),
        new iam.PolicyStatement({ actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage'], resources: [arn(`${prefix}*-dlq`)] }),
      ],
      // Whether a queue still exists, and its MessageRetentionPeriod (the undeliverable-task sweep).
      inspect: [new iam.PolicyStatement({ actions: ['sqs:GetQueueAttributes'], resources: [arn(`${prefix}*`)] })],
      delete: [
        new iam.PolicyStatement({ actions: ['sqs:ListQueues'], resources: ['*'] }),
        new iam.PolicyStatement({ actions: ['sqs:DeleteQueue'], resources: [arn(`${prefix}*`)] }),
      ],
    };
    for (const s of statements[access]) this.addToRolePolicy(s);
    if (access === 'drain-dlq' || access === 'delete') {
      this.acknowledgeIam5(
        '*',
        "Only sqs:ListQueues and xray:PutTraceSegments/PutTelemetryRecords, which have no resource-level permissions; listing is by this stage's prefix.",
      );
    }
    const pattern = access === 'drain-dlq' ? `${prefix}*-dlq` : `${prefix}*`;
    this.acknowledgeIam5(
      arn(pattern),
      `Endpoint queues are created at run time, so rights go by this stage's name prefix ${pattern} and no further.`,
    );
    return this;
  }

  /** cdk-nag v3 acknowledges each wildcard finding by its exact id: the resource as cdk-nag renders it. */
  private acknowledgeIam5(resource: string, reason: string): void {
    acknowledgeWildcard(this.role!, resource, reason);
  }
}

/** Acknowledge cdk-nag's AwsSolutions-IAM5 finding for one wildcard resource (a literal or a token) on `scope`. */
export function acknowledgeWildcard(scope: Construct, resource: string, reason: string): void {
  const rendered = flattenCfnReference(Stack.of(scope).resolve(resource));
  Validations.of(scope).acknowledge({ id: `AwsSolutions-IAM5[Resource::${rendered}]`, reason });
}
