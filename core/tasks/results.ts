import { isPayloadKeyOf } from '../bucket';
import { ForeignPayload, ForgedReport } from '../errors';
import type { ResultMessage } from '../messages';
import { getTask, transitionTask, type RemoteException, type TaskRecord } from '../tables/task-records';
import { announceFinished } from '../task-events';
import { telemetry } from '../telemetry';

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
    if (refs.some((r) => r !== undefined && !isPayloadKeyOf(r, sender))) {
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
