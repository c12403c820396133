import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { resultMessageSchema, type ResultMessage } from '../core/messages';
import { applyResult } from '../core/tasks';
import { parseRecord, sqsBatchHandler } from './sqs';

const RANK: Record<ResultMessage['kind'], number> = { started: 0, success: 1, failed: 1 };

/**
 * Consumes the results queue: each message moves one task (idempotently; see core/tasks.applyResult).
 * A task's "started" and its result often arrive in one batch; they are applied in that order, so
 * its transitions read received → waiting → running → final, while different tasks go in parallel.
 */
export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const byTask = new Map<string, SQSEvent['Records']>();
  const unparsed: SQSEvent['Records'] = [];
  for (const record of event.Records) {
    const id = taskIdOf(record.body);
    if (id === undefined) unparsed.push(record);
    else byTask.set(id, [...(byTask.get(id) ?? []), record]);
  }
  const failures: SQSBatchResponse['batchItemFailures'] = [];
  const apply = sqsBatchHandler(async (record) => {
    await applyResult(parseRecord(record, (v) => resultMessageSchema.safeParse(v)));
  });
  await Promise.all([
    apply({ Records: unparsed }).then((r) => failures.push(...r.batchItemFailures)),
    ...[...byTask.values()].map(async (records) => {
      records.sort((a, b) => rank(a.body) - rank(b.body));
      for (const record of records) failures.push(...(await apply({ Records: [record] })).batchItemFailures);
    }),
  ]);
  return { batchItemFailures: failures };
}

function taskIdOf(body: string): string | undefined {
  try {
    const id = (JSON.parse(body) as { task_id?: unknown }).task_id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

const rank = (body: string): number => RANK[(JSON.parse(body) as ResultMessage).kind] ?? 1;
