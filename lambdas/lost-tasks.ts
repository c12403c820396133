import type { Context } from 'aws-lambda';
import { sweepDeadLetters, sweepUndeliverable } from '../core/lost-tasks';
import { logger, observed } from './observability';

/**
 * Scheduled (EventBridge, every minute): fail the tasks whose messages reached an endpoint DLQ,
 * then those that can no longer be delivered (message expired unread, endpoint queue gone, endpoint
 * deleted while they were open).
 * What is left when the run's time is nearly up is done by the next run.
 */
export const handler = observed(sweep);

async function sweep(
  _event: unknown,
  context: Partial<Pick<Context, 'getRemainingTimeInMillis'>>,
): Promise<{ failed: number; expired: number; queue_gone: number; endpoint_deleted: number }> {
  const failed = await sweepDeadLetters();
  // Stop starting endpoints 10 s before the timeout (55 s), so a run never ends half-way through a write.
  const deadline = context?.getRemainingTimeInMillis ? Date.now() + context.getRemainingTimeInMillis() - 10_000 : undefined;
  const { expired, queueGone, deleted } = await sweepUndeliverable({ deadline });
  const out = { failed, expired, queue_gone: queueGone, endpoint_deleted: deleted };
  // A run that failed tasks is worth a line; an idle one (most minutes) only in a debug sample.
  if (failed || expired || queueGone || deleted) logger.info('swept lost tasks', out);
  else logger.debug('swept lost tasks', out);
  return out;
}
