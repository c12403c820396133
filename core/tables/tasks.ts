import { GetCommand, PutCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { config } from '../config';
import type { Envelope } from '../payload';
import { FINAL_STATES, statesAllowing, type TaskState } from '../states';
import { batchGet, batchPut, isConditionFailed } from './batch';
import { decodeCursor, encodeCursor } from './cursor';

export interface Transition {
  state: TaskState;
  at: string;
  /** Who made the move: "api", "worker:<id>", "results", "dlq". */
  by: string;
}

export interface RemoteException {
  type: string;
  message: string;
  traceback: string;
  /** The exception itself in the runtime's codec (e.g. pickled), so a client can re-raise its type. */
  payload?: Envelope;
}

export interface TaskRecord {
  task_id: string;
  owner: string;
  endpoint_id: string;
  function_id: string;
  task_group_id: string;
  state: TaskState;
  args: Envelope;
  walltime_ms: number;
  created_at: string;
  updated_at: string;
  transitions: Transition[];
  result?: Envelope;
  exception?: RemoteException;
  /** The endpoint id while the task is open; a sparse index finds an endpoint's open tasks. */
  open_on?: string;
  completed_at?: string;
  worker_id?: string;
  /** Epoch seconds after which DynamoDB deletes a finished task. */
  expires_at?: number;
}

const table = () => config().tables.tasks;

/** Write new task records; returns the ids of those DynamoDB would not take. */
export const putTasks = (records: readonly TaskRecord[]): Promise<string[]> =>
  batchPut(table(), records as unknown as Record<string, unknown>[], (r) => r.task_id as string);

export async function getTask(taskId: string): Promise<TaskRecord | undefined> {
  const out = await dynamo().send(new GetCommand({ TableName: table(), Key: { task_id: taskId } }));
  return out.Item as TaskRecord | undefined;
}

export const getTasks = (ids: readonly string[]): Promise<TaskRecord[]> => batchGet<TaskRecord>(table(), 'task_id', ids);

export async function queryGroup(groupId: string, limit: number, cursor?: string): Promise<{ items: TaskRecord[]; next?: string }> {
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table(),
      IndexName: 'group-index',
      KeyConditionExpression: 'task_group_id = :g',
      ExpressionAttributeValues: { ':g': groupId },
      Limit: limit,
      ExclusiveStartKey: decodeCursor(cursor),
    }),
  );
  return { items: (out.Items ?? []) as TaskRecord[], next: encodeCursor(out.LastEvaluatedKey) };
}

export async function queryOpenOnEndpoint(endpointId: string, cursor?: Record<string, unknown>): Promise<{ ids: string[]; next?: Record<string, unknown> }> {
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table(),
      IndexName: 'open-index',
      KeyConditionExpression: 'open_on = :e',
      ExpressionAttributeValues: { ':e': endpointId },
      ProjectionExpression: 'task_id',
      ExclusiveStartKey: cursor,
    }),
  );
  return { ids: (out.Items ?? []).map((i) => i.task_id as string), next: out.LastEvaluatedKey };
}

export interface TransitionChange {
  by: string;
  /** Moves that happened on the way, recorded before this one (a "running" that came in the same batch). */
  via?: Transition[];
  at?: Date;
  result?: Envelope;
  exception?: RemoteException;
  workerId?: string;
  /** Only for a task of this endpoint: a worker may report only on its own endpoint's tasks. */
  endpointId?: string;
  /** Only from this state (e.g. cancel only what is still queued); default: every state that may move to `to`. */
  from?: TaskState[];
}

/**
 * Move a task to `to` if its current state allows it, in one conditional update, so a
 * duplicate or late result (SQS is at-least-once) can never overwrite a final state.
 * Returns the updated record, or undefined if the task is unknown or the move not allowed.
 */
export async function transitionTask(taskId: string, to: TaskState, change: TransitionChange): Promise<TaskRecord | undefined> {
  const at = change.at ?? new Date();
  const from = change.from ?? statesAllowing(to);
  const names: Record<string, string> = { '#s': 'state' };
  const values: Record<string, unknown> = {
    ':to': to,
    ':now': at.toISOString(),
    ':t': [...(change.via ?? []), { state: to, at: at.toISOString(), by: change.by } satisfies Transition],
  };
  const sets = ['#s = :to', 'updated_at = :now', 'transitions = list_append(transitions, :t)'];
  const removes: string[] = [];
  from.forEach((s, i) => (values[`:f${i}`] = s));
  let condition = `attribute_exists(task_id) AND #s IN (${from.map((_, i) => `:f${i}`).join(', ')})`;
  if (change.endpointId) (condition += ' AND endpoint_id = :ep'), (values[':ep'] = change.endpointId);
  if (change.result) (sets.push('#r = :r'), (names['#r'] = 'result'), (values[':r'] = change.result));
  if (change.exception) (sets.push('#x = :x'), (names['#x'] = 'exception'), (values[':x'] = change.exception));
  if (change.workerId) (sets.push('worker_id = :w'), (values[':w'] = change.workerId));
  if (FINAL_STATES.includes(to)) {
    sets.push('completed_at = :now', 'expires_at = :exp');
    values[':exp'] = Math.floor(at.getTime() / 1000) + config().resultTtlDays * 86400;
    removes.push('open_on');
  }
  try {
    const out = await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { task_id: taskId },
        UpdateExpression: `SET ${sets.join(', ')}${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
        ConditionExpression: condition,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ReturnValues: 'ALL_NEW',
      }),
    );
    return out.Attributes as TaskRecord;
  } catch (err) {
    if (isConditionFailed(err)) return undefined;
    throw err;
  }
}

/** A stored submit response, so a retried request with the same Idempotency-Key gets the same tasks. */
export interface IdempotencyRecord {
  request_hash: string;
  response: { task_group_id: string; task_ids: string[] };
}

const idemKey = (owner: string, keyHash: string) => `idempotency#${owner}#${keyHash}`;

export async function getIdempotency(owner: string, keyHash: string): Promise<IdempotencyRecord | undefined> {
  const out = await dynamo().send(new GetCommand({ TableName: table(), Key: { task_id: idemKey(owner, keyHash) } }));
  return out.Item as IdempotencyRecord | undefined;
}

export async function putIdempotency(owner: string, keyHash: string, rec: IdempotencyRecord): Promise<void> {
  // Kept one day, like the retry window of any client.
  const expires_at = Math.floor(Date.now() / 1000) + 86400;
  await dynamo().send(new PutCommand({ TableName: table(), Item: { task_id: idemKey(owner, keyHash), ...rec, expires_at } }));
}
