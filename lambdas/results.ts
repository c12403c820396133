import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { config } from '../core/config';
import { senderEndpoint } from '../core/credentials';
import { ForeignPayload, ForgedReport } from '../core/errors';
import { parseBody, resultMessageSchema, type ResultMessage } from '../core/messages';
import { applyResults } from '../core/tasks/results';
import { logger, observed } from './observability';

/** A record that is never applied, nor retried: its sender may not report it. */
function refuse(record: SQSRecord, reason: string, taskId?: string): void {
  logger.warn('refused forged result report', {
    reason,
    correlation_id: record.messageId,
    sender: record.attributes?.SenderId,
    task_id: taskId,
  });
}

/**
 * Consumes the results queue (reportBatchItemFailures). A record is believed only from a session
 * of the worker role (its SQS SenderId), and only about a task of that session's endpoint; any
 * other is refused with a log line and dropped. Records are grouped by sender and task: a task's
 * "started" and its result often share a batch, and are applied in that order as one write;
 * different tasks go in parallel. A record that cannot parse is dropped with a log line, since
 * retrying cannot help; a group whose write fails is retried whole.
 */
export const handler = observed(consume);

async function consume(event: SQSEvent): Promise<SQSBatchResponse> {
  const workerRoleId = config().workerRoleId;
  const groups = new Map<string, { sender: string; items: { record: SQSRecord; msg: ResultMessage }[] }>();
  for (const record of event.Records) {
    const sender = senderEndpoint(record.attributes?.SenderId, workerRoleId);
    if (!sender) {
      refuse(record, 'the sender is not a worker session');
      continue;
    }
    const parsed = resultMessageSchema.safeParse(parseBody(record.body));
    if (!parsed.success) {
      logger.error('dropping malformed result message', { correlation_id: record.messageId, sender: record.attributes?.SenderId });
      continue;
    }
    const key = JSON.stringify([sender, parsed.data.task_id]);
    const group = groups.get(key) ?? { sender, items: [] };
    group.items.push({ record, msg: parsed.data });
    groups.set(key, group);
  }
  const failures: SQSBatchResponse['batchItemFailures'] = [];
  await Promise.all(
    [...groups.values()].map(async ({ sender, items }) => {
      try {
        await applyResults(
          items.map((g) => g.msg),
          sender,
        );
      } catch (err) {
        if (err instanceof ForgedReport || err instanceof ForeignPayload) {
          for (const g of items) refuse(g.record, err.message, g.msg.task_id);
          return;
        }
        logger.error('result not applied; will retry', {
          error: err,
          correlation_id: items[0]!.record.messageId,
          task_id: items[0]!.msg.task_id,
          endpoint_id: sender,
        });
        failures.push(...items.map((g) => ({ itemIdentifier: g.record.messageId })));
      }
    }),
  );
  return { batchItemFailures: failures };
}
