import { randomBytes } from 'node:crypto';
import { DeleteCommand, GetCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { z } from 'zod';
import { dynamo } from '../clients';
import { config } from '../config';
import type { ResourceSpecification } from '../messages';
import type { Envelope } from '../payload';
import { FINAL_STATES, statesAllowing, type TaskState } from '../states';
import { batchGet, batchPut, isConditionFailed } from './batch';
import { cursorId, decodeCursor, encodeCursor, invalidCursor, queryPage, type CursorShape } from './cursor';

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

/** What a task printed, capped (core/messages.ts taskOutputSchema). */
export interface TaskOutput {
  stdout: string;
  stderr: string;
  stdout_bytes: number;
  stderr_bytes: number;
  truncated?: boolean;
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
  /** The memory cap the submitter asked for (MB); absent: the endpoint's default. */
  memory_mb?: number;
  /** mpi tasks only: their ranks, filled in by the API (core/tasks.ts resourceSpecification). */
  resource_specification?: ResourceSpecification;
  /** The task's place in its group, the sort key of `group-order-index`: its submit, then its position in it (submitOrder). */
  submit_order: string;
  created_at: string;
  updated_at: string;
  transitions: Transition[];
  result?: Envelope;
  exception?: RemoteException;
  /** What the task printed, capped; set with its result or exception. */
  output?: TaskOutput;
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

/**
 * The sort key that lists a group's tasks in submit order: `<submit time>#<submit token>#<position>`.
 * Tasks of one submit share its time and token (the token keeps two submits made in the same
 * millisecond apart, each whole) and sort by their position in the request (0000-0499).
 */
export const submitOrder = (submitPrefix: string, position: number): string => `${submitPrefix}#${String(position).padStart(4, '0')}`;

/**
 * The prefix of a new submit's tasks: its time, never earlier than the group's last submit (so a
 * submit made after another one lists after it, whatever the clocks of two API instances say),
 * and a random token.
 */
export function submitPrefix(now: Date, lastInGroup: string | undefined): string {
  const previous = lastInGroup ? Date.parse(lastInGroup.slice(0, lastInGroup.indexOf('#'))) : NaN;
  const at = previous >= now.getTime() ? new Date(previous + 1) : now;
  return `${at.toISOString()}#${randomBytes(4).toString('hex')}`;
}

/** Tasks written by an older Ferry (kept local data) carry no submit_order: they sort by creation, then id. */
export const legacySubmitOrder = (createdAt: string, taskId: string): string => `${createdAt}#00000000#${taskId}`;

const submitOrderShape = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z#[0-9a-f]{8}#(\d{4}|[0-9a-f-]{36})$/);

/** A cursor of one group's listing: group-order-index keys are the group, its sort key and the task id. */
const groupCursor = (groupId: string): CursorShape =>
  z.object({ task_id: cursorId, task_group_id: z.literal(groupId), submit_order: submitOrderShape }).strict() as unknown as CursorShape;

/**
 * One page of a group's tasks in submit order (`last`: just the last task, newest first): the index
 * holds keys and owner only, so the records are read by key.
 */
export async function queryGroup(
  groupId: string,
  limit: number,
  cursor?: string,
  opts: { last?: boolean } = {},
): Promise<{ items: { task_id: string; owner: string; submit_order: string }[]; next?: string }> {
  const out = await queryPage({
    TableName: table(),
    IndexName: 'group-order-index',
    KeyConditionExpression: 'task_group_id = :g',
    ExpressionAttributeValues: { ':g': groupId },
    Limit: limit,
    ScanIndexForward: !opts.last,
    ExclusiveStartKey: decodeCursor(cursor, groupCursor(groupId)),
  });
  return { items: (out.Items ?? []) as { task_id: string; owner: string; submit_order: string }[], next: encodeCursor(out.LastEvaluatedKey) };
}

/**
 * Refuse a group cursor that is not `owner`'s: the index keys name no owner, so the task the cursor
 * points at is read (one GetItem a page). Without this, another user's cursor past a group's last
 * task would answer an empty page instead of "not found". A cursor whose task expired (TTL) since
 * the previous page is refused too; the client starts the listing again.
 */
export async function checkGroupCursor(groupId: string, owner: string, cursor: string | undefined): Promise<void> {
  const key = decodeCursor(cursor, groupCursor(groupId));
  if (!key) return;
  const t = await getTask(key.task_id!);
  if (!t || t.owner !== owner || t.task_group_id !== groupId || t.submit_order !== key.submit_order) throw invalidCursor();
}

export async function queryOpenOnEndpoint(endpointId: string, cursor?: Record<string, unknown>): Promise<{ ids: string[]; next?: Record<string, unknown> }> {
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table(),
      IndexName: 'open-since-index',
      KeyConditionExpression: 'open_on = :e',
      ExpressionAttributeValues: { ':e': endpointId },
      ProjectionExpression: 'task_id',
      ExclusiveStartKey: cursor,
    }),
  );
  return { ids: (out.Items ?? []).map((i) => i.task_id as string), next: out.LastEvaluatedKey };
}

/**
 * One page of an endpoint's open tasks, oldest first, from the sparse `open-since-index` (open_on,
 * created_at; keys only): with `before`, only those created before it, so the sweep for expired
 * tasks reads what it fails and nothing else.
 */
export async function queryOpenByAge(
  endpointId: string,
  opts: { before?: string; limit?: number; cursor?: Record<string, unknown> } = {},
): Promise<{ items: { task_id: string; created_at: string }[]; next?: Record<string, unknown> }> {
  const values: Record<string, unknown> = { ':e': endpointId };
  if (opts.before) values[':b'] = opts.before;
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table(),
      IndexName: 'open-since-index',
      KeyConditionExpression: opts.before ? 'open_on = :e AND created_at < :b' : 'open_on = :e',
      ExpressionAttributeValues: values,
      ProjectionExpression: 'task_id, created_at',
      Limit: opts.limit,
      ExclusiveStartKey: opts.cursor,
    }),
  );
  return { items: (out.Items ?? []) as { task_id: string; created_at: string }[], next: out.LastEvaluatedKey };
}

export interface TransitionChange {
  by: string;
  /** Moves that happened on the way, recorded before this one (a "running" that came in the same batch). */
  via?: Transition[];
  at?: Date;
  result?: Envelope;
  exception?: RemoteException;
  output?: TaskOutput;
  workerId?: string;
  /** Only for a task of this endpoint: a worker may report only on its own endpoint's tasks. */
  endpointId?: string;
  /** Only from this state (e.g. cancel only what is still queued); default: every state that may move to `to`. */
  from?: TaskState[];
  /** Only if the record has not moved since it was read with this `updated_at` (the sweep's guard against a report landing meanwhile). */
  ifUpdatedAt?: string;
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
  if (change.ifUpdatedAt) (condition += ' AND updated_at = :seen'), (values[':seen'] = change.ifUpdatedAt);
  if (change.result) (sets.push('#r = :r'), (names['#r'] = 'result'), (values[':r'] = change.result));
  if (change.exception) (sets.push('#x = :x'), (names['#x'] = 'exception'), (values[':x'] = change.exception));
  if (change.output) (sets.push('#o = :o'), (names['#o'] = 'output'), (values[':o'] = change.output));
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

/**
 * A submit made with an Idempotency-Key: claimed ("pending") before any task is written, marked
 * "complete" with its response after every task is queued, so a retry gets the same tasks.
 */
export interface IdempotencyRecord {
  request_hash: string;
  response: { task_group_id: string; task_ids: string[] };
  state: 'pending' | 'complete';
  /** Epoch ms when the request that holds the claim started. */
  started_at: number;
  /** The submit's order prefix (submitPrefix), kept by every attempt: a retry's tasks sort where the first attempt's did. */
  submit_prefix?: string;
}

const idemKey = (owner: string, keyHash: string) => `idempotency#${owner}#${keyHash}`;

/**
 * Claim a key for this request in one conditional write: a new key, or one whose holder has been
 * pending for longer than `staleMs` (its request died). Returns what the claim replaced (nothing
 * for a new key), or `{ held }` with the record that stands when the claim is refused. A claim
 * that replaces a dead one keeps its `submit_prefix`.
 */
export async function claimIdempotency(
  owner: string,
  keyHash: string,
  rec: Omit<IdempotencyRecord, 'state' | 'started_at' | 'submit_prefix'> & { submit_prefix: string },
  staleMs: number,
): Promise<{ claimed: true; previous?: IdempotencyRecord } | { claimed: false; held: IdempotencyRecord }> {
  const now = Date.now();
  try {
    const out = await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { task_id: idemKey(owner, keyHash) },
        UpdateExpression:
          'SET request_hash = :h, #resp = :resp, #st = :pending, started_at = :now, expires_at = :exp, submit_prefix = if_not_exists(submit_prefix, :prefix)',
        ConditionExpression: 'attribute_not_exists(task_id) OR (#st = :pending AND started_at < :stale AND request_hash = :h)',
        ExpressionAttributeNames: { '#st': 'state', '#resp': 'response' },
        ExpressionAttributeValues: {
          ':h': rec.request_hash,
          ':resp': rec.response,
          ':pending': 'pending',
          ':now': now,
          // Kept one day, like the retry window of any client.
          ':exp': Math.floor(now / 1000) + 86400,
          ':prefix': rec.submit_prefix,
          ':stale': now - staleMs,
        },
        ReturnValues: 'ALL_OLD',
      }),
    );
    return { claimed: true, previous: out.Attributes as IdempotencyRecord | undefined };
  } catch (err) {
    if (!isConditionFailed(err)) throw err;
    const held = await dynamo().send(new GetCommand({ TableName: table(), Key: { task_id: idemKey(owner, keyHash) }, ConsistentRead: true }));
    if (!held.Item) return claimIdempotency(owner, keyHash, rec, staleMs);
    return { claimed: false, held: held.Item as IdempotencyRecord };
  }
}

export async function completeIdempotency(owner: string, keyHash: string): Promise<void> {
  await dynamo().send(
    new UpdateCommand({
      TableName: table(),
      Key: { task_id: idemKey(owner, keyHash) },
      UpdateExpression: 'SET #st = :complete',
      ExpressionAttributeNames: { '#st': 'state' },
      ExpressionAttributeValues: { ':complete': 'complete' },
    }),
  );
}

/** Give a claim up, so a retry may start again at once (after a partial failure). */
export async function releaseIdempotency(owner: string, keyHash: string): Promise<void> {
  await dynamo().send(new DeleteCommand({ TableName: table(), Key: { task_id: idemKey(owner, keyHash) } }));
}
