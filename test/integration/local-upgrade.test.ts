import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { getTask } from '../../core/tables/tasks';
import { deleteTableAndWait, tableDefinitions } from '../../local/dynamo';
import { config } from '../../core/config';
import { startLocalStack } from '../../local/stack';
import { freePorts } from '../helpers/ports';

jest.setTimeout(60_000);

// A .ferry/ written by an older Ferry keeps tables whose indexes differ from today's; the local
// stack rebuilds them on start and keeps every item.
test('rebuilds a kept table whose indexes are out of date, keeping its items', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-upgrade-'));
  const [api, dynamodb, sqs, s3, sts] = await freePorts(5);
  const opts = { dataDir, apiPort: api, ports: { dynamodb, sqs, s3, sts } };
  let stack = await startLocalStack(opts);
  const tasksTable = config().tables.tasks;
  const ddb = new DynamoDBClient({});
  // Put the tasks table back as an older release made it: an unsorted open-index.
  const def = tableDefinitions(config()).find((d) => d.TableName === tasksTable)!;
  await deleteTableAndWait(ddb, tasksTable);
  await ddb.send(
    new CreateTableCommand({
      ...def,
      GlobalSecondaryIndexes: [
        ...def.GlobalSecondaryIndexes!.filter((i) => i.IndexName === 'group-index'),
        { IndexName: 'open-index', KeySchema: [{ AttributeName: 'open_on', KeyType: 'HASH' }], Projection: { ProjectionType: 'KEYS_ONLY' } },
      ],
    }),
  );
  await ddb.send(new PutItemCommand({ TableName: tasksTable, Item: { task_id: { S: 'kept-task' }, owner: { S: 'alice' }, state: { S: 'success' } } }));
  ddb.destroy();
  await stack.close();

  stack = await startLocalStack(opts);
  const again = new DynamoDBClient({});
  const indexes = (await again.send(new DescribeTableCommand({ TableName: tasksTable }))).Table!.GlobalSecondaryIndexes!.map((i) => i.IndexName).sort();
  expect(indexes).toEqual(def.GlobalSecondaryIndexes!.map((i) => i.IndexName).sort());
  expect(await getTask('kept-task')).toMatchObject({ owner: 'alice', state: 'success' });
  expect(existsSync(join(dataDir, `${tasksTable}.before-rebuild.json`))).toBe(true);
  again.destroy();
  await stack.close();
});
