import { resultMessageSchema } from '../core/messages';
import { applyResult } from '../core/tasks';
import { parseRecord, sqsBatchHandler } from './sqs';

/** Consumes the results queue: each message moves one task (idempotently; see core/tasks.applyResult). */
export const handler = sqsBatchHandler(async (record) => {
  await applyResult(parseRecord(record, (v) => resultMessageSchema.safeParse(v)));
});
