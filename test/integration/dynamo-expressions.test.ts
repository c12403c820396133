import type { Server } from 'node:http';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDynamoServer, type DynamoServer } from '../../local/dynamo';
import { bareDynalite, closeServer, dynamoCall, listenOnFreePort, pkSkTable, type DynamoAnswer } from '../helpers/dynalite';

/**
 * The local DynamoDB reuses the parse trees of repeated expressions
 * (local/dynamo-fast-paths.js). Each request here goes to it and to a bare dynalite in this
 * process, which parses every expression afresh: both must answer alike, and the answers that
 * matter (a failed condition, an error from a value's type or content) are also checked as such.
 */
let local: DynamoServer;
let bare: Server;
let bareUrl: string;
let dataDir: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'ferry-dynamo-expressions-'));
  local = await startDynamoServer({ dataDir });
  bare = bareDynalite({ createTableMs: 0 });
  bareUrl = await listenOnFreePort(bare);
  for (const url of [local.url, bareUrl]) {
    await dynamoCall(url, 'CreateTable', pkSkTable('things'));
  }
});

afterAll(async () => {
  await local?.close();
  await closeServer(bare);
  rmSync(dataDir, { recursive: true, force: true });
});

/** The same call to both; their answers must be equal. */
async function both(operation: string, input: Record<string, unknown>): Promise<DynamoAnswer> {
  const [fast, fresh] = await Promise.all([dynamoCall(local.url, operation, input), dynamoCall(bareUrl, operation, input)]);
  expect({ operation, input, answer: fast }).toEqual({ operation, input, answer: fresh });
  return fast;
}

const failedCondition = (a: DynamoAnswer) => a.status === 400 && String(a.body.__type).endsWith('ConditionalCheckFailedException');
const invalid = (a: DynamoAnswer, message: RegExp) =>
  a.status === 400 && String(a.body.__type).endsWith('ValidationException') && message.test(String(a.body.message));

describe('the local DynamoDB reuses parsed expressions (local/dynamo-fast-paths.js)', () => {
  it('puts each request’s own values and names in a repeated update and condition', async () => {
    const move = (sk: number, to: string, from: string[], name = 'state') => ({
      TableName: 'things',
      Key: { pk: { S: 'a' }, sk: { N: String(sk) } },
      UpdateExpression: 'SET #s = :to, updated_at = :now, transitions = list_append(if_not_exists(transitions, :initial), :t)',
      ConditionExpression: `(attribute_not_exists(pk) OR #s IN (${from.map((_, i) => `:f${i}`).join(', ')}))`,
      ExpressionAttributeNames: { '#s': name },
      ExpressionAttributeValues: {
        ':to': { S: to },
        ':now': { S: `t${sk}-${to}` },
        ':initial': { L: [{ S: 'created' }] },
        ':t': { L: [{ M: { state: { S: to } } }] },
        ...Object.fromEntries(from.map((f, i) => [`:f${i}`, { S: f }])),
      },
      ReturnValues: 'ALL_NEW',
    });
    for (const sk of [1, 2, 3]) {
      const first = await both('UpdateItem', move(sk, 'running', ['pending']));
      expect((first.body.Attributes as Record<string, unknown>).state).toEqual({ S: 'running' });
      const second = await both('UpdateItem', move(sk, 'done', ['running']));
      expect((second.body.Attributes as Record<string, unknown>).transitions).toEqual({
        L: [{ S: 'created' }, { M: { state: { S: 'running' } } }, { M: { state: { S: 'done' } } }],
      });
      // The same strings once more, with values that no longer hold: the condition still fails.
      expect(failedCondition(await both('UpdateItem', move(sk, 'running', ['pending'])))).toBe(true);
      expect(failedCondition(await both('UpdateItem', move(sk, 'failed', ['running'])))).toBe(true);
    }
    // The same expression with `#s` naming another attribute writes that one.
    const other = await both('UpdateItem', move(1, 'elsewhere', ['done'], 'phase'));
    expect(failedCondition(other)).toBe(true);
    const fresh = await both('UpdateItem', move(9, 'elsewhere', ['x'], 'phase'));
    expect((fresh.body.Attributes as Record<string, unknown>).phase).toEqual({ S: 'elsewhere' });
    expect((fresh.body.Attributes as Record<string, unknown>).state).toBeUndefined();
  });

  it('still rejects a value of the wrong type, or bounds out of order, in an expression it has seen', async () => {
    const add = (v: Record<string, unknown>) => ({
      TableName: 'things',
      Key: { pk: { S: 'b' }, sk: { N: '1' } },
      UpdateExpression: 'ADD #c :v',
      ExpressionAttributeNames: { '#c': 'count' },
      ExpressionAttributeValues: { ':v': v },
      ReturnValues: 'UPDATED_NEW',
    });
    expect((await both('UpdateItem', add({ N: '2' }))).body.Attributes).toEqual({ count: { N: '2' } });
    expect(
      invalid(
        await both('UpdateItem', add({ S: '2' })),
        /Incorrect operand type for operator or function; operator: ADD, operand type: STRING/,
      ),
    ).toBe(true);
    expect((await both('UpdateItem', add({ N: '3' }))).body.Attributes).toEqual({ count: { N: '5' } });

    const between = (lo: string, hi: string) => ({
      TableName: 'things',
      Key: { pk: { S: 'b' }, sk: { N: '1' } },
      UpdateExpression: 'SET seen = :lo',
      ConditionExpression: '#c BETWEEN :lo AND :hi',
      ExpressionAttributeNames: { '#c': 'count' },
      ExpressionAttributeValues: { ':lo': { N: lo }, ':hi': { N: hi } },
    });
    expect((await both('UpdateItem', between('1', '9'))).status).toBe(200);
    expect(invalid(await both('UpdateItem', between('9', '1')), /upper bound to be greater than or equal to lower bound/)).toBe(true);
    expect(failedCondition(await both('UpdateItem', between('6', '9')))).toBe(true);

    const typed = (type: string) => ({
      TableName: 'things',
      Key: { pk: { S: 'b' }, sk: { N: '1' } },
      UpdateExpression: 'REMOVE seen',
      ConditionExpression: 'attribute_type(#c, :t)',
      ExpressionAttributeNames: { '#c': 'count' },
      ExpressionAttributeValues: { ':t': { S: type } },
    });
    expect(failedCondition(await both('UpdateItem', typed('S')))).toBe(true);
    expect(invalid(await both('UpdateItem', typed('XX')), /Invalid attribute type name found; type: XX/)).toBe(true);
    expect((await both('UpdateItem', typed('N'))).status).toBe(200);

    const append = (v: Record<string, unknown>) => ({
      TableName: 'things',
      Key: { pk: { S: 'b' }, sk: { N: '2' } },
      UpdateExpression: 'SET #l = list_append(if_not_exists(#l, :empty), :v)',
      ExpressionAttributeNames: { '#l': 'log' },
      ExpressionAttributeValues: { ':empty': { L: [] }, ':v': v },
    });
    expect((await both('UpdateItem', append({ L: [{ S: 'x' }] }))).status).toBe(200);
    expect(invalid(await both('UpdateItem', append({ S: 'x' })), /list_append, operand type: S/)).toBe(true);
  });

  it('still reports names and values a repeated expression leaves unused, or lacks', async () => {
    const put = (values: Record<string, unknown>, names: Record<string, string> = { '#n': 'note' }) => ({
      TableName: 'things',
      Item: { pk: { S: 'c' }, sk: { N: '1' }, note: { S: 'n' } },
      ConditionExpression: 'attribute_not_exists(#n) OR #n = :n',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
    });
    expect((await both('PutItem', put({ ':n': { S: 'n' } }))).status).toBe(200);
    expect((await both('PutItem', put({ ':n': { S: 'n' } }))).status).toBe(200);
    expect(failedCondition(await both('PutItem', put({ ':n': { S: 'other' } })))).toBe(true);
    expect(invalid(await both('PutItem', put({ ':n': { S: 'n' }, ':extra': { S: 'e' } })), /unused in expressions: keys: \{:extra\}/)).toBe(
      true,
    );
    expect(invalid(await both('PutItem', put({ ':m': { S: 'n' } })), /attribute value used in expression is not defined/)).toBe(true);
    expect(
      invalid(await both('PutItem', put({ ':n': { S: 'n' } }, { '#n': 'note', '#x': 'x' })), /unused in expressions: keys: \{#x\}/),
    ).toBe(true);
    // A name used by the update only and one used by the condition only: both count as used.
    const update = {
      TableName: 'things',
      Key: { pk: { S: 'c' }, sk: { N: '1' } },
      UpdateExpression: 'SET #a = :a',
      ConditionExpression: '#b = :b',
      ExpressionAttributeNames: { '#a': 'alpha', '#b': 'note' },
      ExpressionAttributeValues: { ':a': { M: { deep: { L: [{ S: 'd' }] } } }, ':b': { S: 'n' } },
      ReturnValues: 'ALL_NEW',
    };
    for (let i = 0; i < 2; i++)
      expect(((await both('UpdateItem', update)).body.Attributes as Record<string, unknown>).alpha).toEqual({
        M: { deep: { L: [{ S: 'd' }] } },
      });
    expect(
      (
        await both('UpdateItem', {
          ...update,
          UpdateExpression: 'SET #a = :a, #select = :a',
          ExpressionAttributeNames: { ...update.ExpressionAttributeNames, '#select': 'select' },
        })
      ).status,
    ).toBe(200);
    expect(invalid(await both('UpdateItem', { ...update, UpdateExpression: 'SET #a = :a, select = :a' }), /reserved keyword: select/)).toBe(
      true,
    );
    expect(invalid(await both('UpdateItem', { ...update, UpdateExpression: 'SET #a = :a, select = :a' }), /reserved keyword: select/)).toBe(
      true,
    );
  });

  it('answers repeated key conditions, filters and projections with each request’s values', async () => {
    for (let sk = 1; sk <= 4; sk++) {
      await both('PutItem', {
        TableName: 'things',
        Item: { pk: { S: 'q' }, sk: { N: String(sk) }, colour: { S: sk % 2 ? 'red' : 'blue' }, size: { N: String(sk * 10) } },
      });
    }
    // `:g = pk`: dynalite turns such a key condition around after parsing it.
    const query = (g: string, s: string, colour: string, names: Record<string, string>) => ({
      TableName: 'things',
      KeyConditionExpression: ':g = pk AND :s <= sk',
      FilterExpression: '#c = :c',
      ProjectionExpression: '#p, sk',
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: { ':g': { S: g }, ':s': { N: s }, ':c': { S: colour } },
    });
    const items = async (input: Record<string, unknown>) => (await both('Query', input)).body.Items;
    expect(await items(query('q', '1', 'red', { '#c': 'colour', '#p': 'size' }))).toEqual([
      { sk: { N: '1' }, size: { N: '10' } },
      { sk: { N: '3' }, size: { N: '30' } },
    ]);
    expect(await items(query('q', '2', 'red', { '#c': 'colour', '#p': 'size' }))).toEqual([{ sk: { N: '3' }, size: { N: '30' } }]);
    expect(await items(query('q', '1', 'blue', { '#c': 'colour', '#p': 'colour' }))).toEqual([
      { sk: { N: '2' }, colour: { S: 'blue' } },
      { sk: { N: '4' }, colour: { S: 'blue' } },
    ]);
    expect(await items(query('none', '1', 'blue', { '#c': 'colour', '#p': 'colour' }))).toEqual([]);
    const scan = (size: string) => ({
      TableName: 'things',
      FilterExpression: '#z > :n AND begins_with(pk, :p)',
      ExpressionAttributeNames: { '#z': 'size' },
      ExpressionAttributeValues: { ':n': { N: size }, ':p': { S: 'q' } },
    });
    expect(((await both('Scan', scan('15'))).body.Items as unknown[]).length).toBe(3);
    expect(((await both('Scan', scan('35'))).body.Items as unknown[]).length).toBe(1);
    expect(
      invalid(
        await both('Scan', { ...scan('1'), ExpressionAttributeValues: { ':n': { N: '1' }, ':p': { N: '1' } } }),
        /begins_with, operand type: N/,
      ),
    ).toBe(true);
  });

  it('keeps its tables on disk when the stack has a data dir', () => {
    expect(readdirSync(dataDir).length).toBeGreaterThan(0);
  });
});
