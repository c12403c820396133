/**
 * Who may see and use what: the one home of Ferry's access rules. Another user's private endpoint,
 * function, task or group is reported as unknown (404), never as forbidden, so ids leak nothing;
 * only adding to another user's task group is refused outright (403), as its id was given.
 */
import { Forbidden, NotFound } from './errors';
import { config } from './config';
import { batchGetTables } from './tables/batch';
import { canUseEndpoint, getEndpoint, liveEndpoint, type EndpointRecord } from './tables/endpoints';
import { getFunction, type FunctionRecord } from './tables/functions';
import { getTask, getTasks, lastInGroup, type TaskRecord } from './tables/task-records';

/** An endpoint this user may see and submit to (owner, shared or public); others' private endpoints are unknown. */
export async function usableEndpoint(endpointId: string, userId: string, opts: { consistent?: boolean } = {}): Promise<EndpointRecord> {
  const ep = await getEndpoint(endpointId, opts);
  if (!ep || !canUseEndpoint(ep, userId)) throw new NotFound(`endpoint ${endpointId} not found`);
  return ep;
}

/** An endpoint this user owns (to share or delete it); anyone else's is unknown. */
export async function ownedEndpoint(endpointId: string, userId: string): Promise<EndpointRecord> {
  const ep = await getEndpoint(endpointId);
  if (!ep || ep.owner !== userId) throw new NotFound(`endpoint ${endpointId} not found`);
  return ep;
}

/** A function this user registered; anyone else's is unknown. */
export async function ownedFunction(functionId: string, userId: string): Promise<FunctionRecord> {
  const f = await getFunction(functionId);
  if (!f || f.owner !== userId) throw new NotFound(`function ${functionId} not found`);
  return f;
}

/** The functions of a submit, all this user's, by id; `details.function_ids` names those unknown to them. */
function ownOnly(records: readonly FunctionRecord[], functionIds: readonly string[], userId: string): Map<string, FunctionRecord> {
  const found = new Map(records.filter((f) => f.owner === userId).map((f) => [f.function_id, f]));
  const missing = [...new Set(functionIds)].filter((id) => !found.has(id));
  if (missing.length) throw new NotFound(`function not found: ${missing.join(', ')}`, { function_ids: missing });
  return found;
}

/**
 * A submit's endpoint (as usableEndpoint checks it) and functions (each this user's), read
 * in one BatchGetItem: both sit on the path of every submit. An unknown endpoint is reported first.
 */
export async function submitTargets(
  endpointId: string,
  functionIds: readonly string[],
  userId: string,
): Promise<{ ep: EndpointRecord; functions: Map<string, FunctionRecord> }> {
  const { endpoints, functions } = config().tables;
  const read = await batchGetTables([
    { table: endpoints, keyName: 'endpoint_id', ids: [endpointId] },
    { table: functions, keyName: 'function_id', ids: functionIds },
  ]);
  const ep = liveEndpoint(read.get(endpoints)?.[0] as EndpointRecord | undefined);
  if (!ep || !canUseEndpoint(ep, userId)) throw new NotFound(`endpoint ${endpointId} not found`);
  return { ep, functions: ownOnly((read.get(functions) ?? []) as FunctionRecord[], functionIds, userId) };
}

/** A task this user submitted (a record with transitions: a task, not a share's open marker). */
export const isOwnTask = (t: TaskRecord, userId: string): boolean => t.owner === userId && Boolean(t.transitions);

/** A task this user submitted; anyone else's is unknown. */
export async function ownTask(taskId: string, userId: string): Promise<TaskRecord> {
  const t = await getTask(taskId);
  if (!t || !isOwnTask(t, userId)) throw new NotFound(`task ${taskId} not found`);
  return t;
}

/** Up to 1,000 tasks at once, in the order asked; unknown and others' ids are listed apart. */
export async function ownTasks(taskIds: readonly string[], userId: string): Promise<{ tasks: TaskRecord[]; unknown: string[] }> {
  const found = (await getTasks(taskIds)).filter((t) => isOwnTask(t, userId));
  const byId = new Map(found.map((t) => [t.task_id, t]));
  return {
    tasks: taskIds.filter((id) => byId.has(id)).map((id) => byId.get(id)!),
    unknown: taskIds.filter((id) => !byId.has(id)),
  };
}

/** The sort key of the last task in a group this user may add to (undefined for a new group); another user's group is refused. */
export async function lastOfOwnGroup(groupId: string, userId: string): Promise<string | undefined> {
  const last = await lastInGroup(groupId);
  if (last && last.owner !== userId) throw new Forbidden(`task group ${groupId} belongs to another user`);
  return last?.submit_order;
}
