import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { dynamo } from '../clients';
import { config } from '../config';
import { conditionHeld, isConditionFailed } from './batch';
import { queryByOwner } from './cursor';

export interface EndpointHeartbeat {
  workers: number;
  idle_workers: number;
  running: number;
  runtimes: string[];
  agent_version: string;
  worker_id?: string;
  /** How often this agent beats; absent from agents older than this field (they beat every 30 s). */
  heartbeat_ms?: number;
  /** Present when the sender is an endpoint manager: its provider and blocks (it runs no tasks itself). */
  manager?: { provider: string; blocks: ManagerBlock[] };
}

/** A block as its endpoint manager reports it (workers/manager/manager.ts BlockView). */
export interface ManagerBlock {
  block_id: string;
  job_id: string;
  state: 'pending' | 'running' | 'idle' | 'draining' | 'ended';
  scheduler_state: string;
  reason?: string;
  nodes?: string;
  agents: number;
  workers: number;
  running: number;
  idle_seconds?: number;
  drain_reason?: string;
  submitted_at: string;
  ends_at?: string;
}

export interface EndpointRecord {
  endpoint_id: string;
  owner: string;
  name: string;
  public: boolean;
  shared_with: string[];
  queue_url: string;
  dlq_url: string;
  secret_hash: string;
  created_at: string;
  walltime_ms: number;
  max_attempts: number;
  /** Only these functions may be submitted to the endpoint (sorted, unique); absent: any function. */
  allowed_functions?: string[];
  /** Latest heartbeat per worker agent, keyed by worker id. */
  heartbeats: Record<string, EndpointHeartbeat & { at: number }>;
  last_heartbeat_at?: number;
  /**
   * Set when DELETE /v1/endpoints began: from then on the endpoint is gone for every reader, and
   * the record stays only until its open tasks have failed (the sweep finishes what the request
   * had no time for).
   */
  deleted_at?: string;
}

/** Reads and updates see a live endpoint only: a deleted one's record may linger for its tasks' sake. */
const LIVE = 'attribute_exists(endpoint_id) AND attribute_not_exists(deleted_at)';

const table = () => config().tables.endpoints;

export async function putEndpoint(record: EndpointRecord): Promise<void> {
  await dynamo().send(new PutCommand({ TableName: table(), Item: record, ConditionExpression: 'attribute_not_exists(endpoint_id)' }));
}

/**
 * A live endpoint's record; undefined once it is deleted, even while the record lingers (see
 * deleted_at). `consistent`: read every write acknowledged before (a status must show an agent's
 * goodbye at once).
 */
export async function getEndpoint(endpointId: string, opts: { consistent?: boolean } = {}): Promise<EndpointRecord | undefined> {
  const out = await dynamo().send(
    new GetCommand({ TableName: table(), Key: { endpoint_id: endpointId }, ConsistentRead: opts.consistent }),
  );
  return liveEndpoint(out.Item as EndpointRecord | undefined);
}

/** An endpoint item as read, unless it is marked deleted. */
export const liveEndpoint = (ep: EndpointRecord | undefined): EndpointRecord | undefined => (ep?.deleted_at ? undefined : ep);

/** An owner's live endpoints (a page may hold fewer than `limit` while deleted ones linger). */
export async function listEndpoints(owner: string, limit: number, cursor?: string): Promise<{ items: EndpointRecord[]; next?: string }> {
  const page = await queryByOwner<EndpointRecord>(table(), 'endpoint_id', owner, limit, cursor);
  return { ...page, items: page.items.filter((ep) => !ep.deleted_at) };
}

/**
 * Marks an endpoint deleted, at once for every reader and writer; returns false, changing
 * nothing, when it is not live (never was, or another request deleted it first).
 */
export async function markEndpointDeleted(endpointId: string, at = new Date()): Promise<boolean> {
  return conditionHeld(
    dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { endpoint_id: endpointId },
        UpdateExpression: 'SET deleted_at = :at',
        ConditionExpression: LIVE,
        ExpressionAttributeValues: { ':at': at.toISOString() },
      }),
    ),
  );
}

/** What the owner may change after registration (POST /v1/endpoints/{id}/share). */
export interface EndpointSharing {
  public?: boolean;
  shared_with?: string[];
  /** Only these functions may run; null or an empty list lifts the restriction. */
  allowed_functions?: string[] | null;
}

/** The allowed_functions kept in a record: sorted and unique, or undefined (any function) for none. */
export const allowedFunctionList = (ids: readonly string[] | null | undefined): string[] | undefined =>
  ids && ids.length ? [...new Set(ids)].sort() : undefined;

/** Returns the updated record, or undefined, writing nothing, if the endpoint was deleted meanwhile. */
export async function setSharing(endpointId: string, sharing: EndpointSharing): Promise<EndpointRecord | undefined> {
  const sets: string[] = [];
  const removes: string[] = [];
  const names: Record<string, string> = {};
  const values: Record<string, unknown> = {};
  if (sharing.public !== undefined) {
    sets.push('#p = :p');
    names['#p'] = 'public';
    values[':p'] = sharing.public;
  }
  if (sharing.shared_with !== undefined) {
    sets.push('shared_with = :s');
    values[':s'] = sharing.shared_with;
  }
  if (sharing.allowed_functions !== undefined) {
    const allowed = allowedFunctionList(sharing.allowed_functions);
    if (allowed) {
      sets.push('allowed_functions = :a');
      values[':a'] = allowed;
    } else removes.push('allowed_functions');
  }
  if (!sets.length && !removes.length) return getEndpoint(endpointId, { consistent: true });
  try {
    const out = await dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { endpoint_id: endpointId },
        UpdateExpression: [sets.length ? `SET ${sets.join(', ')}` : '', removes.length ? `REMOVE ${removes.join(', ')}` : '']
          .join(' ')
          .trim(),
        ConditionExpression: LIVE,
        ExpressionAttributeNames: Object.keys(names).length ? names : undefined,
        ExpressionAttributeValues: Object.keys(values).length ? values : undefined,
        ReturnValues: 'ALL_NEW',
      }),
    );
    return out.Attributes as EndpointRecord;
  } catch (err) {
    if (isConditionFailed(err)) return undefined;
    throw err;
  }
}

/**
 * Record one agent's heartbeat under its worker id (the record is created with an empty map).
 * `stopped` removes the agent at once instead of waiting for its heartbeat to go stale.
 * Returns false, writing nothing, when the endpoint is gone: a deleted endpoint's secret is still
 * admitted for as long as API Gateway caches the authorizer's answer (30 s), and an update
 * without the condition would bring its record back.
 */
export async function recordHeartbeat(endpointId: string, workerId: string, hb: EndpointHeartbeat, stopped = false): Promise<boolean> {
  const at = Date.now();
  return conditionHeld(
    dynamo().send(
      new UpdateCommand({
        TableName: table(),
        Key: { endpoint_id: endpointId },
        UpdateExpression: stopped ? 'REMOVE heartbeats.#w SET last_heartbeat_at = :at' : 'SET heartbeats.#w = :hb, last_heartbeat_at = :at',
        ConditionExpression: LIVE,
        ExpressionAttributeNames: { '#w': workerId },
        ExpressionAttributeValues: stopped ? { ':at': at } : { ':hb': { ...hb, at }, ':at': at },
      }),
    ),
  );
}

export async function deleteEndpointRecord(endpointId: string): Promise<void> {
  await dynamo().send(new DeleteCommand({ TableName: table(), Key: { endpoint_id: endpointId } }));
}

/** Who may submit to an endpoint and see it: its owner, users it is shared with, anyone if public. */
export const canUseEndpoint = (ep: EndpointRecord, userId: string): boolean =>
  ep.owner === userId || ep.public || ep.shared_with.includes(userId);

/** The functions of `functionIds` the endpoint does not allow (none when it allows any function). */
export const disallowedFunctions = (ep: EndpointRecord, functionIds: readonly string[]): string[] => {
  if (!ep.allowed_functions?.length) return [];
  const allowed = new Set(ep.allowed_functions);
  return [...new Set(functionIds)].filter((id) => !allowed.has(id));
};
