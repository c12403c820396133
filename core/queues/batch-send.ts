import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { backoffMs, mapLimit, sleep } from '../retry';

/** SQS: at most 10 entries in one batch call (send, receive, delete, change visibility). */
export const MAX_BATCH_ENTRIES = 10;
// SQS: at most 256 KiB of bodies in one SendMessageBatch.
const MAX_BATCH_BYTES = 256 * 1024;

export interface OutgoingMessage {
  id: string;
  body: string;
}

/** Group messages into SendMessageBatch calls within SQS's count and size limits. */
export function packBatches(messages: readonly OutgoingMessage[]): OutgoingMessage[][] {
  const batches: OutgoingMessage[][] = [];
  let current: OutgoingMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = Buffer.byteLength(m.body);
    if (current.length && (current.length === MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length) batches.push(current);
  return batches;
}

/**
 * Send messages in batches, retrying the entries SQS reports as failed (when the failure is
 * not the sender's fault). Returns the ids of messages that were not sent.
 */
export async function sendBatches(
  sqs: SQSClient,
  queueUrl: string,
  messages: readonly OutgoingMessage[],
  maxAttempts = 4,
): Promise<string[]> {
  const notSent: string[] = [];
  // SQS entry ids allow only [A-Za-z0-9_-] up to 80 chars: use the position within the batch.
  await mapLimit(packBatches(messages), 8, async (batch) => {
    let pending = batch;
    for (let attempt = 0; pending.length && attempt < maxAttempts; attempt++) {
      if (attempt) await sleep(backoffMs(attempt, { baseMs: 50, capMs: 1000, jitter: 'half' }));
      try {
        const out = await sqs.send(
          new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: pending.map((m, i) => ({ Id: String(i), MessageBody: m.body })) }),
        );
        const failed = out.Failed ?? [];
        const permanent = failed.filter((f) => f.SenderFault).map((f) => pending[Number(f.Id)]!.id);
        notSent.push(...permanent);
        pending = failed.filter((f) => !f.SenderFault).map((f) => pending[Number(f.Id)]!);
      } catch (err) {
        const e = err as { $fault?: string; name?: string };
        if (e.$fault === 'client' && e.name !== 'ThrottlingException' && e.name !== 'RequestThrottled') break;
      }
    }
    notSent.push(...pending.map((m) => m.id));
  });
  return notSent;
}
