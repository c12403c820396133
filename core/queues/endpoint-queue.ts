import {
  ChangeMessageVisibilityBatchCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  SetQueueAttributesCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { sqsClient } from '../clients';
import { config, endpointDlqName, endpointQueueName } from '../config';
import { FerryError } from '../errors';
import type { TaskMessage } from '../messages';
import { chunk } from '../retry';
import { MAX_BATCH_ENTRIES, sendBatches } from './batch-send';

/** How long a received task stays invisible before the agent must extend it (its heartbeat). */
export const TASK_VISIBILITY_SECONDS = 60;
// SQS: 256 KiB per message; a task message holds one function and its tasks: a lone task with at most 64 KiB
// of source and 64 KiB of args (base64), or a bundle of up to 64 KiB (core/tasks/packing.ts).
const MAX_MESSAGE_BYTES = 262144;

export interface EndpointQueues {
  queueUrl: string;
  dlqUrl: string;
}

/**
 * The policy every Ferry queue carries, run-time endpoint queues as much as the stack's own
 * (CDK's `enforceSSL`, infra/lib/results-queue.ts): any request not made over TLS is denied.
 * The statement is the one CDK renders, so a template and a run-time queue read alike.
 */
export function tlsOnlyQueuePolicy(queueArn: string): string {
  return JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'DenyInsecureTransport',
        Effect: 'Deny',
        Principal: { AWS: '*' },
        Action: 'sqs:*',
        Resource: queueArn,
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      },
    ],
  });
}

/** The attributes an endpoint's dead-letter queue is made with; also what makes it again. */
const DLQ_ATTRIBUTES: Record<string, string> = {
  MessageRetentionPeriod: String(14 * 86400),
  // SSE-SQS, as the stack's own queues (infra/lib/results-queue.ts: QueueEncryption.SQS_MANAGED).
  SqsManagedSseEnabled: 'true',
  MaximumMessageSize: String(MAX_MESSAGE_BYTES),
};

function queueAttributes(queueArn: string, dlqArn: string, maxAttempts: number, retentionSeconds: number): Record<string, string> {
  return {
    VisibilityTimeout: String(TASK_VISIBILITY_SECONDS),
    // The sweep (core/lost-tasks.ts) reads this back per queue, so a queue keeps the retention it was made with.
    MessageRetentionPeriod: String(retentionSeconds),
    MaximumMessageSize: String(MAX_MESSAGE_BYTES),
    SqsManagedSseEnabled: 'true',
    RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: maxAttempts }),
    Policy: tlsOnlyQueuePolicy(queueArn),
  };
}

/**
 * SQS refuses to make a queue under a name deleted less than 60 seconds ago; the caller (an agent
 * asking for credentials) is told to come back.
 */
export class EndpointQueueUnavailable extends FerryError {
  override readonly status = 503;
  override readonly code = 'EndpointQueueUnavailable';
}

const deletedRecently = (err: unknown) => (err as { name?: string }).name === 'QueueDeletedRecently';

/**
 * Create an endpoint's task queue and its dead-letter queue (after `maxAttempts` deliveries), both
 * with SSE-SQS and the TLS-only policy. The task queue gets its policy in CreateQueue itself; the
 * DLQ, made first so the task queue can name it, gets its own a call later, once SQS has told its
 * ARN (a Lambda knows its region but not its account; the DLQ is empty until the task queue
 * exists). CreateQueue is idempotent for equal attributes, so this also makes again a queue that
 * was deleted under a live endpoint.
 */
export async function createEndpointQueues(
  endpointId: string,
  maxAttempts: number,
  retentionSeconds = config().queueRetentionSeconds,
): Promise<EndpointQueues> {
  const { stage } = config();
  const tags = { 'ferry:stage': stage, 'ferry:endpoint': endpointId };
  const dlqName = endpointDlqName(stage, endpointId);
  const queueName = endpointQueueName(stage, endpointId);
  try {
    const dlq = await sqsClient().send(new CreateQueueCommand({ QueueName: dlqName, Attributes: DLQ_ATTRIBUTES, tags }));
    const dlqAttrs = (
      await sqsClient().send(new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['QueueArn', 'Policy'] }))
    ).Attributes!;
    const dlqArn = dlqAttrs.QueueArn!;
    const dlqPolicy = tlsOnlyQueuePolicy(dlqArn);
    if (dlqAttrs.Policy !== dlqPolicy)
      await sqsClient().send(new SetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, Attributes: { Policy: dlqPolicy } }));
    const queueArn = dlqArn.slice(0, dlqArn.length - dlqName.length) + queueName;
    const attributes = queueAttributes(queueArn, dlqArn, maxAttempts, retentionSeconds);
    const queueUrl = await sqsClient()
      .send(new CreateQueueCommand({ QueueName: queueName, Attributes: attributes, tags }))
      .then((out) => out.QueueUrl!)
      .catch(async (err) => {
        // The task queue outlived its DLQ (deleted alone) and differs in some attribute (its
        // policy as SQS stored it, the new DLQ's redrive): set them on the queue that is there.
        if ((err as { name?: string }).name !== 'QueueNameExists') throw err;
        // Its URL is its DLQ's with the other name (no sqs:GetQueueUrl needed).
        const url = dlq.QueueUrl!.slice(0, dlq.QueueUrl!.length - dlqName.length) + queueName;
        await sqsClient().send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: attributes }));
        return url;
      });
    return { queueUrl, dlqUrl: dlq.QueueUrl! };
  } catch (err) {
    if (deletedRecently(err))
      throw new EndpointQueueUnavailable(
        `endpoint ${endpointId}'s queue was deleted less than a minute ago and cannot be made again yet; retry in a minute`,
      );
    throw err;
  }
}

/** What an endpoint record says about its queues. */
export interface EndpointQueueRecord {
  endpoint_id: string;
  queue_url: string;
  dlq_url: string;
  max_attempts: number;
}

/**
 * Make sure the queues an endpoint record names exist, carrying the TLS-only policy. Queues live
 * as long as their endpoint record (made at registration, deleted by DELETE /v1/endpoints); no
 * deploy or teardown of the service stack touches them. A queue deleted outside Ferry is made
 * again here with the attributes registration gives it; a queue made before queues carried a
 * policy gets it first (CreateQueue would refuse it for the differing attribute).
 * One GetQueueAttributes per queue when all is well.
 */
export async function ensureEndpointQueues(ep: EndpointQueueRecord): Promise<'present' | 'secured' | 'recreated'> {
  let secured = false;
  let missing = false;
  for (const url of [ep.dlq_url, ep.queue_url]) {
    let attrs: Record<string, string>;
    try {
      attrs =
        (await sqsClient().send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['QueueArn', 'Policy'] }))).Attributes ?? {};
    } catch (err) {
      if ((err as { name?: string }).name !== 'QueueDoesNotExist') throw err;
      missing = true;
      continue;
    }
    if (attrs.Policy) continue;
    await sqsClient().send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { Policy: tlsOnlyQueuePolicy(attrs.QueueArn!) } }));
    secured = true;
  }
  if (!missing) return secured ? 'secured' : 'present';
  const made = await createEndpointQueues(ep.endpoint_id, ep.max_attempts);
  if (made.queueUrl !== ep.queue_url || made.dlqUrl !== ep.dlq_url) {
    throw new Error(`endpoint ${ep.endpoint_id}'s queues were made again at ${made.queueUrl}, not at ${ep.queue_url} as its record says`);
  }
  return 'recreated';
}

export async function deleteEndpointQueues(q: EndpointQueues): Promise<void> {
  for (const url of [q.queueUrl, q.dlqUrl]) {
    await sqsClient()
      .send(new DeleteQueueCommand({ QueueUrl: url }))
      .catch((err) => {
        if (err?.name !== 'QueueDoesNotExist') throw err;
      });
  }
}

/** Queue task messages (each a function's bundle of tasks); returns the ids of every task in messages that could not be queued. */
export async function queueTasks(queueUrl: string, messages: readonly TaskMessage[]): Promise<string[]> {
  const byFirst = new Map(messages.map((m) => [m.tasks[0]!.task_id, m]));
  const failed = await sendBatches(
    sqsClient(),
    queueUrl,
    messages.map((m) => ({ id: m.tasks[0]!.task_id, body: JSON.stringify(m) })),
  );
  return failed.flatMap((id) => byFirst.get(id)!.tasks.map((t) => t.task_id));
}

export async function queueDepth(queueUrl: string): Promise<{ queued: number; inFlight: number }> {
  const out = await sqsClient().send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return {
    queued: Number(out.Attributes?.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(out.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0),
  };
}

/**
 * Delete received messages (DeleteMessageBatch in tens); returns the indexes of those SQS did not
 * delete. With `onError`, a call that fails is told to it and counts all of its entries failed;
 * without, it rejects.
 */
export async function deleteMessages(
  sqs: SQSClient,
  queueUrl: string,
  receipts: readonly string[],
  onError?: (err: unknown) => void,
): Promise<Set<number>> {
  const failed = new Set<number>();
  let first = 0;
  for (const part of chunk(receipts, MAX_BATCH_ENTRIES)) {
    const i = first;
    first += part.length;
    try {
      const out = await sqs.send(
        new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: part.map((r, j) => ({ Id: String(i + j), ReceiptHandle: r })) }),
      );
      for (const f of out.Failed ?? []) failed.add(Number(f.Id));
    } catch (err) {
      if (!onError) throw err;
      onError(err);
      part.forEach((_, j) => failed.add(i + j));
    }
  }
  return failed;
}

/** Extend (or with 0, give back) received messages' invisibility (ChangeMessageVisibilityBatch in tens); failures are told to `onError`, not thrown. */
export async function changeVisibility(
  sqs: SQSClient,
  queueUrl: string,
  receipts: readonly string[],
  seconds: number,
  onError: (err: unknown) => void,
): Promise<void> {
  for (const part of chunk(receipts, MAX_BATCH_ENTRIES)) {
    await sqs
      .send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: queueUrl,
          Entries: part.map((r, j) => ({ Id: String(j), ReceiptHandle: r, VisibilityTimeout: seconds })),
        }),
      )
      .catch(onError);
  }
}
