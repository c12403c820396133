import { QueryCommand, type QueryCommandInput, type QueryCommandOutput } from '@aws-sdk/lib-dynamodb';
import { z } from 'zod';
import { dynamo } from '../clients';
import { BadRequest } from '../errors';
import { UUID_RE } from '../ids';

/**
 * Pagination cursors are DynamoDB's LastEvaluatedKey, opaque to clients but not trusted: a cursor
 * comes back from the client, so it is checked against the query it is used with before it
 * reaches DynamoDB (exactly that index's key attributes, the query's own partition value).
 */
export const encodeCursor = (key: Record<string, unknown> | undefined): string | undefined =>
  key ? Buffer.from(JSON.stringify(key)).toString('base64url') : undefined;

/** What a cursor must decode to for one query: a strict zod object of the index's key attributes. */
export type CursorShape = z.ZodType<Record<string, string>>;

/** A cursor holds a key of two or three short strings; anything much longer is not one of ours. */
const MAX_CURSOR_CHARS = 1024;

export const invalidCursor = (): BadRequest => new BadRequest('invalid pagination cursor');

/** Key attributes as cursors carry them: ids are UUIDs, timestamps ISO 8601 as written. */
export const cursorId = z.string().regex(UUID_RE);
export const cursorTimestamp = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/);

/** The key a client's cursor stands for, or undefined for the first page (no cursor, or an empty one). */
export function decodeCursor(cursor: string | undefined, shape: CursorShape): Record<string, string> | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  // Buffer.from(..., 'base64url') skips characters outside the alphabet instead of failing.
  if (cursor.length > MAX_CURSOR_CHARS || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalidCursor();
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  const parsed = shape.safeParse(json);
  if (!parsed.success) throw invalidCursor();
  return parsed.data;
}

/**
 * One Query page from a client's cursor. The cursor was checked already; should DynamoDB still
 * refuse the starting key (its ValidationException then names "starting key"), that is the
 * client's input and a 400. Every other ValidationException is a fault of ours and stays a 500.
 */
export async function queryPage(input: QueryCommandInput): Promise<QueryCommandOutput> {
  try {
    return await dynamo().send(new QueryCommand(input));
  } catch (err) {
    const e = err as { name?: string; message?: string };
    if (input.ExclusiveStartKey && e.name === 'ValidationException' && /starting key/i.test(e.message ?? '')) throw invalidCursor();
    throw err;
  }
}

/** A cursor of `owner`'s listing: owner-index keys are the owner and the table's own id. */
const ownerCursor = (keyName: string, owner: string): CursorShape =>
  z.object({ [keyName]: cursorId, owner: z.literal(owner) }).strict() as unknown as CursorShape;

/** One page of a table's `owner-index` (functions and endpoints list this way); `keyName` is the table's own key. */
export async function queryByOwner<T>(
  table: string,
  keyName: string,
  owner: string,
  limit: number,
  cursor?: string,
): Promise<{ items: T[]; next?: string }> {
  const out = await queryPage({
    TableName: table,
    IndexName: 'owner-index',
    KeyConditionExpression: '#o = :o',
    ExpressionAttributeNames: { '#o': 'owner' },
    ExpressionAttributeValues: { ':o': owner },
    Limit: limit,
    ExclusiveStartKey: decodeCursor(cursor, ownerCursor(keyName, owner)),
  });
  return { items: (out.Items ?? []) as T[], next: encodeCursor(out.LastEvaluatedKey) };
}
