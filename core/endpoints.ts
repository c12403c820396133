import { config } from './config';
import { EndpointGone, NotFound } from './errors';
import { newId } from './ids';
import { createEndpointQueues, deleteEndpointQueues, queueDepth } from './queues/endpoint-queue';
import {
  allowedFunctionList,
  deleteEndpointRecord,
  markEndpointDeleted,
  putEndpoint,
  recordHeartbeat,
  setSharing,
  type EndpointHeartbeat,
  type EndpointRecord,
  type EndpointSharing,
  type ManagerBlock,
} from './tables/endpoints';
import { mapLimit } from './retry';
import { closeMarker, markerShare, openTaskIds, queryOpenOnEndpoint, transitionTask } from './tables/task-records';
import { DEFAULT_HEARTBEAT_MS } from './messages';
import { announceFinished } from './task-events';
import { deleteTokenHash, issueEndpointSecret } from './tables/tokens';

/**
 * An agent is gone once it has missed two heartbeats, plus a little for the network: its
 * endpoint reads offline at most 2 × interval + slack after it died (65 s at the default 30 s),
 * while one late or lost beat does not flap it. A stopping agent's last heartbeat removes it at once.
 */
export const heartbeatStaleMs = (intervalMs = DEFAULT_HEARTBEAT_MS) => 2 * intervalMs + Math.min(intervalMs / 2, 5_000);

export interface RegisterEndpointInput {
  owner: string;
  name: string;
  public?: boolean;
  walltime_ms?: number;
  max_attempts?: number;
  /** Only these functions may be submitted to it (Globus Compute's allowed_functions); none: any. */
  allowed_functions?: string[];
}

/** Create an endpoint: its queue and dead-letter queue, its secret (returned once) and its record. */
export async function registerEndpoint(input: RegisterEndpointInput): Promise<{ endpoint: EndpointRecord; secret: string }> {
  const endpointId = newId();
  const maxAttempts = input.max_attempts ?? config().maxAttempts;
  const queues = await createEndpointQueues(endpointId, maxAttempts);
  const { secret, hash } = await issueEndpointSecret(endpointId, input.owner);
  const endpoint: EndpointRecord = {
    endpoint_id: endpointId,
    owner: input.owner,
    name: input.name,
    public: input.public ?? false,
    shared_with: [],
    queue_url: queues.queueUrl,
    dlq_url: queues.dlqUrl,
    secret_hash: hash,
    created_at: new Date().toISOString(),
    walltime_ms: input.walltime_ms ?? config().defaultWalltimeMs,
    max_attempts: maxAttempts,
    ...(allowedFunctionList(input.allowed_functions) ? { allowed_functions: allowedFunctionList(input.allowed_functions) } : {}),
    heartbeats: {},
  };
  await putEndpoint(endpoint);
  return { endpoint, secret };
}

/** POST /v1/endpoints/{id}/share on an endpoint its owner holds (core/access.ts ownedEndpoint); not found if deleted meanwhile. */
export async function shareEndpoint(ep: EndpointRecord, sharing: EndpointSharing): Promise<EndpointRecord> {
  const updated = await setSharing(ep.endpoint_id, sharing);
  if (!updated) throw new NotFound(`endpoint ${ep.endpoint_id} not found`);
  return updated;
}

/**
 * One agent's (or manager's) heartbeat. A deleted endpoint's secret is still admitted while the
 * authorizer's answer is cached (30 s): its beat is refused as EndpointGone, writing nothing.
 */
export async function heartbeat(endpointId: string, workerId: string, hb: EndpointHeartbeat, stopped?: boolean): Promise<void> {
  if (!(await recordHeartbeat(endpointId, workerId, hb, stopped))) throw new EndpointGone(endpointId);
}

/**
 * DELETE /v1/endpoints: the endpoint is gone at once (its record marked deleted, its secret and
 * queues deleted), then its open tasks fail as EndpointDeleted for as long as deleteBudgetMs
 * allows. What is left (`still_failing`) the sweep fails, and it deletes the record after.
 */
export async function deleteEndpoint(ep: EndpointRecord): Promise<{ failed_tasks: number; still_failing: boolean }> {
  if (!(await markEndpointDeleted(ep.endpoint_id))) throw new NotFound(`endpoint ${ep.endpoint_id} not found`);
  await deleteTokenHash(ep.secret_hash);
  await deleteEndpointQueues({ queueUrl: ep.queue_url, dlqUrl: ep.dlq_url });
  const out = await finishDeletedEndpoint(ep.endpoint_id, Date.now() + config().deleteBudgetMs, 'api');
  return { failed_tasks: out.failed, still_failing: !out.done };
}

/**
 * Fails a deleted endpoint's open tasks, a page at a time, until `deadline`; once none is left,
 * deletes its record. Resumable: each page's markers close as soon as its tasks are final, so the
 * next call (the sweep's) starts where this one stopped.
 */
export async function finishDeletedEndpoint(
  endpointId: string,
  deadline: number,
  by: 'api' | 'sweep',
): Promise<{ failed: number; done: boolean }> {
  const exception = { type: 'EndpointDeleted', message: `endpoint ${endpointId} was deleted before the task finished`, traceback: '' };
  let failed = 0;
  let cursor: Record<string, unknown> | undefined;
  do {
    if (Date.now() >= deadline) return { failed, done: false };
    // A page of 20 items (markers of up to 100 tasks each): a deadline is overrun by one page at most.
    const page = await queryOpenOnEndpoint(endpointId, cursor, 20);
    const moved = await mapLimit(await openTaskIds(page.ids), 16, (id) => transitionTask(id, 'failed', { by, exception }));
    const ids = moved.flatMap((t) => (t ? [t.task_id] : []));
    announceFinished(ids);
    failed += ids.length;
    // Every task of these shares is final now: nothing else closes a deleted endpoint's markers.
    await mapLimit(
      page.ids.flatMap((k) => markerShare(k) ?? []),
      16,
      closeMarker,
    );
    cursor = page.next;
  } while (cursor);
  await deleteEndpointRecord(endpointId);
  return { failed, done: true };
}

export interface EndpointStatus {
  endpoint_id: string;
  status: 'online' | 'offline';
  workers: number;
  idle_workers: number;
  running: number;
  queued: number;
  in_flight: number;
  agents: number;
  runtimes: string[];
  last_heartbeat?: string;
  /** Live endpoint managers (`ferry endpoint start`); an endpoint with one is online even at zero blocks. */
  managers: number;
  /** The blocks those managers hold (Slurm jobs or local agent groups), newest last. */
  blocks: (ManagerBlock & { provider: string })[];
}

export async function endpointStatus(ep: EndpointRecord, now = Date.now()): Promise<EndpointStatus> {
  const beating = Object.values(ep.heartbeats ?? {}).filter((h) => now - h.at < heartbeatStaleMs(h.heartbeat_ms));
  // A manager runs no tasks: its beat says the endpoint is served (as Globus Compute shows an
  // endpoint scaled to zero blocks as online), and carries the blocks; agents carry the workers.
  const managers = beating.filter((h) => h.manager);
  const live = beating.filter((h) => !h.manager);
  const depth = await queueDepth(ep.queue_url);
  const sum = (f: (h: (typeof live)[number]) => number) => live.reduce((n, h) => n + f(h), 0);
  return {
    endpoint_id: ep.endpoint_id,
    status: beating.length ? 'online' : 'offline',
    workers: sum((h) => h.workers),
    idle_workers: sum((h) => h.idle_workers),
    running: sum((h) => h.running),
    queued: depth.queued,
    in_flight: depth.inFlight,
    agents: live.length,
    runtimes: [...new Set(live.flatMap((h) => h.runtimes))],
    last_heartbeat: ep.last_heartbeat_at ? new Date(ep.last_heartbeat_at).toISOString() : undefined,
    managers: managers.length,
    blocks: managers.flatMap((h) => h.manager!.blocks.map((b) => ({ ...b, provider: h.manager!.provider }))),
  };
}

/** An endpoint as a user sees it; the secret's hash and queue URLs stay inside. */
export const endpointView = (ep: EndpointRecord, userId: string) => ({
  endpoint_id: ep.endpoint_id,
  name: ep.name,
  owner: ep.owner === userId ? ep.owner : undefined,
  public: ep.public,
  shared_with: ep.owner === userId ? ep.shared_with : undefined,
  created_at: ep.created_at,
  walltime_ms: ep.walltime_ms,
  max_attempts: ep.max_attempts,
  /** Only these functions may run on it; empty: any function. */
  allowed_functions: ep.allowed_functions ?? [],
});

/** GET /v1/endpoints/{id}/allowed_functions, in Globus Compute's shape plus whether the list applies. */
export const allowedFunctionsView = (ep: EndpointRecord) => ({
  endpoint_id: ep.endpoint_id,
  restricted: Boolean(ep.allowed_functions?.length),
  functions: ep.allowed_functions ?? [],
});
