import { argsKey, endpointPrefix, isUploadKeyOf, objectSize, presignGet, storePayload } from './bucket';
import {
  BadRequest,
  Forbidden,
  ForeignPayload,
  ForgedReport,
  FunctionNotAllowed,
  IdempotencyKeyReused,
  NotFound,
  PartialSubmitFailure,
  RequestInProgress,
} from './errors';
import { derivedId, newId, sha256Hex } from './ids';
import { resourceSpecificationSchema, type ResourceSpecification, type ResultMessage, type TaskMessage } from './messages';
import { encodeJsonArgs, inlineBytes, refEnvelope, type Envelope } from './payload';
import { RUNTIME_CODECS, type Codec } from './runtimes';
import { queueTasks } from './queues/endpoint-queue';
import type { TaskState } from './states';
import { canUseEndpoint, disallowedFunctions, getEndpoint, type EndpointRecord } from './tables/endpoints';
import { mapLimit } from './retry';
import { getFunctions, type FunctionRecord } from './tables/functions';
import { telemetry } from './telemetry';
import {
  claimIdempotency,
  completeIdempotency,
  getSharesFresh,
  getTask,
  getTasks,
  idempotentResponse,
  lastInGroup,
  MAX_SHARE_BYTES,
  MAX_SHARE_TASKS,
  putShares,
  releaseIdempotency,
  queryGroup,
  shareIdOf,
  shareItems,
  shareOfTask,
  shareTaskIds,
  shareTasks,
  submitPrefix,
  taskIdAt,
  transitionTask,
  type NewTask,
  type RemoteException,
  type ShareRecord,
  type TaskOutput,
  type TaskRecord,
} from './tables/tasks';
import { announceFinished } from './task-events';
import { config } from './config';

export const MAX_TASKS_PER_SUBMIT = 500;

export interface SubmitTaskInput {
  function_id: string;
  /** JSON arguments, for callers without a codec of their own (curl). */
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  /** Arguments already encoded by an SDK: inline base64, or a ref from POST /v1/payloads. */
  payload?: { codec: Codec; data?: string; ref?: string; size?: number; sha256?: string };
  walltime_ms?: number;
  /** The task's memory cap in MB; the endpoint's agent caps it at its own maximum. */
  memory_mb?: number;
  /** mpi functions only (required there): the ranks to launch; what is left out is filled in. */
  resource_specification?: Partial<ResourceSpecification>;
}

export interface SubmitInput {
  userId: string;
  endpointId: string;
  taskGroupId?: string;
  tasks: SubmitTaskInput[];
  idempotencyKey?: string;
}

export interface SubmitResult {
  task_group_id: string;
  task_ids: string[];
}

/** The endpoint, if this user may submit to it; 404 rather than 403 for private endpoints of others. */
export async function usableEndpoint(endpointId: string, userId: string): Promise<EndpointRecord> {
  const ep = await getEndpoint(endpointId);
  if (!ep || !canUseEndpoint(ep, userId)) throw new NotFound(`endpoint ${endpointId} not found`);
  return ep;
}

/**
 * Accept a batch of tasks: one share item (and its open marker) per up to 100 tasks
 * (BatchWriteItem), and about one SQS message per task or per bundle (SendMessageBatch, 10 a
 * call). Either every task is queued, or the error names exactly the tasks that were not (those
 * are marked failed, never left waiting forever).
 */
export async function submitBatch(input: SubmitInput): Promise<SubmitResult> {
  const keyHash = input.idempotencyKey ? sha256Hex(input.idempotencyKey) : undefined;
  // With an Idempotency-Key, ids derive from it, so every attempt of one request names the same tasks.
  const taskGroupId = input.taskGroupId ?? (keyHash ? derivedId('group', input.userId, keyHash) : newId());
  const layout = shareLayout(input.tasks);
  const shareIds = layout.map((_, k) => shareIdOf(keyHash ? derivedId('share', input.userId, keyHash, String(k)) : newId()));
  const taskIds = layout.flatMap((n, k) => Array.from({ length: n }, (_, p) => taskIdAt(shareIds[k]!, p)));
  const response = { task_group_id: taskGroupId, task_ids: taskIds };

  const submittedAt = new Date();
  const request_hash = keyHash ? sha256Hex(JSON.stringify([input.endpointId, input.taskGroupId ?? null, input.tasks])) : '';
  const kept = { task_group_id: taskGroupId, shares: shareIds.map((id, k) => [id, layout[k]!] as [string, number]) };
  // The idempotency claim goes out with the reads, not after them, with the submit's own time as
  // its order prefix: a takeover puts the tasks of an attempt that died before writing any share
  // there, and those of one that wrote some beside them (their shares hold the prefix it used).
  const early = keyHash
    ? claimIdempotency(
        input.userId,
        keyHash,
        { request_hash, response: kept, submit_prefix: submitPrefix(submittedAt, undefined) },
        REQUEST_DEADLINE_MS,
      )
    : undefined;
  early?.catch(() => undefined);
  let checked: {
    ep: EndpointRecord;
    functions: Map<string, FunctionRecord>;
    lastInGroup?: string;
    specs: (ResourceSpecification | undefined)[];
  };
  try {
    // Independent reads, made together: they sit on every submit's critical path.
    const [ep, functions, lastInGroup] = await Promise.all([
      usableEndpoint(input.endpointId, input.userId),
      ownedFunctions(
        input.userId,
        input.tasks.map((t) => t.function_id),
      ),
      input.taskGroupId ? lastOfOwnGroup(input.taskGroupId, input.userId) : undefined,
    ]);
    const refused = disallowedFunctions(ep, [...functions.keys()]);
    if (refused.length) {
      throw new FunctionNotAllowed(
        `endpoint ${ep.endpoint_id} does not allow function${refused.length > 1 ? 's' : ''} ${refused.join(', ')}`,
        {
          function_ids: refused,
        },
      );
    }
    checked = { ep, functions, lastInGroup, specs: input.tasks.map((t, i) => taskResources(t, functions.get(t.function_id)!, i)) };
  } catch (err) {
    // A refused request leaves no claim behind; one that took over a dead attempt keeps it (its
    // shares may exist, and the next retry must take them over again).
    const c = await early?.catch(() => undefined);
    if (c?.claimed && !c.previous) await releaseIdempotency(input.userId, keyHash!);
    throw err;
  }
  const { ep, functions, specs } = checked;
  let prefix = submitPrefix(submittedAt, checked.lastInGroup);
  let takeover = false;
  if (early) {
    const out = await early;
    if (!out.claimed) {
      if (out.held.request_hash !== request_hash) throw new IdempotencyKeyReused('this Idempotency-Key was used for a different request');
      if (out.held.state === 'complete') return idempotentResponse(out.held.response);
      throw new RequestInProgress('a request with this Idempotency-Key is still being served; retry shortly');
    }
    // The claim replaced one whose request died part-way: some of its shares may exist already,
    // and the rest take their places beside them.
    takeover = out.previous !== undefined;
    prefix = out.previous?.submit_prefix ?? prefix;
  }

  const now = submittedAt.toISOString();
  const existing = takeover ? await getSharesFresh(shareIds) : new Map<string, ShareRecord>();
  // Shares a dead attempt wrote fix where the whole submit sorts: the rest take their places beside them.
  const written = [...existing.values()][0];
  if (written) prefix = written.submit_order.slice(0, written.submit_order.lastIndexOf('#'));
  const firsts = layout.map((_, k) => layout.slice(0, k).reduce((a, n) => a + n, 0));
  const freshParts = shareIds.flatMap((shareId, k) => (existing.has(shareId) ? [] : [{ shareId, first: firsts[k]!, n: layout[k]! }]));
  const made: NewTask[] = await mapLimit(
    freshParts.flatMap((p) => Array.from({ length: p.n }, (_, j) => p.first + j)),
    16,
    async (i) => {
      const t = input.tasks[i]!;
      return {
        function_id: t.function_id,
        args: await argsEnvelope(t, ep.endpoint_id, input.userId, taskIds[i]!),
        walltime_ms: t.walltime_ms ?? ep.walltime_ms,
        ...(t.memory_mb !== undefined ? { memory_mb: t.memory_mb } : {}),
        ...(specs[i] ? { resource_specification: specs[i] } : {}),
      };
    },
  );
  let at = 0;
  const shares = shareItems(
    freshParts.map((p) => ({ shareId: p.shareId, first: p.first, tasks: made.slice(at, (at += p.n)) })),
    { owner: input.userId, endpoint_id: ep.endpoint_id, task_group_id: taskGroupId, prefix, created: submittedAt },
  );
  // Written once, already queued: the share exists before the message, so a result always finds it.
  const unwritten = new Set(await putShares(shares, [...existing.values()]));
  const records = shares.filter((s) => !unwritten.has(s.share_id)).flatMap(shareTasks);
  if (existing.size) {
    // Queued again only if it never left the queue's hands; a task already past that is left alone.
    const again = await getTasks([...existing.values()].flatMap(shareTaskIds));
    records.push(...again.filter((t) => t.state === 'waiting-for-endpoint'));
  }
  const messages = bundleTasks(ep.endpoint_id, records, functions, now);
  const unqueued = new Set(await queueTasks(ep.queue_url, messages));
  const notWritten = new Set(taskIds.filter((id) => unwritten.has(shareOfTask(id)!.shareId) && !existing.has(shareOfTask(id)!.shareId)));
  if (notWritten.size || unqueued.size) {
    // Tasks written but not queued would wait forever: fail them so their state tells the truth
    // (a share written without its marker counts as unwritten: nothing would sweep its tasks).
    const failed = await mapLimit([...unqueued, ...notWritten], 16, (id) =>
      transitionTask(id, 'failed', {
        by: 'api',
        from: ['waiting-for-endpoint'],
        exception: { type: 'NotQueued', message: 'the task could not be queued; submit it again', traceback: '' },
      }),
    );
    announceFinished(failed.flatMap((t) => (t ? [t.task_id] : [])));
    if (keyHash) await releaseIdempotency(input.userId, keyHash);
    const notQueued = taskIds.filter((id) => notWritten.has(id) || unqueued.has(id));
    throw new PartialSubmitFailure(`${notQueued.length} of ${taskIds.length} tasks could not be queued`, {
      task_group_id: taskGroupId,
      task_ids: taskIds,
      not_queued: notQueued,
    });
  }
  if (keyHash) await completeIdempotency(input.userId, keyHash);
  // Counted once: a retry that took over a dead attempt counts only the tasks that attempt had not written.
  telemetry().tasks('submitted', ep.endpoint_id, made.length);
  return response;
}

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
    if (n && (n >= MAX_SHARE_TASKS || bytes + size > MAX_SHARE_BYTES)) (layout.push(n), (n = 0), (bytes = 0));
    n++;
    bytes += size;
  }
  if (n) layout.push(n);
  return layout;
}

/**
 * Check one task against its function before anything is written: the argument codec its runtime
 * reads, and the resource specification, which mpi functions need and no other function takes.
 * Returns the mpi task's full resource specification.
 */
function taskResources(t: SubmitTaskInput, fn: FunctionRecord, i: number): ResourceSpecification | undefined {
  const codecs = RUNTIME_CODECS[fn.runtime];
  if (t.payload && !codecs.includes(t.payload.codec)) {
    throw new BadRequest(`tasks.${i}: a ${fn.runtime} function reads ${codecs.join(' or ')} arguments, not ${t.payload.codec}`);
  }
  if (fn.runtime !== 'mpi') {
    if (t.resource_specification)
      throw new BadRequest(`tasks.${i}.resource_specification: resource_specification applies to mpi functions, not ${fn.runtime}`);
    return undefined;
  }
  if (!t.resource_specification) {
    throw new BadRequest(
      `tasks.${i}.resource_specification: an mpi function needs a resource_specification ({num_nodes?, ranks_per_node?, num_ranks?})`,
    );
  }
  try {
    return resourceSpecification(t.resource_specification);
  } catch (err) {
    if (err instanceof BadRequest) throw new BadRequest(`tasks.${i}.resource_specification: ${err.message}`);
    throw err;
  }
}

/**
 * An MPI task's ranks with the gaps filled as Globus Compute's MPIFunction reads them: one node
 * unless told; ranks per node enough to hold num_ranks (else 1); num_ranks every slot of every node.
 * Throws when num_ranks does not fit num_nodes × ranks_per_node, or a filled-in value is out of range.
 */
export function resourceSpecification(given: Partial<ResourceSpecification>): ResourceSpecification {
  const num_nodes = given.num_nodes ?? 1;
  const ranks_per_node = given.ranks_per_node ?? (given.num_ranks !== undefined ? Math.ceil(given.num_ranks / num_nodes) : 1);
  const num_ranks = given.num_ranks ?? num_nodes * ranks_per_node;
  if (num_ranks > num_nodes * ranks_per_node) {
    throw new BadRequest(`num_ranks ${num_ranks} does not fit ${num_nodes} node(s) × ${ranks_per_node} ranks_per_node`);
  }
  const parsed = resourceSpecificationSchema.safeParse({ num_nodes, ranks_per_node, num_ranks });
  if (!parsed.success) throw new BadRequest(parsed.error.issues.map((x) => `${x.path.join('.')}: ${x.message}`).join('; '));
  return parsed.data;
}

/** A submit still pending after this long has died (API Gateway gives up on a request at 29 s). */
const REQUEST_DEADLINE_MS = 60_000;

// SQS bills each 64 KiB of a message as one request: a bundle stays within one chunk where it can.
const BUNDLE_BYTES = 64 * 1024;
// Small submits go one task per message so every idle worker can take one; large ones share.
const MESSAGES_PER_SUBMIT = 50;
const MAX_BUNDLE = 10;

/**
 * Pack tasks into messages, one function per message: a submit of n tasks uses about
 * min(n, 50) messages (at most 10 tasks each), so at batch 100 it takes 5 SendMessageBatch
 * calls, not 10, while small batches still spread across workers one task at a time.
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
    let bytes = Buffer.byteLength(JSON.stringify(base));
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
      if (tasks.length && (tasks.length >= perMessage || bytes + size > BUNDLE_BYTES)) {
        messages.push({ ...base, tasks });
        tasks = [];
        bytes = Buffer.byteLength(JSON.stringify(base));
      }
      tasks.push(task);
      bytes += size;
    }
    if (tasks.length) messages.push({ ...base, tasks });
  }
  return messages;
}

async function ownedFunctions(userId: string, ids: string[]): Promise<Map<string, FunctionRecord>> {
  const found = new Map((await getFunctions(ids)).filter((f) => f.owner === userId).map((f) => [f.function_id, f]));
  const missing = [...new Set(ids)].filter((id) => !found.has(id));
  if (missing.length) throw new NotFound(`function not found: ${missing.join(', ')}`, { function_ids: missing });
  return found;
}

/** The sort key of the last task in a group this user may add to (undefined for a new group); another user's group is refused. */
async function lastOfOwnGroup(groupId: string, userId: string): Promise<string | undefined> {
  const last = await lastInGroup(groupId);
  if (last && last.owner !== userId) throw new Forbidden(`task group ${groupId} belongs to another user`);
  return last?.submit_order;
}

async function argsEnvelope(t: SubmitTaskInput, endpointId: string, userId: string, taskId: string): Promise<Envelope> {
  const p = t.payload;
  if (!p) return storePayload(encodeJsonArgs(t.args, t.kwargs), 'json', argsKey(endpointId, taskId));
  if (p.data !== undefined) return storePayload(Buffer.from(p.data, 'base64'), p.codec, argsKey(endpointId, taskId));
  const ref = p.ref!;
  if (!isUploadKeyOf(ref, endpointId, userId)) throw new BadRequest(`payload ref ${ref} was not issued to you for this endpoint`);
  const size = await objectSize(ref);
  if (size === undefined) throw new BadRequest(`payload ${ref} has not been uploaded`);
  if (size !== p.size) throw new BadRequest(`payload ${ref} holds ${size} bytes, not ${p.size}`);
  return refEnvelope(ref, p.codec, p.size, p.sha256!);
}

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

/** A task of this user's; another user's task is reported as unknown, not as forbidden, so ids leak nothing. */
export async function ownTask(taskId: string, userId: string): Promise<TaskRecord> {
  const t = await getTask(taskId);
  if (!t || t.owner !== userId || !t.transitions) throw new NotFound(`task ${taskId} not found`);
  return t;
}

/** Up to 1,000 tasks at once; unknown and others' ids are listed apart. */
export async function ownTasks(ids: string[], userId: string): Promise<{ tasks: TaskRecord[]; unknown: string[] }> {
  const found = (await getTasks(ids)).filter((t) => t.owner === userId && t.transitions);
  const byId = new Map(found.map((t) => [t.task_id, t]));
  return { tasks: ids.filter((id) => byId.has(id)).map((id) => byId.get(id)!), unknown: ids.filter((id) => !byId.has(id)) };
}

export async function groupTasks(
  groupId: string,
  userId: string,
  limit: number,
  cursor?: string,
): Promise<{ items: TaskRecord[]; next?: string }> {
  const page = await queryGroup(groupId, limit, cursor);
  if ([...page.owners].some((o) => o !== userId)) throw new NotFound(`task group ${groupId} not found`);
  if (!cursor && !page.items.length) throw new NotFound(`task group ${groupId} not found`);
  return { items: page.items, next: page.next };
}

export async function cancelTask(taskId: string, userId: string): Promise<TaskRecord> {
  const t = await ownTask(taskId, userId);
  const updated = await transitionTask(taskId, 'cancelled', { by: `user:${userId}` });
  if (updated) {
    announceFinished([taskId], [updated]);
    telemetry().tasks('cancelled', updated.endpoint_id);
  }
  return updated ?? (await getTask(taskId)) ?? t;
}

/**
 * Apply one sender's messages about one task, in order. `sender` is the endpoint whose vended
 * credentials sent them (the SQS SenderId, see core/credentials.senderEndpoint), never what a
 * body says: every write is conditional on the task being that endpoint's and on its current
 * state, so duplicates and late deliveries change nothing, and a report about another
 * endpoint's task, or one whose body names another endpoint, is refused (ForgedReport).
 * A "started" that arrives with the task's result is folded into the result's single write.
 */
export async function applyResults(msgs: ResultMessage[], sender: string): Promise<void> {
  for (const msg of msgs) {
    if (msg.endpoint_id !== sender) {
      throw new ForgedReport(
        `report on task ${msg.task_id} names endpoint ${msg.endpoint_id} but was sent with endpoint ${sender}'s credentials`,
      );
    }
    // A worker may point only at payloads under its own endpoint's prefix (its credentials can write nowhere else).
    const refs = [msg.kind === 'success' ? msg.result.ref : undefined, msg.kind === 'failed' ? msg.exception.payload?.ref : undefined];
    if (refs.some((r) => r !== undefined && (!r.startsWith(endpointPrefix(sender)) || r.includes('..')))) {
      throw new ForeignPayload(`result for task ${msg.task_id} refers to a payload outside endpoint ${sender}'s prefix`);
    }
  }
  const ordered = [...msgs].sort((a, b) => Number(a.kind !== 'started') - Number(b.kind !== 'started'));
  for (let i = 0; i < ordered.length; i++) {
    const msg = ordered[i]!;
    const base = { by: `worker:${msg.worker_id}`, at: new Date(msg.at), workerId: msg.worker_id, endpointId: sender };
    const next = ordered[i + 1];
    if (msg.kind === 'started' && next && next.kind !== 'started' && next.worker_id === msg.worker_id) continue;
    const prev = ordered[i - 1];
    let via =
      prev?.kind === 'started' && prev.worker_id === msg.worker_id && msg.kind !== 'started'
        ? [{ state: 'running' as const, at: prev.at, by: base.by }]
        : undefined;
    // A result that finished before its agent sent a separate "started" says when it started.
    const startedAt = msg.kind !== 'started' ? msg.started_at : undefined;
    if (!via && startedAt) via = [{ state: 'running' as const, at: startedAt, by: base.by }];
    let applied: TaskRecord | undefined;
    if (msg.kind === 'started') applied = await transitionTask(msg.task_id, 'running', base);
    else if (msg.kind === 'success')
      applied = await transitionTask(msg.task_id, 'success', { ...base, via, result: msg.result, output: msg.output });
    else applied = await transitionTask(msg.task_id, 'failed', { ...base, via, exception: msg.exception, output: msg.output });
    if (applied && msg.kind !== 'started') announceFinished([msg.task_id], [applied]);
    if (applied) countReport(applied, msg.kind, via !== undefined);
    // The condition failed: a duplicate or late report changes nothing quietly; one about another endpoint's task is refused.
    if (!applied) {
      const task = await getTask(msg.task_id);
      if (task && task.endpoint_id !== sender) throw new ForgedReport(`task ${msg.task_id} is not endpoint ${sender}'s`);
    }
  }
}

/** Metrics for a report that moved its task: started, and for a result submit-to-final latency (core/telemetry.ts). */
function countReport(t: TaskRecord, kind: ResultMessage['kind'], startedToo: boolean): void {
  if (kind === 'started' || startedToo) telemetry().tasks('started', t.endpoint_id);
  if (kind === 'started') return;
  telemetry().tasks(kind === 'success' ? 'succeeded' : 'failed', t.endpoint_id);
  telemetry().taskLatency(Date.parse(t.updated_at) - Date.parse(t.created_at));
}

/** A task whose message reached the dead-letter queue: every delivery's worker died. */
export async function failLostTask(taskId: string, endpointId: string): Promise<boolean> {
  const exception: RemoteException = {
    type: 'WorkerLost',
    message: 'worker lost: the task reached its maximum deliveries and each time its worker died or was killed before reporting a result',
    traceback: '',
  };
  const moved = Boolean(await transitionTask(taskId, 'failed', { by: 'dlq', exception, endpointId }));
  if (moved) {
    announceFinished([taskId]);
    telemetry().tasks('lost', endpointId);
  }
  return moved;
}
