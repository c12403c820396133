import { DeleteMessageBatchCommand, ListQueuesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { sqsClient } from './clients';
import { config } from './config';
import { parseBody, taskMessageSchema } from './messages';
import { failLostTask } from './tasks';

/**
 * Drain every endpoint dead-letter queue once: a task message there ran out of deliveries
 * (each worker died before reporting), so its task fails as "worker lost". Runs on a schedule;
 * endpoint queues are created at run time, so no per-queue trigger exists to deliver these.
 * Returns how many tasks it failed.
 */
export async function sweepDeadLetters(): Promise<number> {
  const prefix = `ferry-${config().stage}-ep-`;
  let failed = 0;
  let next: string | undefined;
  do {
    const page = await sqsClient().send(new ListQueuesCommand({ QueueNamePrefix: prefix, NextToken: next, MaxResults: 1000 }));
    for (const url of page.QueueUrls ?? []) {
      const endpointId = dlqEndpoint(url, prefix);
      if (endpointId) failed += await drainDeadLetterQueue(url, endpointId);
    }
    next = page.NextToken;
  } while (next);
  return failed;
}

/** The endpoint a dead-letter queue belongs to, from its name `ferry-<stage>-ep-<id>-dlq` (see core/config endpointDlqName). */
export function dlqEndpoint(queueUrl: string, prefix: string): string | undefined {
  const name = decodeURIComponent(queueUrl.split('/').pop() ?? '');
  if (!name.startsWith(prefix) || !name.endsWith('-dlq')) return undefined;
  return name.slice(prefix.length, -'-dlq'.length) || undefined;
}

/**
 * Only the API sends to an endpoint queue, so its messages are trusted; still, the endpoint a
 * task is failed for is the queue's, not whatever a body says.
 */
async function drainDeadLetterQueue(url: string, endpointId: string): Promise<number> {
  let failed = 0;
  for (;;) {
    const out = await sqsClient().send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 60 }));
    const messages = out.Messages ?? [];
    if (!messages.length) return failed;
    const done: { Id: string; ReceiptHandle: string }[] = [];
    for (const [i, m] of messages.entries()) {
      const parsed = taskMessageSchema.safeParse(parseBody(m.Body));
      try {
        if (parsed.success) {
          for (const t of parsed.data.tasks) if (await failLostTask(t.task_id, endpointId)) failed++;
        }
        done.push({ Id: String(i), ReceiptHandle: m.ReceiptHandle! });
      } catch (err) {
        // Left for the next sweep once its visibility lapses.
        console.error(JSON.stringify({ level: 'error', message: 'could not fail lost task', error: String(err) }));
      }
    }
    if (done.length) await sqsClient().send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: done }));
  }
}

