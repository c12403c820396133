import { randomBytes } from 'node:crypto';
import { DeleteCommand, GetCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { z } from 'zod';
import { dynamo } from '../clients';
import { config } from '../config';
import { UUID_RE } from '../ids';
import type { ResourceSpecification } from '../messages';
import { inlineEnvelope, type Envelope } from '../payload';
import { FINAL_STATES, statesAllowing, type TaskState } from '../states';
import { batchGet, batchPut, isConditionFailed } from './batch';
import { cursorId, decodeCursor, encodeCursor, invalidCursor, queryPage, type CursorShape } from './cursor';

/*
 * The tasks table (key `task_id`) holds these items:
 *
 * - `share#<share-id>`: up to 100 tasks of one submit, written once and never changed: owner,
 *   endpoint_id, task_group_id, submit_order (its first task's, so `group-order-index` lists a
 *   group's shares in submit order and a share's tasks follow by position), created_at,
 *   expires_at, the tasks' common function_id and walltime_ms, and `tasks`: per task its args
 *   and whatever differs from those (function_id, walltime_ms, memory_mb, resource_specification).
 *   A task's id is its share's id with the last 3 hex digits its position (000-063): a share id
 *   ends in 000. One put (and one small index entry) covers up to 100 tasks.
 * - `open#<share-id>`: the share's marker in the sparse `open-since-index` (open_on, created_at),
 *   with share_id and count. The sweeps and endpoint deletion expand it to its tasks; the periodic
 *   sweep takes it out of the index (removes open_on) once every task of its share is final
 *   (core/lost-tasks.ts); it expires with its share.
 * - `<task-id>`: only what changed since the share: state, updated_at, transitions (the share's
 *   two initial ones, then the later ones), result / exception / output, worker_id, completed_at,
 *   expires_at. Written at the task's first move (usually its final one, "running" folded in),
 *   never with task_group_id, submit_order, open_on or created_at, so it costs no index write.
 *   Until it exists the task is in its share's initial state, waiting-for-endpoint.
 * - `<task-id>` written by a Ferry older than shares (kept local data): the whole record, with
 *   `owner`; it is read and moved as it always was.
 * - `idempotency#<owner>#<key-hash>`: a submit made with an Idempotency-Key (below).
 *
 * Callers see one merged TaskRecord either way.
 */

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
  /** mpi tasks only: their ranks, filled in by the API (core/tasks/resources.ts resourceSpecification). */
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
  /** Tasks from before shares only: the endpoint id while the task is open, in the sparse `open-since-index` (shares use markers). */
  open_on?: string;
  completed_at?: string;
  worker_id?: string;
  /** Epoch seconds after which DynamoDB deletes a finished task. */
  expires_at?: number;
}

const table = () => config().tables.tasks;

/** DynamoDB's item limit is 400 KB: a share holds at most 100 tasks and about 300 KB of them. */
export const MAX_SHARE_TASKS = 100;
export const MAX_SHARE_BYTES = 300 * 1024;
/** SQS keeps a message at most 14 days: no task of a share is open after that (plus the sweep's margin). */
const SQS_MAX_RETENTION_S = 14 * 86400;

/** One task as its share keeps it: what differs from the share's common values, and its arguments. */
export interface ShareTask {
  args: Envelope;
  function_id?: string;
  walltime_ms?: number;
  memory_mb?: number;
  resource_specification?: ResourceSpecification;
}

export interface ShareRecord {
  /** `share#<share-id>` */
  task_id: string;
  share_id: string;
  owner: string;
  endpoint_id: string;
  task_group_id: string;
  /** The share's first task's submit order (submitOrder): its tasks follow it by position. */
  submit_order: string;
  created_at: string;
  expires_at: number;
  function_id: string;
  walltime_ms: number;
  tasks: ShareTask[];
}

/** What a submit gives each new task; the share keeps it. */
export type NewTask = Pick<TaskRecord, 'function_id' | 'args' | 'walltime_ms' | 'memory_mb' | 'resource_specification'>;

const shareKey = (shareId: string) => `share#${shareId}`;
const markerKey = (shareId: string) => `open#${shareId}`;

/** A share id from any UUID: its last 3 hex digits are 000, its tasks' ids the positions. */
export const shareIdOf = (uuid: string): string => `${uuid.slice(0, 33)}000`;
export const taskIdAt = (shareId: string, position: number): string => `${shareId.slice(0, 33)}${position.toString(16).padStart(3, '0')}`;

/** The share a task id would belong to, and its place there (legacy ids may look like one too: the share is then missing). */
export function shareOfTask(taskId: string): { shareId: string; position: number } | undefined {
  if (!UUID_RE.test(taskId)) return undefined;
  const position = parseInt(taskId.slice(33), 16);
  return position < MAX_SHARE_TASKS ? { shareId: `${taskId.slice(0, 33)}000`, position } : undefined;
}

/** When a share (and its marker) expire: after its tasks can no longer be open, plus the results' time to live. */
const shareExpiresAt = (createdAt: Date): number =>
  Math.floor(createdAt.getTime() / 1000) + SQS_MAX_RETENTION_S + config().expiryMarginSeconds + 86400 + config().resultTtlDays * 86400;

const initialTransitions = (at: string): Transition[] => [
  { state: 'received', at, by: 'api' },
  { state: 'waiting-for-endpoint', at, by: 'api' },
];

/**
 * Shares never change once written: kept in process (at most 5,000 and about 64 MB of them, least
 * recently used out), so the results handler and the readers need no read of a share they have
 * seen. Keyed by table, since tests run stacks of several stages in one process.
 */
const SHARE_CACHE_SIZE = 5000;
const SHARE_CACHE_BYTES = 64 * 1024 * 1024;
const shareCache = new Map<string, { share: ShareRecord; bytes: number }>();
let shareCacheBytes = 0;
const cacheKey = (shareId: string) => `${table()}/${shareId}`;

function cached(shareId: string): ShareRecord | undefined {
  const key = cacheKey(shareId);
  const hit = shareCache.get(key);
  if (hit) {
    // Least recently used out: a hit moves to the end of the map's order.
    shareCache.delete(key);
    shareCache.set(key, hit);
  }
  return hit?.share;
}

function forget(key: string): void {
  shareCacheBytes -= shareCache.get(key)?.bytes ?? 0;
  shareCache.delete(key);
}

function remember(s: ShareRecord): void {
  const key = cacheKey(s.share_id);
  forget(key);
  // Inline arguments are most of a share's size.
  const bytes = s.tasks.reduce((n, t) => n + (t.args.inline?.length ?? 0) + 200, 500);
  shareCache.set(key, { share: s, bytes });
  shareCacheBytes += bytes;
  while (shareCache.size > SHARE_CACHE_SIZE || shareCacheBytes > SHARE_CACHE_BYTES) forget(shareCache.keys().next().value!);
}

/** A share by id, from the cache or the table (`consistent`: a strongly consistent read on a miss). */
async function getShare(shareId: string, opts: { consistent?: boolean; fresh?: boolean } = {}): Promise<ShareRecord | undefined> {
  const hit = opts.fresh ? undefined : cached(shareId);
  if (hit) return hit;
  // The results of one share's tasks arrive together: one read serves them all.
  const key = `${cacheKey(shareId)}/${opts.fresh || opts.consistent ? 'c' : 'e'}`;
  const pending = reading.get(key);
  if (pending && !opts.fresh) return pending;
  const read = (async () => {
    const out = await dynamo().send(
      new GetCommand({ TableName: table(), Key: { task_id: shareKey(shareId) }, ConsistentRead: opts.consistent || opts.fresh }),
    );
    const s = out.Item ? expandShare(out.Item as unknown as ShareRecord) : undefined;
    if (s) remember(s);
    return s;
  })();
  reading.set(key, read);
  try {
    return await read;
  } finally {
    if (reading.get(key) === read) reading.delete(key);
  }
}
const reading = new Map<string, Promise<ShareRecord | undefined>>();

/** Shares read straight from the table (strongly consistent), for a submit taking over a dead attempt. */
export async function getSharesFresh(shareIds: readonly string[]): Promise<Map<string, ShareRecord>> {
  const found = await Promise.all(shareIds.map((id) => getShare(id, { fresh: true })));
  return new Map(found.flatMap((s) => (s ? [[s.share_id, s] as const] : [])));
}

/** The tasks of a share in one list (ids by position). */
export const shareTaskIds = (s: ShareRecord): string[] => s.tasks.map((_, i) => taskIdAt(s.share_id, i));

/** A task's record: its share's part and its own item's (when it has one). */
function mergeTask(s: ShareRecord, position: number, item?: Record<string, unknown>): TaskRecord {
  const t = s.tasks[position]!;
  const cut = s.submit_order.lastIndexOf('#');
  const first = Number(s.submit_order.slice(cut + 1));
  const own = (item ?? {}) as Partial<TaskRecord>;
  return {
    task_id: taskIdAt(s.share_id, position),
    owner: s.owner,
    endpoint_id: s.endpoint_id,
    function_id: t.function_id ?? s.function_id,
    task_group_id: s.task_group_id,
    state: own.state ?? 'waiting-for-endpoint',
    args: t.args,
    walltime_ms: t.walltime_ms ?? s.walltime_ms,
    ...(t.memory_mb !== undefined ? { memory_mb: t.memory_mb } : {}),
    ...(t.resource_specification ? { resource_specification: t.resource_specification } : {}),
    submit_order: submitOrder(s.submit_order.slice(0, cut), first + position),
    created_at: s.created_at,
    updated_at: own.updated_at ?? s.created_at,
    transitions: own.transitions ?? initialTransitions(s.created_at),
    ...(own.result ? { result: own.result } : {}),
    ...(own.exception ? { exception: own.exception } : {}),
    ...(own.output ? { output: own.output } : {}),
    ...(own.completed_at ? { completed_at: own.completed_at } : {}),
    ...(own.worker_id ? { worker_id: own.worker_id } : {}),
    expires_at: own.expires_at ?? s.expires_at,
  };
}

/** A new share's tasks as records, in their initial state (no read: nothing has moved yet). */
export const shareTasks = (s: ShareRecord): TaskRecord[] => s.tasks.map((_, p) => mergeTask(s, p));

/**
 * The share items of a submit's new tasks: per share its id, its first task's position in the
 * submit and its tasks, in order.
 */
export function shareItems(
  parts: readonly { shareId: string; first: number; tasks: readonly NewTask[] }[],
  base: { owner: string; endpoint_id: string; task_group_id: string; prefix: string; created: Date },
): ShareRecord[] {
  const created_at = base.created.toISOString();
  return parts.map(({ shareId, first, tasks }) => {
    const function_id = tasks[0]!.function_id;
    const walltime_ms = tasks[0]!.walltime_ms;
    return {
      task_id: shareKey(shareId),
      share_id: shareId,
      owner: base.owner,
      endpoint_id: base.endpoint_id,
      task_group_id: base.task_group_id,
      submit_order: submitOrder(base.prefix, first),
      created_at,
      expires_at: shareExpiresAt(base.created),
      function_id,
      walltime_ms,
      tasks: tasks.map((t) => ({
        args: t.args,
        ...(t.function_id !== function_id ? { function_id: t.function_id } : {}),
        ...(t.walltime_ms !== walltime_ms ? { walltime_ms: t.walltime_ms } : {}),
        ...(t.memory_mb !== undefined ? { memory_mb: t.memory_mb } : {}),
        ...(t.resource_specification ? { resource_specification: t.resource_specification } : {}),
      })),
    };
  });
}

/**
 * A share as stored: an inline argument keeps its codec and bytes only; its size and SHA-256
 * follow from the bytes (the API computed them from these very bytes: core/payload.ts
 * inlineEnvelope), so they are left out (about 90 of the 150 bytes a no-op task takes) and
 * computed again when the share is read (expandShare), once per share and process.
 */
const compactShare = (s: ShareRecord): ShareRecord => ({
  ...s,
  tasks: s.tasks.map((t) => (t.args.inline !== undefined ? { ...t, args: { codec: t.args.codec, inline: t.args.inline } as Envelope } : t)),
});

function expandShare(s: ShareRecord): ShareRecord {
  if (s.tasks.every((t) => t.args.sha256 !== undefined)) return s;
  return {
    ...s,
    tasks: s.tasks.map((t) =>
      t.args.sha256 !== undefined ? t : { ...t, args: inlineEnvelope(Buffer.from(t.args.inline!, 'base64'), t.args.codec) },
    ),
  };
}

/** A share's marker in `open-since-index`. */
const markerOf = (s: ShareRecord) => ({
  task_id: markerKey(s.share_id),
  share_id: s.share_id,
  count: s.tasks.length,
  open_on: s.endpoint_id,
  created_at: s.created_at,
  expires_at: s.expires_at,
});

/**
 * Write shares and their markers (BatchWriteItem, 25 items a call). `markersOnly`: shares already
 * written (a retry's), whose marker is put back in case the dead attempt wrote the share alone.
 * Returns the ids of the shares whose share or marker DynamoDB would not take.
 */
export async function putShares(shares: readonly ShareRecord[], markersOnly: readonly ShareRecord[] = []): Promise<string[]> {
  const items = [...shares.flatMap((s) => [compactShare(s), markerOf(s)]), ...markersOnly.map(markerOf)] as unknown as Record<
    string,
    unknown
  >[];
  const unwritten = new Set(await batchPut(table(), items, (i) => i.share_id as string));
  for (const s of shares) if (!unwritten.has(s.share_id)) remember(s);
  return [...unwritten];
}

/**
 * Take a share's marker out of `open-since-index`: every task of it is final, or its endpoint is
 * gone. An update (REMOVE open_on), not a delete: it costs the same, and the sweep may update but
 * not delete items (infra: its table access is read and update); the item goes with its TTL.
 */
export async function closeMarker(shareId: string): Promise<void> {
  try {
    await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { task_id: markerKey(shareId) },
        UpdateExpression: 'REMOVE open_on',
        ConditionExpression: 'attribute_exists(open_on)',
      }),
    );
  } catch (err) {
    if (!isConditionFailed(err)) throw err;
  }
}

export async function getTask(taskId: string): Promise<TaskRecord | undefined> {
  return (await getTasks([taskId]))[0];
}

/**
 * Tasks by id, in one BatchGetItem for the task items and the shares not in cache. A task with an
 * item of its own from before shares (it has an owner) is that item; otherwise the share and its
 * item (if any) merged. Unknown ids are left out.
 */
export async function getTasks(ids: readonly string[]): Promise<TaskRecord[]> {
  const unique = [...new Set(ids)];
  const refs = new Map(unique.map((id) => [id, shareOfTask(id)]));
  const wanted = new Set<string>();
  for (const ref of refs.values()) if (ref && !cached(ref.shareId)) wanted.add(ref.shareId);
  const items = await batchGet<Record<string, unknown>>(table(), 'task_id', [...unique, ...[...wanted].map(shareKey)]);
  const byKey = new Map(items.map((i) => [i.task_id as string, i]));
  for (const id of wanted) {
    const s = byKey.get(shareKey(id));
    if (s) remember(expandShare(s as unknown as ShareRecord));
  }
  const out: TaskRecord[] = [];
  const nowSeconds = Date.now() / 1000;
  for (const id of unique) {
    const item = byKey.get(id);
    if (item?.owner !== undefined) {
      out.push(item as unknown as TaskRecord);
      continue;
    }
    const ref = refs.get(id);
    const share = ref && cached(ref.shareId);
    // DynamoDB deletes expired items when it gets to them (within days), in no set order: a share
    // past its expiry is gone already, or its task could read as waiting again.
    if (share && ref.position < share.tasks.length && share.expires_at > nowSeconds) out.push(mergeTask(share, ref.position, item));
  }
  return out;
}

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

/** A cursor of one group's listing: the last task shown, its group and its submit order. */
const groupCursor = (groupId: string): CursorShape =>
  z.object({ task_id: cursorId, task_group_id: z.literal(groupId), submit_order: submitOrderShape }).strict() as unknown as CursorShape;

type GroupIndexItem = { task_id: string; owner: string; submit_order: string };

/** The last item of a group in `group-order-index` (a share, or a task from before shares): its owner and submit order. */
export async function lastInGroup(groupId: string): Promise<GroupIndexItem | undefined> {
  const out = await queryPage({
    TableName: table(),
    IndexName: 'group-order-index',
    KeyConditionExpression: 'task_group_id = :g',
    ExpressionAttributeValues: { ':g': groupId },
    Limit: 1,
    ScanIndexForward: false,
  });
  return out.Items?.[0] as GroupIndexItem | undefined;
}

/**
 * One page of a group's tasks in submit order. The index lists shares (and tasks from before
 * shares); a page may end inside a share, so the cursor names the last task shown and the next
 * page starts at the first item of that task's submit and skips what sorts up to the cursor.
 * Returns the tasks' records and the owners of the index items read.
 */
export async function queryGroup(
  groupId: string,
  limit: number,
  cursor?: string,
): Promise<{ items: TaskRecord[]; owners: Set<string>; next?: string }> {
  const after = decodeCursor(cursor, groupCursor(groupId));
  const startOfSubmit = after ? after.submit_order!.slice(0, after.submit_order!.lastIndexOf('#') + 1) : undefined;
  const picked: { id: string; order: string }[] = [];
  const owners = new Set<string>();
  let start: Record<string, unknown> | undefined;
  let more = true;
  while (picked.length <= limit && more) {
    const out = await queryPage({
      TableName: table(),
      IndexName: 'group-order-index',
      KeyConditionExpression: startOfSubmit ? 'task_group_id = :g AND submit_order >= :s' : 'task_group_id = :g',
      ExpressionAttributeValues: startOfSubmit ? { ':g': groupId, ':s': startOfSubmit } : { ':g': groupId },
      Limit: limit + 1,
      ExclusiveStartKey: start,
    });
    const page = (out.Items ?? []) as GroupIndexItem[];
    const shares = await Promise.all(
      page.map(async (i) => (i.task_id.startsWith('share#') ? getShare(i.task_id.slice('share#'.length)) : undefined)),
    );
    for (const [k, i] of page.entries()) {
      owners.add(i.owner);
      const s = shares[k];
      const tasks = i.task_id.startsWith('share#')
        ? s
          ? shareTaskIds(s).map((id, p) => ({ id, order: mergeOrder(s, p) }))
          : []
        : [{ id: i.task_id, order: i.submit_order }];
      for (const t of tasks) if (!after || t.order > after.submit_order!) picked.push(t);
    }
    start = out.LastEvaluatedKey;
    more = start !== undefined;
  }
  const shown = picked.slice(0, limit);
  const byId = new Map((await getTasks(shown.map((t) => t.id))).map((t) => [t.task_id, t]));
  const items = shown.flatMap((t) => byId.get(t.id) ?? []);
  const last = shown[shown.length - 1];
  const next =
    picked.length > limit && last ? encodeCursor({ task_id: last.id, task_group_id: groupId, submit_order: last.order }) : undefined;
  return { items, owners, next };
}

const mergeOrder = (s: ShareRecord, position: number): string => {
  const cut = s.submit_order.lastIndexOf('#');
  return submitOrder(s.submit_order.slice(0, cut), Number(s.submit_order.slice(cut + 1)) + position);
};

/**
 * Refuse a group cursor that is not `owner`'s: the cursor's task is read (a share is usually in
 * cache). Without this, another user's cursor past a group's last task would answer an empty page
 * instead of "not found". A cursor whose task expired (TTL) since the previous page is refused
 * too; the client starts the listing again.
 */
export async function checkGroupCursor(groupId: string, owner: string, cursor: string | undefined): Promise<void> {
  const key = decodeCursor(cursor, groupCursor(groupId));
  if (!key) return;
  const t = await getTask(key.task_id!);
  if (!t || t.owner !== owner || t.task_group_id !== groupId || t.submit_order !== key.submit_order) throw invalidCursor();
}

/** One page of an endpoint's open items in `open-since-index`: share markers, and tasks from before shares. */
export async function queryOpenOnEndpoint(
  endpointId: string,
  cursor?: Record<string, unknown>,
  limit?: number,
): Promise<{ ids: string[]; next?: Record<string, unknown> }> {
  const out = await dynamo().send(
    new QueryCommand({
      TableName: table(),
      IndexName: 'open-since-index',
      KeyConditionExpression: 'open_on = :e',
      ExpressionAttributeValues: { ':e': endpointId },
      ProjectionExpression: 'task_id',
      ExclusiveStartKey: cursor,
      Limit: limit,
    }),
  );
  return { ids: (out.Items ?? []).map((i) => i.task_id as string), next: out.LastEvaluatedKey };
}

/**
 * One page of an endpoint's open items, oldest first, from the sparse `open-since-index` (open_on,
 * created_at; keys only): with `before`, only those created before it, so the sweep for expired
 * tasks reads what it fails and nothing else. An item is a share's marker or a task from before
 * shares; openTaskIds expands them.
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

/** The share a marker key stands for, if it is one. */
export const markerShare = (key: string): string | undefined => (key.startsWith('open#') ? key.slice('open#'.length) : undefined);

/** The task ids behind `open-since-index` items: a marker's share's tasks, or the (pre-share) task itself. */
export async function openTaskIds(keys: readonly string[]): Promise<string[]> {
  const shares = await Promise.all(keys.map(async (k) => (markerShare(k) ? getShare(markerShare(k)!, { consistent: true }) : undefined)));
  return keys.flatMap((k, i) => (markerShare(k) ? (shares[i] ? shareTaskIds(shares[i]!) : []) : [k]));
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
 * What every move writes, shared by task items and whole (pre-share) items: the new state and
 * time, the transitions to append (`:t`), the `from` states (`:f0`…, and `inFrom` to test them),
 * and the result, exception, output and worker that came with it. Callers add their condition,
 * how transitions are appended, and the expiry.
 */
function moveParts(to: TaskState, change: TransitionChange, at: Date) {
  const from = change.from ?? statesAllowing(to);
  const names: Record<string, string> = { '#s': 'state' };
  const values: Record<string, unknown> = {
    ':to': to,
    ':now': at.toISOString(),
    ':t': [...(change.via ?? []), { state: to, at: at.toISOString(), by: change.by } satisfies Transition],
  };
  const sets = ['#s = :to', 'updated_at = :now'];
  from.forEach((s, i) => (values[`:f${i}`] = s));
  const set = (clause: string, value: string, v: unknown, name?: [string, string]) => {
    sets.push(clause);
    values[value] = v;
    if (name) names[name[0]] = name[1];
  };
  if (change.result) set('#r = :r', ':r', change.result, ['#r', 'result']);
  if (change.exception) set('#x = :x', ':x', change.exception, ['#x', 'exception']);
  if (change.output) set('#o = :o', ':o', change.output, ['#o', 'output']);
  if (change.workerId) set('worker_id = :w', ':w', change.workerId);
  return { from, names, values, sets, inFrom: `#s IN (${from.map((_, i) => `:f${i}`).join(', ')})` };
}

/**
 * Move a task to `to` if its current state allows it, in one conditional write, so a duplicate
 * or late result (SQS is at-least-once) can never overwrite a final state. A task of a share
 * gets its own item at its first move: the condition then reads "no item yet (the share's
 * initial waiting-for-endpoint) or a state that may move". The share says whose task it is:
 * a report from another endpoint is refused before any write.
 * Returns the updated record, or undefined if the task is unknown or the move not allowed.
 */
export async function transitionTask(taskId: string, to: TaskState, change: TransitionChange): Promise<TaskRecord | undefined> {
  const ref = shareOfTask(taskId);
  // Consistent on a miss: a result may follow its submit faster than a replica.
  const share = ref ? await getShare(ref.shareId, { consistent: true }) : undefined;
  if (!share || ref!.position >= share.tasks.length) return transitionLegacy(taskId, to, change);
  if (change.endpointId && share.endpoint_id !== change.endpointId) return undefined;
  const at = change.at ?? new Date();
  const { from, names, values, sets, inFrom } = moveParts(to, change, at);
  values[':initial'] = initialTransitions(share.created_at);
  sets.push('transitions = list_append(if_not_exists(transitions, :initial), :t)');
  // No item yet: the task is still as its share wrote it, waiting for its endpoint.
  let condition = from.includes('waiting-for-endpoint') ? `(attribute_not_exists(task_id) OR ${inFrom})` : inFrom;
  if (change.ifUpdatedAt) {
    condition +=
      change.ifUpdatedAt === share.created_at ? ' AND (attribute_not_exists(task_id) OR updated_at = :seen)' : ' AND updated_at = :seen';
    values[':seen'] = change.ifUpdatedAt;
  }
  if (FINAL_STATES.includes(to)) {
    sets.push('completed_at = :now', 'expires_at = :exp');
    // Never before its share: a task item gone while its share stays would read as waiting again.
    values[':exp'] = Math.max(Math.floor(at.getTime() / 1000) + config().resultTtlDays * 86400, share.expires_at);
  }
  try {
    const out = await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { task_id: taskId },
        UpdateExpression: `SET ${sets.join(', ')}`,
        ConditionExpression: condition,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ReturnValues: 'ALL_NEW',
      }),
    );
    return mergeTask(share, ref!.position, out.Attributes);
  } catch (err) {
    if (isConditionFailed(err)) return undefined;
    throw err;
  }
}

/** A move of a task written whole by a Ferry older than shares (kept local data). */
async function transitionLegacy(taskId: string, to: TaskState, change: TransitionChange): Promise<TaskRecord | undefined> {
  const at = change.at ?? new Date();
  const { names, values, sets, inFrom } = moveParts(to, change, at);
  sets.push('transitions = list_append(transitions, :t)');
  const removes: string[] = [];
  // `owner`: only a whole task item, never a share's task item whose share is gone.
  let condition = `attribute_exists(#owner) AND ${inFrom}`;
  names['#owner'] = 'owner';
  if (change.endpointId) {
    condition += ' AND endpoint_id = :ep';
    values[':ep'] = change.endpointId;
  }
  if (change.ifUpdatedAt) {
    condition += ' AND updated_at = :seen';
    values[':seen'] = change.ifUpdatedAt;
  }
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
  /**
   * The submit's answer: its group and its shares with their task counts (task ids follow from
   * them, taskIdAt), so the record stays one write unit whatever the submit's size. Records made
   * before shares list `task_ids` instead.
   */
  response: { task_group_id: string; shares?: [string, number][]; task_ids?: string[] };
  state: 'pending' | 'complete';
  /** Epoch ms when the request that holds the claim started. */
  started_at: number;
  /** The submit's order prefix (submitPrefix), kept by every attempt: a retry's tasks sort where the first attempt's did. */
  submit_prefix?: string;
}

const idemKey = (owner: string, keyHash: string) => `idempotency#${owner}#${keyHash}`;

/** A submit's answer as its idempotency record keeps it. */
export const idempotentResponse = (r: IdempotencyRecord['response']): { task_group_id: string; task_ids: string[] } => ({
  task_group_id: r.task_group_id,
  task_ids: r.task_ids ?? (r.shares ?? []).flatMap(([shareId, n]) => Array.from({ length: n }, (_, p) => taskIdAt(shareId, p))),
});

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
    const held = await dynamo().send(
      new GetCommand({ TableName: table(), Key: { task_id: idemKey(owner, keyHash) }, ConsistentRead: true }),
    );
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
