import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  BatchWriteItemCommand,
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ResourceInUseException,
  ScanCommand,
  type AttributeValue,
  type CreateTableCommandInput,
} from '@aws-sdk/client-dynamodb';
import type { FerryConfig } from '../core/config';
import { legacySubmitOrder } from '../core/tables/task-records';
import { startDynalite, type DynaliteCall } from './dynamo-store';
import type { LocalIam } from './iam';
import type { DirectCall } from './in-process-http';
import { listenOnLoopback, type LoopbackServer } from './listen';
import { AuthError, type AuthFailure } from './sigv4';
import { sleep } from '../core/retry';

export interface DynamoServer extends LoopbackServer {
  /**
   * A request straight to the store, without socket or signature check: for this process's own
   * handlers, which hold the admin key anyway (core/clients.ts useDynamoTransport). Every other
   * caller (a worker, a test's client, `ferry token`) comes over the socket and through IAM.
   */
  direct: DirectCall;
}

/**
 * DynamoDB on loopback: dynalite, in memory or on disk under `dataDir` (local/dynamo-store.ts),
 * behind this process's socket. With `iam`, every request must be
 * signed by a known key before dynalite sees it, and only the admin may make any call: the worker
 * role has no DynamoDB statement (infra/lib/worker-role.ts).
 */
export async function startDynamoServer(
  opts: { port?: number; host?: string; dataDir?: string; iam?: LocalIam } = {},
): Promise<DynamoServer> {
  const dynalite = startDynalite({ path: opts.dataDir, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  const iam = opts.iam;
  const server = createServer((req, res) => void serveDynamo(iam, req, res, dynalite.call));
  const listening = await listenOnLoopback(server, opts.port, opts.host);
  return { ...listening, direct: directCall(dynalite.call), close: async () => (await listening.close(), await dynalite.stop()) };
}

/**
 * dynalite refuses a request without a SigV4-shaped Authorization header and a date, though it
 * never checks the signature (the socket path checks it first, in refusalOf): a direct request,
 * which its trusted caller need not sign, carries this one.
 */
const UNSIGNED_AUTH = {
  authorization: 'AWS4-HMAC-SHA256 Credential=local/20000101/local/dynamodb/aws4_request, SignedHeaders=host, Signature=unsigned',
  'x-amz-date': '20000101T000000Z',
};

/** The store's call, for a request that never was an HTTP message: the parts of one it reads, and a response that collects. */
function directCall(call: DynaliteCall): DirectCall {
  return (req) =>
    new Promise((resolve, reject) => {
      let status = 200;
      let headers: Record<string, string> = {};
      const res = {
        destroyed: false,
        writeHead(code: number, more: Record<string, string>) {
          status = code;
          headers = { ...headers, ...more };
          return res;
        },
        end(body: Buffer) {
          resolve({ status, headers, body });
        },
        destroy() {
          res.destroyed = true;
          reject(new Error('local DynamoDB failed the request'));
        },
      };
      call(
        {
          method: req.method,
          url: req.url,
          headers: req.headers.authorization ? req.headers : { ...req.headers, ...UNSIGNED_AUTH },
        } as unknown as IncomingMessage,
        req.body,
        res as unknown as ServerResponse,
      );
    });
}

// The coral exception names DynamoDB answers authentication failures with. AWS sends them as
// HTTP 400; here they are 403, as on the other local servers, so a caller tells refusal from bad input by status.
const DYNAMO_AUTH_ERRORS: Record<AuthFailure, string> = {
  missing: 'MissingAuthenticationTokenException',
  malformed: 'IncompleteSignatureException',
  'unknown-key': 'UnrecognizedClientException',
  'bad-signature': 'InvalidSignatureException',
  skewed: 'InvalidSignatureException',
  expired: 'ExpiredTokenException',
};

async function serveDynamo(iam: LocalIam | undefined, req: IncomingMessage, res: ServerResponse, dynalite: DynaliteCall): Promise<void> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of req) chunks.push(chunk as Buffer);
  } catch {
    return void res.destroy();
  }
  const body = Buffer.concat(chunks);
  const refusal = iam && (await refusalOf(iam, req, body));
  if (refusal) {
    const text = JSON.stringify({ __type: `com.amazon.coral.service#${refusal[0]}`, message: refusal[1] });
    res.writeHead(403, { 'content-type': 'application/x-amz-json-1.0', 'content-length': String(Buffer.byteLength(text)) });
    return void res.end(text);
  }
  dynalite(req, body, res);
}

/** Why IAM refuses this request (the coral exception name and message), or undefined when it may go on. */
async function refusalOf(iam: LocalIam, req: IncomingMessage, body: Buffer): Promise<[string, string] | undefined> {
  const target = String(req.headers['x-amz-target'] ?? '');
  const action = `dynamodb:${target.split('.').pop() ?? ''}`;
  try {
    const caller = await iam.authenticate('dynamodb', { method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body });
    const table = (() => {
      try {
        return (JSON.parse(body.toString('utf8')) as { TableName?: string }).TableName ?? '*';
      } catch {
        return '*';
      }
    })();
    const resource = `arn:aws:dynamodb:${iam.opts.region}:000000000000:table/${table}`;
    if (!iam.allows(caller, action, resource)) {
      return [
        'AccessDeniedException',
        `User: ${caller.principalId} is not authorized to perform: ${action} on resource: ${resource} because no identity-based policy allows the ${action} action`,
      ];
    }
    return undefined;
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return [DYNAMO_AUTH_ERRORS[err.reason], err.message];
  }
}

const S = 'S' as const;
const byOwner = {
  IndexName: 'owner-index',
  KeySchema: [{ AttributeName: 'owner', KeyType: 'HASH' as const }],
  Projection: { ProjectionType: 'ALL' as const },
};

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
        { AttributeName: 'submit_order', AttributeType: S },
        { AttributeName: 'created_at', AttributeType: S },
        { AttributeName: 'open_on', AttributeType: S },
      ],
      KeySchema: [{ AttributeName: 'task_id', KeyType: 'HASH' }],
      GlobalSecondaryIndexes: [
        {
          // A group's tasks in submit order (core/tables/task-records.ts submitOrder).
          IndexName: 'group-order-index',
          KeySchema: [
            { AttributeName: 'task_group_id', KeyType: 'HASH' },
            { AttributeName: 'submit_order', KeyType: 'RANGE' },
          ],
          // Keys and the (never changing) owner only: a task's updates then never rewrite the index.
          Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: ['owner'] },
        },
        {
          IndexName: 'open-since-index',
          KeySchema: [
            { AttributeName: 'open_on', KeyType: 'HASH' },
            { AttributeName: 'created_at', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'KEYS_ONLY' },
        },
      ],
    },
  ];
}

/**
 * Creates the tables; a table kept on disk by an older Ferry whose indexes differ is rebuilt with
 * today's definition and its items copied back (dynalite cannot add an index to a table). The
 * items are first saved beside the data, in `backupDir`, so an interrupted rebuild loses nothing.
 */
export async function createTables(client: DynamoDBClient, cfg: FerryConfig, backupDir?: string): Promise<void> {
  for (const def of tableDefinitions(cfg)) {
    try {
      await createTableAndWait(client, def);
      continue;
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw err;
    }
    const have = (await client.send(new DescribeTableCommand({ TableName: def.TableName }))).Table?.GlobalSecondaryIndexes ?? [];
    const indexKeys = (i: { IndexName?: string; KeySchema?: { AttributeName?: string; KeyType?: string }[] }) =>
      [i.IndexName, ...(i.KeySchema ?? []).map((k) => `${k.AttributeName}:${k.KeyType}`)].join(' ');
    const want = new Set((def.GlobalSecondaryIndexes ?? []).map(indexKeys));
    if (have.length === want.size && have.every((i) => want.has(indexKeys(i)))) continue;
    await rebuildTable(client, def, backupDir);
  }
}

/** CreateTable answers while the table is CREATING (dynalite too, a tick later): wait until it is ACTIVE, so the first write finds it. */
async function createTableAndWait(client: DynamoDBClient, def: CreateTableCommandInput): Promise<void> {
  await client.send(new CreateTableCommand(def));
  for (let i = 0; i < 200; i++) {
    const status = (await client.send(new DescribeTableCommand({ TableName: def.TableName }))).Table?.TableStatus;
    if (status === 'ACTIVE') return;
    await sleep(10);
  }
  throw new Error(`table ${def.TableName} did not become active`);
}

/** DeleteTable answers before the table is gone (dynalite too, a tick later): wait until it is. */
export async function deleteTableAndWait(client: DynamoDBClient, tableName: string): Promise<void> {
  await client.send(new DeleteTableCommand({ TableName: tableName }));
  for (let i = 0; i < 200; i++) {
    try {
      await client.send(new DescribeTableCommand({ TableName: tableName }));
    } catch (err) {
      if ((err as { name?: string }).name === 'ResourceNotFoundException') return;
      throw err;
    }
    await sleep(10);
  }
  throw new Error(`table ${tableName} was not deleted`);
}

/**
 * What today's indexes need of an item an older Ferry wrote: a task without `submit_order` (from
 * before tasks were listed in submit order) gets one from its creation time and id, so it stays in
 * its group's listing. Idempotency records and other tables' items have nothing to add.
 */
function upgradeItem(item: Record<string, AttributeValue>): void {
  const group = item.task_group_id?.S;
  const created = item.created_at?.S;
  if (group && created && !item.submit_order) item.submit_order = { S: legacySubmitOrder(created, item.task_id!.S!) };
}

async function rebuildTable(client: DynamoDBClient, def: CreateTableCommandInput, backupDir?: string): Promise<void> {
  const items: Record<string, AttributeValue>[] = [];
  let start: Record<string, AttributeValue> | undefined;
  do {
    const page = await client.send(new ScanCommand({ TableName: def.TableName, ExclusiveStartKey: start }));
    items.push(...(page.Items ?? []));
    start = page.LastEvaluatedKey;
  } while (start);
  if (backupDir) writeFileSync(`${backupDir}/${def.TableName}.before-rebuild.json`, JSON.stringify(items), { mode: 0o600 });
  for (const item of items) upgradeItem(item);
  console.error(
    `local DynamoDB: table ${def.TableName} was made by an older Ferry; rebuilding it with today's indexes (${items.length} items kept)`,
  );
  await deleteTableAndWait(client, def.TableName!);
  await createTableAndWait(client, def);
  // DynamoDB: at most 25 puts per BatchWriteItem.
  for (let i = 0; i < items.length; i += 25) {
    let pending: Record<string, { PutRequest: { Item: Record<string, AttributeValue> } }[]> | undefined = {
      [def.TableName!]: items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } })),
    };
    while (pending && Object.keys(pending).length) {
      const out = await client.send(new BatchWriteItemCommand({ RequestItems: pending }));
      pending = out.UnprocessedItems as typeof pending;
    }
  }
}
