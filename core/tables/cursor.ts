import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { BadRequest } from '../errors';

/** Pagination cursors are DynamoDB's LastEvaluatedKey, opaque to clients. */
export const encodeCursor = (key: Record<string, unknown> | undefined): string | undefined =>
  key ? Buffer.from(JSON.stringify(key)).toString('base64url') : undefined;

export function decodeCursor(cursor: string | undefined): Record<string, unknown> | undefined {
  if (!cursor) return undefined;
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v;
  } catch {
    // fall through
  }
  throw new BadRequest('invalid pagination cursor');
}

/** One page of a table's `owner-index` (functions and endpoints list this way). */
export async function queryByOwner<T>(table: string, owner: string, limit: number, cursor?: string): Promise<{ items: T[]; next?: string }> {
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table,
      IndexName: 'owner-index',
      KeyConditionExpression: '#o = :o',
      ExpressionAttributeNames: { '#o': 'owner' },
      ExpressionAttributeValues: { ':o': owner },
      Limit: limit,
      ExclusiveStartKey: decodeCursor(cursor),
    }),
  );
  return { items: (out.Items ?? []) as T[], next: encodeCursor(out.LastEvaluatedKey) };
}
