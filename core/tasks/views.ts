import { presignGet } from '../bucket';
import type { ResourceSpecification } from '../messages';
import { inlineBytes, type Envelope } from '../payload';
import type { Codec } from '../runtimes';
import type { TaskState } from '../states';
import type { RemoteException, TaskOutput, TaskRecord } from '../tables/task-records';

/** A task as its submitter sees it. */
export interface TaskView {
  task_id: string;
  status: TaskState;
  task_group_id: string;
  function_id: string;
  endpoint_id: string;
  /** mpi tasks: the ranks they were launched with, as the API filled them in. */
  resource_specification?: ResourceSpecification;
  created_at: string;
  completed_at?: string;
  transitions: TaskRecord['transitions'];
  result?: PayloadView;
  exception?: Omit<RemoteException, 'payload'> & { payload?: PayloadView };
  /** What the task printed (capped), with its result or exception; absent if it printed nothing. */
  output?: TaskOutput;
}

/**
 * A payload for a client, in exactly one form: `value` (an inline JSON payload, decoded), `data`
 * (other inline payloads, base64), or `url` (a presigned GET for a payload stored in S3). An inline
 * JSON payload is checked against its SHA-256 here, since the client cannot check a re-encoded value.
 */
export interface PayloadView {
  codec: Codec;
  size: number;
  sha256: string;
  data?: string;
  value?: unknown;
  url?: string;
}

async function payloadView(env: Envelope): Promise<PayloadView> {
  const base = { codec: env.codec, size: env.size, sha256: env.sha256 };
  if (env.ref !== undefined) return { ...base, url: (await presignGet(env.ref)).url };
  if (env.codec === 'json') return { ...base, value: JSON.parse(inlineBytes(env, 'result').toString('utf8')) };
  return { ...base, data: env.inline };
}

/**
 * The JSON bytes a response may spend on task views. Lambda refuses a response over 6 MB
 * (6,291,456 bytes, counted over the whole serialized result: status, headers and the body as a
 * JSON string, whose escapes add to it); 5 MB of views leaves room for that. Any one view fits:
 * a task record is at most 400 KB (DynamoDB's item limit), inline payloads included.
 */
export const RESPONSE_BUDGET_BYTES = 5 * 1024 * 1024;

/**
 * The leading items whose JSON fits in `budget` bytes (at least one, so a reader always makes
 * progress), and how many were left out.
 */
export function withinBudget<T>(items: readonly T[], budget = RESPONSE_BUDGET_BYTES): { fit: T[]; rest: number } {
  let bytes = 0;
  let n = 0;
  for (const item of items) {
    // A JSON string inside the Lambda result escapes each quote and backslash once more.
    const text = JSON.stringify(item);
    const size = Buffer.byteLength(text) + (text.match(/["\\]/g)?.length ?? 0) + 1;
    if (n > 0 && bytes + size > budget) break;
    bytes += size;
    n++;
  }
  return { fit: items.slice(0, n), rest: items.length - n };
}

/** The views of these tasks, in order, as many as fit in one response; `unread` names the rest, for the client to ask again. */
export async function viewsWithinBudget(records: readonly TaskRecord[]): Promise<{ tasks: TaskView[]; unread: string[] }> {
  const { fit, rest } = withinBudget(await Promise.all(records.map(taskView)));
  return { tasks: fit, unread: records.slice(records.length - rest).map((t) => t.task_id) };
}

export async function taskView(t: TaskRecord): Promise<TaskView> {
  return {
    task_id: t.task_id,
    status: t.state,
    task_group_id: t.task_group_id,
    function_id: t.function_id,
    endpoint_id: t.endpoint_id,
    resource_specification: t.resource_specification,
    created_at: t.created_at,
    completed_at: t.completed_at,
    transitions: t.transitions,
    result: t.result ? await payloadView(t.result) : undefined,
    exception: t.exception
      ? { ...t.exception, payload: t.exception.payload ? await payloadView(t.exception.payload) : undefined }
      : undefined,
    output: t.output,
  };
}
