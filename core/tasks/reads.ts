import { ownTask } from '../access';
import { NotFound } from '../errors';
import { encodeCursor } from '../tables/cursor';
import { checkGroupCursor, getTask, legacySubmitOrder, queryGroup, transitionTask, type TaskRecord } from '../tables/task-records';
import { announceFinished } from '../task-events';
import { telemetry } from '../telemetry';
import { taskView, withinBudget, type TaskView } from './views';

/**
 * One page of a group of this user's, as views in submit order. Another user's group, or one with
 * no task, is unknown; another user's cursor is refused. A page ends early where the response
 * budget runs out (RESPONSE_BUDGET_BYTES); its cursor then continues after the last task shown.
 */
export async function groupPage(
  groupId: string,
  userId: string,
  limit: number,
  cursor?: string,
): Promise<{ tasks: TaskView[]; next?: string }> {
  await checkGroupCursor(groupId, userId, cursor);
  const page = await queryGroup(groupId, limit, cursor);
  if ([...page.owners].some((o) => o !== userId)) throw new NotFound(`task group ${groupId} not found`);
  if (!cursor && !page.items.length) throw new NotFound(`task group ${groupId} not found`);
  const { fit, rest } = withinBudget(await Promise.all(page.items.map(taskView)));
  const last = page.items[fit.length - 1];
  const next =
    rest && last
      ? encodeCursor({
          task_id: last.task_id,
          task_group_id: groupId,
          submit_order: last.submit_order ?? legacySubmitOrder(last.created_at, last.task_id),
        })
      : page.next;
  return { tasks: fit, next };
}

/** Cancel a task of this user's that has not finished; a finished one is returned as it stands. */
export async function cancelTask(taskId: string, userId: string): Promise<TaskRecord> {
  const t = await ownTask(taskId, userId);
  const updated = await transitionTask(taskId, 'cancelled', { by: `user:${userId}` });
  if (updated) {
    announceFinished([taskId], [updated]);
    telemetry().tasks('cancelled', updated.endpoint_id);
  }
  return updated ?? (await getTask(taskId)) ?? t;
}
