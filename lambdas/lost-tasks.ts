import type { Context } from 'aws-lambda';
import { sweepDeadLetters, sweepUndeliverable } from '../core/lost-tasks';

/**
 * Scheduled (EventBridge, every minute): fail the tasks whose messages reached an endpoint DLQ,
 * then those that can no longer be delivered (message expired unread, endpoint queue gone).
 * What is left when the run's time is nearly up is done by the next run.
 */
export async function handler(_event?: unknown, context?: Pick<Context, 'getRemainingTimeInMillis'>): Promise<{ failed: number; expired: number; queue_gone: number }> {
  const failed = await sweepDeadLetters();
  // Stop starting endpoints 10 s before the timeout (55 s), so a run never ends half-way through a write.
  const deadline = context ? Date.now() + context.getRemainingTimeInMillis() - 10_000 : undefined;
  const { expired, queueGone } = await sweepUndeliverable({ deadline });
  return { failed, expired, queue_gone: queueGone };
}
