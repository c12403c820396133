import { BatchGetCommand, BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const backoff = (attempt: number) => Math.min(1000, 25 * 2 ** attempt) * (0.5 + Math.random() / 2);

export function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Run `fn` over items with at most `limit` in flight. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return out;
}

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
      if (attempt > 0) await sleep(backoff(attempt));
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
      if (attempt > 0) await sleep(backoff(attempt));
      const out = await dynamo().send(new BatchGetCommand({ RequestItems: { [table]: { Keys: keys } } }));
      found.push(...((out.Responses?.[table] ?? []) as T[]));
      keys = (out.UnprocessedKeys?.[table]?.Keys ?? []) as Record<string, unknown>[];
      if (attempt >= 8 && keys.length) throw new Error(`DynamoDB left ${keys.length} keys unread after ${attempt + 1} attempts`);
    }
  });
  return found;
}

export function isRetryable(err: unknown): boolean {
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
