import { CreateTableCommand, DynamoDBClient, ResourceInUseException, type CreateTableCommandInput } from '@aws-sdk/client-dynamodb';
import type { FerryConfig } from '../core/config';
import { listenOnLoopback, type LoopbackServer } from './listen';

// dynalite ships no type declarations.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dynalite = require('dynalite') as (opts: Record<string, unknown>) => import('node:http').Server;

export type DynamoServer = LoopbackServer;

/** DynamoDB on loopback (dynalite): in memory, or on disk under `dataDir`. */
export async function startDynamoServer(opts: { port?: number; host?: string; dataDir?: string } = {}): Promise<DynamoServer> {
  const server = dynalite({ path: opts.dataDir, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  return listenOnLoopback(server, opts.port, opts.host);
}

const S = 'S' as const;
const byOwner = { IndexName: 'owner-index', KeySchema: [{ AttributeName: 'owner', KeyType: 'HASH' as const }], Projection: { ProjectionType: 'ALL' as const } };

/** The tables as the CDK data stack declares them (keys and indexes), for the local stack. */
export function tableDefinitions(cfg: FerryConfig): CreateTableCommandInput[] {
  return [
    {
      TableName: cfg.tables.tokens,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [{ AttributeName: 'token_hash', AttributeType: S }],
      KeySchema: [{ AttributeName: 'token_hash', KeyType: 'HASH' }],
    },
    {
      TableName: cfg.tables.functions,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'function_id', AttributeType: S },
        { AttributeName: 'owner', AttributeType: S },
      ],
      KeySchema: [{ AttributeName: 'function_id', KeyType: 'HASH' }],
      GlobalSecondaryIndexes: [byOwner],
    },
    {
      TableName: cfg.tables.endpoints,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'endpoint_id', AttributeType: S },
        { AttributeName: 'owner', AttributeType: S },
      ],
      KeySchema: [{ AttributeName: 'endpoint_id', KeyType: 'HASH' }],
      GlobalSecondaryIndexes: [byOwner],
    },
    {
      TableName: cfg.tables.tasks,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'task_id', AttributeType: S },
        { AttributeName: 'task_group_id', AttributeType: S },
        { AttributeName: 'created_at', AttributeType: S },
        { AttributeName: 'open_on', AttributeType: S },
      ],
      KeySchema: [{ AttributeName: 'task_id', KeyType: 'HASH' }],
      GlobalSecondaryIndexes: [
        {
          IndexName: 'group-index',
          KeySchema: [
            { AttributeName: 'task_group_id', KeyType: 'HASH' },
            { AttributeName: 'created_at', KeyType: 'RANGE' },
          ],
          // Keys and the (never changing) owner only: a task's updates then never rewrite the index.
          Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: ['owner'] },
        },
        { IndexName: 'open-index', KeySchema: [{ AttributeName: 'open_on', KeyType: 'HASH' }], Projection: { ProjectionType: 'KEYS_ONLY' } },
      ],
    },
  ];
}

export async function createTables(client: DynamoDBClient, cfg: FerryConfig): Promise<void> {
  for (const def of tableDefinitions(cfg)) {
    try {
      await client.send(new CreateTableCommand(def));
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw err;
    }
  }
}
