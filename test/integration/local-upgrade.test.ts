import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { getTask } from '../../core/tables/task-records';
import { deleteTableAndWait, tableDefinitions } from '../../local/dynamo';
import { config } from '../../core/config';
import { startLocalStack } from '../../local/stack';
import { caller } from '../helpers/api';
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
  // Put the tasks table back as an older release made it: an unsorted open-index, and a group-index
  // sorted on created_at, with tasks that have no submit_order.
  const def = tableDefinitions(config()).find((d) => d.TableName === tasksTable)!;
  await deleteTableAndWait(ddb, tasksTable);
  await ddb.send(
    new CreateTableCommand({
      ...def,
      AttributeDefinitions: def.AttributeDefinitions!.filter((a) => a.AttributeName !== 'submit_order'),
      GlobalSecondaryIndexes: [
        {
          IndexName: 'group-index',
          KeySchema: [
            { AttributeName: 'task_group_id', KeyType: 'HASH' },
            { AttributeName: 'created_at', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'INCLUDE', NonKeyAttributes: ['owner'] },
        },
        {
          IndexName: 'open-index',
          KeySchema: [{ AttributeName: 'open_on', KeyType: 'HASH' }],
          Projection: { ProjectionType: 'KEYS_ONLY' },
        },
      ],
    }),
  );
  await ddb.send(
    new PutItemCommand({ TableName: tasksTable, Item: { task_id: { S: 'kept-task' }, owner: { S: 'alice' }, state: { S: 'success' } } }),
  );
  const group = '11111111-2222-4333-8444-555555555555';
  const oldTask = (taskId: string, createdAt: string) => ({
    task_id: taskId,
    owner: 'alice',
    endpoint_id: '99999999-2222-4333-8444-555555555555',
    function_id: '88888888-2222-4333-8444-555555555555',
    task_group_id: group,
    state: 'cancelled',
    args: { v: 1, codec: 'json', size: 2, sha256: '44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', inline: 'e30=' },
    walltime_ms: 1000,
    created_at: createdAt,
    updated_at: createdAt,
    transitions: [{ state: 'received', at: createdAt, by: 'api' }],
  });
  const older = ['00000000-0000-4000-8000-00000000000b', '00000000-0000-4000-8000-00000000000a'];
  const doc = DynamoDBDocumentClient.from(ddb);
  await doc.send(new PutCommand({ TableName: tasksTable, Item: oldTask(older[0]!, '2026-01-01T00:00:01.000Z') }));
  await doc.send(new PutCommand({ TableName: tasksTable, Item: oldTask(older[1]!, '2026-01-01T00:00:02.000Z') }));
  ddb.destroy();
  await stack.close();

  stack = await startLocalStack(opts);
  const again = new DynamoDBClient({});
  const indexes = (await again.send(new DescribeTableCommand({ TableName: tasksTable })))
    .Table!.GlobalSecondaryIndexes!.map((i) => i.IndexName)
    .sort();
  expect(indexes).toEqual(def.GlobalSecondaryIndexes!.map((i) => i.IndexName).sort());
  expect(await getTask('kept-task')).toMatchObject({ owner: 'alice', state: 'success' });
  expect(existsSync(join(dataDir, `${tasksTable}.before-rebuild.json`))).toBe(true);
  // The old tasks stay in their group's listing, oldest first, and a new submit to the group lists after them.
  const alice = caller(stack.apiUrl, await stack.createUser('alice'));
  const listed = await alice('GET', `/v1/task-groups/${group}`);
  expect(listed.status).toBe(200);
  expect(listed.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(older);
  const fn = await alice('POST', '/v1/functions', { name: 'one', runtime: 'node', source: '() => 1' });
  const ep = await alice('POST', '/v1/endpoints', { name: 'ep' });
  const sub = await alice('POST', `/v1/endpoints/${ep.body.endpoint_id}/submit`, {
    task_group_id: group,
    tasks: [{ function_id: fn.body.function_id }],
  });
  expect(sub.status).toBe(202);
  const after = await alice('GET', `/v1/task-groups/${group}`);
  expect(after.body.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([...older, ...sub.body.task_ids]);
  again.destroy();
  await stack.close();
});
