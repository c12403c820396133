import { startDynamoServer, type DynamoServer } from '../../local/dynamo';
import { bareDynalite, closeServer, dynamoCall, listenOnFreePort, type DynamoAnswer } from '../helpers/dynalite';

/**
 * The local DynamoDB keeps each active table's decoded definition for item calls
 * (local/dynamo-fast-paths.js). Here: no item call of dynalite's writes to the kept definition,
 * and a changed, deleted or recreated table is seen at once, as by a bare dynalite.
 */
const settle = () => new Promise((r) => setTimeout(r, 30));

const TABLE = {
  TableName: 'kept',
  BillingMode: 'PAY_PER_REQUEST',
  AttributeDefinitions: [
    { AttributeName: 'pk', AttributeType: 'S' },
    { AttributeName: 'sk', AttributeType: 'S' },
    { AttributeName: 'g', AttributeType: 'S' },
    { AttributeName: 'l', AttributeType: 'S' },
  ],
  KeySchema: [
    { AttributeName: 'pk', KeyType: 'HASH' },
    { AttributeName: 'sk', KeyType: 'RANGE' },
  ],
  GlobalSecondaryIndexes: [
    {
      IndexName: 'by-g',
      KeySchema: [
        { AttributeName: 'g', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: ['v'] },
    },
    { IndexName: 'by-g-keys', KeySchema: [{ AttributeName: 'g', KeyType: 'HASH' }], Projection: { ProjectionType: 'KEYS_ONLY' } },
  ],
  LocalSecondaryIndexes: [
    {
      IndexName: 'by-l',
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'l', KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    },
  ],
};

/** Item calls of every kind, with indexes, conditions, projections, paging and capacity. */
async function itemCalls(url: string): Promise<DynamoAnswer[]> {
  const answers: DynamoAnswer[] = [];
  const send = async (op: string, input: Record<string, unknown>) =>
    answers.push(await dynamoCall(url, op, { ReturnConsumedCapacity: 'INDEXES', ...input }));
  for (let i = 0; i < 6; i++) {
    await send('PutItem', {
      TableName: 'kept',
      Item: {
        pk: { S: `p${i % 2}` },
        sk: { S: `s${i}` },
        g: { S: `g${i % 3}` },
        l: { S: `l${5 - i}` },
        v: { N: String(i) },
        w: { M: { x: { L: [{ S: 'y' }] } } },
      },
    });
  }
  await send('PutItem', { TableName: 'kept', Item: { pk: { S: 'p0' }, sk: { S: 's0' } }, ConditionExpression: 'attribute_not_exists(pk)' });
  await send('PutItem', { TableName: 'kept', Item: { pk: { S: 'p0' } } });
  await send('UpdateItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p0' }, sk: { S: 's0' } },
    UpdateExpression: 'SET g = :g, v = v + :one REMOVE l',
    ExpressionAttributeValues: { ':g': { S: 'g9' }, ':one': { N: '1' } },
    ReturnValues: 'ALL_OLD',
  });
  await send('UpdateItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p1' }, sk: { S: 's1' } },
    UpdateExpression: 'SET pk = :p',
    ExpressionAttributeValues: { ':p': { S: 'x' } },
  });
  await send('UpdateItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p1' }, sk: { S: 's9' } },
    AttributeUpdates: { g: { Action: 'PUT', Value: { S: 'g1' } } },
    ReturnValues: 'ALL_NEW',
  });
  await send('GetItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p0' }, sk: { S: 's2' } },
    ProjectionExpression: 'v, w.x[0]',
    ConsistentRead: true,
  });
  await send('GetItem', { TableName: 'kept', Key: { pk: { S: 'p0' } } });
  await send('Query', {
    TableName: 'kept',
    KeyConditionExpression: 'pk = :p AND begins_with(sk, :s)',
    ExpressionAttributeValues: { ':p': { S: 'p0' }, ':s': { S: 's' } },
    Limit: 2,
    ScanIndexForward: false,
  });
  await send('Query', {
    TableName: 'kept',
    IndexName: 'by-g',
    KeyConditionExpression: 'g = :g',
    ExpressionAttributeValues: { ':g': { S: 'g1' } },
    Select: 'ALL_PROJECTED_ATTRIBUTES',
  });
  await send('Query', {
    TableName: 'kept',
    IndexName: 'by-g-keys',
    KeyConditionExpression: 'g = :g',
    ExpressionAttributeValues: { ':g': { S: 'g2' } },
    Select: 'COUNT',
  });
  await send('Query', {
    TableName: 'kept',
    IndexName: 'by-l',
    KeyConditionExpression: 'pk = :p AND l > :l',
    ExpressionAttributeValues: { ':p': { S: 'p1' }, ':l': { S: 'l0' } },
    ExclusiveStartKey: { pk: { S: 'p1' }, sk: { S: 's1' }, l: { S: 'l4' } },
  });
  await send('Query', {
    TableName: 'kept',
    IndexName: 'nope',
    KeyConditionExpression: 'g = :g',
    ExpressionAttributeValues: { ':g': { S: 'g2' } },
  });
  await send('Scan', {
    TableName: 'kept',
    FilterExpression: 'v >= :n',
    ExpressionAttributeValues: { ':n': { N: '2' } },
    Segment: 0,
    TotalSegments: 2,
  });
  await send('Scan', {
    TableName: 'kept',
    IndexName: 'by-g',
    Limit: 2,
    ExclusiveStartKey: { pk: { S: 'p0' }, sk: { S: 's2' }, g: { S: 'g2' } },
  });
  await send('BatchGetItem', {
    RequestItems: {
      kept: {
        Keys: [
          { pk: { S: 'p0' }, sk: { S: 's2' } },
          { pk: { S: 'p1' }, sk: { S: 's3' } },
        ],
        ProjectionExpression: 'sk',
      },
    },
  });
  await send('BatchWriteItem', {
    RequestItems: {
      kept: [
        { PutRequest: { Item: { pk: { S: 'p2' }, sk: { S: 's0' }, g: { S: 'g0' } } } },
        { DeleteRequest: { Key: { pk: { S: 'p0' }, sk: { S: 's4' } } } },
      ],
    },
  });
  await send('DeleteItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p1' }, sk: { S: 's3' } },
    ConditionExpression: 'v = :v',
    ExpressionAttributeValues: { ':v': { N: '3' } },
    ReturnValues: 'ALL_OLD',
  });
  await send('DeleteItem', {
    TableName: 'kept',
    Key: { pk: { S: 'p1' }, sk: { S: 's5' } },
    ConditionExpression: 'v = :v',
    ExpressionAttributeValues: { ':v': { N: '0' } },
  });
  return answers;
}

describe('the local DynamoDB keeps decoded table definitions for item calls (local/dynamo-fast-paths.js)', () => {
  it("is never written to by dynalite's item calls", async () => {
    jest.resetModules();
    // Fresh instances after resetModules: the patch applies to this dynalite alone.
    jest.requireActual<{ install: () => void }>('../../local/dynamo-fast-paths').install();
    const db = jest.requireActual<{ create: (o: Record<string, unknown>) => { getTable: (...a: unknown[]) => void } }>('dynalite/db');
    // Every definition an item call gets is behind a proxy that records any write.
    const writes: string[] = [];
    const guarded = new WeakMap<object, object>();
    const guard = (value: unknown, path: string): unknown => {
      if (!value || typeof value !== 'object') return value;
      if (!guarded.has(value)) {
        guarded.set(
          value,
          new Proxy(value, {
            get: (target, key, receiver) => guard(Reflect.get(target, key, receiver), `${path}.${String(key)}`),
            set: (target, key) => (writes.push(`${path}.${String(key)}`), true),
            deleteProperty: (target, key) => (writes.push(`delete ${path}.${String(key)}`), true),
            defineProperty: (target, key) => (writes.push(`define ${path}.${String(key)}`), true),
          }),
        );
      }
      return guarded.get(value);
    };
    const create = db.create;
    const kept = new Set<unknown>();
    db.create = (options) => {
      const store = create(options);
      const getTable = store.getTable;
      store.getTable = (name: unknown, checkStatus: unknown, cb?: unknown) => {
        if (typeof checkStatus !== 'function') return getTable(name, checkStatus, cb);
        const done = checkStatus as (err: unknown, table?: unknown) => void;
        getTable(name, (err: unknown, table: unknown) => (table && kept.add(table), done(err, guard(table, 'table'))));
      };
      return store;
    };
    const dynalite = jest.requireActual<typeof import('dynalite')>('dynalite');
    const server = dynalite({ createTableMs: 0 });
    const url = await listenOnFreePort(server);
    try {
      expect((await dynamoCall(url, 'CreateTable', TABLE)).status).toBe(200);
      await settle();
      const answers = await itemCalls(url);
      expect(answers.filter((a) => a.status === 200).length).toBeGreaterThanOrEqual(18);
      expect(writes).toEqual([]);
      // Each item call got the one kept definition.
      expect(kept.size).toBe(1);
    } finally {
      await closeServer(server);
      jest.resetModules();
    }
  });

  it('sees a table changed, deleted or created again at once, as a bare dynalite does', async () => {
    const bare = bareDynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
    const local: DynamoServer = await startDynamoServer();
    const urls = [local.url, await listenOnFreePort(bare)];
    const both = async (op: string, input: Record<string, unknown>) => {
      const [fast, fresh] = await Promise.all(urls.map((u) => dynamoCall(u, op, input)));
      const strip = (a: DynamoAnswer) =>
        JSON.parse(
          JSON.stringify(a)
            .replace(/"(CreationDateTime|LastUpdateToPayPerRequestDateTime|LastIncreaseDateTime|LastDecreaseDateTime)":[0-9.]+/g, '"$1":0')
            .replace(/"TableId":"[^"]+"/g, '"TableId":""'),
        );
      expect({ op, input, answer: strip(fast) }).toEqual({ op, input, answer: strip(fresh) });
      return fast;
    };
    try {
      await both('CreateTable', {
        TableName: 'kept',
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [
          { AttributeName: 'pk', AttributeType: 'S' },
          { AttributeName: 'sk', AttributeType: 'S' },
        ],
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
      });
      await settle();
      expect((await both('PutItem', { TableName: 'kept', Item: { pk: { S: 'a' }, sk: { S: 'b' } } })).status).toBe(200);
      expect(
        (
          await both('UpdateTable', {
            TableName: 'kept',
            BillingMode: 'PROVISIONED',
            ProvisionedThroughput: { ReadCapacityUnits: 5, WriteCapacityUnits: 5 },
          })
        ).status,
      ).toBe(200);
      await both('GetItem', { TableName: 'kept', Key: { pk: { S: 'a' }, sk: { S: 'b' } }, ReturnConsumedCapacity: 'TOTAL' });
      await settle();
      await both('DescribeTable', { TableName: 'kept' });
      await both('GetItem', { TableName: 'kept', Key: { pk: { S: 'a' }, sk: { S: 'b' } } });
      expect((await both('DeleteTable', { TableName: 'kept' })).status).toBe(200);
      await settle();
      expect((await both('GetItem', { TableName: 'kept', Key: { pk: { S: 'a' }, sk: { S: 'b' } } })).status).toBe(400);
      // The same name with another key: item calls follow the new one.
      await both('CreateTable', {
        TableName: 'kept',
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'N' }],
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      });
      await settle();
      expect((await both('PutItem', { TableName: 'kept', Item: { pk: { S: 'a' }, sk: { S: 'b' } } })).status).toBe(400);
      expect((await both('PutItem', { TableName: 'kept', Item: { id: { N: '1' }, x: { S: 'y' } } })).status).toBe(200);
      expect((await both('GetItem', { TableName: 'kept', Key: { id: { N: '1' } } })).body.Item).toEqual({ id: { N: '1' }, x: { S: 'y' } });
    } finally {
      await local.close();
      await closeServer(bare);
    }
  });
});
