import { BatchGetCommand, BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';

import { backoffMs, chunk, mapLimit, sleep, type Backoff } from '../retry';

const RETRY: Backoff = { baseMs: 25, capMs: 1000, jitter: 'half' };

/**
 * Put items with BatchWriteItem (DynamoDB: 25 items a call), retrying unprocessed items with
 * backoff. Returns the keys (by `keyOf`) of items still unwritten after the retries.
 */
export async function batchPut<T extends Record<string, unknown>>(
  table: string,
  items: readonly T[],
  keyOf: (item: T) => string,
  maxAttempts = 6,
): Promise<string[]> {
  const failed: string[] = [];
  await mapLimit(chunk(items, 25), 4, async (group) => {
    let pending: Record<string, unknown>[] = group;
    for (let attempt = 0; pending.length > 0 && attempt < maxAttempts; attempt++) {
      if (attempt > 0) await sleep(backoffMs(attempt, RETRY));
      try {
        const out = await dynamo().send(
          new BatchWriteCommand({ RequestItems: { [table]: pending.map((Item) => ({ PutRequest: { Item } })) } }),
        );
        pending = (out.UnprocessedItems?.[table] ?? []).map((r) => r.PutRequest!.Item!);
      } catch (err) {
        if (!isRetryable(err) || attempt === maxAttempts - 1) break;
      }
    }
    for (const item of pending) failed.push(keyOf(item as T));
  });
  return failed;
}

/** Get items by key with BatchGetItem (100 keys a call), retrying unprocessed keys. */
export async function batchGet<T>(table: string, keyName: string, ids: readonly string[]): Promise<T[]> {
  return ((await batchGetTables([{ table, keyName, ids }])).get(table) ?? []) as T[];
}

/**
 * Get items of several tables by key, together: one BatchGetItem reads up to 100 keys of any
 * tables, so reads that sit on one path (a submit's endpoint and functions) cost one call.
 * Returns the items found, by table.
 */
export async function batchGetTables(
  reads: readonly { table: string; keyName: string; ids: readonly string[] }[],
): Promise<Map<string, unknown[]>> {
  const wanted = reads.flatMap(({ table, keyName, ids }) => [...new Set(ids)].map((id) => ({ table, key: { [keyName]: id } })));
  const found = new Map<string, unknown[]>(reads.map((r) => [r.table, []]));
  await mapLimit(chunk(wanted, 100), 4, async (group) => {
    let pending: Record<string, { Keys: Record<string, unknown>[] }> = {};
    for (const { table, key } of group) (pending[table] ??= { Keys: [] }).Keys.push(key);
    for (let attempt = 0; Object.keys(pending).length > 0; attempt++) {
      if (attempt > 0) await sleep(backoffMs(attempt, RETRY));
      const out = await dynamo().send(new BatchGetCommand({ RequestItems: pending }));
      for (const [table, items] of Object.entries(out.Responses ?? {})) found.get(table)?.push(...items);
      pending = Object.fromEntries(
        Object.entries(out.UnprocessedKeys ?? {}).flatMap(([table, r]) => (r.Keys?.length ? [[table, { Keys: r.Keys }]] : [])),
      );
      const left = Object.values(pending).reduce((n, r) => n + r.Keys.length, 0);
      if (attempt >= 8 && left) throw new Error(`DynamoDB left ${left} keys unread after ${attempt + 1} attempts`);
    }
  });
  return found;
}

function isRetryable(err: unknown): boolean {
  const e = err as { name?: string; $retryable?: unknown; $metadata?: { httpStatusCode?: number } };
  return Boolean(
    e?.$retryable ||
    [
      'ProvisionedThroughputExceededException',
      'ThrottlingException',
      'RequestLimitExceeded',
      'InternalServerError',
      'ServiceUnavailable',
    ].includes(e?.name ?? '') ||
    (e?.$metadata?.httpStatusCode ?? 0) >= 500,
  );
}

export const isConditionFailed = (err: unknown): boolean => (err as { name?: string })?.name === 'ConditionalCheckFailedException';

/** A conditional write: true when it was made, false when its condition did not hold (any other error is thrown). */
export async function conditionHeld(write: Promise<unknown>): Promise<boolean> {
  try {
    await write;
    return true;
  } catch (err) {
    if (isConditionFailed(err)) return false;
    throw err;
  }
}
