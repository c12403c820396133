import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { sqsClient } from '../clients';
import { config, endpointDlqName, endpointQueueName } from '../config';
import type { TaskMessage } from '../messages';
import { sendBatches } from './batch-send';

/** How long a received task stays invisible before the agent must extend it (its heartbeat). */
export const TASK_VISIBILITY_SECONDS = 60;
// SQS: 256 KiB per message; a task message holds at most 64 KiB of source and 64 KiB of args (base64).
const MAX_MESSAGE_BYTES = 262144;

export interface EndpointQueues {
  queueUrl: string;
  dlqUrl: string;
}

/** Create an endpoint's task queue and its dead-letter queue (after `maxAttempts` deliveries). */
export async function createEndpointQueues(endpointId: string, maxAttempts: number): Promise<EndpointQueues> {
  const { stage } = config();
  const tags = { 'ferry:stage': stage, 'ferry:endpoint': endpointId };
  const dlq = await sqsClient().send(
    new CreateQueueCommand({
      QueueName: endpointDlqName(stage, endpointId),
      Attributes: { MessageRetentionPeriod: String(14 * 86400), SqsManagedSseEnabled: 'true', MaximumMessageSize: String(MAX_MESSAGE_BYTES) },
      tags,
    }),
  );
  const attrs = await sqsClient().send(new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ['QueueArn'] }));
  const queue = await sqsClient().send(
    new CreateQueueCommand({
      QueueName: endpointQueueName(stage, endpointId),
      Attributes: {
        VisibilityTimeout: String(TASK_VISIBILITY_SECONDS),
        // The sweep (core/lost-tasks.ts) reads this back per queue, so a queue keeps the retention it was made with.
        MessageRetentionPeriod: String(config().queueRetentionSeconds),
        MaximumMessageSize: String(MAX_MESSAGE_BYTES),
        SqsManagedSseEnabled: 'true',
        RedrivePolicy: JSON.stringify({ deadLetterTargetArn: attrs.Attributes!.QueueArn, maxReceiveCount: maxAttempts }),
      },
      tags,
    }),
  );
  return { queueUrl: queue.QueueUrl!, dlqUrl: dlq.QueueUrl! };
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

/** Queue task messages; returns the ids of the tasks in messages that could not be queued. */
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
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }),
  );
  return {
    queued: Number(out.Attributes?.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(out.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0),
  };
}

/** Extend (or with 0, give back) a received message's invisibility. */
export async function setVisibility(sqs: SQSClient, queueUrl: string, receiptHandle: string, seconds: number): Promise<void> {
  await sqs.send(new ChangeMessageVisibilityCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle, VisibilityTimeout: seconds }));
}
