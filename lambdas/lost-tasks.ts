import { taskMessageSchema } from '../core/messages';
import { failLostTask } from '../core/tasks';
import { parseRecord, sqsBatchHandler } from './sqs';

/** Consumes endpoint dead-letter queues: a task message there ran out of deliveries, so its task fails as "worker lost". */
export const handler = sqsBatchHandler(async (record) => {
  const msg = parseRecord(record, (v) => taskMessageSchema.safeParse(v));
  await failLostTask(msg.task_id, msg.endpoint_id);
});
