import { DeleteMessageBatchCommand, GetQueueAttributesCommand, ListQueuesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo, sqsClient } from './clients';
import { config } from './config';
import { finishDeletedEndpoint } from './endpoints';
import { parseBody, taskMessageSchema } from './messages';
import { isFinal, type TaskState } from './states';
import {
  closeMarker,
  getTasks,
  markerShare,
  openTaskIds,
  queryOpenByAge,
  transitionTask,
  type RemoteException,
  type TaskRecord,
} from './tables/task-records';
import { announceFinished } from './task-events';
import { failLostTask } from './tasks/results';
import { telemetry } from './telemetry';

/**
 * Drain every endpoint dead-letter queue once: a task message there ran out of deliveries
 * (each worker died before reporting), so its task fails as "worker lost". Runs on a schedule;
 * endpoint queues are created at run time, so no per-queue trigger exists to deliver these.
 * Returns how many tasks it failed.
 */
export async function sweepDeadLetters(): Promise<number> {
  const prefix = `ferry-${config().stage}-ep-`;
  let failed = 0;
  let next: string | undefined;
  do {
    const page = await sqsClient().send(new ListQueuesCommand({ QueueNamePrefix: prefix, NextToken: next, MaxResults: 1000 }));
    for (const url of page.QueueUrls ?? []) {
      const endpointId = dlqEndpoint(url, prefix);
      if (endpointId) failed += await drainDeadLetterQueue(url, endpointId);
    }
    next = page.NextToken;
  } while (next);
  return failed;
}

/** The endpoint a dead-letter queue belongs to, from its name `ferry-<stage>-ep-<id>-dlq` (see core/config endpointDlqName). */
export function dlqEndpoint(queueUrl: string, prefix: string): string | undefined {
  const name = decodeURIComponent(queueUrl.split('/').pop() ?? '');
  if (!name.startsWith(prefix) || !name.endsWith('-dlq')) return undefined;
  return name.slice(prefix.length, -'-dlq'.length) || undefined;
}

/**
 * Only the API sends to an endpoint queue, so its messages are trusted; still, the endpoint a
 * task is failed for is the queue's, not whatever a body says.
 */
async function drainDeadLetterQueue(url: string, endpointId: string): Promise<number> {
  let failed = 0;
  for (;;) {
    const out = await sqsClient().send(
      new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: 60 }),
    );
    const messages = out.Messages ?? [];
    if (!messages.length) return failed;
    const done: { Id: string; ReceiptHandle: string }[] = [];
    for (const [i, m] of messages.entries()) {
      const parsed = taskMessageSchema.safeParse(parseBody(m.Body));
      try {
        if (parsed.success) {
          for (const t of parsed.data.tasks) if (await failLostTask(t.task_id, endpointId)) failed++;
        }
        done.push({ Id: String(i), ReceiptHandle: m.ReceiptHandle! });
      } catch (err) {
        // Left for the next sweep once its visibility lapses.
        telemetry().log('error', 'could not fail lost task', { error: err, endpoint_id: endpointId, message_id: m.MessageId });
      }
    }
    if (done.length) await sqsClient().send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: done }));
  }
}

/** What an undeliverable-task sweep did. */
export interface UndeliverableSweep {
  /** Failed as TaskExpired: their message outlived the queue's retention unread, or their worker went silent after it. */
  expired: number;
  /** Failed as EndpointQueueGone: their endpoint's queue no longer exists. */
  queueGone: number;
  /** Failed as EndpointDeleted: left open by a DELETE /v1/endpoints that ran out of time. */
  deleted: number;
}

/**
 * Endpoints whose queue this process found missing, and since when. SQS is eventually consistent
 * (a queue can read as missing just after CreateQueue, and DELETE /v1/endpoints deletes the queue
 * before it fails the tasks itself), so a queue must stay missing for queueGoneGraceSeconds, seen
 * by two sweeps, before its tasks fail. Kept in memory: a cold start only delays that by one grace.
 */
const queueMissingSince = new Map<string, number>();

const OPEN_WAITING: readonly TaskState[] = ['received', 'waiting-for-endpoint'];

/**
 * Fail the open tasks that can no longer be delivered, so every task ends:
 * - on an endpoint whose queue is gone (deleted behind Ferry's back, or by a teardown), as EndpointQueueGone;
 * - whose message outlived its queue's MessageRetentionPeriod (plus a margin) unread, as TaskExpired;
 * - of an endpoint deleted through the API that had no time to fail them all, as EndpointDeleted
 *   (then the endpoint's record goes).
 * It works from the task records (the `open-since-index`, oldest first), never from the messages,
 * which are gone by then. Per endpoint and run: one Query (Limit 1) and, when it has open tasks,
 * one GetQueueAttributes; tasks are read only when they are past the cutoff.
 * A task that a worker is running is failed only once it has shown no progress for its walltime
 * plus the margin: its worker may still report, and a report always wins while it can come.
 * Each run also deletes the open markers of shares whose tasks have all ended (closeFinishedShares).
 */
export async function sweepUndeliverable(opts: { now?: number; deadline?: number } = {}): Promise<UndeliverableSweep> {
  const now = opts.now ?? Date.now();
  const done: UndeliverableSweep = { expired: 0, queueGone: 0, deleted: 0 };
  const seen = new Set<string>();
  for await (const ep of endpointQueues()) {
    if (opts.deadline && Date.now() > opts.deadline) break;
    if (ep.deleted_at) {
      // Deleted through the API, which had no time to fail all its tasks: the rest fail here.
      await finishDeletedEndpoint(ep.endpoint_id, opts.deadline ?? Infinity, 'sweep').then(
        (out) => (done.deleted += out.failed),
        (err) => telemetry().log('error', "failing a deleted endpoint's tasks failed", { endpoint_id: ep.endpoint_id, error: err }),
      );
      continue;
    }
    seen.add(ep.endpoint_id);
    // First, so the oldest open item below is a share with an open task where it can be.
    await closeFinishedShares(ep.endpoint_id, now, opts.deadline).catch((err) =>
      telemetry().log('error', 'closing finished shares failed for an endpoint', { endpoint_id: ep.endpoint_id, error: err }),
    );
    try {
      const [oldest] = (await queryOpenByAge(ep.endpoint_id, { limit: 1 })).items;
      if (!oldest) {
        queueMissingSince.delete(ep.endpoint_id);
        continue;
      }
      const retention = await queueRetentionSeconds(ep.queue_url);
      if (retention === undefined) {
        const since = queueMissingSince.get(ep.endpoint_id) ?? now;
        queueMissingSince.set(ep.endpoint_id, since);
        if (now - since < config().queueGoneGraceSeconds * 1000) continue;
        done.queueGone += await failOpenTasks(ep.endpoint_id, undefined, now, () => ({
          type: 'EndpointQueueGone',
          message: `endpoint ${ep.endpoint_id}'s queue no longer exists (deleted outside Ferry?): the task can never be delivered`,
          traceback: '',
        }));
        continue;
      }
      queueMissingSince.delete(ep.endpoint_id);
      const cutoff = new Date(now - (retention + config().expiryMarginSeconds) * 1000).toISOString();
      if (oldest.created_at >= cutoff) continue;
      done.expired += await failOpenTasks(ep.endpoint_id, cutoff, now, (t) => ({
        type: 'TaskExpired',
        message: OPEN_WAITING.includes(t.state)
          ? `its message expired unread after ${duration(retention)}: no worker took it`
          : `its worker stopped reporting and its message expired after ${duration(retention)}, so it cannot be delivered again`,
        traceback: '',
      }));
    } catch (err) {
      // One endpoint's trouble (throttling, a missing index) must not stop the others'.
      telemetry().log('error', 'undeliverable sweep failed for an endpoint', { endpoint_id: ep.endpoint_id, error: err });
    }
  }
  for (const id of queueMissingSince.keys()) if (!seen.has(id)) queueMissingSince.delete(id);
  return done;
}

/**
 * Fail the open tasks of an endpoint created before `before` (all of them without it). Each move
 * is conditional on the state and `updated_at` the sweep read: a worker report that lands between
 * the read and the write changes one of them, so the sweep's write fails and the report stands;
 * a report that lands after the sweep's write finds a final state and changes nothing. Either
 * way a task has exactly one final state.
 */
async function failOpenTasks(
  endpointId: string,
  before: string | undefined,
  now: number,
  exception: (t: TaskRecord) => RemoteException,
): Promise<number> {
  const margin = config().expiryMarginSeconds * 1000;
  let failed = 0;
  let cursor: Record<string, unknown> | undefined;
  do {
    const page = await queryOpenByAge(endpointId, { before, cursor, limit: 100 });
    for (const t of await getTasks(await openTaskIds(page.items.map((i) => i.task_id)))) {
      // A running task's worker may still report: it is killed at its walltime and reports then.
      if (t.state === 'running' && Date.parse(t.updated_at) + t.walltime_ms + margin > now) continue;
      if (!OPEN_WAITING.includes(t.state) && t.state !== 'running') continue;
      const moved = await transitionTask(t.task_id, 'failed', {
        by: 'sweep',
        exception: exception(t),
        from: [t.state],
        ifUpdatedAt: t.updated_at,
        endpointId,
      });
      if (moved) {
        failed++;
        announceFinished([t.task_id]);
        telemetry().tasks('lost', endpointId);
      }
    }
    cursor = page.next;
  } while (cursor);
  return failed;
}

/** A share's marker stays this long at least: most shares finish well within it, and are closed in one pass. */
const CLOSE_AFTER_MS = 60_000;
/** Markers found with open tasks, and when to look at them again (in process; bounded). */
const recheckAt = new Map<string, number>();

/**
 * Close the markers of an endpoint's shares (older than a minute) whose tasks are all final, so
 * `open-since-index` holds only shares with open tasks. Reads each such share's task items; one
 * write per share closed. A final task never opens again, so a marker closed here is never
 * needed again.
 */
export async function closeFinishedShares(endpointId: string, now = Date.now(), deadline?: number): Promise<number> {
  const before = new Date(now - CLOSE_AFTER_MS).toISOString();
  let closed = 0;
  let cursor: Record<string, unknown> | undefined;
  do {
    const page = await queryOpenByAge(endpointId, { before, cursor, limit: 100 });
    const markers = page.items.map((i) => i.task_id).filter((k) => markerShare(k) !== undefined && (recheckAt.get(k) ?? 0) <= now);
    for (const key of markers) {
      // What is left waits for the next run: failing undeliverable tasks matters more.
      if (deadline && Date.now() > deadline) return closed;
      const ids = await openTaskIds([key]);
      const tasks = await getTasks(ids);
      if (tasks.length === ids.length && tasks.every((t) => isFinal(t.state))) {
        await closeMarker(markerShare(key)!);
        recheckAt.delete(key);
        closed++;
      } else {
        // A share still open (a backlog) is read again a minute later, not at every sweep.
        recheckAt.delete(key);
        recheckAt.set(key, now + CLOSE_AFTER_MS);
        if (recheckAt.size > 100_000) recheckAt.delete(recheckAt.keys().next().value!);
      }
    }
    cursor = page.next;
  } while (cursor);
  return closed;
}

/** The queue's MessageRetentionPeriod in seconds, or undefined if the queue does not exist. */
async function queueRetentionSeconds(queueUrl: string): Promise<number | undefined> {
  try {
    const out = await sqsClient().send(new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ['MessageRetentionPeriod'] }));
    return Number(out.Attributes?.MessageRetentionPeriod ?? 345600); // SQS: 4 days unless set
  } catch (err) {
    if ((err as { name?: string }).name === 'QueueDoesNotExist') return undefined;
    throw err;
  }
}

/**
 * Every endpoint's id, queue and creation time. Endpoints are few beside tasks (one Scan page holds
 * thousands of these projections), so reading them all each run is cheap; their records are owned by
 * core/tables/endpoints.ts, and this reads only the attributes it needs.
 */
async function* endpointQueues(): AsyncGenerator<{ endpoint_id: string; queue_url: string; deleted_at?: string }> {
  let cursor: Record<string, unknown> | undefined;
  do {
    const out = await dynamo().send(
      new ScanCommand({
        TableName: config().tables.endpoints,
        ProjectionExpression: 'endpoint_id, queue_url, deleted_at',
        ExclusiveStartKey: cursor,
      }),
    );
    for (const item of out.Items ?? []) if (item.queue_url) yield item as { endpoint_id: string; queue_url: string; deleted_at?: string };
    cursor = out.LastEvaluatedKey;
  } while (cursor);
}

const duration = (seconds: number): string =>
  seconds % 86400 === 0
    ? `${seconds / 86400} day${seconds === 86400 ? '' : 's'}`
    : seconds % 3600 === 0
      ? `${seconds / 3600} h`
      : `${seconds} s`;
