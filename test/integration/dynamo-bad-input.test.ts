import type { BuildMiddleware, MetadataBearer } from '@smithy/types';
import { DynamoDBClient, GetItemCommand, ListTablesCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { startLocalStack, type LocalStack } from '../../local/stack';

/**
 * The local DynamoDB answers every request, however malformed its body: a body that is JSON but
 * not an object is a 400 SerializationException (dynalite alone would throw on `null` and take
 * the stack down with it), and the store keeps serving afterwards. Bodies are set after
 * the SDK serialises, then signed as usual: the admin's key, so IAM lets them through.
 */
jest.setTimeout(30_000);

let stack: LocalStack;
beforeAll(async () => {
  stack = await startLocalStack({});
});
afterAll(async () => stack?.close());

/** A client whose every request carries `body` instead of what the SDK wrote. */
function rawBodyClient(body: string): DynamoDBClient {
  const client = new DynamoDBClient({ maxAttempts: 1, requestHandler: { requestTimeout: 5_000 } });
  client.middlewareStack.add(
    ((next) => (args) => {
      const request = args.request as { body: unknown; headers: Record<string, string> };
      request.body = body;
      request.headers['content-length'] = String(Buffer.byteLength(body));
      return next(args);
    }) satisfies BuildMiddleware<object, MetadataBearer>,
    { step: 'build', name: 'rawBody', priority: 'low' },
  );
  return client;
}

const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (err: { name?: string; $metadata?: { httpStatusCode?: number } }) => `${err.$metadata?.httpStatusCode} ${err.name}`,
  );

test.each(['null', '7', 'true', '"text"', '[]', ' null '])('a body of %s is a 400 SerializationException', async (body) => {
  const client = rawBodyClient(body);
  expect(await outcome(client.send(new GetItemCommand({ TableName: 't', Key: {} })))).toBe('400 SerializationException');
  expect(await outcome(client.send(new PutItemCommand({ TableName: 't', Item: {} })))).toBe('400 SerializationException');
  client.destroy();
});

test('missing or mistyped members are 400s as DynamoDB gives them, and the store goes on serving', async () => {
  for (const [body, answer] of [
    ['{"TableName":null}', '400 ValidationException'],
    ['{"TableName":"t","Key":7}', '400 SerializationException'],
  ]) {
    const client = rawBodyClient(body!);
    expect(await outcome(client.send(new GetItemCommand({ TableName: 't', Key: {} })))).toBe(answer);
    client.destroy();
  }
  const plain = new DynamoDBClient({});
  const tables = await plain.send(new ListTablesCommand({}));
  expect(tables.TableNames).toContain('ferry-local-tasks');
  plain.destroy();
});
