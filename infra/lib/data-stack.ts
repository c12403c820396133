import { CfnOutput, CustomResource, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { endpointQueuePrefix, payloadBucketName, tableName, type FerryContext, type TableKey } from './context';
import { FerryFunction } from './ferry-function';

/** How the service stack finds a table: its fixed name, its indexes, and the variable core/config.ts reads. */
export interface TableRef {
  readonly tableName: string;
  readonly globalIndexes: string[];
  readonly envVar: string;
}

export interface DataStackProps extends StackProps {
  ferry: FerryContext;
}

/**
 * The stateful half of Ferry: the four tables and the payload bucket. Nothing else lives here,
 * so redeploying the API can never replace data; each logical id is pinned by hand, so a
 * refactor of construct paths cannot either.
 *
 * Names are fixed per stage, and the service stack finds the resources by name rather than by
 * cross-stack export: no export can then lock this stack, and IAM policies read as plain ARNs.
 */
export class DataStack extends Stack {
  readonly tables: Record<TableKey, TableRef>;
  readonly bucketName: string;
  /** The constructs themselves, for tests and for anything added to this stack. */
  readonly tableConstructs: Record<TableKey, dynamodb.Table>;
  readonly bucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: DataStackProps) {
    super(scope, id, props);
    const { stage, retainData, resultTtlDays, logRetentionDays } = props.ferry;
    const removalPolicy = retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    // Keys and indexes must match local/dynamo.ts tableDefinitions (a test compares them).
    const table = (logicalId: string, key: TableKey, partitionKey: string, ttl?: string) => {
      const t = new dynamodb.Table(this, logicalId, {
        tableName: tableName(stage, key),
        partitionKey: { name: partitionKey, type: dynamodb.AttributeType.STRING },
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        encryption: dynamodb.TableEncryption.AWS_MANAGED,
        timeToLiveAttribute: ttl,
        deletionProtection: retainData,
        removalPolicy,
      });
      (t.node.defaultChild as dynamodb.CfnTable).overrideLogicalId(logicalId);
      return t;
    };
    const ownerIndex = { indexName: 'owner-index', partitionKey: { name: 'owner', type: dynamodb.AttributeType.STRING } };

    // Tokens carry `expires_at` (user tokens); DynamoDB deletes them some time after it.
    const tokens = table('TokensTable', 'tokens', 'token_hash', 'expires_at');
    const functions = table('FunctionsTable', 'functions', 'function_id');
    functions.addGlobalSecondaryIndex(ownerIndex);
    const endpoints = table('EndpointsTable', 'endpoints', 'endpoint_id');
    endpoints.addGlobalSecondaryIndex(ownerIndex);
    // Items (core/tables/task-records.ts): a share of up to 100 tasks of one submit, its open marker, a
    // task's own item once it moves, idempotency records. Shares and markers expire after their
    // tasks can no longer be open plus resultTtlDays; task items with them or resultTtlDays after
    // the task ends, whichever is later; idempotency records after one day.
    const tasks = table('TasksTable', 'tasks', 'task_id', 'expires_at');
    // A group's tasks in submit order: `submit_order` is the submit's time and token, then the
    // task's position in it (core/tables/task-records.ts submitOrder). It holds shares (their first
    // task's order; their tasks follow by position), and tasks written before shares. It replaced a group-index sorted
    // on created_at, which every task of one submit shares. A GSI's keys cannot change in place:
    // on a deployed stage, deploy with both indexes, backfill submit_order, then drop group-index.
    tasks.addGlobalSecondaryIndex({
      indexName: 'group-order-index',
      partitionKey: { name: 'task_group_id', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'submit_order', type: dynamodb.AttributeType.STRING },
      // Keys and the (never changing) owner only: a task's state changes never rewrite the index.
      projectionType: dynamodb.ProjectionType.INCLUDE,
      nonKeyAttributes: ['owner'],
    });
    // Sparse (only the open markers of shares with open tasks carry open_on, and tasks written
    // before shares while open) and sorted by age: deleting an endpoint finds what to
    // fail without a scan, and the undeliverable-task sweep reads only tasks older than a queue's
    // retention (core/lost-tasks.ts). It replaced an unsorted open-index before any stage was
    // deployed; on a live stage a GSI's keys cannot change in place (add the new one, then drop).
    tasks.addGlobalSecondaryIndex({
      indexName: 'open-since-index',
      partitionKey: { name: 'open_on', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'created_at', type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.KEYS_ONLY,
    });

    const bucket = new s3.Bucket(this, 'PayloadBucket', {
      bucketName: payloadBucketName(stage),
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // Payloads are written once under fresh keys; old versions would only cost money.
      versioned: false,
      lifecycleRules: [
        {
          id: 'expire-payloads',
          prefix: 'payloads/',
          // One day past the task record's TTL, so a readable result never points at a deleted object.
          expiration: Duration.days(resultTtlDays + 1),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      removalPolicy,
      // A throwaway stage (retainData=false) empties the bucket on delete, or CloudFormation could not remove it.
      autoDeleteObjects: !retainData,
    });
    (bucket.node.defaultChild as s3.CfnBucket).overrideLogicalId('PayloadBucket');
    Validations.of(bucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'Payloads are short-lived claim-check objects reached only by presigned URLs the API issues (and logs) or by endpoint-scoped worker credentials; turn on CloudTrail S3 data events if object-level audit is required.',
    });

    // A throwaway stage's endpoint queues go with its data. Endpoint queues belong to their endpoint
    // records, not to the service stack (whose teardown leaves them be): here the records die too.
    // The tables depend on the resource, so on stack deletion they go first, and its handler deletes
    // queues only once the endpoints table is gone (infra/handlers/delete-stage-queues.ts).
    // A retained stage has none: its queues stay with its retained records.
    if (!retainData) {
      const reaper = new FerryFunction(this, 'StageQueueReaper', {
        entry: 'infra/handlers/delete-stage-queues.ts',
        description: "when this throwaway stage's tables are deleted, delete its endpoint queues",
        stage,
        logRetention: logRetentionDays as logs.RetentionDays,
        timeout: Duration.minutes(5),
      }).bindEndpointQueues('delete');
      // By name, not by reference: a reference would make the table's own dependency on this a cycle.
      reaper.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['dynamodb:DescribeTable'],
          resources: [this.formatArn({ service: 'dynamodb', resource: 'table', resourceName: tableName(stage, 'endpoints') })],
        }),
      );
      const stageQueues = new CustomResource(this, 'StageEndpointQueues', {
        serviceToken: reaper.functionArn,
        resourceType: 'Custom::FerryStageEndpointQueues',
        properties: { QueueNamePrefix: endpointQueuePrefix(stage), EndpointsTableName: tableName(stage, 'endpoints') },
      });
      for (const t of [tokens, functions, endpoints, tasks]) t.node.addDependency(stageQueues);
    }

    this.bucket = bucket;
    this.bucketName = payloadBucketName(stage);
    this.tableConstructs = { functions, endpoints, tasks, tokens };
    const ref = (key: TableKey, envVar: string, globalIndexes: string[]): TableRef => ({
      tableName: tableName(stage, key),
      globalIndexes,
      envVar,
    });
    this.tables = {
      functions: ref('functions', 'FERRY_FUNCTIONS_TABLE', ['owner-index']),
      endpoints: ref('endpoints', 'FERRY_ENDPOINTS_TABLE', ['owner-index']),
      tasks: ref('tasks', 'FERRY_TASKS_TABLE', ['group-order-index', 'open-since-index']),
      tokens: ref('tokens', 'FERRY_TOKENS_TABLE', []),
    };

    new CfnOutput(this, 'PayloadBucketName', { value: bucket.bucketName });
    new CfnOutput(this, 'TokensTableName', {
      value: tokens.tableName,
      description: 'ferry token create --stage <stage> writes user tokens here',
    });
  }
}
