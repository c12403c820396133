import { config } from '../config';
import type { TaskMessage } from '../messages';
import type { FunctionRecord } from '../tables/functions';
import { MAX_SHARE_BYTES, MAX_SHARE_TASKS, type TaskRecord } from '../tables/task-records';
import type { SubmitTaskInput } from './submit';

/**
 * How many tasks each share of a submit holds, in order: at most MAX_SHARE_TASKS, and about
 * MAX_SHARE_BYTES of item (DynamoDB: 400 KB an item). A task's size is estimated from its request
 * (its arguments inline at most the inline limit, base64), generously, since its envelope is made
 * only once its id (which the layout decides) is known.
 */
export function shareLayout(tasks: readonly SubmitTaskInput[]): number[] {
  const cap = Math.ceil((config().inlineLimit * 4) / 3) + 2048;
  const layout: number[] = [];
  let n = 0;
  let bytes = 0;
  for (const t of tasks) {
    const size = Math.min(cap, Math.ceil(Buffer.byteLength(JSON.stringify(t)) * 1.4) + 512);
    if (n && (n >= MAX_SHARE_TASKS || bytes + size > MAX_SHARE_BYTES)) {
      layout.push(n);
      n = 0;
      bytes = 0;
    }
    n++;
    bytes += size;
  }
  if (n) layout.push(n);
  return layout;
}

// SQS bills each 64 KiB of a message as one request: a message of two or more tasks stays within one chunk.
const BUNDLE_BYTES = 64 * 1024;
// Small submits go one task per message so every idle worker can take one; large ones share.
const MESSAGES_PER_SUBMIT = 50;
const MAX_BUNDLE = 10;

/**
 * Pack tasks into messages, one function per message: a submit of n tasks uses about
 * min(n, 50) messages (at most 10 tasks each), so at batch 100 it takes 5 SendMessageBatch
 * calls, not 10, while small batches still spread across workers one task at a time.
 * A message that bundles tasks is at most BUNDLE_BYTES of JSON (one SQS billing chunk); a task
 * that does not fit one chunk with its function travels alone (its inline arguments, up to the
 * inline limit before base64, and the function's source are what make it large).
 */
export function bundleTasks(
  endpointId: string,
  records: readonly TaskRecord[],
  functions: Map<string, FunctionRecord>,
  now: string,
): TaskMessage[] {
  const perMessage = Math.min(MAX_BUNDLE, Math.max(1, Math.ceil(records.length / MESSAGES_PER_SUBMIT)));
  // One function and one submitting user per message: the agent runs a message's tasks as that user.
  const byFunction = new Map<string, TaskRecord[]>();
  for (const r of records) {
    const key = JSON.stringify([r.owner, r.function_id]);
    const group = byFunction.get(key) ?? [];
    group.push(r);
    byFunction.set(key, group);
  }
  const messages: TaskMessage[] = [];
  for (const group of byFunction.values()) {
    const fn = functions.get(group[0]!.function_id)!;
    const base = {
      v: 1 as const,
      endpoint_id: endpointId,
      user_id: group[0]!.owner,
      function: { function_id: fn.function_id, runtime: fn.runtime, source: fn.source, entrypoint: fn.entrypoint, shell: fn.shell },
      submitted_at: now,
    };
    // Counted as sent (core/queues/endpoint-queue.ts queueTasks): the base, its tasks array, a comma between tasks.
    const empty = Buffer.byteLength(JSON.stringify({ ...base, tasks: [] }));
    let bytes = empty;
    let tasks: TaskMessage['tasks'] = [];
    for (const r of group) {
      const task = {
        task_id: r.task_id,
        args: r.args,
        walltime_ms: r.walltime_ms,
        ...(r.memory_mb !== undefined ? { memory_mb: r.memory_mb } : {}),
        ...(r.resource_specification ? { resource_specification: r.resource_specification } : {}),
      };
      const size = Buffer.byteLength(JSON.stringify(task));
      if (tasks.length && (tasks.length >= perMessage || bytes + 1 + size > BUNDLE_BYTES)) {
        messages.push({ ...base, tasks });
        tasks = [];
        bytes = empty;
      }
      bytes += size + (tasks.length ? 1 : 0);
      tasks.push(task);
    }
    if (tasks.length) messages.push({ ...base, tasks });
  }
  return messages;
}
