import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A DynamoDB answer, status and JSON body, for comparing the local store with a bare dynalite. */
export type DynamoAnswer = { status: number; body: Record<string, unknown> };

/** One DynamoDB call as the SDK sends it, unsigned (dynalite checks the header's form, not the signature). */
export async function dynamoCall(url: string, operation: string, input: Record<string, unknown>): Promise<DynamoAnswer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': `DynamoDB_20120810.${operation}`,
      'x-amz-date': '20260101T000000Z',
      authorization: 'AWS4-HMAC-SHA256 Credential=a/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=b',
    },
    body: JSON.stringify(input),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A pay-per-request table keyed by `pk` (a string) and `sk` (a number), as CreateTable takes it. */
export const pkSkTable = (name: string) => ({
  TableName: name,
  BillingMode: 'PAY_PER_REQUEST' as const,
  AttributeDefinitions: [
    { AttributeName: 'pk', AttributeType: 'S' as const },
    { AttributeName: 'sk', AttributeType: 'N' as const },
  ],
  KeySchema: [
    { AttributeName: 'pk', KeyType: 'HASH' as const },
    { AttributeName: 'sk', KeyType: 'RANGE' as const },
  ],
});

/** A bare dynalite server on a free loopback port; its URL. */
export async function listenOnFreePort(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export const closeServer = (server: Server): Promise<unknown> => new Promise((r) => (server.closeAllConnections(), server.close(r)));

/**
 * A bare dynalite: module instances of its own, so the local store's fast paths
 * (local/dynamo-fast-paths.js, installed into dynalite's modules when a local stack starts in
 * this test file) never reach it. It parses and checks every request as dynalite alone does.
 */
export function bareDynalite(options: Record<string, unknown>): Server {
  let make: ((o: Record<string, unknown>) => Server) | undefined;
  let validations: { checkTypes: { compiled?: boolean } } | undefined;
  jest.isolateModules(() => {
    make = jest.requireActual<(o: Record<string, unknown>) => Server>('dynalite');
    validations = jest.requireActual<{ checkTypes: { compiled?: boolean } }>('dynalite/validations');
  });
  if (validations!.checkTypes.compiled) throw new Error('the bare dynalite shares the fast paths');
  return make!(options);
}
