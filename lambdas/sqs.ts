import { ForeignPayload } from '../core/errors';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';

/**
 * An SQS-triggered handler that reports partial batch failures (`reportBatchItemFailures`):
 * a record whose processing threw is retried alone; a record that can never be processed
 * (it does not parse) is logged and dropped, since retrying it cannot help.
 */
export function sqsBatchHandler(processRecord: (record: SQSRecord) => Promise<void>) {
  return async (event: SQSEvent): Promise<SQSBatchResponse> => {
    const failures: SQSBatchResponse['batchItemFailures'] = [];
    await Promise.all(
      event.Records.map(async (record) => {
        try {
          await processRecord(record);
        } catch (err) {
          if (err instanceof PoisonMessage || err instanceof ForeignPayload) {
            console.error(JSON.stringify({ level: 'error', message: 'dropping malformed message', messageId: record.messageId, error: err.message }));
            return;
          }
          console.error(JSON.stringify({ level: 'error', message: 'record failed; will retry', messageId: record.messageId, error: String(err) }));
          failures.push({ itemIdentifier: record.messageId });
        }
      }),
    );
    return { batchItemFailures: failures };
  };
}

export class PoisonMessage extends Error {}

export function parseRecord<T>(record: SQSRecord, parse: (v: unknown) => { success: true; data: T } | { success: false; error: unknown }): T {
  let json: unknown;
  try {
    json = JSON.parse(record.body);
  } catch {
    throw new PoisonMessage('body is not JSON');
  }
  const out = parse(json);
  if (!out.success) throw new PoisonMessage(`body does not match its schema: ${String(out.error).slice(0, 500)}`);
  return out.data;
}
