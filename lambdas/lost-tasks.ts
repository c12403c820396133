import { sweepDeadLetters } from '../core/lost-tasks';

/** Scheduled (EventBridge, every minute): fail the tasks whose messages reached an endpoint DLQ. */
export async function handler(): Promise<{ failed: number }> {
  return { failed: await sweepDeadLetters() };
}
