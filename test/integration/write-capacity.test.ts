import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { CreateTableCommand } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand, DeleteCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import dynalite from 'dynalite';
import { makeDynamoClient, resetSdkCallCounts, sdkWriteUnits } from '../../core/clients';

const servers: Server[] = [];
afterAll(async () => {
  for (const s of servers) await new Promise((r) => (s.closeAllConnections(), s.close(r)));
});

/** A bare dynalite (no IAM), and a table with one KEYS_ONLY GSI on `gk`. */
async function dynamoWithIndex() {
  const server = dynalite({ createTableMs: 0 });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  process.env.AWS_ENDPOINT_URL_DYNAMODB = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const ddb = makeDynamoClient({ region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
  await ddb.client.send(
    new CreateTableCommand({
      TableName: 'tasks',
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'id', AttributeType: 'S' },
        { AttributeName: 'gk', AttributeType: 'S' },
      ],
      KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      GlobalSecondaryIndexes: [
        { IndexName: 'by-gk', KeySchema: [{ AttributeName: 'gk', KeyType: 'HASH' }], Projection: { ProjectionType: 'KEYS_ONLY' } },
      ],
    }),
  );
  return { ddb, close: async () => ddb.destroy() };
}

const units = () => Object.fromEntries(sdkWriteUnits);

describe('DynamoDB write units (FERRY_COUNT_CAPACITY, for the bench)', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
    resetSdkCallCounts();
  });

  it('are not asked for unless counting is on', async () => {
    delete process.env.FERRY_COUNT_CAPACITY;
    const { ddb, close } = await dynamoWithIndex();
    await ddb.send(new PutCommand({ TableName: 'tasks', Item: { id: '1', gk: 'x' } }));
    expect(units()).toEqual({});
    await close();
  });

  it("sum the table's units; dynalite alone reports no GSI writes, the bench's preload adds them by DynamoDB's rules", async () => {
    process.env.FERRY_COUNT_CAPACITY = '1';
    const raw = await dynamoWithIndex();
    await raw.ddb.send(new PutCommand({ TableName: 'tasks', Item: { id: '1', gk: 'x' } }));
    // An item entering the index costs a write there on AWS; dynalite counts the table's only.
    expect(units()).toEqual({ tasks: 1 });
    await raw.close();
    resetSdkCallCounts();

    // Patches dynalite stores made from now on.
    jest.requireActual('../../bench/dynalite-gsi-capacity.js');
    const { ddb, close } = await dynamoWithIndex();
    const step = async (write: object) => {
      resetSdkCallCounts();
      await ddb.send(write as never);
      return units();
    };
    // Enters the index: table 1 + index 1.
    expect(await step(new PutCommand({ TableName: 'tasks', Item: { id: '1', gk: 'x' } }))).toEqual({ tasks: 2, 'tasks/by-gk': 1 });
    // A change the KEYS_ONLY projection does not hold: the table only.
    expect(
      await step(
        new UpdateCommand({ TableName: 'tasks', Key: { id: '1' }, UpdateExpression: 'SET v = :v', ExpressionAttributeValues: { ':v': 1 } }),
      ),
    ).toEqual({ tasks: 1 });
    // The index key changes: a delete and a put there.
    expect(
      await step(
        new UpdateCommand({
          TableName: 'tasks',
          Key: { id: '1' },
          UpdateExpression: 'SET gk = :g',
          ExpressionAttributeValues: { ':g': 'y' },
        }),
      ),
    ).toEqual({ tasks: 3, 'tasks/by-gk': 2 });
    // Not in the index: the table only.
    expect(await step(new PutCommand({ TableName: 'tasks', Item: { id: '2' } }))).toEqual({ tasks: 1 });
    // Leaves the index.
    expect(await step(new DeleteCommand({ TableName: 'tasks', Key: { id: '1' } }))).toEqual({ tasks: 2, 'tasks/by-gk': 1 });
    // A batch: dynalite sums its writes per table (index parts are not itemised in a batch answer).
    const batch = await step(
      new BatchWriteCommand({
        RequestItems: { tasks: [{ PutRequest: { Item: { id: '3', gk: 'z' } } }, { PutRequest: { Item: { id: '4' } } }] },
      }),
    );
    expect(batch.tasks).toBe(3);
    // A failed conditional write is counted by calls (AWS bills it, its error carries no figure).
    await expect(
      ddb.send(new PutCommand({ TableName: 'tasks', Item: { id: '2' }, ConditionExpression: 'attribute_not_exists(id)' })),
    ).rejects.toThrow();
    expect(units()['conditional-check-failed']).toBe(1);
    await close();
  });
});
