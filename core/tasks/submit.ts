import { performance } from 'node:perf_hooks';
import { argsKey, isUploadKeyOf, objectSize, storePayload } from '../bucket';
import { BadRequest, FunctionNotAllowed, IdempotencyKeyReused, PartialSubmitFailure, RequestInProgress } from '../errors';
import { derivedId, newId, sha256Hex } from '../ids';
import type { ResourceSpecification } from '../messages';
import { encodeJsonArgs, refEnvelope, type Envelope } from '../payload';
import type { Codec } from '../runtimes';
import { queueTasks } from '../queues/endpoint-queue';
import { lastOfOwnGroup, submitTargets } from '../access';
import { disallowedFunctions, type EndpointRecord } from '../tables/endpoints';
import { mapLimit } from '../retry';
import type { FunctionRecord } from '../tables/functions';
import { telemetry } from '../telemetry';
import {
  claimIdempotency,
  completeIdempotency,
  getSharesFresh,
  getTasks,
  idempotentResponse,
  putShares,
  releaseIdempotency,
  shareIdOf,
  shareItems,
  shareOfTask,
  shareTaskIds,
  shareTasks,
  submitPrefix,
  taskIdAt,
  transitionTask,
  type NewTask,
  type ShareRecord,
} from '../tables/task-records';
import { announceFinished } from '../task-events';
import { bundleTasks, shareLayout } from './packing';
import { noteSubmitted } from './wait';
import { taskResources } from './resources';

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

/** A submit still pending after this long has died (API Gateway gives up on a request at 29 s). */
const REQUEST_DEADLINE_MS = 60_000;

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
    const [{ ep, functions }, lastInGroup] = await Promise.all([
      submitTargets(
        input.endpointId,
        input.tasks.map((t) => t.function_id),
        input.userId,
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
  const writing = performance.now();
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
  // The tasks of the shares written here wait for their endpoint: a wait that follows need not read them.
  noteSubmitted(
    records.flatMap((r) => (existing.has(shareOfTask(r.task_id)!.shareId) ? [] : [r.task_id])),
    input.userId,
    writing,
  );
  // Counted once: a retry that took over a dead attempt counts only the tasks that attempt had not written.
  telemetry().tasks('submitted', ep.endpoint_id, made.length);
  return response;
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
