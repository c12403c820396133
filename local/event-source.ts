import { DeleteMessageBatchCommand, ReceiveMessageCommand, type Message, type SQSClient } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { inProcessQueue } from './sqs/server';
import { sleep } from '../core/retry';

/**
 * A stand-in for Lambda's SQS event source mapping: long-polls a queue, hands batches to the
 * handler as an SQSEvent as soon as messages are there (no batching window), deletes what
 * succeeded and leaves `batchItemFailures` (or the whole batch, if the handler throws) to come
 * back after their visibility timeout. A queue served by this process (the local stack's) is
 * read directly, as Lambda's pollers read SQS from inside AWS: no HTTP, SigV4 or SDK per batch.
 */
export interface EventSource {
  stop(): Promise<void>;
}

/** How the pollers reach the queue: in this process, or through the SDK. */
interface QueueReader {
  receive(max: number, waitSeconds: number, signal: AbortSignal): Promise<Message[]>;
  /** Deletes; a failure is logged, never thrown (the message then comes back). */
  delete(receipts: string[]): Promise<void>;
}

function sdkReader(sqs: SQSClient, queueUrl: string): QueueReader {
  return {
    async receive(max, waitSeconds, signal) {
      const out = await sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: max,
          WaitTimeSeconds: waitSeconds,
          MessageSystemAttributeNames: ['All'],
          MessageAttributeNames: ['All'],
        }),
        { abortSignal: signal },
      );
      return out.Messages ?? [];
    },
    async delete(receipts) {
      await sqs
        .send(new DeleteMessageBatchCommand({ QueueUrl: queueUrl, Entries: receipts.map((r, i) => ({ Id: String(i), ReceiptHandle: r })) }))
        .catch((err) => console.error('local event source: delete failed', String(err)));
    },
  };
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
  const direct = inProcessQueue(opts.queueUrl);
  const reader: QueueReader = direct
    ? {
        receive: (max, waitSeconds, signal) => direct.receive(max, waitSeconds, signal),
        async delete(receipts) {
          try {
            direct.delete(receipts);
          } catch (err) {
            console.error('local event source: delete failed', String(err));
          }
        },
      }
    : sdkReader(opts.sqs, opts.queueUrl);
  /** Deletes still in flight: a poller goes back to the queue without waiting for its own. */
  const deleting = new Set<Promise<void>>();

  const poll = async () => {
    while (!stopped) {
      let messages: Message[];
      try {
        messages = await reader.receive(opts.batchSize ?? 10, opts.waitSeconds ?? 20, abort.signal);
      } catch (err) {
        if (stopped) return;
        console.error('local event source: receive failed', String(err));
        await sleep(1000);
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
        const deleted = reader.delete(done.map((m) => m.ReceiptHandle!));
        deleting.add(deleted);
        void deleted.finally(() => deleting.delete(deleted));
      }
    }
  };

  // Lambda: an SQS event source mapping starts with five concurrent batches (pollers), and scales up from there.
  const loops = Array.from({ length: opts.concurrency ?? 5 }, poll);
  return {
    async stop() {
      stopped = true;
      abort.abort();
      await Promise.allSettled(loops);
      await Promise.allSettled([...deleting]);
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
