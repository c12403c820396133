import { DeleteMessageBatchCommand, ReceiveMessageCommand, type Message, type SQSClient } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';

/**
 * A stand-in for Lambda's SQS event source mapping: long-polls a queue, hands batches to the
 * handler as an SQSEvent, deletes what succeeded and leaves `batchItemFailures` (or the whole
 * batch, if the handler throws) to come back after their visibility timeout.
 */
export interface EventSource {
  stop(): Promise<void>;
}

export function startSqsEventSource(opts: {
  sqs: SQSClient;
  queueUrl: string;
  queueArn: string;
  handler: (event: SQSEvent) => Promise<SQSBatchResponse | void>;
  batchSize?: number;
  waitSeconds?: number;
  /** Parallel pollers, like the concurrency of an event source mapping. */
  concurrency?: number;
}): EventSource {
  const abort = new AbortController();
  let stopped = false;

  const poll = async () => {
    while (!stopped) {
      let messages: Message[] = [];
      try {
        const out = await opts.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: opts.queueUrl,
            MaxNumberOfMessages: opts.batchSize ?? 10,
            WaitTimeSeconds: opts.waitSeconds ?? 20,
            MessageSystemAttributeNames: ['All'],
            MessageAttributeNames: ['All'],
          }),
          { abortSignal: abort.signal },
        );
        messages = out.Messages ?? [];
      } catch (err) {
        if (stopped) return;
        console.error('local event source: receive failed', String(err));
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!messages.length) continue;
      let failed = new Set<string>();
      try {
        const out = await opts.handler({ Records: messages.map((m) => toRecord(m, opts.queueArn)) });
        failed = new Set((out?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
      } catch (err) {
        console.error('local event source: handler threw; the batch will be retried', String(err));
        continue;
      }
      const done = messages.filter((m) => !failed.has(m.MessageId!));
      if (done.length) {
        await opts.sqs
          .send(new DeleteMessageBatchCommand({ QueueUrl: opts.queueUrl, Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })) }))
          .catch((err) => console.error('local event source: delete failed', String(err)));
      }
    }
  };

  const loops = Array.from({ length: opts.concurrency ?? 2 }, poll);
  return {
    async stop() {
      stopped = true;
      abort.abort();
      await Promise.allSettled(loops);
    },
  };
}

function toRecord(m: Message, queueArn: string): SQSRecord {
  const a = m.Attributes ?? {};
  return {
    messageId: m.MessageId!,
    receiptHandle: m.ReceiptHandle!,
    body: m.Body ?? '',
    attributes: {
      ApproximateReceiveCount: a.ApproximateReceiveCount ?? '1',
      SentTimestamp: a.SentTimestamp ?? String(Date.now()),
      // As Lambda's event source mapping does: the sender SQS recorded, which the results handler checks.
      SenderId: a.SenderId ?? '',
      ApproximateFirstReceiveTimestamp: a.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
    },
    messageAttributes: {},
    md5OfBody: m.MD5OfBody ?? '',
    eventSource: 'aws:sqs',
    eventSourceARN: queueArn,
    awsRegion: queueArn.split(':')[3] ?? 'us-east-1',
  };
}
