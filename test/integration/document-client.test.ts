import type { Server } from 'node:http';
import { ConditionalCheckFailedException, CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  BatchWriteCommand,
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import dynalite from 'dynalite';
import { makeDynamoClient, resetSdkCallCounts, sdkCallCounts } from '../../core/clients';
import type { DocumentClient } from '../../core/document-client';
import { closeServer, listenOnFreePort, pkSkTable } from '../helpers/dynalite';

// Ferry's DocumentClient (core/document-client.ts) against lib-dynamodb's own, on one dynalite:
// whatever one writes, the other reads back the same, and both answer every read alike.
let server: Server;
let ours: DocumentClient;
let theirs: DynamoDBDocumentClient;
const TABLE = 'docs';

const saved = process.env.AWS_ENDPOINT_URL_DYNAMODB;
beforeAll(async () => {
  server = dynalite({ createTableMs: 0 });
  const endpoint = await listenOnFreePort(server);
  const opts = { region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } };
  // The SDK reads the endpoint from the environment, as a Ferry process is pointed at the local stack.
  process.env.AWS_ENDPOINT_URL_DYNAMODB = endpoint;
  ours = makeDynamoClient(opts);
  theirs = DynamoDBDocumentClient.from(new DynamoDBClient({ ...opts, endpoint }), { marshallOptions: { removeUndefinedValues: true } });
  await ours.client.send(new CreateTableCommand(pkSkTable(TABLE)));
});
afterAll(async () => {
  process.env.AWS_ENDPOINT_URL_DYNAMODB = saved;
  ours.destroy();
  theirs.destroy();
  await closeServer(server);
});

/** An item with every kind of value Ferry stores: nested maps and lists, numbers, flags, null, bytes, a string set. */
const item = (pk: string, sk: number) => ({
  pk,
  sk,
  state: 'waiting-for-endpoint',
  n: 1.5,
  ok: true,
  none: null,
  gone: undefined,
  bytes: new Uint8Array([1, 2, 3]),
  tags: new Set(['a', 'b']),
  nested: { items: [1, 'two', { three: [3] }], empty: {}, blank: '' },
});

describe('core DocumentClient', () => {
  it('writes items that lib-dynamodb reads back the same, and reads what lib-dynamodb wrote', async () => {
    await ours.send(new PutCommand({ TableName: TABLE, Item: item('a', 1) }));
    await theirs.send(new PutCommand({ TableName: TABLE, Item: item('b', 1) }));
    for (const pk of ['a', 'b']) {
      const get = new GetCommand({ TableName: TABLE, Key: { pk, sk: 1 }, ConsistentRead: true });
      const mine = await ours.send(get);
      const other = await theirs.send(new GetCommand(get.input));
      expect(mine.Item).toEqual(other.Item);
      expect(mine.Item).toMatchObject({ pk, sk: 1, n: 1.5, ok: true, none: null, tags: new Set(['a', 'b']) });
      expect(mine.Item).not.toHaveProperty('gone');
      expect(mine.Item!.nested).toEqual({ items: [1, 'two', { three: [3] }], empty: {}, blank: '' });
    }
    expect((await ours.send(new GetCommand({ TableName: TABLE, Key: { pk: 'none', sk: 1 } }))).Item).toBeUndefined();
  });

  it('updates and deletes with expression values, returns attributes, and raises a failed condition as the SDK does', async () => {
    const update = new UpdateCommand({
      TableName: TABLE,
      Key: { pk: 'a', sk: 1 },
      UpdateExpression: 'SET #s = :s, nested.#i[0] = :n',
      ConditionExpression: '#s = :from',
      ExpressionAttributeNames: { '#s': 'state', '#i': 'items' },
      ExpressionAttributeValues: { ':s': 'running', ':n': { deep: [true] }, ':from': 'waiting-for-endpoint' },
      ReturnValues: 'ALL_NEW',
    });
    const out = await ours.send(update);
    expect(out.Attributes).toMatchObject({ state: 'running', nested: { items: [{ deep: [true] }, 'two', { three: [3] }] } });
    // The condition no longer holds: the same exception class lib-dynamodb's callers catch.
    await expect(ours.send(update)).rejects.toBeInstanceOf(ConditionalCheckFailedException);
    const deleted = await ours.send(
      new DeleteCommand({
        TableName: TABLE,
        Key: { pk: 'b', sk: 1 },
        ConditionExpression: 'ok = :t',
        ExpressionAttributeValues: { ':t': true },
        ReturnValues: 'ALL_OLD',
      }),
    );
    expect(deleted.Attributes).toMatchObject({ pk: 'b', ok: true });
    expect((await theirs.send(new GetCommand({ TableName: TABLE, Key: { pk: 'b', sk: 1 }, ConsistentRead: true }))).Item).toBeUndefined();
  });

  it('queries and scans page by page with the same keys and items as lib-dynamodb', async () => {
    await ours.send(
      new BatchWriteCommand({
        RequestItems: { [TABLE]: Array.from({ length: 5 }, (_, i) => ({ PutRequest: { Item: item('q', i) } })) },
      }),
    );
    const query = {
      TableName: TABLE,
      KeyConditionExpression: 'pk = :p AND sk >= :s',
      ExpressionAttributeValues: { ':p': 'q', ':s': 1 },
      Limit: 2,
    };
    const pages: unknown[][] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const mine = await ours.send(new QueryCommand({ ...query, ExclusiveStartKey: start }));
      const other = await theirs.send(new QueryCommand({ ...query, ExclusiveStartKey: start }));
      expect(mine.Items).toEqual(other.Items);
      expect(mine.LastEvaluatedKey).toEqual(other.LastEvaluatedKey);
      pages.push(mine.Items!.map((i) => i.sk));
      start = mine.LastEvaluatedKey;
    } while (start);
    expect(pages).toEqual([[1, 2], [3, 4], []]);
    const scan = { TableName: TABLE, FilterExpression: 'pk = :p', ExpressionAttributeValues: { ':p': 'q' } };
    const scanned = await ours.send(new ScanCommand(scan));
    expect(scanned.Items).toEqual((await theirs.send(new ScanCommand(scan))).Items);
    expect(scanned.Items).toHaveLength(5);
  });

  it('batch-gets and batch-writes (puts and deletes) as lib-dynamodb does', async () => {
    await ours.send(
      new BatchWriteCommand({
        RequestItems: { [TABLE]: [{ DeleteRequest: { Key: { pk: 'q', sk: 0 } } }, { PutRequest: { Item: item('w', 9) } }] },
      }),
    );
    const keys = [
      { pk: 'q', sk: 0 },
      { pk: 'q', sk: 1 },
      { pk: 'w', sk: 9 },
    ];
    const mine = await ours.send(new BatchGetCommand({ RequestItems: { [TABLE]: { Keys: keys, ConsistentRead: true } } }));
    const other = await theirs.send(new BatchGetCommand({ RequestItems: { [TABLE]: { Keys: keys, ConsistentRead: true } } }));
    const bySk = (xs: Record<string, unknown>[] | undefined) => [...(xs ?? [])].sort((a, b) => Number(a.sk) - Number(b.sk));
    expect(bySk(mine.Responses?.[TABLE])).toEqual(bySk(other.Responses?.[TABLE]));
    expect(bySk(mine.Responses?.[TABLE]).map((i) => `${i.pk}${i.sk}`)).toEqual(['q1', 'w9']);
    expect(mine.UnprocessedKeys).toEqual({});
  });

  it('refuses the legacy parameters rather than sending them unmarshalled', async () => {
    await expect(ours.send(new PutCommand({ TableName: TABLE, Item: item('x', 1), Expected: { pk: { Exists: false } } }))).rejects.toThrow(
      /legacy parameter Expected/,
    );
    expect((await theirs.send(new GetCommand({ TableName: TABLE, Key: { pk: 'x', sk: 1 }, ConsistentRead: true }))).Item).toBeUndefined();
  });

  it('resolves its middleware once per command type, and every call still passes through it', async () => {
    expect(ours.client.config.cacheMiddleware).toBe(true);
    resetSdkCallCounts();
    for (let i = 0; i < 3; i++) {
      await ours.send(new GetCommand({ TableName: TABLE, Key: { pk: 'a', sk: 1 } }));
      await ours.send(
        new UpdateCommand({
          TableName: TABLE,
          Key: { pk: 'a', sk: 1 },
          UpdateExpression: 'SET n = n + :one',
          ExpressionAttributeValues: { ':one': 1 },
        }),
      );
    }
    // The call counter (core/clients.ts) is a middleware: it saw all six.
    expect(Object.fromEntries(sdkCallCounts)).toEqual({ 'DynamoDB.GetItem': 3, 'DynamoDB.UpdateItem': 3 });
    expect((await ours.send(new GetCommand({ TableName: TABLE, Key: { pk: 'a', sk: 1 }, ConsistentRead: true }))).Item?.n).toBe(4.5);
  });
});
