/**
 * Waiting, retrying and bounded parallelism: one home for each, shared by the API, the workers
 * and the SDK. This module imports nothing but Node's timers, so the SDK's bundle may carry it.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';

/** Resolve after `ms`; `signal` rejects it early with an AbortError; `ref: false` lets the process exit meanwhile. */
export const sleep = (ms: number, signal?: AbortSignal, { ref = true }: { ref?: boolean } = {}): Promise<void> =>
  sleepFor(ms, undefined, { signal, ref });

export interface Backoff {
  /** The delay before the first retry, doubled for each further one. */
  baseMs: number;
  /** The longest delay. */
  capMs: number;
  /**
   * 'full': a random delay up to the exponential one (AWS's "full jitter", for many clients
   * retrying one service); 'half': between half and all of it; 'none': exactly it.
   */
  jitter?: 'full' | 'half' | 'none';
}

/** The delay before retry number `attempt` (0 for the first retry). */
export function backoffMs(attempt: number, b: Backoff): number {
  const exp = Math.min(b.capMs, b.baseMs * 2 ** Math.min(attempt, 30));
  switch (b.jitter ?? 'full') {
    case 'full':
      return Math.random() * exp;
    case 'half':
      return exp * (0.5 + Math.random() / 2);
    case 'none':
      return exp;
  }
}

/** Split items into runs of at most `size` (SQS batches take 10 entries, DynamoDB batch writes 25). */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Run `fn` over items with at most `limit` in flight; the results keep the items' order. */
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
