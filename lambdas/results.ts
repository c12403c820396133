import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { ForeignPayload } from '../core/errors';
import { parseBody, resultMessageSchema, type ResultMessage } from '../core/messages';
import { applyResults } from '../core/tasks';

/**
 * Consumes the results queue (reportBatchItemFailures). Records are grouped by task: a task's
 * "started" and its result often share a batch, and are applied in that order as one write;
 * different tasks go in parallel. A record that cannot parse is dropped with a log line, since
 * retrying cannot help; a group whose write fails is retried whole.
 */
export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const groups = new Map<string, { record: SQSRecord; msg: ResultMessage }[]>();
  for (const record of event.Records) {
    const parsed = resultMessageSchema.safeParse(parseBody(record.body));
    if (!parsed.success) {
      console.error(JSON.stringify({ level: 'error', message: 'dropping malformed result message', messageId: record.messageId }));
      continue;
    }
    const group = groups.get(parsed.data.task_id) ?? [];
    group.push({ record, msg: parsed.data });
    groups.set(parsed.data.task_id, group);
  }
  const failures: SQSBatchResponse['batchItemFailures'] = [];
  await Promise.all(
    [...groups.values()].map(async (group) => {
      try {
        await applyResults(group.map((g) => g.msg));
      } catch (err) {
        if (err instanceof ForeignPayload) {
          console.error(JSON.stringify({ level: 'error', message: 'dropping result that points outside its endpoint', error: err.message }));
          return;
        }
        console.error(JSON.stringify({ level: 'error', message: 'result not applied; will retry', error: String(err) }));
        failures.push(...group.map((g) => ({ itemIdentifier: g.record.messageId })));
      }
    }),
  );
  return { batchItemFailures: failures };
}

