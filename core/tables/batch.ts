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
  const unique = [...new Set(ids)];
  const found: T[] = [];
  await mapLimit(chunk(unique, 100), 4, async (group) => {
    let keys: Record<string, unknown>[] = group.map((id) => ({ [keyName]: id }));
    for (let attempt = 0; keys.length > 0; attempt++) {
      if (attempt > 0) await sleep(backoffMs(attempt, RETRY));
      const out = await dynamo().send(new BatchGetCommand({ RequestItems: { [table]: { Keys: keys } } }));
      found.push(...((out.Responses?.[table] ?? []) as T[]));
      keys = (out.UnprocessedKeys?.[table]?.Keys ?? []) as Record<string, unknown>[];
      if (attempt >= 8 && keys.length) throw new Error(`DynamoDB left ${keys.length} keys unread after ${attempt + 1} attempts`);
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
